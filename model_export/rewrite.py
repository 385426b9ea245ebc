"""Exact graph rewrites that make the CPU graph faster in ONNX Runtime.

`rewrite_for_cpu` runs them in order; each leaves the network's function unchanged (to float rounding)
and leaves alone any node it cannot prove equivalent.

1. Transposed convolutions as sub-pixel phases (`convtranspose_as_phases`). ONNX Runtime's CPU
   ConvTranspose is a GEMM followed by a single-threaded col2im, and the lite model's 53 of them did 42%
   of its MACs at about a quarter of the speed of its regular convolutions. A stride-s transposed
   convolution whose output is exactly s times its input is s*s small regular convolutions over the input
   (one per output phase: for k=3, s=2 a 1x1, a 1x2, a 2x1 and a 2x2, the same MACs, no zeros), whose
   outputs interleave into the result: two Concats over a new axis and a Reshape, which cost a plain copy.
   ONNX Runtime's DepthToSpace or Transpose would do the interleave element by element, 3x slower.
   A PRelu that is the transposed convolution's only consumer moves onto each phase, so it runs right
   after a convolution like every other PRelu (see 2).
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

# Channel counts that stay in ONNX Runtime's NCHWc layout on every x86 CPU (block 8 with AVX2, 16 with
# AVX-512): the depthwise PReLU form pays only there.
NCHWC_CHANNELS = 16


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


def rewrite_for_cpu(graph: onnx.ModelProto) -> dict[str, int]:
    """Every rewrite below, in place, in order; returns how many nodes each rewrote."""
    counts = {"convtranspose_as_phases": convtranspose_as_phases(graph)}
    counts.update(prelu_as_elementwise(graph))
    prune_initializers(graph)
    return counts


def _ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    for attribute in node.attribute:
        if attribute.name == name:
            return list(attribute.ints)
    return default


def _consumers(graph: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _phase_taps(kernel: int, stride: int, pad: int, phase: int) -> list[tuple[int, int]]:
    """(kernel index, input offset) pairs that reach output positions stride*m + phase.

    A transposed convolution writes input i through kernel tap k to output o = stride*i + k - pad, so
    output stride*m + phase gets tap k from input m + (phase + pad - k) / stride when that is whole.
    """
    return [(k, (phase + pad - k) // stride) for k in range(kernel) if (phase + pad - k) % stride == 0]


def convtranspose_as_phases(graph: onnx.ModelProto) -> int:
    """Rewrite, in place, each 2-D ConvTranspose (constant weights, one group, no dilation) whose output is
    exactly `stride` times its input in both dimensions; returns how many."""
    values = constants(graph)
    users = _consumers(graph)
    absorbed: set[str] = set()
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    count = 0
    for node in graph.graph.node:
        if node.output[0] in absorbed:
            continue
        phases = _phase_plan(node, values)
        if phases is None:
            nodes.append(node)
            continue
        after = users.get(node.output[0], [])
        prelu = after[0] if len(after) == 1 and _is_constant_prelu(after[0], values) else None
        result = prelu.output[0] if prelu is not None else node.output[0]
        name = node.name or node.output[0]
        if prelu is not None:
            absorbed.add(prelu.output[0])
            added.append(numpy_helper.from_array(values[prelu.input[1]], f"{name}__slope"))
        bias = [node.input[2]] if len(node.input) > 2 and node.input[2] else []
        rows = []
        for row, row_phases in enumerate(phases):
            columns = []
            for column, (kernel, pads) in enumerate(row_phases):
                phase = f"{name}__phase{row}{column}"
                added.append(numpy_helper.from_array(kernel, f"{phase}_weight"))
                nodes.append(
                    helper.make_node(
                        "Conv",
                        [node.input[0], f"{phase}_weight", *bias],
                        [phase],
                        name=phase,
                        kernel_shape=list(kernel.shape[2:]),
                        pads=pads,
                    )
                )
                if prelu is not None:
                    nodes.append(
                        helper.make_node(
                            "PRelu", [phase, f"{name}__slope"], [f"{phase}_act"], name=f"{phase}_act"
                        )
                    )
                    phase = f"{phase}_act"
                # (N, C, H, W) -> (N, C, H, W, 1): the column phases meet along a new last axis.
                nodes.append(
                    helper.make_node("Unsqueeze", [phase, _AXIS_LAST], [f"{phase}_u"], name=f"{phase}_u")
                )
                columns.append(f"{phase}_u")
            interleaved = f"{name}__row{row}"  # (N, C, H, W, s): row `row` of every output pixel block
            nodes.append(helper.make_node("Concat", columns, [interleaved], name=interleaved, axis=-1))
            nodes.append(
                helper.make_node(
                    "Unsqueeze", [interleaved, _AXIS_3], [f"{interleaved}_u"], name=f"{interleaved}_u"
                )
            )
            rows.append(f"{interleaved}_u")
        blocks = f"{name}__blocks"  # (N, C, H, s, W, s), which is (N, C, s H, s W) in memory
        nodes.append(helper.make_node("Concat", rows, [blocks], name=blocks, axis=3))
        size, strides = f"{name}__size", f"{name}__strides"
        added.append(numpy_helper.from_array(np.array([len(phases), len(phases[0])], np.int64), strides))
        nodes += [
            helper.make_node("Shape", [node.input[0]], [f"{size}_in"], name=f"{size}_in", start=2),
            helper.make_node("Mul", [f"{size}_in", strides], [f"{size}_out"], name=f"{size}_out"),
            helper.make_node("Concat", [_KEEP_NC, f"{size}_out"], [size], name=size, axis=0),
            helper.make_node("Reshape", [blocks, size], [result], name=f"{name}__reshape"),
        ]
        count += 1
    if count:
        added += [
            numpy_helper.from_array(np.array([-1], np.int64), _AXIS_LAST),
            numpy_helper.from_array(np.array([3], np.int64), _AXIS_3),
            numpy_helper.from_array(np.array([0, 0], np.int64), _KEEP_NC),  # Reshape: keep N and C
        ]
        del graph.graph.node[:]
        graph.graph.node.extend(nodes)
        graph.graph.initializer.extend(added)
    return count


_AXIS_LAST, _AXIS_3, _KEEP_NC = "rewrite__axis_last", "rewrite__axis_3", "rewrite__keep_nc"


def _is_constant_prelu(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> bool:
    return node.op_type == "PRelu" and len(node.input) == 2 and node.input[1] in values


def _phase_plan(
    node: onnx.NodeProto, values: dict[str, np.ndarray]
) -> list[list[tuple[np.ndarray, list[int]]]] | None:
    """For a rewritable ConvTranspose: per output row phase, per column phase, the regular Conv weight
    (C_out, C_in, kh, kw) and its pads. None when the node is not one this rewrite can prove equal."""
    if node.op_type != "ConvTranspose" or len(node.input) < 2:
        return None
    weight = values.get(node.input[1])
    if weight is None or weight.ndim != 4 or weight.dtype != np.float32:
        return None
    kernel = list(weight.shape[2:])
    strides = _ints(node, "strides", [1, 1])
    pads = _ints(node, "pads", [0, 0, 0, 0])
    extra = _ints(node, "output_padding", [0, 0])
    attributes = {a.name for a in node.attribute}
    if (
        {"output_shape", "auto_pad"} & attributes
        or _ints(node, "dilations", [1, 1]) != [1, 1]
        or any(a.name == "group" and a.i != 1 for a in node.attribute)
        or len(strides) != 2
        or len(pads) != 4
        or len(extra) != 2
    ):
        return None
    for d in range(2):
        # Output = stride * input exactly, and every phase gets at least one tap.
        if kernel[d] - pads[d] - pads[d + 2] + extra[d] != strides[d] or kernel[d] < strides[d]:
            return None
    forward = weight.transpose(1, 0, 2, 3)  # ConvTranspose (C_in, C_out, ...) -> Conv (C_out, C_in, ...)
    plan = []
    for row in range(strides[0]):
        rows = _phase_taps(kernel[0], strides[0], pads[0], row)
        plan_row = []
        for column in range(strides[1]):
            columns = _phase_taps(kernel[1], strides[1], pads[1], column)
            top, left = min(o for _, o in rows), min(o for _, o in columns)
            bottom, right = max(o for _, o in rows), max(o for _, o in columns)
            phase = np.zeros((*forward.shape[:2], bottom - top + 1, right - left + 1), np.float32)
            for ky, oy in rows:
                for kx, ox in columns:
                    phase[:, :, oy - top, ox - left] = forward[:, :, ky, kx]
            plan_row.append((phase, [-top, -left, bottom, right]))
        plan.append(plan_row)
    return plan


def prelu_as_elementwise(graph: onnx.ModelProto) -> dict[str, int]:
    """Rewrite, in place, each PRelu whose slope is a constant with all values <= 1 (see the module
    docstring for the two forms); returns how many took each form."""
    values = constants(graph)
    producers = {output: node for node in graph.graph.node for output in node.output}
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    counts = {"prelu_depthwise": 0, "prelu_max": 0}
    for node in graph.graph.node:
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
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    graph.graph.initializer.extend(added)
    return counts


def prune_initializers(graph: onnx.ModelProto) -> int:
    """Drop initializers no node reads any more (the rewritten nodes' weights); returns how many."""
    used = {name for node in graph.graph.node for name in node.input}
    used |= {output.name for output in graph.graph.output}
    keep = [init for init in graph.graph.initializer if init.name in used]
    dropped = len(graph.graph.initializer) - len(keep)
    if dropped:
        del graph.graph.initializer[:]
        graph.graph.initializer.extend(keep)
    return dropped
