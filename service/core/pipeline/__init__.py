"""HTTP bytes <-> RGB float32 NCHW in [0, 1]: decode, limits, tiling, stitching, encode. Plain numpy + Pillow.

No FastAPI and no onnxruntime here: the api calls in, the batcher and runtime are called by others.
"""

from service.pipeline.decode import DecodedImage, ImageInfo, decode, probe
from service.pipeline.encode import MEDIA_TYPES, OUTPUT_FORMATS, OutputFormat, encode, output_format
from service.pipeline.tiling import TileGrid, feather_ramp, plan_grid, split, stitch

__all__ = [
    "MEDIA_TYPES",
    "OUTPUT_FORMATS",
    "DecodedImage",
    "ImageInfo",
    "OutputFormat",
    "TileGrid",
    "decode",
    "encode",
    "feather_ramp",
    "output_format",
    "plan_grid",
    "probe",
    "split",
    "stitch",
]
