"""The CUDA launchers' own checks and corner cases, called directly on the kernel backends.

functional and the layers check their arguments before any backend sees them, so most of the
launchers' checks (shapes, dtypes, devices, in-place arrays, the grid's limits) only show when a
backend op is called as these tests do: each bad argument must give its named error, not a kernel
that quietly reads the wrong values (or a launch that fails without saying why). The rest are
inputs a layer may pass that the op table does not: strided views, unsigned labels, an empty
batch on the direct convolution.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_parity import _seed_drawing

from gpucnn import reference as ref
from gpucnn.backend.launchers import launching
from gpucnn.backend.launchers.winograd import convolution_algorithm

F32 = np.float32
UNIT = ((1, 1), ((0, 0), (0, 0)), (1, 1), 1)  # stride, padding, dilation, groups of a 1x1


def _sgd(bk, p, clock):
    """A plain SGD step (no momentum, no decay) of p with a zero gradient."""
    g = bk.asarray(np.zeros(p.shape, F32))
    bk.sgd_update(p, g, None, clock, 0.0, False, 0.0, True)


def _clock(bk):
    return bk.asarray(np.array([1.0, 0.1]))


def _bn_train(bk, x, running_mean):
    c = x.shape[1]
    gamma, beta = bk.asarray(np.ones(c, F32)), bk.asarray(np.zeros(c, F32))
    running_var = bk.asarray(np.ones(c, F32))
    bk.batch_norm2d_forward_train(x, gamma, beta, 1e-5, running_mean, running_var)


def _bn_backward(bk, rng):
    x = bk.asarray(rng.standard_normal((2, 3, 4, 4)).astype(F32))
    y, mean, invstd = bk.batch_norm2d_forward_train(
        x, bk.asarray(np.ones(3, F32)), bk.asarray(np.zeros(3, F32)), 1e-5
    )
    gy = bk.asarray(rng.standard_normal((2, 3, 4, 3)).astype(F32))
    bk.batch_norm2d_backward(gy, x, bk.asarray(np.ones(3, F32)), mean, invstd)


def _a(bk, rng, *shape, dtype=F32):
    return bk.asarray(rng.standard_normal(shape).astype(dtype))


def _adam(bk, p, g, m, v):
    """An Adam step (betas 0.9, 0.999, no decay) of p with moments m and v."""
    bk.adam_update(p, g, m, v, _clock(bk), 0.9, 0.999, 1e-8, 0.0, False)


def _max_pool_backward(bk, rng, argmax_shape, **kwargs):
    """A 2x2 max pool's backward of a (1, 2, 2, 2) gradient, its argmax of ``argmax_shape``."""
    argmax = bk.asarray(np.zeros(argmax_shape, np.int32))
    gy = _a(bk, rng, 1, 2, 2, 2)
    bk.max_pool2d_backward(gy, argmax, (1, 2, 4, 4), (2, 2), (2, 2), (0, 0), **kwargs)


BAD_CALLS = {
    "relu_backward_y": (
        lambda bk, rng: bk.relu_backward(_a(bk, rng, 2, 3), _a(bk, rng, 3, 2)),
        r"relu_backward: y must have shape \(2, 3\), got \(3, 2\)",
    ),
    "bias_relu_bias": (
        lambda bk, rng: bk.bias_relu_forward(_a(bk, rng, 2, 3), _a(bk, rng, 2)),
        r"bias_relu_forward: b must have shape \(3,\), got \(2,\)",
    ),
    "float16": (
        lambda bk, rng: bk.relu_forward(_a(bk, rng, 2, 3, dtype=np.float16)),
        r"relu_forward: expected float32 or float64 arrays of one dtype, got float16",
    ),
    "labels_2d": (
        lambda bk, rng: bk.softmax_cross_entropy_forward(
            _a(bk, rng, 3, 4), bk.asarray(np.zeros((3, 1), np.int64))
        ),
        r"softmax_cross_entropy_forward: labels must be \(3,\) integers, got \(3, 1\)",
    ),
    "clock_shape": (
        lambda bk, rng: _sgd(bk, _a(bk, rng, 4), bk.asarray(np.array([1.0, 0.1, 0.0]))),
        r"sgd_update: clock must be a \(2,\) float64 array on .* \(3,\) float64",
    ),
    "clock_on_the_host": (
        lambda bk, rng: _sgd(bk, _a(bk, rng, 4), np.array([1.0, 0.1])),
        r"sgd_update: clock must be a \(2,\) float64 array on .*, got ndarray",
    ),
    "param_strided": (
        lambda bk, rng: _sgd(bk, _a(bk, rng, 4, 6)[:, ::2], _clock(bk)),
        r"sgd_update: p must be C-contiguous to be updated in place",
    ),
    "running_mean_strided": (
        lambda bk, rng: _bn_train(bk, _a(bk, rng, 2, 3, 4, 4), bk.asarray(np.zeros(6, F32))[::2]),
        r"batch_norm2d_forward_train: running_mean must be C-contiguous to be updated in place",
    ),
    "batch_norm_backward_gy": (
        _bn_backward,
        r"batch_norm2d_backward: gy must have shape \(2, 3, 4, 4\), got \(2, 3, 4, 3\)",
    ),
    "conv_filters_not_in_whole_groups": (
        lambda bk, rng: bk.conv2d_forward(
            _a(bk, rng, 1, 4, 3, 3), _a(bk, rng, 5, 2, 1, 1), None, *UNIT[:3], 2
        ),
        r"conv2d: x \(1, 4, 3, 3\) and w \(5, 2, 1, 1\) with groups=2",
    ),
    "conv_bias_shape": (
        lambda bk, rng: bk.conv2d_forward(
            _a(bk, rng, 1, 3, 4, 4), _a(bk, rng, 4, 3, 3, 3), _a(bk, rng, 5), *UNIT
        ),
        r"conv2d_forward: b must have shape \(4,\), got \(5,\)",
    ),
    "conv_weight_gradient_gy": (
        lambda bk, rng: bk.conv2d_backward_weight(
            _a(bk, rng, 2, 4, 3, 2), _a(bk, rng, 2, 3, 3, 3), (4, 3, 1, 1), *UNIT
        ),
        r"conv2d_backward_weight: gy must have shape \(2, 4, 3, 3\), got \(2, 4, 3, 2\)",
    ),
    "argmax_shape": (
        lambda bk, rng: _max_pool_backward(bk, rng, (1, 2, 2, 1)),
        r"max_pool2d_backward: argmax must be int32 \(1, 2, 2, 2\), got int32 \(1, 2, 2, 1\)",
    ),
    "relu_y_shape": (
        lambda bk, rng: _max_pool_backward(bk, rng, (1, 2, 2, 2), relu_y=_a(bk, rng, 1, 2, 2, 1)),
        r"max_pool2d_backward: relu_y must have shape \(1, 2, 2, 2\), got \(1, 2, 2, 1\)",
    ),
    "avg_pool_backward_gy": (
        lambda bk, rng: bk.avg_pool2d_backward(
            _a(bk, rng, 1, 2, 2, 1), (1, 2, 4, 4), (2, 2), (2, 2), (0, 0)
        ),
        r"avg_pool2d_backward: gy must have shape \(1, 2, 2, 2\), got \(1, 2, 2, 1\)",
    ),
    "global_avg_pool_backward_gy": (
        lambda bk, rng: bk.global_avg_pool2d_backward(_a(bk, rng, 2, 2), (2, 3, 4, 4)),
        r"global_avg_pool2d_backward: gy must have shape \(2, 3\), got \(2, 2\)",
    ),
    "sgd_gradient_shape": (
        lambda bk, rng: bk.sgd_update(
            _a(bk, rng, 4), _a(bk, rng, 2, 2), None, _clock(bk), 0.0, False, 0.0, True
        ),
        r"sgd_update: g must have shape \(4,\), got \(2, 2\)",
    ),
    "sgd_momentum_without_velocity": (
        lambda bk, rng: bk.sgd_update(
            _a(bk, rng, 4), _a(bk, rng, 4), None, _clock(bk), 0.9, False, 0.0, True
        ),
        r"sgd_update: momentum needs a velocity buffer",
    ),
    "adam_moment_shape": (
        lambda bk, rng: _adam(bk, *(_a(bk, rng, 4) for _ in range(3)), _a(bk, rng, 2, 2)),
        r"adam_update: v must have shape \(4,\), got \(2, 2\)",
    ),
    "adam_moment_strided": (
        lambda bk, rng: _adam(
            bk, _a(bk, rng, 4), _a(bk, rng, 4), _a(bk, rng, 8)[::2], _a(bk, rng, 4)
        ),
        r"adam_update: m must be C-contiguous to be updated in place",
    ),
    # 65535 * 16 + 1 images: one more slice of BN_ITEMS images than gridDim.z holds (4 MiB).
    "batch_norm_images_past_the_grid": (
        lambda bk, rng: _bn_train(bk, bk.asarray(np.zeros((65535 * 16 + 1, 1, 1, 1), F32)), None),
        r"batch_norm2d: \(1048561, 1, 1, 1\) exceeds the grid",
    ),
    # 65535 * 64 + 1 input channels, one filter: the input gradient's rows (channels) need one
    # more square tile than gridDim.y holds, though the filters would fit (16 MiB).
    "conv_channels_past_the_grid": (
        lambda bk, rng: bk.conv2d_backward_input(
            bk.asarray(np.zeros((1, 1, 1, 1), F32)),
            bk.asarray(np.zeros((1, 65535 * 64 + 1, 1, 1), F32)),
            (1, 65535 * 64 + 1, 1, 1),
            *UNIT,
        ),
        r"conv2d: 1 groups of 1 filters and 4194241 channels exceed the grid",
    ),
}


@pytest.mark.parametrize("call", BAD_CALLS)
def test_the_launchers_refuse_bad_arguments_by_name(kernel_backend, call, rng):
    """Each bad argument gets the launcher's named error (ValueError or TypeError) before any
    launch: a wrong shape the kernel would read within bounds but wrongly, a dtype with no kernel,
    a counter not on the device, an in-place array whose contiguous copy would be lost, a size
    past CUDA's grid limits."""
    fn, message = BAD_CALLS[call]
    with pytest.raises((ValueError, TypeError), match=message):
        fn(kernel_backend, rng)


def _close(got, want, dtype=F32):
    """As the op table's closeness: max|got - want| <= tol * max|want| (sums of a few hundred
    products rounded in another order), and the same shape."""
    assert got.shape == want.shape
    tol = 1e-5 if dtype == F32 else 1e-13
    assert np.max(np.abs(got - want)) <= tol * np.max(np.abs(want))


def test_strided_views_are_read_as_the_cpu_reads_them(kernel_backend, cpu, rng):
    """A kernel reads raw memory: the launchers copy a strided view (a column slice, a transpose)
    to a contiguous array first, so the results are the CPU's, not a read of the parent's bytes."""
    x = rng.standard_normal((2, 3, 6, 5)).astype(F32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(F32)
    b = rng.standard_normal(4).astype(F32)
    results = []
    for bk in (cpu, kernel_backend):
        xt = bk.asarray(x).transpose(0, 1, 3, 2)  # (2, 3, 5, 6), not C-contiguous
        y = bk.conv2d_forward(xt, bk.asarray(w), bk.asarray(b), (1, 1), ((1, 0), (0, 1)), (1, 1), 1)
        r = bk.relu_forward(bk.asarray(x)[:, ::2, :, 1:])
        # gy and argmax as strided views: every other plane of a pooling of each plane twice
        xx = bk.asarray(np.repeat(x, 2, axis=1))
        m, argmax = bk.max_pool2d_forward(xx, (2, 2), (2, 2), (0, 0))
        gm = bk.max_pool2d_backward(m[:, ::2], argmax[:, ::2], x.shape, (2, 2), (2, 2), (0, 0))
        results.append([bk.to_numpy(a) for a in (y, r, gm)])
    for got, want in zip(results[1], results[0], strict=True):
        _close(got, want)


def test_unsigned_labels_are_labels(kernel_backend, rng):
    """Labels of any integer dtype, unsigned too (uint8, as an IDX file stores them), give the
    loss and gradient of the same labels as int64."""
    logits = kernel_backend.asarray(rng.standard_normal((5, 4)).astype(F32))
    labels = rng.integers(0, 4, 5)
    outputs = []
    for dtype in (np.int64, np.uint8):
        lab = kernel_backend.asarray(labels.astype(dtype))
        loss, probs = kernel_backend.softmax_cross_entropy_forward(logits, lab, 0.1)
        grad = kernel_backend.softmax_cross_entropy_backward(probs, lab, 0.1)
        outputs.append([kernel_backend.to_numpy(a) for a in (loss, grad)])
    for got, want in zip(*outputs, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_plane_wider_than_the_plane_loop_grid_still_runs(
    kernel_backend, cpu, dtype, rng, one_plane_block
):
    """A plane of more pixel blocks than PLANE_LOOP_BLOCKS (lowered to 1 here: 17 x 16 = 272
    pixels, two blocks) still gets one row of plane blocks, not an empty grid that launches
    nothing and leaves the pooling's output and input gradient unwritten."""
    assert launching.grid_plane_loop(272, 6) == (2, 1)
    grids = one_plane_block(kernel_backend)
    x = rng.standard_normal((2, 3, 17, 16)).astype(dtype)
    geometry = ((3, 3), (1, 1), (1, 1))
    results = []
    for bk in (cpu, kernel_backend):
        xd = bk.asarray(x)
        y = bk.avg_pool2d_forward(xd, *geometry)
        gy = bk.asarray(np.linspace(-1, 1, y.size).reshape(y.shape).astype(dtype))
        gx = bk.avg_pool2d_backward(gy, x.shape, *geometry)
        m, argmax = bk.max_pool2d_forward(xd, *geometry)
        gm = bk.max_pool2d_backward(gy, argmax, x.shape, *geometry)
        results.append([bk.to_numpy(a) for a in (y, gx, m, gm)])
    for got, want in zip(results[1], results[0], strict=True):
        _close(got, want, dtype)
    assert sorted(set(grids)) == [(2, 1)], grids  # every pool launch: one row


def test_direct_weight_gradient_of_an_empty_batch_is_zero(kernel_backend):
    """No images, a reduction of no steps: the direct split GEMM's weight and bias gradients are
    zeros, as on the CPU (no split at all would launch nothing and leave them unwritten)."""
    x, gy = np.zeros((0, 3, 5, 5), F32), np.zeros((0, 4, 5, 5), F32)
    same = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    with convolution_algorithm("direct"):
        gw, gb = kernel_backend.conv2d_backward_params(
            kernel_backend.asarray(gy), kernel_backend.asarray(x), (4, 3, 3, 3), *same
        )
        gw_only = kernel_backend.conv2d_backward_weight(
            kernel_backend.asarray(gy), kernel_backend.asarray(x), (4, 3, 3, 3), *same
        )
    for a in (gw, gb, gw_only):
        np.testing.assert_array_equal(kernel_backend.to_numpy(a), 0)


@pytest.mark.parametrize("capture_safe", [False, True], ids=["eager", "graph_session"])
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_linear_forward_applies_relu_with_or_without_bias(
    kernel_backend, cpu, bias, capture_safe, rng
):
    """linear_forward(relu=True) is max(x @ w.T + b, 0) with a bias and without one, eagerly (a
    matmul, then the epilogue kernel) and in a graph session (conv2d.cu's kernels: 300 features,
    a split reduction), as on the CPU."""
    x = rng.standard_normal((4, 300)).astype(F32)
    w = rng.standard_normal((6, 300)).astype(F32)
    b = rng.standard_normal(6).astype(F32) if bias else None
    want = cpu.linear_forward(x, w, b, relu=True)
    assert (want == 0).any() and (want > 0).any()
    args = [None if a is None else kernel_backend.asarray(a) for a in (x, w, b)]
    if capture_safe:
        with kernel_backend.capture_safe_ops():
            got = kernel_backend.linear_forward(*args, relu=True)
    else:
        got = kernel_backend.linear_forward(*args, relu=True)
    _close(kernel_backend.to_numpy(got), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_compares_with_p_in_double_whatever_the_dtype(backend, dtype):
    """The kernels compare each uniform with p in double: p = 0.5 + 2**-26 rounds to 0.5 in
    float32, but an element whose uniform is exactly 0.5 is still below it and dropped, on every
    device and in the reference, for a float32 mask as for a float64 one."""
    shape, index, p = (3, 5), 7, 0.5 + 2**-26
    seed = _seed_drawing(2**23, index)  # u == 0.5 at the flat index 7
    want = ref.dropout_mask(shape, p, seed).astype(dtype)
    assert want.flat[index] == 0.0
    got = backend.to_numpy(backend.dropout_mask(shape, p, seed, dtype))
    np.testing.assert_array_equal(got, want)


def test_one_sgd_update_of_float32_and_float64_parameters(kernel_backend, cpu, rng):
    """sgd_update_many over parameters of both float dtypes (a launch per dtype, each kernel of
    its own T): every parameter and velocity updated as on the CPU."""
    shapes_dtypes = [((3, 4), np.float32), ((5,), np.float64), ((2, 3), np.float32)]
    values = [
        [rng.standard_normal(shape).astype(dtype) for shape, dtype in shapes_dtypes]
        for _ in range(3)  # p, g, velocity
    ]
    results = []
    for bk in (cpu, kernel_backend):
        p, g, velocity = ([bk.asarray(a.copy()) for a in arrays] for arrays in values)
        clock = bk.asarray(np.array([1.0, 0.1]))
        bk.sgd_update_many(p, g, velocity, clock, 0.9, True, 0.01, False)
        results.append([bk.to_numpy(a) for a in (*p, *velocity)])
    for got, want in zip(results[1], results[0], strict=True):
        assert got.dtype == want.dtype
        _close(got, want, got.dtype)
