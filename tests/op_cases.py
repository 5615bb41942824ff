"""The one table of op cases that the parity, reference, torch and gradient tests all read.

A case draws fresh NumPy inputs for an rng and a dtype (``sample``), runs the op and its gradients
on a backend, bringing every output back to the host (``run``), and knows how to get the same
outputs from the naive reference (``reference``) and from PyTorch (``torch``), and how to pose the
op to :func:`gpucnn.gradcheck.gradcheck` (``gradient``). Every op of gpucnn.backend.base is here.

Closeness is ``max|got - want| / max|want|`` per output, bounded per dtype (:class:`Tol`, each
with its reason). Outputs in ``exact`` (argmax indices, dropout masks) must match bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from gpucnn import reference as ref
from gpucnn.backend.launchers.winograd import convolution_algorithm
from gpucnn.shapes import window_output_shape

Inputs = dict[str, Any]
Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Tol:
    """Largest allowed ``max|got - want| / max|want|`` for float32 and float64, and why."""

    float32: float
    float64: float
    why: str

    def __call__(self, dtype: Any) -> float:
        return self.float32 if np.dtype(dtype) == np.float32 else self.float64


# float32 eps is 6e-8: an output built from n roundings drifts by about sqrt(n) * 6e-8 relative
# to its largest terms. The bounds leave a margin of 10-100x over what we measure, and stay well
# under 1e-4 so that an indexing bug (errors of order 1) can never hide.
ELEMENTWISE = Tol(2e-6, 1e-14, "a few roundings per element (sqrt, divide): a few ulp apart")
SUMS = Tol(
    1e-5, 1e-13, "dot products of up to ~200 terms summed in another order (im2col vs loops)"
)
NORM = Tol(3e-5, 1e-12, "batch-norm statistics over N*H*W, and a gradient that cancels 3 terms")
OPTIM = Tol(1e-5, 1e-13, "a few elementwise steps; 'delta' = p - p0 magnifies p's rounding ~20x")


@dataclass(frozen=True)
class OpCase:
    """One row of the table (see the module docstring)."""

    name: str
    sample: Callable[[np.random.Generator, Any], Inputs]
    run: Callable[[Any, Inputs], Outputs]
    tol: Tol
    reference: Callable[[Inputs], Outputs] | None = None
    torch: Callable[[Inputs], Outputs] | None = None
    gradient: Callable[[Any, Inputs], tuple] | None = None
    exact: tuple[str, ...] = ()
    # Errors are measured against max(max|want|, scale_floor): an output that cancels to nearly
    # zero still carries the rounding error of its summands, which are of size scale_floor.
    scale_floor: float = 0.0

    def __repr__(self) -> str:
        return self.name


def assert_outputs_close(
    got: Outputs, want: Outputs, case: OpCase, dtype: Any, what: str, allow_zeros: bool = False
) -> None:
    """Every output in ``want`` is in ``got`` with the same shape, finite, and within tolerance.

    An all-zero expected output proves nothing and fails, unless ``allow_zeros`` (random
    configurations whose windows see only padding): then ``got`` must be all zeros too.
    """
    missing = sorted(set(want) - set(got))
    assert not missing, f"{case.name} ({what}): outputs {missing} missing"
    assert want, f"{case.name} ({what}): nothing to compare"
    for key, expected in want.items():
        actual, expected = np.asarray(got[key]), np.asarray(expected)
        label = f"{case.name}.{key} [{np.dtype(dtype).name}, {what}]"
        assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != {expected.shape}"
        assert np.all(np.isfinite(expected)), f"{label}: the expected values are not all finite"
        assert np.all(np.isfinite(actual)), (
            f"{label}: not finite at {np.argwhere(~np.isfinite(actual))[:5]}"
        )
        if key in case.exact:
            bad = np.argwhere(actual != expected.astype(actual.dtype))
            assert bad.size == 0, f"{label}: differs at {bad[:5].tolist()} (must match exactly)"
            continue
        peak = float(np.max(np.abs(expected)))
        if peak == 0 and allow_zeros and not case.scale_floor:  # no size to measure errors by
            assert not np.any(actual), f"{label}: nonzero where all zeros were expected"
            continue
        # With a scale floor, an output that cancels to zero (a random window's mean: seen, the
        # reference's exact 0.0 against 1e-17) is measured against its summands' size.
        assert peak > 0 or allow_zeros, (
            f"{label}: the expected output is all zeros, which proves nothing"
        )
        scale = max(peak, case.scale_floor)
        diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        err = float(np.max(diff)) / scale
        at = np.unravel_index(np.argmax(diff), diff.shape)
        assert err <= case.tol(dtype), (
            f"{label}: max|diff|/max|want| = {err:.3g} > {case.tol(dtype):g} "
            f"(worst at {at}: got {actual[at]!r}, want {expected[at]!r}); tolerance: {case.tol.why}"
        )


# The float types every table runs in, as test ids.
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


# ------------------------------------------------------------------------------ input helpers
def _normal(rng, shape, dtype, scale=1.0, shift=0.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


def distinct(rng, shape, dtype) -> np.ndarray:
    """Nonzero values in (-2, 2) spaced 4/size apart in random order: no ties, for max pooling."""
    size = math.prod(shape)
    values = (rng.permutation(size) - size / 2 + 0.25) * (4.0 / size)
    return values.reshape(shape).astype(dtype)


def _away_from_zero(rng, shape, dtype) -> np.ndarray:
    """|values| in [0.1, 2) with random signs: no ReLU kink within finite-difference reach."""
    return (rng.uniform(0.1, 2.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(dtype)


def _dev(backend, a):
    """Host array ``a`` copied to the backend, so in-place ops never touch the sample."""
    return None if a is None else backend.asarray(np.array(a))


def _host(backend, **arrays) -> Outputs:
    return {k: np.asarray(backend.to_numpy(v)) for k, v in arrays.items()}


def _torch():
    import torch

    return torch, torch.nn.functional


def _leaf(a):
    """A torch leaf tensor (requiring a gradient) holding a copy of host array ``a``."""
    torch, _ = _torch()
    return torch.tensor(np.array(a), requires_grad=True)


def _bias_leaf(d: Inputs, count: int):
    """The case's bias as a torch leaf, or a zero one of ``count`` when it has none: the same
    output, and torch computes the bias gradient that gpucnn's backward also returns."""
    return _leaf(np.zeros(count, d["x"].dtype) if d["b"] is None else d["b"])


def _numpy(**tensors) -> Outputs:
    return {k: t.detach().numpy() for k, t in tensors.items()}


def _backward(y, gy) -> None:
    torch, _ = _torch()
    y.backward(torch.from_numpy(np.array(gy)))


# -------------------------------------------------------------------------------- convolution
LAYER_OUTPUTS = ("y_layer", "gx_layer", "gw_layer", "gb_layer")  # forward_saving, backward_saved


def _as(algorithm: str, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the CUDA backend's convolutions run as ``algorithm`` (see
    ``convolution_algorithm``; the CPU backend has one algorithm and ignores it)."""
    with convolution_algorithm(algorithm):
        return fn(*args, **kwargs)


def conv_case(
    name,
    x_shape,
    w_shape,
    stride=(1, 1),
    padding=0,
    dilation=(1, 1),
    groups=1,
    bias=True,
    algorithm="auto",
):
    """Forward and all three gradients of one conv2d configuration (padding: int or per side),
    the CUDA backend's convolutions run as ``algorithm``."""
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    opts = (stride, padding, dilation, groups)

    def sample(rng, dtype):
        out_hw = window_output_shape(x_shape[2:], w_shape[2:], stride, padding, dilation, name)
        fan_in = math.prod(w_shape[1:])
        return {
            "x": _normal(rng, x_shape, dtype),
            "w": _normal(rng, w_shape, dtype, 1 / math.sqrt(fan_in)),
            "b": _normal(rng, w_shape[:1], dtype) if bias else None,
            "gy": _normal(rng, (x_shape[0], w_shape[0], *out_hw), dtype),
        }

    def run(bk, d):
        return _as(algorithm, run_as_chosen, bk, d)

    def run_as_chosen(bk, d):
        x, w, b, gy = (_dev(bk, d[k]) for k in ("x", "w", "b", "gy"))
        # Both parameter gradients in one call (one pass on the GPU), and the layers' form: a
        # forward that saves what the backward (all three gradients) uses.
        gw_both, gb_both = bk.conv2d_backward_params(gy, x, w.shape, *opts)
        y_layer, saved = bk.conv2d_forward_saving(x, w, b, *opts)
        layer = bk.conv2d_backward_saved(gy, saved, w, x.shape, *opts)
        return _host(
            bk,
            y=bk.conv2d_forward(x, w, b, *opts),
            gx=bk.conv2d_backward_input(gy, w, x.shape, *opts),
            gw=bk.conv2d_backward_weight(gy, x, w.shape, *opts),
            gb=bk.conv2d_backward_bias(gy),
            gw_both=gw_both,
            gb_both=gb_both,
            **dict(zip(LAYER_OUTPUTS, (y_layer, *layer), strict=True)),
        )

    def reference(d):
        gx, gw, gb = ref.conv2d_backward(d["gy"], d["x"], d["w"], *opts)
        y = ref.conv2d_forward(d["x"], d["w"], d["b"], *opts)
        want = {"y": y, "gx": gx, "gw": gw, "gb": gb, "gw_both": gw, "gb_both": gb}
        return {**want, **dict(zip(LAYER_OUTPUTS, (y, gx, gw, gb), strict=True))}

    def torch_fn(d):
        _, tf = _torch()
        x, w = _leaf(d["x"]), _leaf(d["w"])
        b = _bias_leaf(d, w_shape[0])
        (top, bottom), (left, right) = padding
        y = tf.conv2d(tf.pad(x, (left, right, top, bottom)), w, b, stride, 0, dilation, groups)
        _backward(y, d["gy"])
        grads = (y, x.grad, w.grad, b.grad)
        layer = dict(zip(LAYER_OUTPUTS, grads, strict=True))
        return _numpy(y=y, gx=x.grad, gw=w.grad, gb=b.grad, gw_both=w.grad, gb_both=b.grad, **layer)

    def gradient(bk, d):
        # The layers' path: forward_saving, then conv2d_backward_saved for all three gradients
        # (the separate backward ops are held to the reference and PyTorch above).
        x, w, b = (_dev(bk, d[k]) for k in ("x", "w", "b"))
        args = (x, w, b) if bias else (x, w)
        saved = _as(algorithm, bk.conv2d_forward_saving, x, w, b, *opts)[1]

        def grad_fn(gy):
            gradients = _as(
                algorithm, bk.conv2d_backward_saved, gy, saved, w, x.shape, *opts, bias=bias
            )
            return gradients[: len(args)]

        return (
            (lambda x, w, b=None: _as(algorithm, bk.conv2d_forward, x, w, b, *opts)),
            args,
            grad_fn,
        )

    # x and gy are unit normal, w has unit-variance outputs: every output and gradient is a sum of
    # terms of total size >= ~1, so its rounding error is measured against 1 even where it cancels.
    return OpCase(
        f"conv2d_{name}", sample, run, SUMS, reference, torch_fn, gradient, scale_floor=1.0
    )


CONV_CASES = [
    conv_case("basic", (2, 3, 7, 6), (4, 3, 3, 3)),
    conv_case("tutorial_1ch", (2, 1, 8, 8), (4, 1, 3, 3)),
    conv_case("stride2_pad1", (2, 2, 8, 7), (3, 2, 3, 3), stride=(2, 2), padding=1),
    conv_case("asym_pad", (1, 2, 6, 5), (3, 2, 3, 2), stride=(1, 2), padding=((0, 2), (1, 0))),
    conv_case("dilation", (2, 2, 9, 8), (2, 2, 3, 3), padding=((1, 1), (2, 2)), dilation=(2, 3)),
    conv_case("groups2", (2, 4, 6, 6), (6, 2, 3, 3), padding=1, groups=2),
    conv_case("depthwise_nobias", (2, 3, 6, 5), (3, 1, 3, 3), (2, 1), 1, groups=3, bias=False),
    conv_case("1x1_nobias", (3, 4, 5, 5), (5, 4, 1, 1), bias=False),
    conv_case("big_kernel", (1, 2, 11, 10), (3, 2, 5, 4), (3, 3), ((2, 1), (0, 3)), (1, 2)),
    conv_case("kernel_fills_input", (2, 3, 4, 5), (2, 3, 4, 5)),
    # N*Ho*Wo = 1600 > 1024: the GPU splits the weight/bias reductions and adds the partial sums.
    conv_case("many_pixels", (4, 2, 20, 20), (3, 2, 3, 3), padding=1),
    # C*R*S = 64 fills a GEMM tile: on the GPU the bias gradient's column is a tile of its own.
    conv_case("columns_fill_a_tile", (2, 64, 4, 5), (3, 64, 1, 1)),
    # Winograd on the GPU, all three passes (chosen by itself only for large layers): odd output
    # sizes (tiles half outside) and padding past 2 (the input gradient's 2 - p is negative).
    conv_case(
        "winograd", (2, 3, 7, 6), (4, 3, 3, 3), padding=((3, 0), (1, 2)), algorithm="winograd"
    ),
]


def _clear_of_kink(sample, pre_activation, margin=1e-3, tries=100):
    """``sample`` redrawn until every ReLU input that ``pre_activation`` computes (in float64,
    by the reference) is at least ``margin`` from 0: finite differences never straddle the kink."""

    def draw(rng, dtype):
        for _ in range(tries):
            d = sample(rng, dtype)
            if np.min(np.abs(pre_activation(d))) >= margin:
                return d
        raise AssertionError(f"no sample clear of the ReLU kink in {tries} draws")

    return draw


def _relu_after_case(
    name, plain, forward, backward, ref_forward, ref_backward, torch_forward, **kw
):
    """An op with a ReLU fused after it (``forward(bk, x, w, b)`` with relu=True) and its
    gradients through the ReLU (``backward(bk, gz, x, w)`` -> gx, gw, gb of the plain op): the
    values of relu_forward after the plain op. ``plain`` is the plain op's case, whose inputs
    are redrawn clear of the kink; ``ref_*`` and ``torch_forward(tf, x, w, b)`` are the plain op's
    reference and PyTorch versions. Without a bias (``b`` None) the bias gradient is still the
    plain op's (the sum of the upstream gradient), as PyTorch's of a zero bias."""

    def grads(bk, gy, x, w, y):
        return backward(bk, bk.relu_backward(gy, y), x, w)

    def run(bk, d):
        x, w, b, gy = (_dev(bk, d[k]) for k in ("x", "w", "b", "gy"))
        y = forward(bk, x, w, b)
        return _host(bk, y=y, **dict(zip(("gx", "gw", "gb"), grads(bk, gy, x, w, y), strict=True)))

    def reference(d):
        z = ref_forward(d["x"], d["w"], d["b"])
        gx, gw, gb = ref_backward(ref.relu_backward(d["gy"], z), d["x"], d["w"])
        return {"y": ref.relu_forward(z), "gx": gx, "gw": gw, "gb": gb}

    def torch_fn(d):
        _, tf = _torch()
        x, w = _leaf(d["x"]), _leaf(d["w"])
        b = _bias_leaf(d, d["w"].shape[0])
        y = tf.relu(torch_forward(tf, x, w, b))
        _backward(y, d["gy"])
        return _numpy(y=y, gx=x.grad, gw=w.grad, gb=b.grad)

    def gradient(bk, d):
        x, w, b = (_dev(bk, d[k]) for k in ("x", "w", "b"))
        args = (x, w) if b is None else (x, w, b)
        y = forward(bk, x, w, b)
        return (
            (lambda x, w, b=None: forward(bk, x, w, b)),
            args,
            lambda gy: grads(bk, gy, x, w, y)[: len(args)],
        )

    sample = _clear_of_kink(plain.sample, lambda d: ref_forward(d["x"], d["w"], d["b"]))
    return OpCase(name, sample, run, SUMS, reference, torch_fn, gradient, **kw)


def conv_relu_case(name, x_shape, w_shape, padding=0, algorithm="auto", bias=True):
    """conv2d_forward with ``relu`` (the fused epilogue) and its gradients through the ReLU, the
    CUDA backend's convolutions run as ``algorithm``."""
    pads = ((padding, padding), (padding, padding))
    opts = ((1, 1), pads, (1, 1), 1)

    def backward(bk, gz, x, w):
        gx = _as(algorithm, bk.conv2d_backward_input, gz, w, x.shape, *opts)
        return gx, bk.conv2d_backward_weight(gz, x, w.shape, *opts), bk.conv2d_backward_bias(gz)

    return _relu_after_case(
        f"conv2d_relu_{name}",
        conv_case(name, x_shape, w_shape, padding=padding, bias=bias),
        lambda bk, x, w, b: _as(algorithm, bk.conv2d_forward, x, w, b, *opts, relu=True),
        backward,
        lambda x, w, b: ref.conv2d_forward(x, w, b, *opts),
        lambda gz, x, w: ref.conv2d_backward(gz, x, w, *opts),
        lambda tf, x, w, b: tf.conv2d(x, w, b, 1, padding),
        scale_floor=1.0,
    )


# ------------------------------------------------------------------------------------ pooling
def _pool_sample(x_shape, kernel, stride, padding, name):
    def sample(rng, dtype):
        pads = ((padding[0],) * 2, (padding[1],) * 2)
        out_hw = window_output_shape(x_shape[2:], kernel, stride, pads, (1, 1), name)
        return {
            "x": distinct(rng, x_shape, dtype),
            "gy": _normal(rng, (*x_shape[:2], *out_hw), dtype),
        }

    return sample


def max_pool_case(name, x_shape, kernel, stride, padding=(0, 0)):
    """Max pooling: output, argmax (exact) and the routed gradient, inputs without ties."""
    opts = (kernel, stride, padding)

    def run(bk, d):
        x, gy = _dev(bk, d["x"]), _dev(bk, d["gy"])
        y, argmax = bk.max_pool2d_forward(x, *opts)
        return _host(bk, y=y, argmax=argmax, gx=bk.max_pool2d_backward(gy, argmax, x.shape, *opts))

    def reference(d):
        y, argmax = ref.max_pool2d_forward(d["x"], *opts)
        return {"y": y, "argmax": argmax, "gx": ref.max_pool2d_backward(d["gy"], d["x"], *opts)}

    def torch_fn(d):
        _, tf = _torch()
        x = _leaf(d["x"])
        y, argmax = tf.max_pool2d(x, kernel, stride, padding, return_indices=True)
        _backward(y, d["gy"])
        return _numpy(y=y, argmax=argmax, gx=x.grad)

    def gradient(bk, d):
        x = _dev(bk, d["x"])
        _, argmax = bk.max_pool2d_forward(x, *opts)
        return (
            lambda x: bk.max_pool2d_forward(x, *opts)[0],
            (x,),
            lambda gy: (bk.max_pool2d_backward(gy, argmax, x.shape, *opts),),
        )

    sample = _pool_sample(x_shape, kernel, stride, padding, name)
    return OpCase(
        f"max_pool2d_{name}", sample, run, SUMS, reference, torch_fn, gradient, ("argmax",)
    )


def avg_pool_case(name, x_shape, kernel, stride, padding=(0, 0)):
    """Average pooling (padded zeros counted): output and gradient."""
    opts = (kernel, stride, padding)

    def run(bk, d):
        x, gy = _dev(bk, d["x"]), _dev(bk, d["gy"])
        return _host(
            bk, y=bk.avg_pool2d_forward(x, *opts), gx=bk.avg_pool2d_backward(gy, x.shape, *opts)
        )

    def reference(d):
        return {
            "y": ref.avg_pool2d_forward(d["x"], *opts),
            "gx": ref.avg_pool2d_backward(d["gy"], d["x"].shape, *opts),
        }

    def torch_fn(d):
        _, tf = _torch()
        x = _leaf(d["x"])
        y = tf.avg_pool2d(x, kernel, stride, padding, count_include_pad=True)
        _backward(y, d["gy"])
        return _numpy(y=y, gx=x.grad)

    def gradient(bk, d):
        x = _dev(bk, d["x"])
        return (
            lambda x: bk.avg_pool2d_forward(x, *opts),
            (x,),
            lambda gy: (bk.avg_pool2d_backward(gy, x.shape, *opts),),
        )

    sample = _pool_sample(x_shape, kernel, stride, padding, name)
    # A window's mean of distinct values in (-2, 2) can cancel to rounding noise (seen in random
    # configurations: x (1, 1, 2, 5) with a 3x4 window, 1e-9 against 1e-8): errors are measured
    # against the summands' size, as for convolution.
    return OpCase(
        f"avg_pool2d_{name}", sample, run, SUMS, reference, torch_fn, gradient, scale_floor=1.0
    )


POOL_CONFIGS = [  # name, x shape, kernel, stride, padding
    ("k2s2", (2, 3, 6, 6), (2, 2), (2, 2), (0, 0)),
    ("k2s2_odd_size", (1, 2, 5, 7), (2, 2), (2, 2), (0, 0)),
    ("k3s2p1_overlap", (2, 2, 7, 8), (3, 3), (2, 2), (1, 1)),
    ("k3s1p1_overlap", (1, 3, 5, 5), (3, 3), (1, 1), (1, 1)),
    ("rect", (2, 2, 6, 7), (2, 3), (1, 2), (1, 1)),
    ("rect_pad_h", (1, 2, 7, 5), (3, 2), (3, 1), (1, 0)),
    # 256 taps in one row: the CPU's 8-bit tap number could not hold the width 256 it divides by
    ("row_256_taps", (1, 2, 2, 257), (1, 256), (1, 1), (0, 0)),
]
POOL_CASES = [max_pool_case(*c) for c in POOL_CONFIGS] + [avg_pool_case(*c) for c in POOL_CONFIGS]


def relu_max_pool_case(name, x_shape, kernel, stride, padding=(0, 0)):
    """ReLU then max pooling, with the ReLU's backward done by max_pool2d_backward (``relu_y``):
    the values of relu_backward after the plain pooling backward. z crosses zero: whole windows
    are rectified to ties at 0, whose gradient the mask must stop."""
    opts = (kernel, stride, padding)

    def run(bk, d):
        z, gy = _dev(bk, d["x"]), _dev(bk, d["gy"])
        y, argmax = bk.max_pool2d_forward(bk.relu_forward(z), *opts)
        return _host(bk, y=y, gz=bk.max_pool2d_backward(gy, argmax, z.shape, *opts, relu_y=y))

    def reference(d):
        a = ref.relu_forward(d["x"])
        gz = ref.relu_backward(ref.max_pool2d_backward(d["gy"], a, *opts), d["x"])
        return {"y": ref.max_pool2d_forward(a, *opts)[0], "gz": gz}

    def torch_fn(d):
        _, tf = _torch()
        z = _leaf(d["x"])
        y = tf.max_pool2d(tf.relu(z), kernel, stride, padding)
        _backward(y, d["gy"])
        return _numpy(y=y, gz=z.grad)

    def gradient(bk, d):
        z = _dev(bk, d["x"])
        y, argmax = bk.max_pool2d_forward(bk.relu_forward(z), *opts)
        return (
            lambda z: bk.max_pool2d_forward(bk.relu_forward(z), *opts)[0],
            (z,),
            lambda gy: (bk.max_pool2d_backward(gy, argmax, z.shape, *opts, relu_y=y),),
        )

    sample = _pool_sample(x_shape, kernel, stride, padding, name)
    return OpCase(f"relu_max_pool2d_{name}", sample, run, SUMS, reference, torch_fn, gradient)


FUSED_CASES = [
    conv_relu_case("basic", (2, 3, 7, 6), (4, 3, 3, 3)),
    conv_relu_case("pad1", (2, 2, 6, 6), (3, 2, 3, 3), padding=1),
    conv_relu_case("winograd", (2, 2, 7, 5), (3, 2, 3, 3), padding=1, algorithm="winograd"),
    conv_relu_case("nobias", (2, 3, 6, 7), (4, 3, 3, 2), padding=1, bias=False),
    conv_relu_case(
        "winograd_nobias", (2, 3, 6, 5), (3, 3, 3, 3), padding=1, algorithm="winograd", bias=False
    ),
    *(relu_max_pool_case(*c) for c in POOL_CONFIGS if c[0] in ("k2s2", "k3s2p1_overlap")),
]


def global_avg_pool_case(
    name: str = "global_avg_pool2d", shape=(2, 3, 20, 17), shift: float = 0.0
) -> OpCase:
    """Global average pooling, forward and backward; by default 20 x 17 = 340 > 256 pixels a
    plane: each kernel thread sums more than one of them. ``shift`` moves x's mean off zero, so
    that a lone plane's mean does not cancel to rounding size (errors are relative to the
    largest output)."""

    def sample(rng, dtype):
        return {"x": _normal(rng, shape, dtype, 1.0, shift), "gy": _normal(rng, shape[:2], dtype)}

    def run(bk, d):
        x, gy = _dev(bk, d["x"]), _dev(bk, d["gy"])
        return _host(
            bk, y=bk.global_avg_pool2d_forward(x), gx=bk.global_avg_pool2d_backward(gy, x.shape)
        )

    def reference(d):
        return {
            "y": ref.global_avg_pool2d_forward(d["x"]),
            "gx": ref.global_avg_pool2d_backward(d["gy"], d["x"].shape),
        }

    def torch_fn(d):
        _, tf = _torch()
        x = _leaf(d["x"])
        y = tf.adaptive_avg_pool2d(x, 1).flatten(1)
        _backward(y, d["gy"])
        return _numpy(y=y, gx=x.grad)

    def gradient(bk, d):
        x = _dev(bk, d["x"])
        return (
            bk.global_avg_pool2d_forward,
            (x,),
            lambda gy: (bk.global_avg_pool2d_backward(gy, x.shape),),
        )

    return OpCase(name, sample, run, SUMS, reference, torch_fn, gradient)


# ------------------------------------------------------------------------ elementwise, dense
def _relu_case() -> OpCase:
    def sample(rng, dtype):
        return {
            "x": _away_from_zero(rng, (2, 3, 4, 5), dtype),
            "gy": _normal(rng, (2, 3, 4, 5), dtype),
        }

    def run(bk, d):
        x, gy = _dev(bk, d["x"]), _dev(bk, d["gy"])
        y = bk.relu_forward(x)
        return _host(bk, y=y, gx=bk.relu_backward(gy, y))

    def reference(d):
        return {"y": ref.relu_forward(d["x"]), "gx": ref.relu_backward(d["gy"], d["x"])}

    def torch_fn(d):
        _, tf = _torch()
        x = _leaf(d["x"])
        y = tf.relu(x)
        _backward(y, d["gy"])
        return _numpy(y=y, gx=x.grad)

    def gradient(bk, d):
        x = _dev(bk, d["x"])
        y = bk.relu_forward(x)
        return bk.relu_forward, (x,), lambda gy: (bk.relu_backward(gy, y),)

    return OpCase("relu", sample, run, ELEMENTWISE, reference, torch_fn, gradient)


def _relu_offset_case() -> OpCase:
    """ReLU on views one element into their arrays (on a GPU not 16-byte aligned, so the kernels
    take their one-at-a-time path) of an odd length (a tail after the 16-byte packs elsewhere);
    the backward also with only its second input unaligned (``gx_mixed``: each input's alignment
    is checked, not only the first's)."""

    def sample(rng, dtype):
        return {"x": _away_from_zero(rng, (1 + 7 * 11,), dtype), "gy": _normal(rng, (78,), dtype)}

    def run(bk, d):
        x, gy = _dev(bk, d["x"])[1:], _dev(bk, d["gy"])[1:]
        y = bk.relu_forward(x)  # a fresh array: aligned
        y_view = bk.relu_forward(_dev(bk, d["x"]))[1:]
        gy_fresh = _dev(bk, np.ascontiguousarray(d["gy"][1:]))
        gx_mixed = bk.relu_backward(gy_fresh, y_view)
        return _host(bk, y=y, gx=bk.relu_backward(gy, y), gx_mixed=gx_mixed)

    def reference(d):
        x = d["x"][1:]
        gx = ref.relu_backward(d["gy"][1:], x)
        return {"y": ref.relu_forward(x), "gx": gx, "gx_mixed": gx}

    # Against the reference only: the op is relu's (whose case meets PyTorch and finite
    # differences); what this case adds is the unaligned views, which the reference reads alike.
    return OpCase("relu_offset_view", sample, run, ELEMENTWISE, reference)


def _bias_relu_case() -> OpCase:
    def sample(rng, dtype):
        b = rng.standard_normal(3)
        z = _away_from_zero(rng, (2, 3, 4, 5), np.float64)  # z = x + b stays clear of the kink
        return {"x": (z - b.reshape(1, 3, 1, 1)).astype(dtype), "b": b.astype(dtype)}

    def run(bk, d):
        return _host(bk, y=bk.bias_relu_forward(_dev(bk, d["x"]), _dev(bk, d["b"])))

    def torch_fn(d):
        _, tf = _torch()
        return _numpy(y=tf.relu(_leaf(d["x"]) + _leaf(d["b"]).reshape(1, -1, 1, 1)))

    def gradient(bk, d):
        x, b = _dev(bk, d["x"]), _dev(bk, d["b"])
        y = bk.bias_relu_forward(x, b)

        def grad_fn(gy):
            gz = bk.relu_backward(gy, y)
            return gz, bk.conv2d_backward_bias(gz)

        return bk.bias_relu_forward, (x, b), grad_fn

    return OpCase(
        "bias_relu",
        sample,
        run,
        ELEMENTWISE,
        lambda d: {"y": ref.bias_relu_forward(d["x"], d["b"])},
        torch_fn,
        gradient,
    )


def _linear_case(bias: bool) -> OpCase:
    def sample(rng, dtype):
        return {
            "x": _normal(rng, (4, 7), dtype),
            "w": _normal(rng, (5, 7), dtype, 0.4),
            "b": _normal(rng, (5,), dtype) if bias else None,
            "gy": _normal(rng, (4, 5), dtype),
        }

    def run(bk, d):
        x, w, b, gy = (_dev(bk, d[k]) for k in ("x", "w", "b", "gy"))
        gx, gw, gb = bk.linear_backward(gy, x, w)
        return _host(bk, y=bk.linear_forward(x, w, b), gx=gx, gw=gw, gb=gb)

    def reference(d):
        gx, gw, gb = ref.linear_backward(d["gy"], d["x"], d["w"])
        return {"y": ref.linear_forward(d["x"], d["w"], d["b"]), "gx": gx, "gw": gw, "gb": gb}

    def torch_fn(d):
        _, tf = _torch()
        x, w = _leaf(d["x"]), _leaf(d["w"])
        b = _bias_leaf(d, 5)
        y = tf.linear(x, w, b)
        _backward(y, d["gy"])
        return _numpy(y=y, gx=x.grad, gw=w.grad, gb=b.grad)

    def gradient(bk, d):
        x, w, b = (_dev(bk, d[k]) for k in ("x", "w", "b"))
        args = (x, w, b) if bias else (x, w)
        return (
            lambda x, w, b=None: bk.linear_forward(x, w, b),
            args,
            lambda gy: bk.linear_backward(gy, x, w)[: len(args)],
        )

    name = "linear" if bias else "linear_nobias"
    return OpCase(name, sample, run, SUMS, reference, torch_fn, gradient)


def _linear_relu_case(bias: bool) -> OpCase:
    """linear_forward with ``relu`` (fused: bias and ReLU in one kernel on the GPU, in the 1x1
    conv's epilogue inside a graph session) and its gradients through the ReLU."""
    return _relu_after_case(
        "linear_relu" if bias else "linear_relu_nobias",
        _linear_case(bias),
        lambda bk, x, w, b: bk.linear_forward(x, w, b, relu=True),
        lambda bk, gz, x, w: bk.linear_backward(gz, x, w),
        ref.linear_forward,
        ref.linear_backward,
        lambda tf, x, w, b: tf.linear(x, w, b),
    )


def _dropout_case(shape, p: float) -> OpCase:
    def sample(rng, dtype):
        seed, calls = int(rng.integers(0, 2**63)), int(rng.integers(1, 2**40))
        return {"x": _normal(rng, shape, dtype), "p": p, "seed": seed, "calls": calls}

    def run(bk, d):
        x = _dev(bk, d["x"])
        y, mask = bk.dropout_forward(x, d["p"], d["seed"])
        again = bk.dropout_mask(x.shape, d["p"], d["seed"], x.dtype)
        calls = _dev(bk, np.array([d["calls"]], np.uint64))  # a layer's counter, read on the device
        _, mask_call = bk.dropout_forward(x, d["p"], d["seed"], calls)
        return _host(bk, y=y, mask=mask, mask_again=again, mask_call=mask_call)

    def reference(d):
        mask = ref.dropout_mask(d["x"].shape, d["p"], d["seed"])
        return {
            "y": ref.dropout_forward(d["x"], mask),
            "mask": mask,
            "mask_again": mask,
            "mask_call": ref.dropout_mask(d["x"].shape, d["p"], d["seed"], d["calls"]),
        }

    def gradient(bk, d):
        x = _dev(bk, d["x"])
        _, mask = bk.dropout_forward(x, d["p"], d["seed"])
        return (
            lambda x: bk.dropout_forward(x, d["p"], d["seed"])[0],
            (x,),
            lambda gy: (gy * mask,),
        )

    name = f"dropout_p{p:g}_{len(shape)}d"
    exact = ("mask", "mask_again", "mask_call")
    # No PyTorch check: its masks come from its own generator, so no output could match ours;
    # the reference draws ours from the same counter-based hash, bit for bit.
    return OpCase(name, sample, run, ELEMENTWISE, reference, None, gradient, exact)


# --------------------------------------------------------------------------------- batch norm
BN_EPS = 1e-5


def batch_norm_train_case(name: str = "batch_norm2d_train", shape=(3, 4, 3, 5)) -> OpCase:

    def sample(rng, dtype):
        return {
            "x": _normal(rng, shape, dtype, 2.0, 3.0),  # off-centre: the mean matters
            "gamma": _normal(rng, shape[1:2], dtype, 0.5, 1.0),
            "beta": _normal(rng, shape[1:2], dtype),
            "gy": _normal(rng, shape, dtype),
            "running_mean": _normal(rng, shape[1:2], dtype),
            "running_var": rng.uniform(0.5, 2.0, shape[1]).astype(dtype),
        }

    def run(bk, d):
        x, gamma, beta, gy = (_dev(bk, d[k]) for k in ("x", "gamma", "beta", "gy"))
        running = (_dev(bk, d["running_mean"]), _dev(bk, d["running_var"]))
        y, mean, invstd = bk.batch_norm2d_forward_train(x, gamma, beta, BN_EPS, *running, 0.1)
        gx, ggamma, gbeta = bk.batch_norm2d_backward(gy, x, gamma, mean, invstd)
        stats = dict(running_mean=running[0], running_var=running[1])
        return _host(bk, y=y, mean=mean, invstd=invstd, gx=gx, ggamma=ggamma, gbeta=gbeta, **stats)

    def reference(d):
        y, mean, invstd = ref.batch_norm2d_forward_train(d["x"], d["gamma"], d["beta"], BN_EPS)
        gx, ggamma, gbeta = ref.batch_norm2d_backward(d["gy"], d["x"], d["gamma"], BN_EPS)
        count = shape[0] * shape[2] * shape[3]
        unbiased = (1.0 / invstd**2 - BN_EPS) * count / (count - 1)
        running = {
            "running_mean": 0.9 * np.float64(d["running_mean"]) + 0.1 * mean,
            "running_var": 0.9 * np.float64(d["running_var"]) + 0.1 * unbiased,
        }
        grads = {"gx": gx, "ggamma": ggamma, "gbeta": gbeta}
        return {"y": y, "mean": mean, "invstd": invstd, **grads, **running}

    def torch_fn(d):
        torch, tf = _torch()
        x, gamma, beta = _leaf(d["x"]), _leaf(d["gamma"]), _leaf(d["beta"])
        rm, rv = (torch.tensor(np.array(d[k])) for k in ("running_mean", "running_var"))
        y = tf.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=0.1, eps=BN_EPS)
        _backward(y, d["gy"])
        with torch.no_grad():
            var = x.var(dim=(0, 2, 3), unbiased=False)
            mean, invstd = x.mean(dim=(0, 2, 3)), 1.0 / torch.sqrt(var + BN_EPS)
        grads = dict(gx=x.grad, ggamma=gamma.grad, gbeta=beta.grad)
        return _numpy(y=y, mean=mean, invstd=invstd, **grads, running_mean=rm, running_var=rv)

    def gradient(bk, d):
        x, gamma, beta = (_dev(bk, d[k]) for k in ("x", "gamma", "beta"))
        _, mean, invstd = bk.batch_norm2d_forward_train(x, gamma, beta, BN_EPS)
        return (
            lambda x, gamma, beta: bk.batch_norm2d_forward_train(x, gamma, beta, BN_EPS)[0],
            (x, gamma, beta),
            lambda gy: bk.batch_norm2d_backward(gy, x, gamma, mean, invstd),
        )

    return OpCase(name, sample, run, NORM, reference, torch_fn, gradient)


def _bn_eval_case() -> OpCase:
    shape = (2, 3, 4, 4)

    def sample(rng, dtype):
        return {
            "x": _normal(rng, shape, dtype, 2.0, 1.0),
            "gamma": _normal(rng, (3,), dtype, 0.5, 1.0),
            "beta": _normal(rng, (3,), dtype),
            "mean": _normal(rng, (3,), dtype),
            "var": rng.uniform(0.2, 3.0, 3).astype(dtype),
        }

    keys = ("x", "gamma", "beta", "mean", "var")

    def run(bk, d):
        return _host(bk, y=bk.batch_norm2d_forward_eval(*(_dev(bk, d[k]) for k in keys), BN_EPS))

    def torch_fn(d):
        torch, tf = _torch()
        x, gamma, beta, mean, var = (torch.from_numpy(np.array(d[k])) for k in keys)
        return _numpy(y=tf.batch_norm(x, mean, var, gamma, beta, training=False, eps=BN_EPS))

    def reference(d):
        return {"y": ref.batch_norm2d_forward_eval(*(d[k] for k in keys), BN_EPS)}

    # No gradient: the eval-mode backward is not a backend op (it is one multiply in the layer;
    # test_reference checks the layer against ref.batch_norm2d_backward_eval on each device).
    return OpCase("batch_norm2d_eval", sample, run, ELEMENTWISE, reference, torch_fn)


# ------------------------------------------------------------------------------------- loss
def xent_case(
    name: str, logit_scale: float, smoothing: float = 0.0, shape=(6, 5), shift: float = 0.0
) -> OpCase:
    """The loss forward and backward, and softmax_cross_entropy_train (both in one call: one
    launch on the GPU up to 128 rows, the three kernels past that)."""
    rows, classes = shape

    def sample(rng, dtype):
        logits = _normal(rng, shape, dtype, logit_scale, shift)
        labels = rng.integers(0, classes, rows).astype(np.int64)
        # One sample's label is its least likely class, so the loss is never exactly zero: with
        # huge logits, labels that all hit their row's maximum would give exp(-1000) = 0.
        labels[0] = np.argmin(logits[0])
        return {"logits": logits, "labels": labels}

    def run(bk, d):
        logits, labels = _dev(bk, d["logits"]), _dev(bk, d["labels"])
        loss, probs = bk.softmax_cross_entropy_forward(logits, labels, smoothing)
        glogits = bk.softmax_cross_entropy_backward(probs, labels, smoothing)
        loss_train, grad_train = bk.softmax_cross_entropy_train(logits, labels, smoothing)
        out = dict(loss=loss, probs=probs, glogits=glogits)
        return _host(bk, **out, loss_train=loss_train, grad_train=grad_train)

    def reference(d):
        loss, probs = ref.softmax_cross_entropy_forward(d["logits"], d["labels"], smoothing)
        glogits = ref.softmax_cross_entropy_backward(d["logits"], d["labels"], smoothing)
        loss = np.float64(loss)
        return {"loss": loss, "probs": probs, "glogits": glogits, "loss_train": loss,
                "grad_train": glogits}  # fmt: skip

    def torch_fn(d):
        torch, tf = _torch()
        logits = _leaf(d["logits"])
        labels = torch.from_numpy(d["labels"])
        loss = tf.cross_entropy(logits, labels, label_smoothing=smoothing)
        loss.backward()
        probs, grad = torch.softmax(logits, 1), logits.grad
        return _numpy(loss=loss, probs=probs, glogits=grad, loss_train=loss, grad_train=grad)

    def gradient(bk, d):
        # The training path's gradient: softmax_cross_entropy_train's, one launch on the GPU up to
        # 128 rows; past that (many_rows) and on the CPU it is softmax_cross_entropy_backward's,
        # so both kernels meet finite differences.
        logits, labels = _dev(bk, d["logits"]), _dev(bk, d["labels"])
        _, grad = bk.softmax_cross_entropy_train(logits, labels, smoothing)
        return (
            lambda z: bk.xp.asarray(bk.softmax_cross_entropy_forward(z, labels, smoothing)[0]),
            (logits,),
            lambda gy: (gy * grad,),
        )

    return OpCase(f"softmax_xent_{name}", sample, run, SUMS, reference, torch_fn, gradient)


# ------------------------------------------------------------------------------- optimisers
STEPS = 3


def _optim_sample(shape=(4, 6)):
    def sample(rng, dtype):
        return {
            "p": _normal(rng, shape, dtype),
            "grads": [_normal(rng, shape, dtype) for _ in range(STEPS)],
            "state": _normal(rng, shape, dtype, 5.0),  # garbage the first step must ignore
        }

    return sample


def _delta(out: Outputs, d: Inputs) -> Outputs:
    """Add 'delta' = p - p0 (float64): the step itself, so a wrong rule cannot hide under p."""
    return {**out, "delta": np.asarray(out["p"], np.float64) - np.asarray(d["p"], np.float64)}


def _torch_steps(ps, grads, make, state_keys) -> tuple[list, dict]:
    """PyTorch's optimizer ``make(parameters)`` over host arrays ``ps``, one step per entry of
    ``grads`` (a gradient per parameter): the parameters and, per name in ``state_keys``, the
    optimizer's state of each parameter."""
    torch, _ = _torch()
    params = [torch.nn.Parameter(torch.from_numpy(np.array(p))) for p in ps]
    opt = make(params)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = torch.from_numpy(np.array(g))
        opt.step()
    states = {k: [opt.state[p][src] for p in params] for k, src in state_keys.items()}
    return [p.detach() for p in params], states


def _torch_optimise(d, make, state_keys) -> Outputs:
    ps, states = _torch_steps([d["p"]], [[g] for g in d["grads"]], make, state_keys)
    return _delta(_numpy(p=ps[0], **{k: v[0] for k, v in states.items()}), d)


def _torch_sgd(lr, momentum, nesterov, weight_decay):
    """``make`` for :func:`_torch_steps`: PyTorch's SGD with these hyper-parameters."""
    torch, _ = _torch()
    return lambda ps: torch.optim.SGD(
        ps, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
    )


def _torch_adam(lr, betas, eps, weight_decay, decoupled):
    """``make`` for :func:`_torch_steps`: PyTorch's Adam, or AdamW when ``decoupled``."""
    torch, _ = _torch()
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return lambda ps: cls(ps, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _sgd_case(name, momentum=0.0, nesterov=False, weight_decay=0.0, lr=0.1) -> OpCase:
    hyper = (lr, momentum, nesterov, weight_decay)

    def run(bk, d):
        p = _dev(bk, d["p"])
        velocity = _dev(bk, d["state"]) if momentum else None
        for step, g in enumerate(d["grads"]):
            clock = _dev(bk, np.array([step + 1, lr], np.float64))
            bk.sgd_update(p, _dev(bk, g), velocity, clock, *hyper[1:], first_step=step == 0)
        out = {"p": p} if velocity is None else {"p": p, "velocity": velocity}
        return _delta(_host(bk, **out), d)

    def reference(d):
        p, velocity = d["p"], None
        for step, g in enumerate(d["grads"]):
            p, velocity = ref.sgd_step(p, g, velocity, *hyper, first_step=step == 0)
        out = {"p": p} if velocity is None else {"p": p, "velocity": velocity}
        return _delta(out, d)

    def torch_fn(d):
        make = _torch_sgd(lr, momentum, nesterov, weight_decay)
        return _torch_optimise(d, make, {"velocity": "momentum_buffer"} if momentum else {})

    return OpCase(f"sgd_{name}", _optim_sample(), run, OPTIM, reference, torch_fn)


def _adam_case(name, weight_decay=0.0, decoupled=False, lr=0.05, betas=(0.9, 0.999), eps=1e-8):
    def run(bk, d):
        p, m, v = (
            _dev(bk, d["p"]),
            bk.xp.zeros_like(_dev(bk, d["p"])),
            bk.xp.zeros_like(_dev(bk, d["p"])),
        )
        for step, g in enumerate(d["grads"], start=1):
            clock = _dev(bk, np.array([step, lr], np.float64))
            bk.adam_update(p, _dev(bk, g), m, v, clock, *betas, eps, weight_decay, decoupled)
        return _delta(_host(bk, p=p, m=m, v=v), d)

    def reference(d):
        p = d["p"]
        m = v = np.zeros(p.shape)
        for step, g in enumerate(d["grads"], start=1):
            p, m, v = ref.adam_step(p, g, m, v, step, lr, *betas, eps, weight_decay, decoupled)
        return _delta({"p": p, "m": m, "v": v}, d)

    def torch_fn(d):
        make = _torch_adam(lr, betas, eps, weight_decay, decoupled)
        return _torch_optimise(d, make, {"m": "exp_avg", "v": "exp_avg_sq"})

    return OpCase(name, _optim_sample(), run, OPTIM, reference, torch_fn)


# Ten parameters: on the GPU two launches (8 slots, then 2), slots of very different sizes (the
# 300-element one spans two blocks, the 1-element one leaves most of its blocks idle).
MANY_SHAPES = [(3,), (4, 6), (2, 3, 5), (7,), (1,), (5, 2), (300,), (2, 2, 2, 2), (6,), (3, 3)]


def _many_sample(rng, dtype) -> Inputs:
    return {
        "ps": [_normal(rng, shape, dtype) for shape in MANY_SHAPES],
        "grads": [[_normal(rng, shape, dtype) for shape in MANY_SHAPES] for _ in range(STEPS)],
    }


def _flat(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a).ravel() for a in arrays])


def _many_outputs(d: Inputs, ps, **states) -> Outputs:
    """Every parameter (and state) flattened into one output, and their 'delta' (see _delta)."""
    out = {"p": _flat(ps), **{name: _flat(arrays) for name, arrays in states.items()}}
    return _delta(out, {"p": _flat(d["ps"])})


def _torch_optimise_many(d, make, state_keys) -> Outputs:
    ps, states = _torch_steps(d["ps"], d["grads"], make, state_keys)
    return _many_outputs(d, ps, **states)


def _sgd_many_case(momentum=0.9, nesterov=True, weight_decay=0.01, lr=0.1) -> OpCase:
    """sgd_update_many: Nesterov momentum and weight decay over ten parameters at once."""
    hyper = (momentum, nesterov, weight_decay)

    def run(bk, d):
        ps = [_dev(bk, p) for p in d["ps"]]
        velocities = [bk.xp.zeros_like(p) for p in ps]
        for step, grads in enumerate(d["grads"]):
            clock = _dev(bk, np.array([step + 1, lr], np.float64))
            gs = [_dev(bk, g) for g in grads]
            bk.sgd_update_many(ps, gs, velocities, clock, *hyper, first_step=step == 0)
        host = lambda arrays: [bk.to_numpy(a) for a in arrays]  # noqa: E731
        return _many_outputs(d, host(ps), velocity=host(velocities))

    def reference(d):
        ps, velocities = list(d["ps"]), [None] * len(d["ps"])
        for step, grads in enumerate(d["grads"]):
            for i, g in enumerate(grads):
                ps[i], velocities[i] = ref.sgd_step(
                    ps[i], g, velocities[i], lr, *hyper, first_step=step == 0
                )
        return _many_outputs(d, ps, velocity=velocities)

    def torch_fn(d):
        make = _torch_sgd(lr, *hyper)
        return _torch_optimise_many(d, make, {"velocity": "momentum_buffer"})

    return OpCase("sgd_many", _many_sample, run, OPTIM, reference, torch_fn)


def _adamw_many_case(weight_decay=0.05, lr=0.05, betas=(0.9, 0.999), eps=1e-8) -> OpCase:
    """adam_update_many with decoupled weight decay (AdamW) over ten parameters at once."""
    hyper = (*betas, eps, weight_decay, True)

    def run(bk, d):
        ps = [_dev(bk, p) for p in d["ps"]]
        ms, vs = [bk.xp.zeros_like(p) for p in ps], [bk.xp.zeros_like(p) for p in ps]
        for step, grads in enumerate(d["grads"], start=1):
            clock = _dev(bk, np.array([step, lr], np.float64))
            bk.adam_update_many(ps, [_dev(bk, g) for g in grads], ms, vs, clock, *hyper)
        host = lambda arrays: [bk.to_numpy(a) for a in arrays]  # noqa: E731
        return _many_outputs(d, host(ps), m=host(ms), v=host(vs))

    def reference(d):
        ps = list(d["ps"])
        ms, vs = [np.zeros(p.shape) for p in ps], [np.zeros(p.shape) for p in ps]
        for step, grads in enumerate(d["grads"], start=1):
            for i, g in enumerate(grads):
                ps[i], ms[i], vs[i] = ref.adam_step(
                    ps[i], g, ms[i], vs[i], step, lr, *betas, eps, weight_decay, True
                )
        return _many_outputs(d, ps, m=ms, v=vs)

    def torch_fn(d):
        make = _torch_adam(lr, betas, eps, weight_decay, True)
        return _torch_optimise_many(d, make, {"m": "exp_avg", "v": "exp_avg_sq"})

    return OpCase("adamw_many", _many_sample, run, OPTIM, reference, torch_fn)


# -------------------------------------------------------------------------------- the table
CASES: list[OpCase] = [
    *CONV_CASES,
    *POOL_CASES,
    global_avg_pool_case(),
    _relu_case(),
    _relu_offset_case(),
    _bias_relu_case(),
    _linear_case(bias=True),
    _linear_case(bias=False),
    _linear_relu_case(bias=True),
    _linear_relu_case(bias=False),
    *FUSED_CASES,
    _dropout_case((4, 3, 5, 6), 0.3),
    _dropout_case((7, 33), 0.5),
    batch_norm_train_case(),
    _bn_eval_case(),
    xent_case("unit", 1.0),
    xent_case("huge_logits", 1e3),
    xent_case("label_smoothing", 3.0, smoothing=0.1),
    xent_case("huge_logits_smoothed", 1e3, smoothing=0.25),
    # Every logit far below 0: a row maximum that started from 0 instead of -inf would shift by 0,
    # and exp(logit) underflow to a zero sum (a loss of inf) in float32.
    xent_case("all_negative", 2.0, smoothing=0.1, shift=-500.0),
    # Past 128 rows the GPU's softmax_cross_entropy_train takes its three-kernel path; 40 classes
    # give the one-block path's lanes two columns each.
    xent_case("many_rows", 2.0, smoothing=0.1, shape=(129, 7)),
    xent_case("wide_rows", 2.0, shape=(128, 40)),
    _sgd_case("plain"),
    _sgd_case("weight_decay", weight_decay=0.05),
    _sgd_case("momentum", momentum=0.9),
    _sgd_case("nesterov_wd", momentum=0.9, nesterov=True, weight_decay=0.01),
    _adam_case("adam"),
    _adam_case("adam_l2", weight_decay=0.05),
    _adam_case("adamw", weight_decay=0.05, decoupled=True),
    _sgd_many_case(),
    _adamw_many_case(),
]
GRAD_CASES = [c for c in CASES if c.gradient is not None]
REFERENCE_CASES = [c for c in CASES if c.reference is not None]
TORCH_CASES = [c for c in CASES if c.torch is not None]
