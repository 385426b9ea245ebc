"""python -m model_export --weights weights/NAME.safetensors --out models/NAME.onnx [--opset N] [--fp16]"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model_export.export import DEFAULT_OPSET, ExportError, export_onnx, optimized_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_export", description=__doc__)
    parser.add_argument("--weights", type=Path, required=True, help="MSPFN .safetensors checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--fp16", action="store_true", help="fp16 graph for GPUs (fp32 inputs/outputs)")
    parser.add_argument("--optimize", action="store_true", help="also write ORT's optimized CPU graph")
    args = parser.parse_args(argv)
    try:
        report = export_onnx(args.weights, args.out, args.opset, args.fp16, args.optimize)
    except (ExportError, ValueError, FileNotFoundError) as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    result = {"out": str(args.out), **report.to_dict()}
    if args.optimize:
        result["optimized"] = str(optimized_path(args.out))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
