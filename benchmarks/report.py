"""Markdown tables from a results dict (docs/performance.md quotes the output)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def table(rows: Sequence[Mapping[str, object]]) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(key for row in rows for key in row))  # rows may differ (errors)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results: Mapping[str, object]) -> str:
    machine = results["machine"]
    assert isinstance(machine, Mapping)
    note = f" Note: {machine['note']}." if machine.get("note") else ""
    where = f"{machine['cpu']}, {machine['cores']} cores; {machine['date']}; commit {machine['commit']}."
    parts = [f"Machine: {where}{note}"]
    batch = machine.get(
        "serving_batch", 4
    )  # tiles per call on the CPU in that run (4 before it was recorded)
    shape = f"{batch} x 256x256"
    titles = {
        "engine": "Engine: ONNX Runtime vs PyTorch eager (speedup = torch time / ORT time)",
        "roofline": "Roofline: achieved GFLOP/s (2 x MACs x pixels/s) vs measured SGEMM peak",
        "conv_ceiling": "Ceiling: plain 3x3 conv stacks (bias + ReLU fused) by channel width, 4 x 256x256, "
        "vs the same SGEMM peak",
        "profile": f"Where ONNX Runtime's time goes ({shape}, ORT profiler): share of kernel time "
        "by operator",
        "options": f"ONNX Runtime CPU settings at the serving shape ({shape})",
        "tiling": f"Tile sweep (batch {batch}, overlap 32): engine MP/s, overlap inflation for a 12 MP photo",
        "batching": "Batching through HTTP (one-tile 256x256 requests)",
        "overhead": "HTTP end-to-end vs engine time for the same tiles (scale=1, fixed tiles)",
        "scale": "Working scale at the defaults: HTTP end-to-end vs the model on the whole image; "
        "12 MP at the default vs scale=1",
        "memory": "Service memory (RSS)",
        "gpu": "GPU",
    }
    for key, title in titles.items():
        value = results.get(key)
        if value is None:
            continue
        if key == "gpu" and isinstance(value, Mapping) and "rows" in value:
            about = ", ".join(f"{k} {v}" for k, v in value.items() if k != "rows")
            parts.append(f"### {title} ({about})\n\n{table(value['rows'])}")
            continue
        rows = value if isinstance(value, list) else [value]
        parts.append(f"### {title}\n\n{table(rows)}")
    return "\n\n".join(parts) + "\n"
