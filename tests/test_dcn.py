"""Modulated deformable convolution (DCNv2): gather formulation == a plain loop reference.

The reference below is written directly from torchvision.ops.deform_conv2d's CPU kernel
(bilinear_interpolate of deform_conv2d_kernel.cpp): offsets [N, 2*K, Ho, Wo] hold (dy, dx)
per kernel tap in row-major tap order; a sample at (y, x) with y <= -1, y >= H, x <= -1 or
x >= W is 0; otherwise each of the four bilinear corners reads 0 when it lies outside the map.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featherface.model.dcn import DeformableConv2d, deform_conv2d


def bilinear_zero_outside(plane: np.ndarray, y: float, x: float) -> np.ndarray:
    """Sample [C, H, W] at (y, x): torchvision's bilinear_interpolate, for every channel."""
    _, height, width = plane.shape
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return np.zeros(plane.shape[0])
    y_low, x_low = math.floor(y), math.floor(x)
    y_high, x_high = y_low + 1, x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx

    def at(yy: int, xx: int) -> np.ndarray:
        if 0 <= yy < height and 0 <= xx < width:
            return plane[:, yy, xx]
        return np.zeros(plane.shape[0])

    return (
        hy * hx * at(y_low, x_low)
        + hy * lx * at(y_low, x_high)
        + ly * hx * at(y_high, x_low)
        + ly * lx * at(y_high, x_high)
    )


def reference_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation) -> np.ndarray:
    """Loop-by-loop modulated DCNv2 in float64."""
    x, offset, mask, weight = (np.asarray(a, dtype=np.float64) for a in (x, offset, mask, weight))
    n_batch, _, _, _ = x.shape
    c_out, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[2:]
    out = np.zeros((n_batch, c_out, out_h, out_w))
    for n in range(n_batch):
        for ho in range(out_h):
            for wo in range(out_w):
                acc = np.zeros(c_out)
                for i in range(kh):
                    for j in range(kw):
                        tap = i * kw + j
                        dy = offset[n, 2 * tap, ho, wo]
                        dx = offset[n, 2 * tap + 1, ho, wo]
                        y = ho * stride - padding + i * dilation + dy
                        xx = wo * stride - padding + j * dilation + dx
                        value = bilinear_zero_outside(x[n], y, xx) * mask[n, tap, ho, wo]  # [C]
                        acc += weight[:, :, i, j] @ value
                if bias is not None:
                    acc += np.asarray(bias, dtype=np.float64)
                out[n, :, ho, wo] = acc
    return out


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def random_case(seed: int, height: int, width: int, stride: int, dilation: int, with_bias: bool,
                c_in: int = 3, c_out: int = 4, kernel: int = 3, offset_scale: float = 4.0):
    """Random DCN inputs whose offsets push many samples outside the map, some exactly
    onto integer positions and onto the -1 / H borders."""
    g = torch.Generator().manual_seed(seed)
    padding = dilation * (kernel // 2)
    out_h = output_size(height, kernel, stride, padding, dilation)
    out_w = output_size(width, kernel, stride, padding, dilation)
    taps = kernel * kernel
    x = torch.randn(2, c_in, height, width, generator=g)
    offset = torch.randn(2, 2 * taps, out_h, out_w, generator=g) * offset_scale
    # A quarter of the offsets integer-valued: samples that land exactly on pixels and
    # on the y == -1, y == H (x alike) borders where torchvision's rules switch.
    integral = torch.rand(offset.shape, generator=g) < 0.25
    offset = torch.where(integral, torch.round(offset), offset)
    mask = torch.rand(2, taps, out_h, out_w, generator=g) * 2.0
    weight = torch.randn(c_out, c_in, kernel, kernel, generator=g)
    bias = torch.randn(c_out, generator=g) if with_bias else None
    return x, offset, mask, weight, bias, padding


@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
def test_deform_conv2d_matches_loop_reference_with_samples_outside_the_map(stride, dilation, with_bias):
    height, width = 7, 9  # odd, non-square
    x, offset, mask, weight, bias, padding = random_case(
        100 * stride + 10 * dilation + with_bias, height, width, stride, dilation, with_bias
    )
    # The case really exercises the outside-the-map rule.
    rows = torch.arange(offset.shape[2]).reshape(1, 1, -1, 1) * stride - padding
    sample_y = offset[:, 0::2] + rows
    assert (sample_y <= -1).any() and (sample_y >= height).any()

    got = deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
    expected = reference_deform_conv2d(
        x.numpy(), offset.numpy(), mask.numpy(), weight.numpy(),
        None if bias is None else bias.numpy(), stride, padding, dilation,
    )
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", [1, 5])
def test_deform_conv2d_matches_loop_reference_for_other_kernel_sizes(kernel):
    x, offset, mask, weight, bias, padding = random_case(40 + kernel, 6, 7, 1, 1, True, kernel=kernel)
    got = deform_conv2d(x, offset, mask, weight, bias, 1, padding, 1)
    expected = reference_deform_conv2d(
        x.numpy(), offset.numpy(), mask.numpy(), weight.numpy(), bias.numpy(), 1, padding, 1
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_deform_conv2d_is_exact_in_float64():
    """With float64 inputs the gather formulation equals the reference to rounding."""
    x, offset, mask, weight, bias, padding = random_case(77, 7, 9, 2, 1, True)
    x, offset, mask, weight, bias = (t.double() for t in (x, offset, mask, weight, bias))
    got = deform_conv2d(x, offset, mask, weight, bias, 2, padding, 1)
    assert got.dtype == torch.float64
    expected = reference_deform_conv2d(
        x.numpy(), offset.numpy(), mask.numpy(), weight.numpy(), bias.numpy(), 2, padding, 1
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_deform_conv2d_reads_zero_exactly_at_and_beyond_the_borders():
    """Every tap pushed to y = -1, y = H, x = -1 or x = W (or further) reads 0."""
    x = torch.randn(1, 2, 5, 6) + 10.0
    weight = torch.ones(1, 2, 3, 3)
    mask = torch.ones(1, 9, 5, 6)
    for dy, dx in ((-100.0, 0.0), (100.0, 0.0), (0.0, -100.0), (0.0, 100.0)):
        offset = torch.zeros(1, 18, 5, 6)
        offset[:, 0::2] = dy
        offset[:, 1::2] = dx
        out = deform_conv2d(x, offset, mask, weight, None, 1, 1, 1)
        assert torch.equal(out, torch.zeros_like(out))
    # Exactly onto y = -1 for the centre tap of output row 0: weight of row 0 is 0.
    offset = torch.zeros(1, 18, 5, 6)
    offset[:, 8, 0, :] = -1.0  # tap 4 (centre) dy
    only_centre = torch.zeros(1, 2, 3, 3)
    only_centre[:, :, 1, 1] = 1.0
    out = deform_conv2d(x, offset, mask, only_centre, None, 1, 1, 1)
    assert torch.equal(out[0, 0, 0], torch.zeros(6))


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 2, 2), (1, 0, 1)])
def test_zero_offsets_and_unit_mask_equal_plain_convolution(stride, padding, dilation):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 11, 8, generator=g)
    weight = torch.randn(6, 5, 3, 3, generator=g)
    bias = torch.randn(6, generator=g)
    expected = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    out_h, out_w = expected.shape[2:]
    offset = torch.zeros(2, 18, out_h, out_w)
    mask = torch.ones(2, 9, out_h, out_w)
    got = deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_fresh_deformable_conv_module_is_twice_its_regular_conv():
    """Zero-initialised offset/modulator convs: offsets 0 and mask 2 * sigmoid(0) = 1."""
    torch.manual_seed(0)
    module = DeformableConv2d(4, 6, stride=2, bias=True).eval()
    x = torch.randn(2, 4, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(module(x), module.regular_conv(x), rtol=1e-5, atol=1e-5)


def randomised_dcn_module(seed: int = 0) -> DeformableConv2d:
    """A DCN whose offsets and mask really vary (the module zero-initialises them)."""
    torch.manual_seed(seed)
    module = DeformableConv2d(4, 8, kernel_size=3, stride=1, padding=1, bias=True)
    with torch.no_grad():
        module.offset_conv.weight.normal_(0.0, 0.5)
        module.offset_conv.bias.normal_(0.0, 2.0)
        module.modulator_conv.weight.normal_(0.0, 0.5)
        module.modulator_conv.bias.normal_(0.0, 0.5)
    return module.eval()


def test_deformable_conv_module_exports_to_standard_onnx_and_matches_onnxruntime(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    module = randomised_dcn_module()
    path = tmp_path / "dcn.onnx"
    with torch.no_grad():
        torch.onnx.export(
            module, (torch.randn(1, 4, 13, 11),), str(path), dynamo=False, opset_version=17,
            input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    op_types = {node.op_type for node in graph.graph.node}
    domains = {node.domain for node in graph.graph.node}
    assert "DeformConv" not in op_types
    assert domains <= {"", "ai.onnx"}, f"non-standard op domains {domains}"
    assert {imp.domain for imp in graph.opset_import} <= {"", "ai.onnx"}

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 2):
        x = torch.randn(batch, 4, 13, 11, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = module(x).numpy()
        (got,) = session.run(None, {"x": x.numpy()})
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_gradients_flow_to_input_offsets_mask_and_weights():
    x, offset, mask, weight, bias, padding = random_case(3, 7, 9, 1, 1, True, offset_scale=1.0)
    for t in (x, offset, mask, weight, bias):
        t.requires_grad_(True)
    out = deform_conv2d(x, offset, mask, weight, bias, 1, padding, 1)
    (out * torch.randn_like(out)).sum().backward()
    for name, t in (("input", x), ("offset", offset), ("mask", mask), ("weight", weight), ("bias", bias)):
        assert t.grad is not None, name
        assert torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name


def test_module_gradients_reach_offset_and_modulator_convs():
    module = randomised_dcn_module(1).train()
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    module(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, param in module.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_full_int8_keeps_only_the_sampling_positions_float():
    """sampling_ops on the op graph onnx2tf makes of one DCN: the offsets, floors, clamps,
    casts and index arithmetic up to the gather's indices, and the fractions, stay float;
    the projection, the gather, the corner weights and the weighted sum are INT8."""
    from featherface.quantization.graph import Graph, Op, sampling_ops

    points, taps, c_out = 6400, 9, 14
    tables = (points, taps)
    ops: list[Op] = []
    positions: set[int] = set()

    def op(kind: str, shape: tuple[int, ...], *inputs: int, position: bool = False) -> int:
        tensor = 100 + len(ops)
        ops.append(Op(len(ops), kind, f"t{tensor}", shape, inputs, (tensor,)))
        if position:
            positions.add(len(ops) - 1)
        return tensor

    image = 1  # the graph input
    offsets = op("CONV_2D", (1, 80, 80, 2 * taps), image)
    modulation = op("RESHAPE", tables, op("LOGISTIC", (1, 80, 80, taps), op("CONV_2D", (1, 80, 80, taps), image)))
    projected = op("PAD", (1, 84, 84, taps * c_out), op("CONV_2D", (1, 80, 80, taps * c_out), image))
    table = op("RESHAPE", (84 * 84 * taps, c_out), projected)
    offset_yx = op("RESHAPE", (points, 2 * taps), offsets, position=True)
    pos_y = op("ADD", tables, op("STRIDED_SLICE", tables, offset_yx, position=True), position=True)
    floor_y = op("FLOOR", tables, pos_y, position=True)
    frac_y = op("SUB", tables, pos_y, floor_y, position=True)
    clamped = op("MAXIMUM", tables, op("MINIMUM", tables, floor_y, position=True), position=True)
    row = op("CAST", tables, op("ADD", tables, clamped, position=True), position=True)
    top_left = op("ADD", tables, op("MUL", tables, row, position=True), position=True)
    index = op("CONCATENATION", (points, 4 * taps), top_left, position=True)
    weights = op("CONCATENATION", (points, 4 * taps), op("MUL", tables, modulation, op("SUB", tables, frac_y)))
    gathered = op("GATHER", (points, 4 * taps, c_out), table, index)
    weighted = op("MUL", (points, 4 * taps, c_out), gathered, op("RESHAPE", (points, 4 * taps, 1), weights))
    op("SUM", (points, c_out), weighted)

    assert {o.index for o in sampling_ops(Graph(ops, 640, ()))} == positions


def test_a_network_without_gathers_has_no_sampling_ops():
    from featherface.quantization.graph import Graph, Op, sampling_ops

    mlp = [Op(0, "FULLY_CONNECTED", "fc", (1, 8), (1,), (2,)), Op(1, "FLOOR", "floor", (1, 8), (2,), (3,))]
    assert sampling_ops(Graph(mlp, 640, ())) == []
