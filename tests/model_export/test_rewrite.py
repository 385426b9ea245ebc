"""The CPU graph's exact rewrites (model_export.rewrite): same outputs as the original nodes in ONNX
Runtime, and nodes they cannot prove equal left alone."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_export.rewrite import convtranspose_as_phases, prelu_as_elementwise, rewrite_for_cpu

RNG = np.random.default_rng(0)


def model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], channels: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)],
        [numpy_helper.from_array(value, name) for name, value in inits.items()],
    )
    result = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result.ir_version = 8
    return result


def run(graph: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    onnx.checker.check_model(graph)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def convtranspose(
    cin: int, cout: int, kernel: int, stride: int, pad: int | list[int], extra: int | list[int], **attrs
) -> onnx.NodeProto:
    """pad / extra: one value for every side, or ONNX's pads [top, left, bottom, right] and
    output_padding [rows, columns]."""
    return helper.make_node(
        "ConvTranspose",
        ["x", "w", *(["b"] if attrs.pop("bias", False) else [])],
        ["y"],
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=[pad] * 4 if isinstance(pad, int) else pad,
        output_padding=[extra] * 2 if isinstance(extra, int) else extra,
        **attrs,
    )


@pytest.mark.parametrize(
    ("kernel", "stride", "pad", "extra", "bias", "phases"),
    [
        (3, 2, 1, 1, False, 4),  # MSPFN's Up: 1x1, 1x2, 2x1 and 2x2 phases
        (4, 2, 1, 0, True, 4),  # the common 4x4 / 2 upsampler, with a bias
        (2, 2, 0, 0, False, 4),  # no overlap
        (3, 3, 0, 0, False, 9),  # stride 3
        (3, 1, 1, 0, True, 1),  # stride 1: one phase, a plain (flipped) convolution
    ],
)
def test_transposed_convolution_becomes_equal_phases(kernel, stride, pad, extra, bias, phases) -> None:
    cin, cout = 5, 6
    inits = {"w": RNG.standard_normal((cin, cout, kernel, kernel)).astype(np.float32)}
    if bias:
        inits["b"] = RNG.standard_normal(cout).astype(np.float32)
    original = model([convtranspose(cin, cout, kernel, stride, pad, extra, bias=bias)], inits, cin)
    rewritten = model([convtranspose(cin, cout, kernel, stride, pad, extra, bias=bias)], inits, cin)
    assert convtranspose_as_phases(rewritten) == 1
    ops = [node.op_type for node in rewritten.graph.node]
    assert "ConvTranspose" not in ops and ops.count("Conv") == phases
    x = RNG.standard_normal((2, cin, 7, 9)).astype(np.float32)  # odd sizes, batch 2
    expected, actual = run(original, x), run(rewritten, x)
    assert actual.shape == expected.shape == (2, cout, 7 * stride, 9 * stride)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kernel", "stride", "pads", "extra"),
    [
        (3, 2, [1, 1, 0, 0], [0, 0]),  # more padding at the start than at the end
        (3, 2, [0, 0, 1, 1], [0, 0]),  # more at the end
        (3, 2, [1, 0, 0, 1], [0, 0]),  # rows and columns padded differently
        (4, 2, [2, 2, 1, 1], [1, 1]),  # asymmetric, with output_padding
        (4, 2, [1, 2, 2, 1], [1, 1]),
        (5, 2, [3, 3, 1, 1], [1, 1]),
    ],
)
def test_asymmetric_pads_and_output_padding_match_onnx_runtimes_convtranspose(
    kernel, stride, pads, extra
) -> None:
    cin, cout = 3, 4
    inits = {
        "w": RNG.standard_normal((cin, cout, kernel, kernel)).astype(np.float32),
        "b": RNG.standard_normal(cout).astype(np.float32),
    }
    original = model([convtranspose(cin, cout, kernel, stride, pads, extra, bias=True)], inits, cin)
    rewritten = copy.deepcopy(original)
    assert convtranspose_as_phases(rewritten) == 1
    assert "ConvTranspose" not in [node.op_type for node in rewritten.graph.node]
    pads_used = [list(a.ints) for node in rewritten.graph.node for a in node.attribute if a.name == "pads"]
    assert pads_used and min(min(p) for p in pads_used) >= 0
    x = RNG.standard_normal((2, cin, 5, 7)).astype(np.float32)
    expected, actual = run(original, x), run(rewritten, x)  # ONNX Runtime's own ConvTranspose vs phases
    assert expected.shape == actual.shape == (2, cout, 5 * stride, 7 * stride)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_a_transposed_convolution_whose_phases_would_need_negative_pads_is_left_alone() -> None:
    """k=3, s=2, pads=[2, 2, 0, 0], output_padding=[1, 1] doubles its input, but output 2m + 1 reads only
    input m + 1: its phase would be a Conv with pad -1, which ONNX Runtime refuses."""
    inits = {"w": RNG.standard_normal((3, 4, 3, 3)).astype(np.float32)}
    graph = model([convtranspose(3, 4, 3, 2, [2, 2, 0, 0], [1, 1])], inits, 3)
    original = copy.deepcopy(graph)
    assert convtranspose_as_phases(graph) == 0
    assert rewrite_for_cpu(graph) == {"convtranspose_as_phases": 0, "prelu_depthwise": 0, "prelu_max": 0}
    assert graph == original
    x = RNG.standard_normal((1, 3, 5, 6)).astype(np.float32)
    assert run(graph, x).shape == (1, 4, 10, 12)  # it does double: only the pads rule it out


@pytest.mark.slow  # a fresh interpreter
def test_the_rewrite_imports_without_torch() -> None:
    """The service image and the CPU graph's rewrite have no torch: importing it must not need it."""
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "import model_export.rewrite, model_export\n"
        "print(model_export.rewrite.rewrite_for_cpu.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "rewrite_for_cpu"


def test_a_prelu_after_the_transposed_convolution_moves_onto_the_phases() -> None:
    cin, cout = 4, 16
    inits = {
        "w": RNG.standard_normal((cin, cout, 3, 3)).astype(np.float32),
        "a": RNG.uniform(-0.5, 1.0, (cout, 1, 1)).astype(np.float32),
    }
    up = convtranspose(cin, cout, 3, 2, 1, 1)
    up.output[0] = "t"
    nodes = [up, helper.make_node("PRelu", ["t", "a"], ["y"])]
    original, rewritten = model(nodes, inits, cin), model(nodes, inits, cin)
    counts = rewrite_for_cpu(rewritten)
    assert counts == {"convtranspose_as_phases": 1, "prelu_depthwise": 4, "prelu_max": 0}
    ops = [node.op_type for node in rewritten.graph.node]
    assert "PRelu" not in ops and "ConvTranspose" not in ops
    assert {init.name for init in rewritten.graph.initializer}.isdisjoint({"w", "a"})  # pruned
    x = RNG.standard_normal((1, cin, 6, 5)).astype(np.float32)
    expected = run(original, x)
    assert expected.min() < 0 < expected.max()
    np.testing.assert_allclose(run(rewritten, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("attrs", "extra"),
    [
        ({"group": 2}, 1),  # grouped
        ({"dilations": [2, 2]}, 1),  # dilated
        ({}, 0),  # output 2H - 1: the phases would differ in size
    ],
)
def test_transposed_convolutions_it_cannot_prove_equal_are_left_alone(attrs, extra) -> None:
    cin = 4
    w = RNG.standard_normal((cin, 4 // attrs.get("group", 1), 3, 3)).astype(np.float32)
    graph = model([convtranspose(cin, 4, 3, 2, 1, extra, **attrs)], {"w": w}, cin)
    assert convtranspose_as_phases(graph) == 0
    assert [node.op_type for node in graph.graph.node] == ["ConvTranspose"]


def conv_prelu(channels: int, slope: np.ndarray) -> onnx.ModelProto:
    weight = RNG.standard_normal((channels, channels, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c", "a"], ["y"], name="p"),
    ]
    return model(nodes, {"k": weight, "a": slope}, channels)


def test_prelu_after_a_wide_conv_becomes_depthwise_relu_add() -> None:
    slope = np.linspace(-0.5, 1.0, 16, dtype=np.float32).reshape(16, 1, 1)
    original = conv_prelu(16, slope)
    rewritten = copy.deepcopy(original)
    assert prelu_as_elementwise(rewritten) == {"prelu_depthwise": 1, "prelu_max": 0}
    assert [node.op_type for node in rewritten.graph.node] == ["Conv", "Conv", "Relu", "Add"]
    x = RNG.standard_normal((2, 16, 9, 7)).astype(np.float32)
    expected = run(original, x)
    np.testing.assert_allclose(run(rewritten, x), expected, rtol=1e-6, atol=1e-6)
    assert (expected[:, 10] < 0).any()  # negative inputs went through slope 0.5


def test_prelu_elsewhere_becomes_max_bit_for_bit() -> None:
    slope = np.array([-0.4, 0.0, 0.25, 1.0], np.float32).reshape(4, 1, 1)
    original = conv_prelu(4, slope)  # 4 channels: no NCHWc layout
    rewritten = copy.deepcopy(original)
    assert prelu_as_elementwise(rewritten) == {"prelu_depthwise": 0, "prelu_max": 1}
    assert [node.op_type for node in rewritten.graph.node] == ["Conv", "Mul", "Max"]
    x = RNG.standard_normal((2, 4, 5, 7)).astype(np.float32)
    expected = run(original, x)
    np.testing.assert_array_equal(run(rewritten, x), expected)
    assert expected[:, 2].min() < 0 < expected[:, 2].max()


def test_prelu_with_a_slope_above_one_is_left_alone() -> None:
    graph = conv_prelu(16, np.full((16, 1, 1), 1.5, np.float32))
    assert prelu_as_elementwise(graph) == {"prelu_depthwise": 0, "prelu_max": 0}
    assert [node.op_type for node in graph.graph.node] == ["Conv", "PRelu"]


def two_upsamplers(extra_use: bool) -> onnx.ModelProto:
    """y = (x + up1(x)) + up2(x): MSPFN's a + up(v) + up(x2), with both ups followed by a PReLU."""
    cin, cout = 16, 16
    nodes, inits = [], {}
    for index in (1, 2):
        inits[f"w{index}"] = RNG.standard_normal((cin, cout, 3, 3)).astype(np.float32)
        inits[f"a{index}"] = RNG.uniform(0, 0.5, (cout, 1, 1)).astype(np.float32)
        up = convtranspose(cin, cout, 3, 2, 1, 1)
        up.input[1], up.output[0] = f"w{index}", f"t{index}"
        nodes += [up, helper.make_node("PRelu", [f"t{index}", f"a{index}"], [f"u{index}"])]
    inits["s"] = np.array([1, 1, 2, 2], np.float32)
    nodes += [
        helper.make_node("Resize", ["x", "", "s"], ["big"], mode="nearest"),
        helper.make_node("Add", ["big", "u1"], ["partial"]),
        helper.make_node("Add", ["partial", "u2"], ["sum" if extra_use else "y"]),
    ]
    if extra_use:  # u1 is also used on its own: its interleave must stay
        nodes.append(helper.make_node("Sub", ["sum", "u1"], ["y"]))
    return model(nodes, inits, cin)


@pytest.mark.parametrize(("extra_use", "interleaves"), [(False, 1), (True, 2)])
def test_two_upsampled_terms_share_one_interleave(extra_use: bool, interleaves: int) -> None:
    original = two_upsamplers(extra_use)
    rewritten = copy.deepcopy(original)
    assert rewrite_for_cpu(rewritten)["convtranspose_as_phases"] == 2
    assert [node.op_type for node in rewritten.graph.node].count("Reshape") == interleaves
    x = RNG.standard_normal((2, 16, 5, 6)).astype(np.float32)
    expected = run(original, x)
    assert expected.shape == (2, 16, 10, 12)
    np.testing.assert_allclose(run(rewritten, x), expected, rtol=1e-5, atol=1e-5)


def test_a_graph_output_is_never_absorbed() -> None:
    """The transposed convolution's raw output is also a graph output: its PRelu must not move onto the
    phases (that would drop the raw output)."""
    cin, cout = 4, 16
    inits = {
        "w": RNG.standard_normal((cin, cout, 3, 3)).astype(np.float32),
        "a": np.full((cout, 1, 1), 0.25, np.float32),
    }
    up = convtranspose(cin, cout, 3, 2, 1, 1)
    up.output[0] = "t"
    graph = model([up, helper.make_node("PRelu", ["t", "a"], ["y"])], inits, cin)
    graph.graph.output.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, [None] * 4))
    original = copy.deepcopy(graph)
    assert rewrite_for_cpu(graph)["convtranspose_as_phases"] == 1
    x = RNG.standard_normal((1, cin, 5, 6)).astype(np.float32)
    names = ["y", "t"]
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    for actual, expected in zip(session.run(names, {"x": x}), reference.run(names, {"x": x}), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_an_explicit_auto_pad_notset_is_rewritten() -> None:
    """ONNX Runtime writes auto_pad="NOTSET" into the graphs it saves; it means the explicit pads."""
    inits = {"w": RNG.standard_normal((4, 4, 3, 3)).astype(np.float32)}
    original = model([convtranspose(4, 4, 3, 2, 1, 1, auto_pad="NOTSET")], inits, 4)
    rewritten = copy.deepcopy(original)
    assert convtranspose_as_phases(rewritten) == 1
    x = RNG.standard_normal((1, 4, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(run(rewritten, x), run(original, x), rtol=1e-5, atol=1e-5)
