"""Evaluate a saved Core ML ML Program (.mlpackage) with NumPy, op by op.

coremltools can only *predict* on macOS. On Linux this module proves that a saved
package computes what PyTorch computes: it loads the package from disk (the model
proto plus its weight blob), turns the proto back into a pymil Program with
coremltools' own loader, and evaluates the ``main`` function's MIL ops in program
order (MIL blocks are topologically ordered) with NumPy, using torch CPU kernels
for convolution and pooling.

    from featherface.converters.mil_eval import run_mlpackage
    outputs = run_mlpackage("v1.mlpackage", {"input": x})  # {"loc": ..., "conf": ..., ...}

Precision model (an approximation of the device)
------------------------------------------------
Every op result is cast to the dtype the program declares for it. A program
converted with ``compute_precision=FLOAT16`` (Core ML's default) casts its fp32
inputs to fp16 right after the input, so its ops declare fp16 results: each op is
computed from its fp16 inputs in float32 (accumulations of conv, matmul, linear and
reductions included) and its result is rounded to float16 once. Values above the
fp16 range become inf, as on the GPU / Neural Engine, so an FP16 overflow shows up
as inf/NaN in the outputs. Real hardware may accumulate in fp16 or fuse ops, so
expect differences of a few fp16 ulps, not bit-exactness.

Image inputs (``ct.ImageType``)
-------------------------------
An image input is passed as an ``H x W x 3`` array already in the model's colour
layout (BGR for a BGR model, as OpenCV gives it; ``H x W`` for grayscale), or as
the ``1 x C x H x W`` array itself, with 8-bit pixel values, or as a PIL image
(RGB, reordered when the model is BGR). It is fed to the program as the
``1 x C x H x W`` float tensor the Core ML runtime builds; the ``scale``/``bias`` preprocessing is part of the saved MIL program
(``mul``/``add`` ops in fp32 before the fp16 cast), so it is evaluated like any op.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featherface.sdk.runtimes import FloatInput

__all__ = ["OPS", "MilRuntime", "load_mil_program", "open_for_verification", "run_mlpackage"]

# MIL op type -> function called with the op's inputs as keyword arguments (NumPy
# arrays, Python/NumPy scalars and strings; tuples for variadic inputs such as
# concat's `values`). pymil fills in the defaults of optional inputs when loading.
OPS: dict[str, Callable[..., Any]] = {}


def _op(*names: str):
    def register(fn):
        for name in names:
            OPS[name] = fn
        return fn

    return register


def _torch():
    import torch

    return torch


def _t(x: np.ndarray):
    return _torch().from_numpy(np.ascontiguousarray(x, dtype=np.float32))


# ---------------------------------------------------------------------------------
# Elementwise ops (NumPy broadcasting = MIL broadcasting).
# ---------------------------------------------------------------------------------
OPS.update({
    "add": lambda x, y: np.add(x, y),
    "sub": lambda x, y: np.subtract(x, y),
    "mul": lambda x, y: np.multiply(x, y),
    "real_div": lambda x, y: np.true_divide(x, y),
    "floor_div": lambda x, y: np.floor_divide(x, y),
    "mod": lambda x, y: np.mod(x, y),
    "pow": lambda x, y: np.power(x, y),
    "maximum": lambda x, y: np.maximum(x, y),
    "minimum": lambda x, y: np.minimum(x, y),
    "equal": lambda x, y: np.equal(x, y),
    "not_equal": lambda x, y: np.not_equal(x, y),
    "greater": lambda x, y: np.greater(x, y),
    "greater_equal": lambda x, y: np.greater_equal(x, y),
    "less": lambda x, y: np.less(x, y),
    "less_equal": lambda x, y: np.less_equal(x, y),
    "logical_and": lambda x, y: np.logical_and(x, y),
    "logical_or": lambda x, y: np.logical_or(x, y),
    "logical_xor": lambda x, y: np.logical_xor(x, y),
    "logical_not": lambda x: np.logical_not(x),
    "abs": lambda x: np.abs(x),
    "sign": lambda x: np.sign(x),
    "floor": lambda x: np.floor(x),
    "ceil": lambda x: np.ceil(x),
    "square": lambda x: np.square(x),
    "sqrt": lambda x: np.sqrt(x),
    "exp": lambda x: np.exp(x),
    "exp2": lambda x: np.exp2(x),
    "sin": lambda x: np.sin(x),
    "cos": lambda x: np.cos(x),
    "tanh": lambda x: np.tanh(x),
    # Ops with an `epsilon` input add it before the function (pymil fills the
    # defaults: log 1e-45, rsqrt 1e-12, inverse 1e-4).
    "log": lambda x, epsilon: np.log(x + epsilon),
    "rsqrt": lambda x, epsilon: 1.0 / np.sqrt(x + epsilon),
    "inverse": lambda x, epsilon: 1.0 / (x + epsilon),
    # Activations.
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "leaky_relu": lambda x, alpha: np.where(x >= 0, x, x * alpha),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "sigmoid_hard": lambda x, alpha, beta: np.clip(alpha * x + beta, 0, 1),
    "elu": lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
    "softplus": lambda x: np.logaddexp(0, x),
    "clip": lambda x, alpha, beta: np.minimum(np.maximum(x, alpha), beta),
    "select": lambda cond, a, b: np.where(cond, a, b),
})


@_op("prelu")
def _prelu(x, alpha):
    """alpha holds one slope per channel (axis 1)."""
    alpha = np.reshape(alpha, (-1,) + (1,) * (x.ndim - 2))
    return np.where(x >= 0, x, x * alpha)


@_op("gelu")
def _gelu(x, mode="EXACT"):
    torch = _torch()
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1.0 + np.exp(-1.702 * x))
    approximate = "tanh" if mode == "TANH_APPROXIMATION" else "none"
    return torch.nn.functional.gelu(_t(x), approximate=approximate).numpy()


@_op("cast")
def _cast(x, dtype):
    """Float -> int truncates toward zero (NumPy astype, as pymil's value inference).
    The driver then rounds to the declared dtype: fp32 -> fp16 may overflow to inf."""
    return np.asarray(x).astype(_MIL_DTYPES[dtype])


_MIL_DTYPES = {
    "fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "bool": np.bool_,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
}


# ---------------------------------------------------------------------------------
# Tensor manipulation.
# ---------------------------------------------------------------------------------
@_op("reshape")
def _reshape(x, shape):
    """One -1 is inferred. A 0 copies the input dimension at the same position
    counted from the right (iOS17; iOS15 allows 0 only at equal ranks), or is 1
    when there is none."""
    shape = [int(s) for s in np.asarray(shape)]
    offset = x.ndim - len(shape)
    shape = [(x.shape[i + offset] if i + offset >= 0 else 1) if s == 0 else s for i, s in enumerate(shape)]
    return np.reshape(x, shape)


@_op("transpose")
def _transpose(x, perm):
    return np.transpose(x, perm)


@_op("expand_dims")
def _expand_dims(x, axes):
    """Negative axes count in the *output* rank (as np.expand_dims)."""
    return np.expand_dims(x, tuple(int(a) for a in np.atleast_1d(axes)))


@_op("squeeze")
def _squeeze(x, axes=None):
    """Without axes, every size-1 dimension goes."""
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, tuple(int(a) for a in np.atleast_1d(axes)))


@_op("concat")
def _concat(values, axis, interleave=False):
    """interleave=True takes one slice of each input in turn along `axis`
    ([a0, b0, a1, b1, ...]); the inputs then have equal sizes along it."""
    values = [np.asarray(v) for v in values]
    if not interleave:
        return np.concatenate(values, axis=axis)
    axis = int(axis) % values[0].ndim
    stacked = np.stack(values, axis=axis + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


@_op("split")
def _split(x, axis, num_splits=None, split_sizes=None):
    if split_sizes is not None:
        return tuple(np.split(x, np.cumsum(split_sizes)[:-1], axis=axis))
    return tuple(np.split(x, int(num_splits), axis=axis))


@_op("tile")
def _tile(x, reps):
    return np.tile(x, reps)


@_op("shape")
def _shape(x):
    return np.array(np.shape(x), dtype=np.int32)


@_op("range_1d")
def _range_1d(end, start, step):
    return np.arange(start, end, step)


@_op("fill")
def _fill(shape, value=0.0):
    return np.full(tuple(int(s) for s in shape), value)


@_op("slice_by_index")
def _slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """Per axis: x[begin:end:stride] with Python semantics (negative indices count
    from the end). begin_mask[i] / end_mask[i] ignore begin[i] / end[i] (slice from
    the start / to the end, in the stride's direction); squeeze_mask[i] keeps only
    index begin[i] and drops the axis."""
    rank = x.ndim
    stride = np.ones(rank, int) if stride is None else stride
    begin_mask = np.zeros(rank, bool) if begin_mask is None else begin_mask
    end_mask = np.zeros(rank, bool) if end_mask is None else end_mask
    squeeze_mask = np.zeros(rank, bool) if squeeze_mask is None else squeeze_mask
    index = []
    for i in range(rank):
        if squeeze_mask[i]:
            index.append(int(begin[i]))
        else:
            index.append(slice(
                None if begin_mask[i] else int(begin[i]),
                None if end_mask[i] else int(end[i]),
                int(stride[i]),
            ))
    return x[tuple(index)]


@_op("gather")
def _gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    """out = x.take(indices, axis), the first `batch_dims` axes of x and indices
    pairing up. Negative indices count from the end. Out-of-range indices raise
    with validate_indices=True; otherwise they are "undefined but memory safe" on
    the device: clamped here, with a warning, so that the run continues visibly."""
    axis, batch_dims = int(axis) % x.ndim, int(batch_dims)
    size = x.shape[axis]
    indices = np.asarray(indices).astype(np.int64)
    indices = np.where(indices < 0, indices + size, indices)
    bad = (indices < 0) | (indices >= size)
    if bad.any():
        message = f"gather: {int(bad.sum())} indices outside [-{size}, {size})"
        if validate_indices:
            raise IndexError(message)
        warnings.warn(message + "; clamped (undefined behaviour on the device)", RuntimeWarning)
        indices = np.clip(indices, 0, size - 1)
    if batch_dims == 0:
        return np.take(x, indices, axis=axis)
    batch_shape = x.shape[:batch_dims]
    xs = x.reshape((-1,) + x.shape[batch_dims:])
    ids = indices.reshape((-1,) + indices.shape[batch_dims:])
    out = np.stack([np.take(xb, ib, axis=axis - batch_dims) for xb, ib in zip(xs, ids)])
    return out.reshape(batch_shape + out.shape[1:])


@_op("pad")
def _pad(x, pad, mode="constant", constant_val=0.0):
    """`pad` lists (before, after) pairs for the *last* len(pad)/2 axes. Modes:
    constant (constant_val), reflect (mirror without repeating the edge, like
    torch 'reflect'), replicate (repeat the edge)."""
    pad = np.asarray(pad).reshape(-1, 2).tolist()
    widths = [(0, 0)] * (x.ndim - len(pad)) + [tuple(p) for p in pad]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=constant_val)
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


# ---------------------------------------------------------------------------------
# Reductions and normalisations.
# ---------------------------------------------------------------------------------
def _reduction(fn):
    def reduce(x, axes=None, keep_dims=False):
        """axes=None reduces every axis; keep_dims keeps them with size 1."""
        axes = None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
        return fn(x, axis=axes, keepdims=bool(keep_dims))

    return reduce


OPS.update({
    "reduce_sum": _reduction(np.sum),
    "reduce_mean": _reduction(np.mean),
    "reduce_max": _reduction(np.max),
    "reduce_min": _reduction(np.min),
    "reduce_prod": _reduction(np.prod),
})


@_op("softmax")
def _softmax(x, axis=-1):
    """Along `axis` (default last), max-subtracted."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@_op("batch_norm")
def _batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    """Per channel (axis 1) of an [N, C, *D] tensor."""
    shape = (-1,) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + epsilon)
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


@_op("linear")
def _linear(x, weight, bias=None):
    """weight is [D_out, D_in] (PyTorch layout): y = x @ weight.T + bias."""
    y = np.matmul(x, weight.T)
    return y if bias is None else y + bias


@_op("matmul")
def _matmul(x, y, transpose_x=False, transpose_y=False):
    """np.matmul semantics (batch broadcasting, rank-1 promotion); the transposes
    swap the last two axes of a rank >= 2 operand."""
    if transpose_x and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if transpose_y and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


# ---------------------------------------------------------------------------------
# Convolution and pooling (torch CPU kernels, 1-3 spatial dims).
# ---------------------------------------------------------------------------------
def _explicit_pads(pad_type, pad, spatial, kernel, strides, dilations):
    """(before, after) padding per spatial axis.

    valid: none. custom: `pad` = [before_0, after_0, before_1, after_1, ...].
    same / same_lower: total = max(0, (ceil(in/stride) - 1) * stride + eff_kernel - in)
    so that out = ceil(in / stride); an odd total puts the extra pixel after
    ('same', as TensorFlow) or before ('same_lower').
    """
    if pad_type == "valid":
        return [(0, 0)] * len(spatial)
    if pad_type == "custom":
        pad = [int(p) for p in pad]
        return list(zip(pad[0::2], pad[1::2]))
    if pad_type not in ("same", "same_lower"):
        raise NotImplementedError(f"pad_type {pad_type!r}")
    pads = []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        pads.append((small, large) if pad_type == "same" else (large, small))
    return pads


def _torch_pad(pads):
    """(before, after) per spatial axis -> torch.nn.functional.pad order (last axis first)."""
    return [p for before_after in reversed(pads) for p in before_after]


@_op("conv")
def _conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """weight [C_out, C_in / groups, *kernel]; padding is applied explicitly first
    (see _explicit_pads), then a torch conv with stride/dilation/groups."""
    torch = _torch()
    n = weight.ndim - 2
    strides = [1] * n if strides is None else [int(s) for s in strides]
    dilations = [1] * n if dilations is None else [int(d) for d in dilations]
    pads = _explicit_pads(pad_type, pad, x.shape[2:], weight.shape[2:], strides, dilations)
    xt = torch.nn.functional.pad(_t(x), _torch_pad(pads))
    conv = getattr(torch.nn.functional, f"conv{n}d")
    out = conv(xt, _t(weight), None if bias is None else _t(bias),
               stride=strides, dilation=dilations, groups=int(groups))
    return out.numpy()


def _pool_pads(x, kernel_sizes, strides, pad_type, pad, ceil_mode):
    """Explicit pads for pooling, with ceil_mode's extra windows added *after*.

    Output size (as coremltools' type inference): floor((in + pad - k) / s) + 1, or
    with ceil_mode ceil(...) + 1, dropping a last window that would start in the
    trailing padding (when there is padding). The ceil extension is returned
    separately, as it never counts towards an average.
    """
    kernel = [int(k) for k in kernel_sizes]
    strides = [int(s) for s in strides]
    pads = _explicit_pads(pad_type, pad, x.shape[2:], kernel, strides, [1] * len(kernel))
    extra = []
    for size, k, s, (before, after) in zip(x.shape[2:], kernel, strides, pads):
        padded = size + before + after
        if ceil_mode:
            out = math.ceil((padded - k) / s) + 1
            if before + after > 0 and (out - 1) * s >= size + (before + after) / 2:
                out -= 1
        else:
            out = (padded - k) // s + 1
        extra.append(max(0, (out - 1) * s + k - padded))
    return kernel, strides, pads, extra


@_op("max_pool")
def _max_pool(x, kernel_sizes, strides, pad_type="valid", pad=None, ceil_mode=False):
    """Padding (explicit, same, and ceil_mode's extension) never wins a max."""
    torch = _torch()
    kernel, strides, pads, extra = _pool_pads(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    full = [(b, a + e) for (b, a), e in zip(pads, extra)]
    xt = torch.nn.functional.pad(_t(x), _torch_pad(full), value=-math.inf)
    pool = getattr(torch.nn.functional, f"max_pool{len(kernel)}d")
    return pool(xt, kernel, strides).numpy()


@_op("avg_pool")
def _avg_pool(x, kernel_sizes, strides, pad_type="valid", pad=None,
              exclude_padding_from_average=False, ceil_mode=False):
    """Sum of the window / number of counted cells: with exclude_padding_from_average
    only input cells count, otherwise input and explicit padding cells (the ceil_mode
    extension never counts, as in PyTorch)."""
    torch = _torch()
    kernel, strides, pads, extra = _pool_pads(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    full = _torch_pad([(b, a + e) for (b, a), e in zip(pads, extra)])
    pool = getattr(torch.nn.functional, f"avg_pool{len(kernel)}d")
    cells = math.prod(kernel)
    total = pool(torch.nn.functional.pad(_t(x), full), kernel, strides) * cells
    # Counted cells: ones over the input (and explicit pads unless excluded).
    ones = torch.ones((1, 1) + tuple(x.shape[2:]))
    if not exclude_padding_from_average:
        ones = torch.nn.functional.pad(ones, _torch_pad(pads), value=1.0)
        full = _torch_pad([(0, e) for e in extra])
    count = pool(torch.nn.functional.pad(ones, full), kernel, strides) * cells
    return (total / count).numpy()


# ---------------------------------------------------------------------------------
# Resampling of the last two axes.
# ---------------------------------------------------------------------------------
@_op("upsample_nearest_neighbor")
def _upsample_nearest(x, scale_factor_height=1, scale_factor_width=1):
    """Output size floor(in * scale); output pixel i reads input floor(i / scale)."""
    for axis, scale in ((-2, float(scale_factor_height)), (-1, float(scale_factor_width))):
        size = x.shape[axis]
        src = np.floor(np.arange(math.floor(size * scale)) / scale).astype(np.int64)
        x = np.take(x, np.minimum(src, size - 1), axis=axis)
    return x


@_op("upsample_bilinear")
def _upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True,
                       half_pixel_centers=None):
    """Output size floor(in * scale); the spacing is recomputed from the sizes:
    align_corners: sample i at i * (in - 1) / (out - 1);
    else half-pixel centres (default when not align_corners): (i + 0.5) * in / out - 0.5;
    else (iOS16 half_pixel_centers=False): i * in / out. Samples clamp to [0, in - 1]."""
    if half_pixel_centers is None:
        half_pixel_centers = not align_corners
    for axis, scale in ((-2, float(scale_factor_height)), (-1, float(scale_factor_width))):
        size = x.shape[axis]
        out = math.floor(size * scale)
        i = np.arange(out, dtype=np.float64)
        if align_corners:
            pos = i * ((size - 1) / (out - 1) if out > 1 else 0.0)
        elif half_pixel_centers:
            pos = (i + 0.5) * size / out - 0.5
        else:
            pos = i * size / out
        pos = np.clip(pos, 0, size - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, size - 1)
        shape = [1] * x.ndim
        shape[axis] = out
        frac = (pos - lo).astype(np.float32).reshape(shape)
        x = np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac
    return x


# ---------------------------------------------------------------------------------
# Constants and compressed weights (constexpr_* ops are decompressed on load).
# ---------------------------------------------------------------------------------
def _per_axis(values, data, axis):
    """A scalar, or a vector along `axis` of `data`, broadcastable against data."""
    values = np.asarray(values)
    if values.ndim == 0:
        return values
    shape = [1] * data.ndim
    shape[int(axis)] = -1
    return values.reshape(shape)


@_op("constexpr_affine_dequantize")
def _affine_dequantize(quantized_data, zero_point, scale, axis):
    """iOS16: scale * (quantized_data - zero_point); scale / zero_point are scalars
    or vectors along `axis` (per-channel)."""
    q = np.asarray(quantized_data).astype(np.float32)
    zero_point = _per_axis(zero_point, q, axis).astype(np.float32)
    return _per_axis(scale, q, axis) * (q - zero_point)


def _repeat_blocks(values, shape):
    """Expand a block-wise parameter (each dim dividing `shape`) to `shape`."""
    for axis, (size, blocks) in enumerate(zip(shape, values.shape)):
        values = np.repeat(values, size // blocks, axis=axis)
    return values


@_op("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(data, scale, offset=None):
    """iOS18: scale * (data - offset), where scale / offset have data's rank and
    each of their dims divides data's: a block of data.shape[i] / scale.shape[i]
    elements along axis i shares one value (per-channel = blocks spanning all but
    the channel axis)."""
    data = np.asarray(data).astype(np.float32)
    if offset is not None:
        data = data - _repeat_blocks(np.asarray(offset).astype(np.float32), data.shape)
    return _repeat_blocks(np.asarray(scale), data.shape) * data


@_op("constexpr_lut_to_dense")
def _lut_to_dense(lut, indices, shape=None, vector_axis=None):
    """Palettised weights.

    iOS16 (has `shape`): lut [2**nbits] shared by the whole tensor; indices is a
    flat uint8 buffer of nbits-wide codes packed least significant bit first.
    iOS18 (no `shape`): indices already has the output's shape (one code per
    element, unpacked by the loader); lut is [*blocks, palette, vector_size] with
    each block dim dividing the output's (per-grouped-channel palettes). Vector
    palettisation (vector_size > 1) writes vector_size consecutive elements along
    vector_axis per code.
    """
    lut = np.asarray(lut)
    if shape is not None:  # iOS16
        nbits = int(round(math.log2(lut.size)))
        count = int(np.prod(shape))
        bits = np.unpackbits(np.asarray(indices, dtype=np.uint8), bitorder="little")
        codes = bits[: count * nbits].reshape(count, nbits) @ (1 << np.arange(nbits))
        return lut[codes].reshape([int(s) for s in shape])
    indices = np.asarray(indices).astype(np.int64)
    vector_size = lut.shape[-1]
    if vector_size > 1:
        indices = np.moveaxis(indices, int(vector_axis), -1)
        lut = np.moveaxis(lut, int(vector_axis), -3)
    # One palette per element: expand the block dims to the indices' shape.
    palettes = _repeat_blocks(lut, indices.shape + lut.shape[-2:])
    out = np.take_along_axis(palettes, indices[..., None, None], axis=-2)[..., 0, :]
    if vector_size > 1:
        out = out.reshape(indices.shape[:-1] + (-1,))
        return np.moveaxis(out, -1, int(vector_axis))
    return out[..., 0]


@_op("constexpr_cast")
def _constexpr_cast(source_val, output_dtype):
    return np.asarray(source_val).astype(_MIL_DTYPES[output_dtype])


@_op("const")
def _const(val):
    """The value comes from the proto (inline, or from the package's weight.bin)."""
    return val


# ---------------------------------------------------------------------------------
# Activation quantization (quantize / dequantize pairs around int8 activations).
# ---------------------------------------------------------------------------------
_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


@_op("quantize")
def _quantize(input, scale, output_dtype, zero_point=None, axis=None):
    """iOS17 activation quantization: clip(round(input / scale) + zero_point) to the range of
    `output_dtype` (int8 or uint8). Rounds half to even, as coremltools' value inference
    (np.around); scale / zero_point are scalars or vectors along `axis`."""
    x = np.asarray(input, dtype=np.float32)
    q = np.rint(x / _per_axis(scale, x, axis).astype(np.float32))
    if zero_point is not None:
        q = q + _per_axis(zero_point, x, axis).astype(np.float32)
    low, high = _INT_RANGES[str(output_dtype)]
    return np.clip(q, low, high).astype(_MIL_DTYPES[str(output_dtype)])


@_op("dequantize")
def _dequantize(input, scale, zero_point=None, axis=None):
    """iOS17: scale * (input - zero_point), in scale's dtype (the driver rounds to it)."""
    q = np.asarray(input).astype(np.float32)
    if zero_point is not None:
        q = q - _per_axis(zero_point, q, axis).astype(np.float32)
    return _per_axis(scale, q, axis).astype(np.float32) * q


# ---------------------------------------------------------------------------------
# Loading and running a saved package.
# ---------------------------------------------------------------------------------
def _main_function_spec(spec):
    program = spec.mlProgram
    name = spec.description.defaultFunctionName or "main"
    return program.functions[name], name


def _check_supported(block_spec) -> None:
    """Raise NotImplementedError naming every op type of the saved program (nested
    blocks included) that the evaluator does not know, before loading anything."""
    unknown: set[str] = set()

    def visit(block):
        for op in block.operations:
            if op.type not in OPS:
                unknown.add(op.type)
            for nested in op.blocks:
                visit(nested)

    visit(block_spec)
    if unknown:
        raise NotImplementedError(
            f"MIL op(s) not supported by featherface.converters.mil_eval: {', '.join(sorted(unknown))}"
        )


def load_mil_program(path: str | Path):
    """(spec, pymil Program) of a saved .mlpackage, read from disk.

    Raises NotImplementedError when the program uses an op this module cannot
    evaluate (checked on the proto, before pymil rebuilds the ops).
    """
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not an .mlpackage directory")
    spec = ct.utils.load_spec(str(path))
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"{path} holds a {spec.WhichOneof('Type')} model, not an ML Program")
    function, _ = _main_function_spec(spec)
    _check_supported(function.block_specializations[function.opset])
    # The package manifest names the root model file; the weights sit next to it
    # (Data/com.apple.CoreML/weights/weight.bin).
    from coremltools.libmodelpackage import ModelPackage

    weights_dir = Path(ModelPackage(str(path)).getRootModel().path()).parent / "weights"
    program = load_milproto(spec, spec.specificationVersion, file_weights_dir=str(weights_dir))
    return spec, program


def _declared_dtype(var):
    from coremltools.converters.mil.mil import types

    if types.is_str(var.dtype):
        return None
    return np.dtype(types.nptype_from_builtin(var.dtype))


def _declared_shape(var):
    from coremltools.converters.mil.mil.types.symbolic import any_symbolic

    shape = tuple(var.shape)
    return None if any_symbolic(shape) else tuple(int(s) for s in shape)


def _widen(value):
    """fp16 -> fp32 before an op computes: accumulation happens in fp32."""
    if isinstance(value, tuple):
        return tuple(_widen(v) for v in value)
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype == np.float16:
        return value.astype(np.float32)
    return value


def _narrow(value, var, op):
    """Round an op result to the dtype the program declares (fp16 overflow -> inf)
    and check it has the declared shape."""
    dtype = _declared_dtype(var)
    if dtype is None:
        return value
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.asarray(value).astype(dtype, copy=False)
    shape = _declared_shape(var)
    if shape is not None and value.shape != shape:
        raise AssertionError(
            f"mil_eval: {op.op_type} {op.name!r} gave shape {value.shape}, the program declares {shape}"
        )
    return value


def _image_to_tensor(image, image_type, shape) -> np.ndarray:
    """An image in the model's colour layout -> the [1, C, H, W] float32 pixels the
    runtime feeds: H x W x C (H x W for grayscale, 1 x H x W x C), or already
    [1, C, H, W] (the program input's own shape)."""
    layout = image_type.ColorSpace.Name(image_type.colorSpace)  # GRAYSCALE, RGB, BGR, ...
    if hasattr(image, "convert"):  # PIL image: RGB or L
        image = np.asarray(image.convert("L" if layout.startswith("GRAYSCALE") else "RGB"))
        if layout == "BGR":
            image = image[..., ::-1]
    array = np.asarray(image)
    if shape is None or array.shape != shape:
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 3:
            raise ValueError(f"image input: expected H x W x C, got shape {array.shape}")
        array = array.transpose(2, 0, 1)[None]
    if not layout.endswith("FLOAT16") and (
        np.any(array < 0) or np.any(array > 255) or np.any(array != np.round(array))
    ):
        raise ValueError("image input: pixels must be 8-bit values (0..255)")
    tensor = np.ascontiguousarray(array, dtype=np.float32)
    if shape is not None and tensor.shape != shape:
        raise ValueError(f"image input ({layout}): got {tensor.shape[1:]} as C x H x W, expected {shape[1:]}")
    return tensor


def run_mlpackage(
    path: str | Path, inputs: dict[str, np.ndarray], observe: Callable[[str, np.ndarray], None] | None = None,
) -> dict[str, np.ndarray]:
    """Evaluate a saved .mlpackage's main function on `inputs`.

    `inputs` maps the model's input names to arrays (image inputs: see the module
    docstring). Returns {output name: array} in the declared output order and
    dtypes. Raises NotImplementedError naming any op type it cannot evaluate.
    `observe(name, value)` sees every input and non-const op result (in its declared
    dtype) as it is computed: activation ranges for calibration, where coremltools
    would need Core ML's predict (macOS only).
    """
    spec, program = load_mil_program(path)
    _, function_name = _main_function_spec(spec)
    function = program.functions[function_name]
    described = {d.name: d for d in spec.description.input}

    missing = set(function.inputs) - set(inputs)
    extra = set(inputs) - set(function.inputs)
    if missing or extra:
        raise KeyError(f"inputs: missing {sorted(missing)}, unexpected {sorted(extra)}; "
                       f"the model takes {list(function.inputs)}")

    values: dict[int, Any] = {}
    for name, var in function.inputs.items():
        description = described.get(name)
        if description is not None and description.type.WhichOneof("Type") == "imageType":
            value = _image_to_tensor(inputs[name], description.type.imageType, _declared_shape(var))
        else:
            value = np.asarray(inputs[name])
            shape = _declared_shape(var)
            if shape is not None and value.shape != shape:
                raise ValueError(f"input {name!r}: shape {value.shape}, the model expects {shape}")
        values[id(var)] = value.astype(_declared_dtype(var), copy=False)
        if observe is not None:
            observe(name, values[id(var)])

    operations = list(function.operations)
    # Free intermediates after their last use (large DCN gathers at big inputs).
    last_use: dict[int, int] = {}
    for step, op in enumerate(operations):
        for var in _input_vars(op):
            last_use[id(var)] = step
    keep = {id(v) for v in function.outputs}

    for step, op in enumerate(operations):
        if op.op_type == "const":
            values[id(op.outputs[0])] = op.outputs[0].val
            continue
        kwargs = {
            name: (tuple(values[id(v)] for v in var) if isinstance(var, (list, tuple)) else values[id(var)])
            for name, var in op.inputs.items()
        }
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            result = OPS[op.op_type](**{k: _widen(v) for k, v in kwargs.items()})
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(op.outputs):
            raise AssertionError(f"mil_eval: {op.op_type} {op.name!r} gave {len(results)} outputs, "
                                 f"the program declares {len(op.outputs)}")
        for var, value in zip(op.outputs, results):
            values[id(var)] = _narrow(value, var, op)
            if observe is not None:
                observe(var.name, values[id(var)])
        for var in _input_vars(op):
            if last_use.get(id(var)) == step and id(var) not in keep:
                values.pop(id(var), None)

    outputs = list(function.outputs)
    by_name = {var.name: var for var in outputs}
    names = [d.name for d in spec.description.output]
    result = {}
    for position, name in enumerate(names):
        var = by_name.get(name, outputs[position])
        result[name] = values[id(var)]
    return result


def _input_vars(op):
    for var in op.inputs.values():
        yield from (var if isinstance(var, (list, tuple)) else (var,))


class MilRuntime(FloatInput):
    """A saved .mlpackage evaluated here, as an SDK runtime: how the build and the report
    run Core ML files off macOS. An image-input package gets pixels (the prepared input
    plus the mean: its bias is part of the program)."""

    input_layout = "NCHW"

    def __init__(self, path: str | Path, image_input: bool = False) -> None:
        from featherface.config import IMAGE_INPUT_NAME, INPUT_NAME, MEAN_BGR

        self.path = Path(path)
        self.input_name = IMAGE_INPUT_NAME if image_input else INPUT_NAME
        self.offset = np.asarray(MEAN_BGR, np.float32).reshape(1, 3, 1, 1) if image_input else np.float32(0)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        feed = batch + self.offset
        results = [run_mlpackage(self.path, {self.input_name: feed[i : i + 1]}) for i in range(len(feed))]
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}

    def close(self) -> None:
        """Nothing held between runs: each run reads the package from disk."""


def open_for_verification(model_file, num_threads: int | None = None):
    """A `featherface.verify.files.OpenFile`: the SDK's runtimes, and this evaluator for
    Core ML files where Core ML cannot run (anything but macOS)."""
    import platform

    from featherface.verify.files import open_with_sdk

    if model_file.format == "coreml" and platform.system() != "Darwin":
        return MilRuntime(model_file.path, model_file.image_input)
    return open_with_sdk(model_file, num_threads)

