"""Reading an ONNX graph for the rewrites: known values, readers of each tensor, integer attributes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Values known before run time: initializers, Constant nodes, and Identity nodes of either.

    (The PyTorch exporter deduplicates equal weights into one initializer plus Identity nodes.)
    """
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
        elif node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    for attribute in node.attribute:
        if attribute.name == name:
            return list(attribute.ints)
    return default


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor -> the nodes that read it; a graph output counts as one more reader (an Identity stand-in),
    so no rewrite takes a graph output for a tensor only one node uses."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    for output in model.graph.output:
        users.setdefault(output.name, []).append(helper.make_node("Identity", [output.name], []))
    return users
