"""The saved Core ML packages compute what PyTorch computes, checked on Linux by
evaluating their MIL ops with NumPy (featherface.converters.mil_eval)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import require_shared

ct = pytest.importorskip("coremltools")

from featherface.converters.mil_eval import OPS, load_mil_program, run_mlpackage  # noqa: E402
from featherface.model.dcn import DeformableConv2d  # noqa: E402
from featherface.model.registry import create_model  # noqa: E402

H = W = 128
HEADS = ("loc", "conf", "landmarks")
MEAN_BGR = (104.0, 117.0, 123.0)


def _convert(module_or_trace, example: torch.Tensor, precision: str, *, inputs=None, outputs=HEADS,
             target=None):
    traced = module_or_trace
    if not isinstance(traced, torch.jit.ScriptModule):
        traced = torch.jit.trace(module_or_trace.eval(), example, check_trace=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ct.convert(
            traced,
            inputs=inputs or [ct.TensorType(name="input", shape=tuple(example.shape), dtype=np.float32)],
            outputs=[ct.TensorType(name=n, dtype=np.float32) for n in outputs],
            convert_to="mlprogram",
            compute_precision=getattr(ct.precision, precision),
            minimum_deployment_target=target or ct.target.iOS15,
        )


def _save(mlmodel, directory: Path, name: str) -> Path:
    path = directory / f"{name}.mlpackage"
    mlmodel.save(str(path))
    return path


def _image_like(seed: int) -> np.ndarray:
    """An H x W x 3 BGR uint8-valued picture with some structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = 128 + 90 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 13.0)[..., None]
    return np.clip(base + rng.normal(0, 25, (H, W, 3)), 0, 255).round().astype(np.float32)


def _network_input(image: np.ndarray) -> torch.Tensor:
    """The mean-subtracted NCHW tensor the networks take (BGR order kept)."""
    return torch.from_numpy(image.transpose(2, 0, 1)[None] - np.array(MEAN_BGR, np.float32)[:, None, None])


def _torch_heads(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {n: t.numpy() for n, t in zip(HEADS, model(x))}


def _max_errors(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict[str, float]:
    assert list(got) == list(want)
    return {n: float(np.abs(got[n].astype(np.float64) - want[n]).max()) for n in want}


# --- converted networks (module scope: each conversion takes seconds) --------------------


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict:
    """v2-ultra (seeded random init): FP32, FP16, int8 weights, 6-bit palette, image input."""
    directory = tmp_path_factory.mktemp("mil_eval_v2")
    torch.manual_seed(0)
    model = create_model("v2-ultra", pretrained=False)
    x = _network_input(_image_like(1))
    traced = torch.jit.trace(model, x, check_trace=False)
    fp32 = _convert(traced, x, "FLOAT32")
    cto = pytest.importorskip("coremltools.optimize.coreml")
    int8 = cto.linear_quantize_weights(fp32, cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0)))
    palette = cto.palettize_weights(fp32, cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
        mode="uniform", nbits=6, weight_threshold=0)))  # "kmeans" needs scikit-learn
    image = _convert(traced, x, "FLOAT32", inputs=[ct.ImageType(
        name="image", shape=(1, 3, H, W), color_layout=ct.colorlayout.BGR, bias=[-m for m in MEAN_BGR], scale=1.0)])
    return {
        "model": model,
        "image": _image_like(1),
        "x": x,
        "fp32": _save(fp32, directory, "fp32"),
        "fp16": _save(_convert(traced, x, "FLOAT16"), directory, "fp16"),
        "int8": _save(int8, directory, "int8"),
        "palette6": _save(palette, directory, "palette6"),
        "image_fp32": _save(image, directory, "image_fp32"),
    }


@pytest.fixture(scope="module")
def v1_packages(tmp_path_factory) -> dict:
    """v1 with the paper weights (gather-based deformable convs): FP32 and FP16."""
    weights = require_shared("weights/featherface_v1_paper.pth")
    directory = tmp_path_factory.mktemp("mil_eval_v1")
    model = create_model("v1", weights)
    x = _network_input(_image_like(2))
    traced = torch.jit.trace(model, x, check_trace=False)
    return {
        "model": model,
        "x": x,
        "fp32": _save(_convert(traced, x, "FLOAT32"), directory, "fp32"),
        "fp16": _save(_convert(traced, x, "FLOAT16"), directory, "fp16"),
    }


# --- whole networks -----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["v2-ultra", "v1"])
def test_fp32_package_matches_torch(arch, request):
    pkgs = request.getfixturevalue("packages" if arch == "v2-ultra" else "v1_packages")
    want = _torch_heads(pkgs["model"], pkgs["x"])
    got = run_mlpackage(pkgs["fp32"], {"input": pkgs["x"].numpy()})
    assert {n: (v.shape, v.dtype) for n, v in got.items()} == {n: (v.shape, np.float32) for n, v in want.items()}
    errors = _max_errors(got, want)
    assert max(errors.values()) < 1e-4, errors


@pytest.mark.parametrize("arch", ["v2-ultra", "v1"])
def test_fp16_package_is_finite_and_close(arch, request):
    pkgs = request.getfixturevalue("packages" if arch == "v2-ultra" else "v1_packages")
    want = _torch_heads(pkgs["model"], pkgs["x"])
    program = load_mil_program(pkgs["fp16"])[1]
    assert any(op.op_type == "cast" for op in program.functions["main"].operations)
    got = run_mlpackage(pkgs["fp16"], {"input": pkgs["x"].numpy()})
    assert all(np.isfinite(v).all() for v in got.values())
    errors = _max_errors(got, want)
    assert errors["conf"] < 0.02, errors
    scale = {n: float(np.abs(v).max()) for n, v in want.items()}
    assert all(errors[n] < 0.05 * max(scale[n], 1.0) for n in ("loc", "landmarks")), (errors, scale)


@pytest.mark.parametrize("kind, op_type, conf_tol", [
    ("int8", "constexpr_affine_dequantize", 0.02),
    ("palette6", "constexpr_lut_to_dense", 0.05),
])
def test_compressed_weights_package_runs_and_stays_close(packages, kind, op_type, conf_tol):
    spec, program = load_mil_program(packages[kind])
    ops = list(program.functions["main"].operations)
    # linear_quantize_weights / palettize_weights lift an iOS15 model to iOS16 (spec 7).
    assert spec.specificationVersion >= 7
    assert sum(op.op_type == op_type for op in ops) > 10
    want = _torch_heads(packages["model"], packages["x"])
    got = run_mlpackage(packages[kind], {"input": packages["x"].numpy()})
    assert all(np.isfinite(v).all() for v in got.values())
    errors = _max_errors(got, want)
    assert errors["conf"] < conf_tol, errors


def test_image_input_applies_the_saved_preprocessing(packages):
    spec, program = load_mil_program(packages["image_fp32"])
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    first = next(op for op in program.functions["main"].operations if op.op_type != "const")
    assert first.op_type == "add"  # the bias; scale=1.0 adds no mul
    image = packages["image"]  # H x W x 3, BGR, uint8 values
    want = _torch_heads(packages["model"], _network_input(image))
    got = run_mlpackage(packages["image_fp32"], {"image": image})
    errors = _max_errors(got, want)
    # Random-init v2-ultra barely depends on its input, hence the tight bound and the
    # check that an RGB picture (channels swapped) is told apart.
    assert max(errors.values()) < 1e-6, errors
    swapped = _max_errors(run_mlpackage(packages["image_fp32"], {"image": image[..., ::-1]}), want)
    assert max(swapped.values()) > 1e-5, swapped
    # The [1, 3, H, W] pixel tensor itself is accepted too (converters/build.py feeds it).
    nchw = run_mlpackage(packages["image_fp32"], {"image": image.transpose(2, 0, 1)[None]})
    assert all(np.array_equal(nchw[n], got[n]) for n in HEADS)
    with pytest.raises(ValueError, match="8-bit"):
        run_mlpackage(packages["image_fp32"], {"image": image + 0.5})


# --- precision and errors -------------------------------------------------------------------


class _Overflow(nn.Module):
    """1e10 fits fp32 but not fp16 (max 65504)."""

    def forward(self, x):
        return (x * 1e5) * 1e5 / 1e10


def test_fp16_overflow_shows_as_inf_like_on_device(tmp_path):
    x = torch.rand(1, 3, 4, 4) + 0.5
    traced = torch.jit.trace(_Overflow().eval(), x)
    results = {}
    for precision in ("FLOAT32", "FLOAT16"):
        path = _save(_convert(traced, x, precision, outputs=("y",)), tmp_path, precision)
        results[precision] = run_mlpackage(path, {"input": x.numpy()})["y"]
    np.testing.assert_allclose(results["FLOAT32"], x.numpy(), rtol=1e-5)
    assert not np.isfinite(results["FLOAT16"]).any()


@pytest.mark.parametrize("size", [
    40,  # the zero-bordered sampling table has 42 * 42 = 1764 rows
    48,  # 50 * 50 = 2500 rows: above 2048, not representable in fp16 (indices must be integers)
])
def test_fp16_deformable_conv_reads_the_right_pixels(tmp_path, size):
    torch.manual_seed(0)
    module = DeformableConv2d(4, 4).eval()
    nn.init.normal_(module.offset_conv.weight, std=0.05)
    x = torch.randn(1, 4, size, size)
    with torch.no_grad():
        want = module(x).numpy()
    path = _save(_convert(module, x, "FLOAT16", outputs=("y",)), tmp_path, "dcn")
    got = run_mlpackage(path, {"input": x.numpy()})["y"]
    assert np.abs(got - want).max() < 0.1


def test_unknown_op_is_named(tmp_path):
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))], opset_version=ct.target.iOS15)
    def program(x):
        return mb.cumsum(x=mb.relu(x=x), axis=1)

    assert "cumsum" not in OPS
    path = _save(ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS15),
                 tmp_path, "cumsum")
    with pytest.raises(NotImplementedError, match="cumsum"):
        run_mlpackage(path, {"x": np.ones((1, 4), np.float32)})


def test_wrong_input_names_and_shapes_are_refused(packages):
    x = packages["x"].numpy()
    with pytest.raises(KeyError, match="input"):
        run_mlpackage(packages["fp32"], {"images": x})
    with pytest.raises(ValueError, match="shape"):
        run_mlpackage(packages["fp32"], {"input": x[:, :, :64]})


# --- individual ops -------------------------------------------------------------------------


class _OpZoo(nn.Module):
    """One small module touching the subtle semantics: pooling ceil_mode and padding,
    resize modes, pad modes, slicing, split, gather, reductions, activations."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2, groups=2)
        self.bn = nn.BatchNorm2d(4)
        self.bn.running_mean.uniform_(-1, 1)
        self.bn.running_var.uniform_(0.5, 2)
        self.prelu = nn.PReLU(8, init=0.2)
        self.fc = nn.Linear(15, 6)

    def forward(self, x):
        a, c = torch.split(x, [1, 3], dim=1)
        y = self.conv(x)
        outs = [
            F.max_pool2d(self.bn(x), 3, 2, padding=1, ceil_mode=True),
            F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False),
            F.avg_pool2d(x, 2, 2, ceil_mode=True),
            F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
            F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
            F.interpolate(x, scale_factor=2, mode="nearest"),
            F.pad(x, (1, 2, 3, 1), mode="reflect"),
            F.pad(x, (2, 1, 1, 2), mode="replicate"),
            F.pad(x, (2, 1, 1, 2), value=0.5),
            x[:, 1:3, 1:-1:2, ::3],
            x[:, :, -1],
            c - a,
            torch.matmul(x, x.transpose(2, 3)),
            self.fc(x),
            torch.sqrt(x.abs()) + torch.exp(x) - torch.log(x.abs() + 1) * torch.tanh(x),
            torch.maximum(x, a) - torch.minimum(x, c[:, :1]),
            torch.where(x > 0.3, x, c.mean(1, keepdim=True)) + (x < -0.2).float() + (x == a).float(),
            x.sum(dim=(1, 3), keepdim=True),
            x.sum(dim=2),
            x[:, :1].squeeze(1),
            x.repeat(1, 2, 1, 3),
            x.index_select(2, torch.tensor([3, 0, 14, 7])),
            F.softmax(x, dim=1),
            self.prelu(y),
            F.relu6(y * 3) + F.leaky_relu(y, 0.1) + F.elu(y) + F.gelu(y) + F.silu(y) + torch.sigmoid(y) + F.softplus(y),
            x / (a.abs() + 1),
            x.amax(dim=1) + x.amin(dim=2).unsqueeze(1).mean(),
            torch.floor_divide(x * 4, a.abs() + 0.5),
        ]
        return tuple(o.reshape(-1) for o in outs)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("mil_eval_zoo")
    torch.manual_seed(0)
    model = _OpZoo().eval()
    x = torch.randn(1, 4, 15, 15)
    with torch.no_grad():
        want = [t.numpy() for t in model(x)]
    names = tuple(f"out{i}" for i in range(len(want)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
    mlmodel = _convert(traced, x, "FLOAT32", outputs=names, target=ct.target.iOS18)
    cto = pytest.importorskip("coremltools.optimize.coreml")
    compressed = {
        "int8": cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0))),
        "int4_block": cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(
            global_config=cto.OpLinearQuantizerConfig(
                mode="linear", dtype="int4", granularity="per_block", block_size=5, weight_threshold=0))),
        "palette6": cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
            mode="uniform", nbits=6, weight_threshold=0))),
        "palette4_grouped": cto.palettize_weights(mlmodel, cto.OptimizationConfig(
            global_config=cto.OpPalettizerConfig(
                mode="uniform", nbits=4, granularity="per_grouped_channel", group_size=2, weight_threshold=0))),
    }
    return {
        "x": x.numpy(),
        "want": dict(zip(names, want)),
        "fp32": _save(mlmodel, directory, "zoo"),
        **{k: _save(m, directory, k) for k, m in compressed.items()},
    }


def test_op_semantics_match_torch(zoo):
    got = run_mlpackage(zoo["fp32"], {"input": zoo["x"]})
    errors = {n: float(np.abs(got[n] - w).max() / (1 + np.abs(w).max())) for n, w in zoo["want"].items()}
    bad = {n: e for n, e in errors.items() if e > 1e-5}
    assert not bad, bad


@pytest.mark.parametrize("kind, op_type", [
    ("int8", "constexpr_blockwise_shift_scale"),
    ("int4_block", "constexpr_blockwise_shift_scale"),
    ("palette6", "constexpr_lut_to_dense"),
    ("palette4_grouped", "constexpr_lut_to_dense"),
])
def test_ios18_compressed_weights_decode_like_coremltools(zoo, kind, op_type):
    _, program = load_mil_program(zoo[kind])
    constexprs = [op for op in program.functions["main"].operations if op.op_type.startswith("constexpr_")]
    assert constexprs and all(op.op_type == op_type for op in constexprs)
    for op in constexprs:
        ours = OPS[op.op_type](**{name: var.val for name, var in op.inputs.items()})
        np.testing.assert_allclose(ours, op.materialized_val_inference(), rtol=1e-6, atol=1e-7, err_msg=op.name)
    got = run_mlpackage(zoo[kind], {"input": zoo["x"]})
    assert all(np.isfinite(v).all() for v in got.values())


def test_ios16_palette_and_vector_palette_decode_like_coremltools(packages):
    from coremltools.converters.mil.mil.ops.defs.iOS18.compression import constexpr_lut_to_dense

    _, program = load_mil_program(packages["palette6"])
    op = next(op for op in program.functions["main"].operations if op.op_type == "constexpr_lut_to_dense")
    assert "shape" in op.inputs  # the iOS16 form: packed 6-bit codes
    ours = OPS[op.op_type](**{name: var.val for name, var in op.inputs.items()})
    np.testing.assert_array_equal(ours, op.materialized_val_inference())
    # Vector palettisation (needs k-means to produce, so built by hand): 2 palettes
    # along axis 0, 3-element vectors written along axis 1.
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 4, (4, 5)).astype(np.uint8)
    lut = rng.normal(size=(2, 1, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        OPS["constexpr_lut_to_dense"](indices=indices, lut=lut, vector_axis=1),
        constexpr_lut_to_dense.decompress(indices, lut, 1),
    )


def test_ops_without_a_static_torch_source():
    """shape / range_1d / fill / concat(interleave) / gather batch_dims only survive
    conversion with dynamic shapes; checked directly, with reshape's 0 and
    slice_by_index masks with a negative stride."""
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(OPS["shape"](x=x), [2, 3, 4])
    assert OPS["reshape"](x=np.zeros((2, 50)), shape=np.array([1, 0, -1, 0])).shape == (1, 1, 2, 50)
    np.testing.assert_array_equal(OPS["range_1d"](end=7, start=1, step=2), [1, 3, 5])
    np.testing.assert_array_equal(OPS["fill"](shape=np.array([2, 2]), value=1.5), np.full((2, 2), 1.5))
    a, b = np.zeros((2, 2)), np.ones((2, 2))
    np.testing.assert_array_equal(OPS["concat"](values=(a, b), axis=1, interleave=True), [[0, 1, 0, 1]] * 2)
    indices = np.array([[2, 0], [1, -1]])
    np.testing.assert_array_equal(
        OPS["gather"](x=x, indices=indices, axis=1, batch_dims=1),
        np.stack([x[0, [2, 0]], x[1, [1, 2]]]),
    )
    with pytest.raises(IndexError):
        OPS["gather"](x=x, indices=np.array([3]), axis=1, validate_indices=True)
    with pytest.warns(RuntimeWarning, match="clamped"):
        np.testing.assert_array_equal(OPS["gather"](x=x, indices=np.array([5]), axis=1), x[:, [2]])
    np.testing.assert_array_equal(
        OPS["slice_by_index"](x=x, begin=[1, 0, 3], end=[0, 0, 0], stride=[1, 1, -2],
                              begin_mask=[False, True, False], end_mask=[True, True, True],
                              squeeze_mask=[True, False, False]),
        x[1, :, 3::-2],
    )
