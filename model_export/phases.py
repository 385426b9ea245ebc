"""Transposed convolutions as sub-pixel phases plus an interleave (model_export.rewrite, rewrite 1).

ONNX Runtime's CPU ConvTranspose is a GEMM followed by a single-threaded col2im, and the lite model's 53
of them did 42% of its MACs at about a quarter of the speed of its regular convolutions. A stride-s
transposed convolution whose output is exactly s times its input is s*s small regular convolutions over
the input (one per output phase: for k=3, s=2 a 1x1, a 1x2, a 2x1 and a 2x2, the same MACs, no zeros),
whose outputs interleave into the result: two Concats over a new axis and a Reshape, which cost a plain
copy. ONNX Runtime's DepthToSpace or Transpose would do the interleave element by element, 3x slower.
A PRelu that is the transposed convolution's only consumer moves onto each phase, so it runs right after
a convolution like every other PRelu. A node this cannot prove equal is left alone, including one whose
phases would need negative pads (asymmetric pads such as k=3, s=2, pads=[2, 2, 0, 0],
output_padding=[1, 1]: the output doubles, but one phase would have to crop its input).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from model_export.onnx_graph import constants, consumers, ints


def _phase_taps(kernel: int, stride: int, pad: int, phase: int) -> list[tuple[int, int]]:
    """(kernel index, input offset) pairs that reach output positions stride*m + phase.

    A transposed convolution writes input i through kernel tap k to output o = stride*i + k - pad, so
    output stride*m + phase gets tap k from input m + (phase + pad - k) / stride when that is whole.
    """
    return [(k, (phase + pad - k) // stride) for k in range(kernel) if (phase + pad - k) % stride == 0]


@dataclass
class _Phases:
    """A rewritten transposed convolution before its interleave: phase tensors [row][column]."""

    name: str  # prefix for the nodes and tensors it adds
    tensors: list[list[str]]  # each (N, C, H, W); the interleave is (N, C, strides[0] H, strides[1] W)
    strides: tuple[int, int]


# A rewritable transposed convolution: per output row phase, per column phase, the regular Conv weight
# (C_out, C_in, kh, kw) and its pads.
_PhasePlan = list[list[tuple[np.ndarray, list[int]]]]
# Result tensor (after an absorbed PRelu) -> (ConvTranspose, its phase plan, the absorbed PRelu or None).
_Plans = dict[str, tuple[onnx.NodeProto, _PhasePlan, onnx.NodeProto | None]]


def convtranspose_as_phases(model: onnx.ModelProto) -> int:
    """Rewrite, in place, each 2-D ConvTranspose (constant weights, one group, no dilation) whose output is
    exactly `stride` times its input in both dimensions; returns how many.

    Where two such outputs are only added together (a + up1(x) + up2(y), as MSPFN fuses scales), their
    phases are added before one interleave instead of interleaving each: interleave(P) + interleave(Q) =
    interleave(P + Q), reassociated from (a + up1) + up2 to a + (up1 + up2).
    """
    values = constants(model)
    users = consumers(model)
    plans = _plan_transposed(model, values, users)
    if not plans:
        return 0
    sums = _sums_of_two(
        model, {result: (len(plan), len(plan[0])) for result, (_, plan, _) in plans.items()}, users
    )
    nodes, added = _rewrite_nodes(model, plans, sums, values)
    added += [
        numpy_helper.from_array(np.array([-1], np.int64), _AXIS_LAST),
        numpy_helper.from_array(np.array([3], np.int64), _AXIS_3),
    ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(added)
    return len(plans)


def _plan_transposed(
    model: onnx.ModelProto, values: dict[str, np.ndarray], users: dict[str, list[onnx.NodeProto]]
) -> _Plans:
    """Every rewritable ConvTranspose, keyed by its result: its own output, or that of the constant PRelu
    that is its only reader (which then moves onto the phases)."""
    plans: _Plans = {}
    for node in model.graph.node:
        plan = _phase_plan(node, values)
        if plan is not None:
            after = users.get(node.output[0], [])
            prelu = after[0] if len(after) == 1 and _is_constant_prelu(after[0], values) else None
            plans[prelu.output[0] if prelu else node.output[0]] = (node, plan, prelu)
    return plans


def _rewrite_nodes(
    model: onnx.ModelProto,
    plans: _Plans,
    sums: dict[str, tuple[onnx.NodeProto, tuple[str, str], str]],
    values: dict[str, np.ndarray],
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The graph's nodes in order with the planned ones replaced, and the initializers they add."""
    absorbed = {prelu.output[0] for _, _, prelu in plans.values() if prelu is not None}
    inner_adds = {inner.output[0] for inner, _, _ in sums.values()}
    deferred = {result for _, pair, _ in sums.values() for result in pair}
    by_node = {node.output[0]: result for result, (node, _, _) in plans.items()}
    done: dict[str, _Phases] = {}
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    for node in model.graph.node:
        output = node.output[0] if node.output else ""
        if output in absorbed or output in inner_adds:
            continue
        if output in by_node:
            result = by_node[output]
            phases = done[result] = _emit_phases(*plans[result], values, nodes, added)
            if result not in deferred:
                _emit_interleave(phases, result, nodes, added)
        elif output in sums:
            _, (first, second), other = sums[output]
            _emit_sum(node, done[first], done[second], other, nodes, added)
        else:
            nodes.append(node)
    return nodes, added


def _emit_sum(
    add: onnx.NodeProto,
    one: _Phases,
    two: _Phases,
    other: str,
    nodes: list[onnx.NodeProto],
    added: list[onnx.TensorProto],
) -> None:
    """`add`'s output = other + interleave(one + two): the two upsampled terms' phases summed first."""
    output = add.output[0]
    total = [
        [f"{output}__phase{row}{column}_sum" for column in range(len(one.tensors[0]))]
        for row in range(len(one.tensors))
    ]
    for row, names in enumerate(total):
        for column, name in enumerate(names):
            pair = [one.tensors[row][column], two.tensors[row][column]]
            nodes.append(helper.make_node("Add", pair, [name], name=name))
    upsampled = f"{output}__upsampled"
    _emit_interleave(_Phases(f"{output}__sum", total, one.strides), upsampled, nodes, added)
    nodes.append(helper.make_node("Add", [other, upsampled], [output], name=add.name or output))


def _sums_of_two(
    model: onnx.ModelProto, strides: Mapping[str, tuple[int, int]], users: dict[str, list[onnx.NodeProto]]
) -> dict[str, tuple[onnx.NodeProto, tuple[str, str], str]]:
    """Adds (a + R1) + R2, in any operand order, where R1 and R2 are rewritten results with the same
    strides, each used only there, and a + R1 is used only there (so it can go). R1 + R2 being added
    means their shapes agree (or broadcast), and so do their phases'.
    Returns the outer Add's output -> (inner Add node, (R1, R2), a)."""
    producers = {output: node for node in model.graph.node for output in node.output}
    used: set[str] = set()
    found: dict[str, tuple[onnx.NodeProto, tuple[str, str], str]] = {}

    def lone(name: str) -> bool:
        return name in strides and name not in used and len(users.get(name, [])) == 1

    for outer in model.graph.node:
        if outer.op_type != "Add" or len(outer.input) != 2:
            continue
        for inner_sum, second in (outer.input, outer.input[::-1]):
            inner = producers.get(inner_sum)
            if inner is None or inner.op_type != "Add" or len(inner.input) != 2 or not lone(second):
                continue
            if len(users.get(inner_sum, [])) != 1:
                continue
            for other, first in (inner.input, inner.input[::-1]):
                if first != second and lone(first) and strides[first] == strides[second]:
                    found[outer.output[0]] = (inner, (first, second), other)
                    used.update((first, second))
                    break
            if outer.output[0] in found:
                break
    return found


def _emit_phases(
    node: onnx.NodeProto,
    plan: _PhasePlan,
    prelu: onnx.NodeProto | None,
    values: dict[str, np.ndarray],
    nodes: list[onnx.NodeProto],
    added: list[onnx.TensorProto],
) -> _Phases:
    """One Conv per output phase (then the absorbed PRelu, if any) over the transposed conv's input."""
    name = node.name or node.output[0]
    if prelu is not None:
        added.append(numpy_helper.from_array(values[prelu.input[1]], f"{name}__slope"))
    bias = [node.input[2]] if len(node.input) > 2 and node.input[2] else []
    tensors: list[list[str]] = []
    for row, row_plan in enumerate(plan):
        tensors.append([])
        for column, (kernel, pads) in enumerate(row_plan):
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
            tensors[-1].append(phase)
    return _Phases(name, tensors, (len(plan), len(plan[0])))


def _emit_interleave(
    phases: _Phases, result: str, nodes: list[onnx.NodeProto], added: list[onnx.TensorProto]
) -> None:
    """Phase tensors (N, C, H, W) -> `result` (N, C, sH, sW): two Concats over new axes and a Reshape,
    each a plain block copy."""
    name, rows = phases.name, []
    for row, tensors in enumerate(phases.tensors):
        columns = []
        for tensor in tensors:  # (N, C, H, W) -> (N, C, H, W, 1): the columns meet along a new last axis
            nodes.append(
                helper.make_node("Unsqueeze", [tensor, _AXIS_LAST], [f"{tensor}_u"], name=f"{tensor}_u")
            )
            columns.append(f"{tensor}_u")
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
    size, scale = f"{name}__size", f"{name}__scale"
    added.append(numpy_helper.from_array(np.array([1, 1, *phases.strides], np.int64), scale))
    nodes += [  # the output shape: a phase's (N, C, H, W) times (1, 1, s, s)
        helper.make_node("Shape", [phases.tensors[0][0]], [f"{size}_phase"], name=f"{size}_phase"),
        helper.make_node("Mul", [f"{size}_phase", scale], [size], name=size),
        helper.make_node("Reshape", [blocks, size], [result], name=f"{name}__reshape"),
    ]


_AXIS_LAST, _AXIS_3 = "rewrite__axis_last", "rewrite__axis_3"


def _is_constant_prelu(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> bool:
    return node.op_type == "PRelu" and len(node.input) == 2 and node.input[1] in values


def _phase_plan(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> _PhasePlan | None:
    """For a rewritable ConvTranspose: per output row phase, per column phase, the regular Conv weight
    (C_out, C_in, kh, kw) and its pads. None when the node is not one this rewrite can prove equal,
    including where a phase would need a negative pad (a Conv cannot crop)."""
    if node.op_type != "ConvTranspose" or len(node.input) < 2:
        return None
    weight = values.get(node.input[1])
    if weight is None or weight.ndim != 4 or weight.dtype != np.float32:
        return None
    kernel = list(weight.shape[2:])
    strides = ints(node, "strides", [1, 1])
    pads = ints(node, "pads", [0, 0, 0, 0])
    extra = ints(node, "output_padding", [0, 0])
    attributes = {a.name for a in node.attribute if not (a.name == "auto_pad" and a.s == b"NOTSET")}
    if (
        {"output_shape", "auto_pad"} & attributes
        or ints(node, "dilations", [1, 1]) != [1, 1]
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
            # The phase reads inputs m + top .. m + bottom for output m: pads (-top, bottom), which must
            # not be negative (e.g. k=3, s=2, pads=[2, 2, 0, 0], output_padding=[1, 1]: top = 1).
            if top > 0 or left > 0 or bottom < 0 or right < 0:
                return None
            phase = np.zeros((*forward.shape[:2], bottom - top + 1, right - left + 1), np.float32)
            for ky, oy in rows:
                for kx, ox in columns:
                    phase[:, :, oy - top, ox - left] = forward[:, :, ky, kx]
            plan_row.append((phase, [-top, -left, bottom, right]))
        plan.append(plan_row)
    return plan
