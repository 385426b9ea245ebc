"""Exact graph rewrites that make the CPU graph faster in ONNX Runtime.

`rewrite_for_cpu` runs them in order; each leaves the network's function unchanged (to float rounding)
and leaves alone any node it cannot prove equivalent.

1. Transposed convolutions as sub-pixel phases (`convtranspose_as_phases`, in model_export/phases.py,
   which says why): s*s small regular convolutions and an interleave instead of ONNX Runtime's CPU
   ConvTranspose (a GEMM plus a single-threaded col2im). Only nodes whose output is exactly stride x
   their input and whose phases need no negative pads are rewritten.
2. PRelu (`prelu_as_elementwise`). ONNX Runtime's per-channel PRelu runs ~13x slower than a Mul over the
   same tensor. Where every slope a is at most 1, PRelu(x) = x + relu(-(1 - a) x) (for x >= 0 the relu
   term is 0; for x < 0 it is -(1 - a) x, so the sum is a x). When x comes from a Conv and has a
   multiple of 16 channels, that is a depthwise 1x1 Conv with a fused Relu and an Add, all of which
   ONNX Runtime keeps in its blocked NCHWc layout next to the Conv (no layout reorders around the PRelu);
   elsewhere it is Max(x, a x), bit for bit the same numbers.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from model_export.onnx_graph import constants
from model_export.phases import convtranspose_as_phases

__all__ = [
    "constants",
    "convtranspose_as_phases",
    "prelu_as_elementwise",
    "prune_initializers",
    "rewrite_for_cpu",
]

# Channel counts that stay in ONNX Runtime's NCHWc layout on every x86 CPU (block 8 with AVX2, 16 with
# AVX-512): the depthwise PReLU form pays only there.
NCHWC_CHANNELS = 16


def rewrite_for_cpu(model: onnx.ModelProto, transposed: bool = True, prelu: bool = True) -> dict[str, int]:
    """The rewrites below, in place, in order (all by default; the flags leave one out, for ablations);
    returns how many nodes each rewrote."""
    counts = {"convtranspose_as_phases": convtranspose_as_phases(model)} if transposed else {}
    if prelu:
        counts.update(prelu_as_elementwise(model))
    prune_initializers(model)
    return counts


def prelu_as_elementwise(model: onnx.ModelProto) -> dict[str, int]:
    """Rewrite, in place, each PRelu whose slope is a constant with all values <= 1 (see the module
    docstring for the two forms); returns how many took each form."""
    values = constants(model)
    producers = {output: node for node in model.graph.node for output in node.output}
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    counts = {"prelu_depthwise": 0, "prelu_max": 0}
    for node in model.graph.node:
        slope = values.get(node.input[1]) if node.op_type == "PRelu" and len(node.input) == 2 else None
        if slope is None or slope.size == 0 or float(slope.max()) > 1.0:
            nodes.append(node)
            continue
        x, (y,) = node.input[0], node.output
        base = node.name or y
        producer = producers.get(x)
        channels = slope.size
        if (
            producer is not None
            and producer.op_type == "Conv"
            and slope.shape in ((channels, 1, 1), (1, channels, 1, 1))
            and channels % NCHWC_CHANNELS == 0
        ):
            weight = f"{y}__negative_weight"
            added.append(
                numpy_helper.from_array((-(1 - slope.astype(np.float32))).reshape(channels, 1, 1, 1), weight)
            )
            nodes += [
                helper.make_node(
                    "Conv",
                    [x, weight],
                    [f"{y}__negative"],
                    name=f"{base}__dw",
                    kernel_shape=[1, 1],
                    group=channels,
                ),
                helper.make_node("Relu", [f"{y}__negative"], [f"{y}__relu"], name=f"{base}__relu"),
                helper.make_node("Add", [x, f"{y}__relu"], [y], name=f"{base}__add"),
            ]
            counts["prelu_depthwise"] += 1
        else:
            scaled = f"{y}__scaled"
            nodes.append(helper.make_node("Mul", [x, node.input[1]], [scaled], name=f"{base}__mul"))
            nodes.append(helper.make_node("Max", [x, scaled], [y], name=f"{base}__max"))
            counts["prelu_max"] += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(added)
    return counts


def prune_initializers(model: onnx.ModelProto) -> int:
    """Drop initializers no node reads any more (the rewritten nodes' weights); returns how many."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {output.name for output in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    dropped = len(model.graph.initializer) - len(keep)
    if dropped:
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return dropped
