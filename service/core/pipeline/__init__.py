"""HTTP bytes <-> RGB float32 NCHW in [0, 1]: decode, limits, tiling, stitching, encode. Plain numpy + Pillow.

No FastAPI and no onnxruntime here (tests/service/test_layers.py checks): the derainer calls in.
"""

from service.core.pipeline.decode import DecodedImage, ImageInfo, decode, probe
from service.core.pipeline.encode import MEDIA_TYPES, OUTPUT_FORMATS, OutputFormat, encode, output_format
from service.core.pipeline.tiling import (
    TileGrid,
    check_tiling,
    feather_ramp,
    plan_grid,
    plan_work,
    split,
    stitch,
)

__all__ = [
    "MEDIA_TYPES",
    "OUTPUT_FORMATS",
    "DecodedImage",
    "ImageInfo",
    "OutputFormat",
    "TileGrid",
    "check_tiling",
    "decode",
    "encode",
    "feather_ramp",
    "output_format",
    "plan_grid",
    "plan_work",
    "probe",
    "split",
    "stitch",
]
