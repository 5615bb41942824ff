"""Every backend against the naive float64 reference, and the reference against the tutorial."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import DTYPES, REFERENCE_CASES, assert_outputs_close

from gpucnn import nn
from gpucnn import reference as ref
from gpucnn.backend import im2col


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", REFERENCE_CASES, ids=repr)
def test_backend_matches_reference(case, dtype, backend, rng):
    """float64: agreement to rounding; float32: the backend's own float32 error stays in bounds.
    The kernel devices directly too, not only through their agreement with the CPU (each link
    in bounds would allow the two together twice the error)."""
    inputs = case.sample(rng, dtype)
    got = case.run(backend, inputs)
    assert_outputs_close(got, case.reference(inputs), case, dtype, f"{backend.name} vs reference")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [c for c in REFERENCE_CASES if "conv" in c.name], ids=repr)
def test_cpu_convolution_in_chunks_of_one_sample(case, dtype, cpu, rng, monkeypatch):
    """Every convolution pass run one sample at a time, as large batches run in many chunks
    (its weight and bias gradients summed from one share per sample), still matches."""
    monkeypatch.setattr(im2col, "CHUNK_BYTES", 1)
    inputs = case.sample(rng, dtype)
    assert_outputs_close(
        case.run(cpu, inputs), case.reference(inputs), case, dtype, "cpu in chunks vs reference"
    )


def test_batch_norm_layer_in_eval_mode_matches_the_reference(backend, rng):
    """The eval-mode backward is the layer's own (array ops, no backend op of its own), so the
    op table does not reach it: the layer in float64 on each device, forward and all three
    gradients, against the reference's loops over channels."""
    layer = nn.BatchNorm2d(3, dtype=np.float64).to(backend.name).eval()
    stats = rng.standard_normal(3), rng.uniform(0.2, 3.0, 3)
    params = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    for target, values in zip(
        (layer.running_mean, layer.running_var, layer.weight.data, layer.bias.data),
        (*stats, *params),
        strict=True,
    ):
        target[...] = backend.asarray(values)
    x, gy = rng.standard_normal((2, 3, 4, 5)) * 2 + 1, rng.standard_normal((2, 3, 4, 5))
    y = backend.to_numpy(layer(backend.asarray(x)))
    gx = backend.to_numpy(layer.backward(backend.asarray(gy)))
    gamma, eps = params[0], layer.eps
    want_y = ref.batch_norm2d_forward_eval(x, gamma, params[1], *stats, eps)
    want = ref.batch_norm2d_backward_eval(gy, x, gamma, *stats, eps)
    got = (gx, backend.to_numpy(layer.weight.grad), backend.to_numpy(layer.bias.grad))
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    for name, g, w in zip(("gx", "ggamma", "gbeta"), got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=name)


def test_reference_convolution_finds_the_tutorials_vertical_edge():
    """The tutorial's 8x8 image (right half white) and vertical-edge kernel: 3s along the edge."""
    image = np.zeros((1, 1, 8, 8))
    image[..., 4:] = 1.0
    kernel = np.array([[-1, 0, 1]] * 3, dtype=np.float64).reshape(1, 1, 3, 3)
    out = ref.conv2d_forward(image, kernel)[0, 0]
    expected = np.zeros((6, 6))
    expected[:, 2:4] = 3.0
    assert np.array_equal(out, expected)


@pytest.mark.parametrize(
    ("stride", "padding", "size"), [(1, 0, 6), (1, 1, 8), (2, 0, 3), (2, 1, 4)]
)
def test_reference_output_size_matches_the_tutorials_formula(stride, padding, size):
    """(W - K + 2P) / S + 1 for the tutorial's 8x8 input and 3x3 kernel."""
    x = np.ones((1, 1, 8, 8))
    w = np.ones((1, 1, 3, 3))
    y = ref.conv2d_forward(x, w, None, (stride,) * 2, ((padding,) * 2,) * 2)
    assert y.shape == (1, 1, size, size)


def test_reference_pooling_matches_the_tutorials_example():
    """The tutorial's 4x4 feature map under 2x2 max and average pooling."""
    fmap = np.array([[1, 3, 2, 4], [5, 6, 1, 2], [7, 2, 3, 1], [4, 8, 5, 6]], float)[None, None]
    y, argmax = ref.max_pool2d_forward(fmap, (2, 2), (2, 2))
    assert np.array_equal(y[0, 0], [[6, 4], [8, 6]])
    assert np.array_equal(argmax[0, 0], [[5, 3], [13, 15]])
    assert np.array_equal(
        ref.avg_pool2d_forward(fmap, (2, 2), (2, 2))[0, 0], [[3.75, 2.25], [5.25, 3.75]]
    )


def test_reference_max_pool_ties_go_to_the_first_maximum():
    """A window of equal values routes its whole gradient to its top-left element."""
    x = np.full((1, 1, 2, 4), 7.0)
    y, argmax = ref.max_pool2d_forward(x, (2, 2), (2, 2))
    assert argmax.ravel().tolist() == [0, 2]
    gx = ref.max_pool2d_backward(np.array([[[[1.0, 2.0]]]]), x, (2, 2), (2, 2))
    assert gx[0, 0].tolist() == [[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]


def test_dropout_mask_keeps_about_one_minus_p(cpu, rng):
    """The counter-based mask keeps a fraction 1 - p (within 5 sigma) and scales by 1 / (1 - p)."""
    p, shape = 0.3, (200, 500)
    mask = cpu.to_numpy(cpu.dropout_mask(shape, p, int(rng.integers(0, 2**63)), np.float64))
    kept = mask != 0
    sigma = np.sqrt(p * (1 - p) / kept.size)
    assert abs(kept.mean() - (1 - p)) < 5 * sigma
    assert np.allclose(mask[kept], 1 / (1 - p))


def test_dropout_masks_differ_between_seeds(cpu, rng):
    """Two seeds give different masks (the seed is really used)."""
    seed = int(rng.integers(0, 2**62))
    a = cpu.to_numpy(cpu.dropout_mask((64, 64), 0.5, seed, np.float32))
    b = cpu.to_numpy(cpu.dropout_mask((64, 64), 0.5, seed + 1, np.float32))
    assert not np.array_equal(a, b)


def test_reference_loss_of_a_certain_prediction_is_zero_not_nan():
    """Logits so far apart that the other class's log-probability is -inf: its zero target adds
    nothing (0 * -inf would be NaN), as in PyTorch and both backends."""
    logits = np.array([[1e308, -1e308]])
    with np.errstate(over="ignore"):  # -1e308 - 1e308 is -inf, on purpose
        loss, _ = ref.softmax_cross_entropy_forward(logits, np.array([0]))
        smoothed, _ = ref.softmax_cross_entropy_forward(logits, np.array([0]), 0.1)
    assert loss == 0.0
    assert np.isinf(smoothed)  # a smoothed target does weigh the -inf term
