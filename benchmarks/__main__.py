"""python -m benchmarks [--sections SECTION,...] [--quick]

Sections: engine, roofline, profile, options, tiling, batching, overhead, scale, memory, gpu (default:
all).

Writes benchmarks/results/<machine>.json and benchmarks/results/<machine>.md (docs/performance.md quotes
the tables; the README, their targets).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from benchmarks import engine, report

SECTIONS = (
    "engine",
    "roofline",
    "profile",
    "options",
    "tiling",
    "batching",
    "overhead",
    "scale",
    "memory",
    "gpu",
)
RESULTS = Path(__file__).parent / "results"


def cpu_slug(cpu: str) -> str:
    """'Intel(R) Xeon(R) Processor' -> 'intel-xeon', 'AMD EPYC 9R14 96-Core Processor' -> 'amd-epyc'."""
    words = re.sub(r"\((r|tm)\)|processor|cpu", " ", cpu.lower()).split()
    return "-".join(re.sub(r"[^a-z0-9]", "", word) for word in words[:2]) or "unknown"


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "name": f"{platform.machine()}-{os.cpu_count()}cpu-{cpu_slug(cpu)}",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/mspfn-lite.onnx"))
    parser.add_argument("--weights", type=Path, default=Path("weights/mspfn-lite.safetensors"))
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--merge", action="store_true", help="keep the other sections of this machine's earlier results"
    )
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {sorted(unknown)}")
    results: dict[str, object] = {"machine": machine()}
    previous = args.out / f"{results['machine']['name']}.json"  # type: ignore[index]
    if args.merge and previous.exists():
        # Keep the earlier run's other sections; say which ones this run re-measured, when and where.
        current = results["machine"]
        results = json.loads(previous.read_text())
        redone = f"{', '.join(sections)} re-measured {current['date']} at commit {current['commit']}"  # type: ignore[index]
        note = results["machine"].get("note")  # type: ignore[union-attr]
        results["machine"]["note"] = f"{note}; {redone}" if note else redone  # type: ignore[index]
    repeats = 2 if args.quick else 5
    # The CPU serving shape: the service's own tiles per call on the CPU (max_batch auto) x 256 px.
    from service.core.runtime import CPU, serving_batch
    from service.settings import Settings

    settings = Settings(model_path=args.model)
    batch = serving_batch(settings.max_batch, CPU, settings.max_queue_tiles)
    results["machine"]["serving_batch"] = batch  # type: ignore[index]

    from benchmarks import service_bench

    if "engine" in sections:
        sizes = [256] if args.quick else [256, 512, 1024]
        rows = engine.engine_comparison(args.model, args.weights, sizes, [1, 4], repeats)
        results["engine"] = rows
        print(report.table(rows), file=sys.stderr)
        save(args.out, results)
    if "options" in sections:
        results["options"] = engine.session_options_sweep(args.model, 256, batch, repeats)
        save(args.out, results)
    if "roofline" in sections:
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(args.model)).metadata_props}
        # ORT throughput measured in this run: the engine table, else the service-settings row.
        rows = results.get("engine") or results.get("options") or []
        assert isinstance(rows, list) and rows, "roofline needs the engine or options section"
        best = max(float(row.get("ort_mp_s", row.get("mp_s", 0))) for row in rows)
        peak = engine.gemm_gflops()
        results["roofline"] = engine.roofline(float(meta["macs_per_pixel"]), best, peak)
        results["conv_ceiling"] = engine.conv_ceiling(
            [16, 32] if args.quick else [16, 32, 64, 128],
            peak,
            size=64 if args.quick else 256,
            repeats=repeats,
        )
        save(args.out, results)
    if "profile" in sections:
        results["profile"] = engine.op_profile(args.model, batch=batch, runs=1 if args.quick else 3)
        save(args.out, results)
    if "tiling" in sections:
        tiles = [128, 256] if args.quick else [128, 192, 256, 384, 512]
        results["tiling"] = engine.tile_sweep(args.model, tiles, 32, batch, repeats)
        save(args.out, results)
    for name in ("batching", "overhead", "scale", "memory"):
        if name in sections:
            results[name] = getattr(service_bench, name)(args.model, quick=args.quick)
            save(args.out, results)
    if "gpu" in sections:
        from benchmarks import gpu

        results["gpu"] = gpu.run(args.model, quick=args.quick)

    save(args.out, results)
    print(report.markdown(results))
    return 0


def save(out: Path, results: dict[str, object]) -> None:
    """Write what has been measured so far (a long run that fails late keeps its earlier sections)."""
    out.mkdir(parents=True, exist_ok=True)
    name = results["machine"]["name"]  # type: ignore[index]
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(report.markdown(results))


if __name__ == "__main__":
    sys.exit(main())
