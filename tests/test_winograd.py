"""Winograd convolutions (winograd.cu): where the launchers choose them, and that the forward and
input gradient (F(2x2, 3x3)) and the weight gradient (F(3x3, 2x2)) match the CPU backend, the
input gradient being the forward's adjoint.

The layers it pays on are too large for the emulation, so most tests force it on small shapes
with ``convolution_algorithm("winograd")``: the same kernels and launchers, odd sizes and every
padding included (tiles half outside the output, negative padding in the input gradient).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_backend

from gpucnn import optim
from gpucnn.backend.launchers import winograd
from gpucnn.backend.launchers.winograd import convolution_algorithm, winograd_applies
from gpucnn.captured_step import CapturedStep
from gpucnn.nn.zoo import build_from_spec
from gpucnn.train import train_step, training_loss

UNIT = ((1, 1), (1, 1), 1)  # stride, dilation, groups
LAYER_56 = ((64, 64, 56, 56), (64, 64, 3, 3))  # the ops suite's 3x3 64->64 layer at batch 64


@pytest.fixture(autouse=True)
def _fresh_shape_rule():
    """The shape rule is cached per geometry; tests that change its thresholds start afresh."""
    winograd._shape_rule.cache_clear()
    yield
    winograd._shape_rule.cache_clear()


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "geometry", "expected"),
    [
        (*LAYER_56, UNIT, True),
        ((256, 64, 56, 56), (128, 64, 3, 3), UNIT, True),
        ((64, 1, 28, 28), (16, 1, 3, 3), UNIT, False),  # tutorial conv1: 1 channel, small
        ((256, 16, 13, 13), (32, 16, 3, 3), UNIT, False),  # tutorial conv2: 16 channels
        ((64, 32, 14, 14), (32, 32, 3, 3), UNIT, False),  # 2^26 multiply-adds: launch-bound
        (*LAYER_56, ((2, 2), (1, 1), 1), False),  # strided
        (*LAYER_56, ((1, 1), (2, 2), 1), False),  # dilated
        ((64, 64, 56, 56), (64, 32, 3, 3), ((1, 1), (1, 1), 2), False),  # grouped
        ((64, 64, 56, 56), (64, 64, 5, 5), UNIT, False),  # a 5x5 window
    ],
)
def test_winograd_applies_to_large_3x3_stride_1_layers(x_shape, w_shape, geometry, expected):
    assert winograd_applies(x_shape, w_shape, *geometry) is expected


def test_convolution_algorithm_forces_and_forbids_winograd():
    small, grouped = ((2, 3, 7, 6), (4, 3, 3, 3)), ((2, 4, 7, 6), (4, 2, 3, 3))
    with convolution_algorithm("winograd"):
        assert winograd_applies(*small, *UNIT)
        assert not winograd_applies(*grouped, (1, 1), (1, 1), 2)  # the window still rules
    with convolution_algorithm("direct"):
        assert not winograd_applies(*LAYER_56, *UNIT)
    with pytest.raises(KeyError), convolution_algorithm("direct"):
        raise KeyError("a failed capture")
    assert winograd_applies(*LAYER_56, *UNIT) and not winograd_applies(*small, *UNIT)
    with pytest.raises(ValueError, match="'fft'.*auto, direct, winograd"):
        with convolution_algorithm("fft"):
            pass


def spy_winograd(monkeypatch, backend) -> list[str]:
    """Names of the winograd.cu kernels launched from now on (not conv2d.cu's sum_partials, which
    a split Winograd weight gradient launches too)."""
    launched = []
    launch = backend._launch

    def record(family, kernel, grid, *args):
        if family == "winograd":
            launched.append(kernel)
        return launch(family, kernel, grid, *args)

    monkeypatch.setattr(backend, "_launch", record)
    return launched


# x shape, w shape, padding ((top, bottom), (left, right)): same and valid padding, asymmetric
# and past 2 (the input gradient's padding 2 - p is then negative), odd outputs (tiles half out).
GEOMETRIES = {
    "same": ((2, 3, 7, 6), (4, 3, 3, 3), ((1, 1), (1, 1))),
    "valid": ((1, 5, 9, 8), (3, 5, 3, 3), ((0, 0), (0, 0))),
    "asymmetric": ((2, 3, 6, 9), (5, 3, 3, 3), ((2, 0), (3, 1))),
    "wide_padding": ((1, 2, 8, 5), (2, 2, 3, 3), ((3, 4), (0, 2))),
    # Several blocks of 32 tiles and of 32 rows (forward: 37 filters; input gradient: a
    # reduction of 37), and reductions that end mid-slab (11 and 37 channels, slabs of 8 or 4).
    "many_blocks": ((3, 11, 9, 10), (37, 11, 3, 3), ((1, 1), (1, 1))),
    # 144 tiles of 3 x 3 an image: the weight gradient's reduction split in two, slabs of 8 or 4
    # tiles wrapping over rows and images.
    "split_tiles": ((16, 3, 6, 5), (4, 3, 3, 3), ((1, 1), (1, 1))),
    # The input gradient's rows (37 channels) in two blocks, 35 tiles along one output row.
    "wide_rows": ((1, 37, 5, 70), (35, 37, 3, 3), ((1, 1), (1, 1))),
    # One tile an image (2 x 2 planes), 601 of them: 9 splits of the weight gradient's
    # reduction, the last ending mid-slab; 33 channels and 40 filters, two blocks of each.
    "tiny_planes_many_splits": ((601, 33, 2, 2), (40, 33, 3, 3), ((1, 1), (1, 1))),
    # 14 x 14 tiles an image, 14 splits ending mid-row and across images.
    "wide_many_splits": ((5, 3, 28, 28), (4, 3, 3, 3), ((1, 1), (1, 1))),
}


OUTPUTS = ("y", "y without bias", "gx", "gw", "gw with gb", "gb")


def conv_every_way(backend, x, w, b, gy, padding):
    """OUTPUTS on the host: the forward with bias and ReLU and without either, the input
    gradient, the weight gradient alone and with the bias gradient."""
    geometry = ((1, 1), padding, (1, 1), 1)
    xd, wd, bd, gyd = (backend.asarray(a) for a in (x, w, b, gy))
    y = backend.conv2d_forward(xd, wd, bd, *geometry, relu=True)
    plain = backend.conv2d_forward(xd, wd, None, *geometry)
    gx = backend.conv2d_backward_input(gyd, wd, x.shape, *geometry)
    gw = backend.conv2d_backward_weight(gyd, xd, w.shape, *geometry)
    gw_both, gb = backend.conv2d_backward_params(gyd, xd, w.shape, *geometry)
    return [backend.to_numpy(a) for a in (y, plain, gx, gw, gw_both, gb)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", GEOMETRIES)
def test_winograd_matches_the_cpu(kernel_backend, name, dtype, rng, monkeypatch):
    x_shape, w_shape, padding = GEOMETRIES[name]
    cpu = make_backend("cpu")
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    y_shape = cpu.conv2d_forward(x, w, None, (1, 1), padding, (1, 1), 1).shape
    gy = rng.standard_normal(y_shape).astype(dtype)
    launched = spy_winograd(monkeypatch, kernel_backend)
    with convolution_algorithm("winograd"):
        results = conv_every_way(kernel_backend, x, w, b, gy, padding)
    assert launched == ["winograd_filter", "winograd_conv2d"] * 3 + ["winograd_backward_weight"] * 2
    expected = conv_every_way(cpu, x, w, b, gy, padding)
    # The transforms add a few roundings of the operands' scale to the CPU's: float32 errors
    # measure ~2e-7 of the largest output, so 1e-5 of it is 50x margin and still well under 1e-4.
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for got, want, what in zip(results, expected, OUTPUTS, strict=True):
        assert got.shape == want.shape and np.isfinite(got).all(), what
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * np.abs(want).max())


@pytest.mark.parametrize("name", GEOMETRIES)
def test_winograd_input_gradient_is_the_forward_adjoint(kernel_backend, name, rng):
    """<conv(x), gy> = <x, gx(gy)> in float64 for the Winograd forward and input gradient: the
    rotated filters and the padding 2 - p are the exact transpose of the forward. The two sums
    cancel down from terms of size ~sum |y gy| (1e6 on the largest geometry, against a result
    of ~1), so their float64 rounding is measured against that: 1e-12 of it, where a wrong
    transpose is off by about the result itself."""
    x_shape, w_shape, padding = GEOMETRIES[name]
    geometry = ((1, 1), padding, (1, 1), 1)
    x, w = (kernel_backend.asarray(rng.standard_normal(s)) for s in (x_shape, w_shape))
    with convolution_algorithm("winograd"):
        y = kernel_backend.conv2d_forward(x, w, None, *geometry)
        gy = kernel_backend.asarray(rng.standard_normal(y.shape))
        gx = kernel_backend.conv2d_backward_input(gy, w, x_shape, *geometry)
    to_numpy = kernel_backend.to_numpy
    y, gy = to_numpy(y), to_numpy(gy)
    lhs, rhs = float(np.vdot(y, gy)), float(np.vdot(to_numpy(x), to_numpy(gx)))
    assert abs(lhs - rhs) <= 1e-12 * float(np.vdot(np.abs(y), np.abs(gy)))


def test_the_launchers_choose_winograd_by_size(kernel_backend, rng, monkeypatch):
    """On "auto", the shape rule picks Winograd for the layer with enough channels and work (the
    thresholds lowered so that an emulated layer passes) and the direct GEMM for the other."""
    monkeypatch.setattr(winograd, "_MIN_MACS", 10_000)
    launched = spy_winograd(monkeypatch, kernel_backend)
    for channels, expected in ((32, True), (16, False)):
        x = kernel_backend.asarray(rng.standard_normal((1, channels, 6, 6)).astype(np.float32))
        w = kernel_backend.asarray(rng.standard_normal((32, channels, 3, 3)).astype(np.float32))
        launched.clear()
        kernel_backend.conv2d_forward(x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
        assert bool(launched) is expected, channels


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("forward_bias", r"conv2d_forward: b must have shape \(4,\), got \(5,\)"),
        ("input_gradient", r"conv2d_backward_input: gy must have shape \(2, 4, 7, 6\)"),
        ("dtypes", r"conv2d_forward: expected float32 or float64 arrays of one dtype"),
    ],
)
def test_winograd_refuses_bad_input_by_name(kernel_backend, call, message, rng):
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3))
    xd, wd = kernel_backend.asarray(x), kernel_backend.asarray(w)
    same = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    with convolution_algorithm("winograd"), pytest.raises((ValueError, TypeError), match=message):
        if call == "forward_bias":
            kernel_backend.conv2d_forward(xd, wd, kernel_backend.asarray(np.ones(5)), *same)
        elif call == "input_gradient":
            gy = kernel_backend.asarray(rng.standard_normal((2, 4, 6, 6)))
            kernel_backend.conv2d_backward_input(gy, wd, x.shape, *same)
        else:
            kernel_backend.conv2d_forward(xd, kernel_backend.asarray(w.astype(np.float32)), None,
                                          *same)  # fmt: skip


def test_winograd_weight_gradient_of_an_empty_batch_is_zero(kernel_backend):
    """No images, no output tiles: the weight and bias gradients are zeros, as on the direct
    path (the split of zero tiles divided by a zero chunk)."""
    x, gy = np.zeros((0, 3, 5, 5)), np.zeros((0, 4, 5, 5))
    same = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    with convolution_algorithm("winograd"):
        gw, gb = kernel_backend.conv2d_backward_params(
            kernel_backend.asarray(gy), kernel_backend.asarray(x), (4, 3, 3, 3), *same
        )
    assert not np.any(kernel_backend.to_numpy(gw)) and not np.any(kernel_backend.to_numpy(gb))


# Two 'same'-padded 3x3 convolutions (the second one's input gradient runs too: training skips
# only the first layer's), then a linear layer.
GRAPH_SPEC = {
    "input_shape": [2, 6, 6],
    "num_classes": 3,
    "layers": [
        ["Conv2d", {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "padding": 1}],
        ["ReLU", {}],
        ["Conv2d", {"in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding": 1}],
        ["ReLU", {}],
        ["Flatten", {}],
        ["Linear", {"in_features": 144, "out_features": 3}],
    ],
}


def test_a_captured_step_runs_winograd_as_the_eager_one(kernel_backend, cpu, rng, monkeypatch):
    """Training steps replayed from a CUDA graph with every convolution as Winograd give the
    eager steps' losses and weights (to float32 rounding: the graph's linear layer runs on our
    GEMM, the eager one's on cuBLAS or NumPy), and the eager losses are the CPU's (direct
    convolutions: a Winograd fault common to both runs shows there); on cuda-emu every replay is
    also checked to launch the same kernels with the same scalar arguments."""
    batches = [
        (rng.normal(size=(8, 2, 6, 6)).astype(np.float32), rng.integers(0, 3, 8)) for _ in range(5)
    ]
    seed = int(rng.integers(2**31))
    launched = spy_winograd(monkeypatch, kernel_backend)
    runs = []
    with convolution_algorithm("winograd"):
        for backend, captured in ((cpu, False), (kernel_backend, False), (kernel_backend, True)):
            model = build_from_spec(GRAPH_SPEC, seed).to(backend)
            sgd = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            step = train_step(model, training_loss(0.0), sgd)
            step = CapturedStep(step) if captured else step
            losses = [float(step(*map(backend.asarray, batch))[1]) for batch in batches]
            runs.append((losses, model.state_dict()))
    assert step.captured and {"winograd_conv2d", "winograd_backward_weight"} <= set(launched)
    (cpu_losses, _), (eager_losses, eager_state), (losses, state) = runs
    assert np.all(np.isfinite(cpu_losses)) and len(set(cpu_losses)) > 1  # it trains
    # Five SGD steps from the same weights, Winograd against direct sums: 0.9-1.9e-7 relative on
    # cuda-emu (5 runs); 1e-5 leaves a GPU's other summation orders room, not a wrong transform.
    np.testing.assert_allclose(eager_losses, cpu_losses, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-4, atol=1e-6)
    for name, value in state.items():
        np.testing.assert_allclose(value, eager_state[name], rtol=1e-4, atol=1e-6, err_msg=name)
