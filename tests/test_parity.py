"""Device parity: every op case on every backend gives the CPU backend's outputs and gradients."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import (
    CASES,
    DTYPES,
    assert_outputs_close,
    avg_pool_case,
    batch_norm_train_case,
    max_pool_case,
    relu_max_pool_case,
)

from gpucnn import reference as ref
from gpucnn.backend.launchers import launching


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_backend_matches_cpu(case, dtype, kernel_backend, cpu, rng):
    """Same inputs and upstream gradients on both devices: same forward and every gradient."""
    backend = kernel_backend
    inputs = case.sample(rng, dtype)
    got = case.run(backend, inputs)
    want = case.run(cpu, inputs)
    assert_outputs_close(got, want, case, dtype, f"{backend.name} vs cpu")
    for key, value in got.items():
        if np.issubdtype(value.dtype, np.floating) and key != "delta":
            assert value.dtype == dtype, f"{case.name}.{key}: {value.dtype} from {dtype.__name__}"


# The kernels that loop over planes (pooling; batch norm's normalize and backward, over images)
# take loads_at_once (8) planes a batch, as many batches as the grid leaves them. The op cases'
# grids have a block row per plane, so a thread has one plane: a batch's other 7 slots and every
# later batch never run. With PLANE_LOOP_BLOCKS = 1 the grid has one block row, and each thread
# walks all 21 planes (19 images) in batches of 8, the last one partial.
PLANE_LOOP_CASES = [
    max_pool_case("many_planes", (3, 7, 5, 6), (2, 2), (2, 2)),
    avg_pool_case("many_planes_overlap", (3, 7, 5, 6), (3, 3), (2, 2), (1, 1)),
    relu_max_pool_case("many_planes_overlap", (3, 7, 5, 6), (3, 3), (2, 2), (1, 1)),
    batch_norm_train_case("batch_norm2d_train_many_images", (19, 2, 3, 4)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", PLANE_LOOP_CASES, ids=repr)
def test_a_thread_walking_every_plane_matches_cpu(
    case, dtype, kernel_backend, cpu, rng, one_plane_block
):
    """A grid of one plane block: every thread loads its pixel of 8 planes (images) at once, in
    3 batches; the same outputs and gradients as the CPU."""
    assert launching.grid_plane_loop(30, 21) == (1, 1)
    grids = one_plane_block(kernel_backend)
    inputs = case.sample(rng, dtype)
    want = case.run(cpu, inputs)
    assert_outputs_close(case.run(kernel_backend, inputs), want, case, dtype, "one plane block")
    assert all(grid[1] == 1 for grid in grids), grids  # no plan from before the patch
    assert grids or case.name.startswith("batch_norm"), "no pooling launch was recorded"


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_backend_is_deterministic(case, backend, rng):
    """Running a case twice gives bit-identical results (no atomics-order noise in backward)."""
    inputs = case.sample(rng, np.float32)
    first, second = case.run(backend, inputs), case.run(backend, inputs)
    for key in first:
        assert np.array_equal(first[key], second[key]), f"{case.name}.{key} changed between runs"


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_conv_backward_saved_without_input_grad_gives_the_parameter_gradients_alone(
    backend, bias, rng
):
    """input_grad=False (a first layer in training: its input needs no gradient) gives None for
    the input gradient, which is not computed, and the full backward's weight (and bias)
    gradients, bit for bit; bias=False gives None for the bias gradient."""
    x = backend.asarray(rng.standard_normal((2, 3, 7, 6)).astype(np.float32))
    w = backend.asarray(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    opts = ((1, 2), ((1, 0), (0, 1)), (1, 1), 1)  # stride, padding, dilation, groups
    y, saved = backend.conv2d_forward_saving(x, w, None, *opts)
    gy = backend.asarray(rng.standard_normal(y.shape).astype(np.float32))
    full = backend.conv2d_backward_saved(gy, saved, w, x.shape, *opts, bias=bias)
    gx, gw, gb = backend.conv2d_backward_saved(
        gy, saved, w, x.shape, *opts, input_grad=False, bias=bias
    )
    assert gx is None and full[0] is not None
    assert np.array_equal(backend.to_numpy(gw), backend.to_numpy(full[1]))
    if bias:
        assert np.array_equal(backend.to_numpy(gb), backend.to_numpy(full[2]))
    else:
        assert gb is None and full[2] is None


@pytest.mark.parametrize("size", [12, 17], ids=["144-taps", "289-taps"])
def test_max_pool_finds_the_maximum_in_windows_of_many_taps(backend, size, rng):
    """Windows of more taps than a byte can number (the CPU counts taps in the narrowest integer
    that holds them): the maximum, planted at each window's last tap and elsewhere, is found."""
    x = rng.standard_normal((2, 3, size, 2 * size)).astype(np.float32)
    x[0, :, -1, size - 1] = 10.0  # first window's last tap
    x[1, :, size // 2, size + 1] = 10.0
    kernel = (size, size)
    y, argmax = backend.max_pool2d_forward(backend.asarray(x.copy()), kernel, kernel, (0, 0))
    want_y, want_argmax = ref.max_pool2d_forward(x, kernel, kernel)
    assert np.array_equal(backend.to_numpy(y), want_y)
    assert np.array_equal(backend.to_numpy(argmax), want_argmax)
    assert (want_argmax[0, :, 0, 0] == (size - 1) * 2 * size + size - 1).all()


@pytest.mark.parametrize("geometry", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1))])
def test_max_pool_propagates_a_nan_from_its_first_nan(backend, geometry, rng):
    """A window holding a NaN gives NaN (as PyTorch's max pool), its argmax at the window's
    first NaN in row-major order, on every backend: neither a NaN that hides (the comparison
    skips it) nor a NaN whose gradient goes elsewhere (the maximum propagates it, the argmax
    not)."""
    kernel, stride, padding = geometry
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    nans = rng.choice(x.size, 12, replace=False)  # some windows get two NaNs
    x.reshape(-1)[nans] = np.nan
    y, argmax = backend.max_pool2d_forward(backend.asarray(x.copy()), kernel, stride, padding)
    y, argmax = backend.to_numpy(y), backend.to_numpy(argmax)
    want_y, want_argmax = ref.max_pool2d_forward(x, kernel, stride, padding)
    assert np.isnan(want_y).any()
    np.testing.assert_array_equal(y, want_y)  # NaNs in the same places, the rest equal
    np.testing.assert_array_equal(argmax, want_argmax)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = backend.to_numpy(
        backend.max_pool2d_backward(
            backend.asarray(gy), backend.asarray(argmax), x.shape, *geometry
        )
    )
    assert (gx[np.isnan(x)] != 0).any()  # the NaN windows' gradients reach their NaNs


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_ties_go_to_first_maximum(backend, dtype, rng):
    """With many ties (values from {0, 1, 2}), argmax is the first maximum in row-major order."""
    x = rng.integers(0, 3, (2, 3, 7, 8)).astype(dtype)
    kernel, stride, padding = (3, 3), (2, 2), (1, 1)
    y, argmax = backend.max_pool2d_forward(backend.asarray(x.copy()), kernel, stride, padding)
    want_y, want_argmax = ref.max_pool2d_forward(x, kernel, stride, padding)
    assert np.array_equal(backend.to_numpy(y), want_y)
    assert np.array_equal(backend.to_numpy(argmax), want_argmax)
    gy = rng.standard_normal(want_y.shape).astype(dtype)
    gx = backend.max_pool2d_backward(backend.asarray(gy), argmax, x.shape, kernel, stride, padding)
    want_gx = ref.max_pool2d_backward(gy, x, kernel, stride, padding)
    np.testing.assert_allclose(backend.to_numpy(gx), want_gx, rtol=1e-6, atol=1e-6)


# Non-square kernels too: the first in-bounds tap of a corner window is rows * kw + cols.
@pytest.mark.parametrize(
    "geometry",
    [
        ((2, 2), (2, 2), (1, 1)),
        ((3, 3), (2, 2), (1, 1)),
        ((2, 3), (2, 2), (1, 1)),
        ((3, 2), (1, 2), (1, 1)),
    ],
)
def test_max_pool_never_chooses_padding(backend, geometry, rng):
    """A padded window whose pixels are all -inf ties its padding at -inf: its argmax is still its
    first pixel, as the reference and PyTorch have it, and its gradient goes there (the padded
    corner's index aliased another pixel, or a negative one, whose gradient went astray)."""
    kernel, stride, padding = geometry
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    x[:, :, :3, :] = -np.inf  # the top windows' pixels, corners padded or not
    x[:, :, :, :2] = -np.inf  # the left windows' pixels
    y, argmax = backend.max_pool2d_forward(backend.asarray(x.copy()), kernel, stride, padding)
    want_y, want_argmax = ref.max_pool2d_forward(x, kernel, stride, padding)
    np.testing.assert_array_equal(backend.to_numpy(y), want_y)
    np.testing.assert_array_equal(backend.to_numpy(argmax), want_argmax)
    gy = rng.standard_normal(want_y.shape).astype(np.float32)
    gx = backend.max_pool2d_backward(backend.asarray(gy), argmax, x.shape, kernel, stride, padding)
    want_gx = ref.max_pool2d_backward(gy, x, kernel, stride, padding)
    np.testing.assert_allclose(backend.to_numpy(gx), want_gx, rtol=1e-6, atol=1e-6)


def test_relu_passes_nan_through_as_numpy_does(backend, rng):
    """A NaN stays NaN through relu_forward and bias_relu_forward (np.maximum propagates it, where
    `v > 0 ? v : 0` would zero it), and relu_backward's product gy * (y > 0) is NaN where gy is
    NaN, even where y is 0 (where `y > 0 ? gy : 0` would zero it): on every backend."""
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    nans = [0, 7, 61, 119]
    x.reshape(-1)[nans] = np.nan
    b = rng.standard_normal(3).astype(np.float32)
    y = backend.relu_forward(backend.asarray(x.copy()))
    np.testing.assert_array_equal(backend.to_numpy(y), np.maximum(x, 0))
    z = backend.bias_relu_forward(backend.asarray(x.copy()), backend.asarray(b))
    np.testing.assert_array_equal(backend.to_numpy(z), np.maximum(x + b.reshape(1, 3, 1, 1), 0))
    relu_y = np.maximum(rng.standard_normal(x.shape), 0).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    gy.reshape(-1)[nans] = np.nan
    relu_y.reshape(-1)[nans[:2]] = 0.0  # NaN gradients where the ReLU was off
    gx = backend.relu_backward(backend.asarray(gy), backend.asarray(relu_y))
    want = gy * (relu_y > 0)
    assert np.isnan(want).sum() == len(nans)
    np.testing.assert_array_equal(backend.to_numpy(gx), want)


_GOLDEN, _MIX1, _MIX2, _M64 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 2**64 - 1


def _unxorshift(z: int, shift: int) -> int:
    """The inverse of z ^= z >> shift on 64 bits."""
    x = z
    for _ in range(64 // shift + 1):
        x = z ^ (x >> shift)
    return x


def _seed_drawing(u24: int, index: int) -> int:
    """A seed whose dropout uniform at flat ``index`` is exactly u24 / 2**24: the splitmix64
    finaliser undone (each step is a bijection of 64-bit words) from output bits u24 << 40."""
    z = (u24 << 40) | 0x5A5A5A5A5A
    z = _unxorshift(z, 31)
    z = _unxorshift(z * pow(_MIX2, -1, 2**64) & _M64, 27)
    z = _unxorshift(z * pow(_MIX1, -1, 2**64) & _M64, 30)
    return (z - (index + 1) * _GOLDEN) & _M64


@pytest.mark.parametrize("p", [0.5, 0.25])
def test_dropout_keeps_an_element_whose_uniform_equals_p(backend, p):
    """An element is kept when u >= p: at u == p exactly (p on the 2**-24 grid) it is kept, one
    step below it is dropped, on every device and in the reference."""
    shape, index, scale = (3, 5), 7, 1 / (1 - p)
    for u24, kept in ((int(p * 2**24), True), (int(p * 2**24) - 1, False)):
        seed = _seed_drawing(u24, index)
        want = ref.dropout_mask(shape, p, seed)
        assert want.flat[index] == (scale if kept else 0.0)
        got = backend.to_numpy(backend.dropout_mask(shape, p, seed, np.float64))
        np.testing.assert_array_equal(got, want)
