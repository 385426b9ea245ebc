"""Exact graph rewrites that make the CPU graph faster in ONNX Runtime.

ONNX Runtime's CPU PRelu with a per-channel slope runs about 13x slower than a plain Relu or Mul over the
same tensor (measured on 4 x 32 x 256 x 256: 16.6 ms against 1.3 ms, 2 threads), and the lite model has
98 of them. Where every slope of a PRelu is at most 1, PRelu(x, a) equals Max(x, a * x) exactly (for
x >= 0, x >= a x; for x < 0, a x >= x), and Mul + Max together cost a fifth of the PRelu.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def constants(graph: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Values known before run time: initializers, Constant nodes, and Identity nodes of either.

    (The PyTorch exporter deduplicates equal weights into one initializer plus Identity nodes.)
    """
    values = {init.name: numpy_helper.to_array(init) for init in graph.graph.initializer}
    for node in graph.graph.node:
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
        elif node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def prelu_as_max(graph: onnx.ModelProto) -> int:
    """Rewrite, in place, each PRelu whose slope is an initializer with all values <= 1; returns how many."""
    slopes = constants(graph)
    rewritten: list[onnx.NodeProto] = []
    count = 0
    for node in graph.graph.node:
        slope = slopes.get(node.input[1]) if node.op_type == "PRelu" and len(node.input) == 2 else None
        if slope is None or slope.size == 0 or float(slope.max()) > 1.0:
            rewritten.append(node)
            continue
        x, (y,) = node.input[0], node.output
        scaled = f"{y}__scaled"
        rewritten.append(helper.make_node("Mul", [x, node.input[1]], [scaled], name=f"{node.name}__mul"))
        rewritten.append(helper.make_node("Max", [x, scaled], [y], name=f"{node.name}__max"))
        count += 1
    del graph.graph.node[:]
    graph.graph.node.extend(rewritten)
    return count
