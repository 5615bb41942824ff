"""The CUDA-graph training step (``CapturedStep``): same results as the eager step, nothing frozen.

On ``cuda`` the step is really captured and replayed. On ``cuda-emu`` each replay runs the step's
Python again and the emulated graph session checks that every replay launches the same kernels
with the same scalar arguments, as a real graph would: that is what catches a per-step value (step
count, learning rate, dropout seed) passed to a kernel by value.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import KERNEL_BACKENDS, make_backend

from gpucnn import nn, optim, reference
from gpucnn.backend.emulation import EmulationError
from gpucnn.captured_step import CapturedStep
from gpucnn.errors import GraphCaptureError
from gpucnn.nn.zoo import build_from_spec
from gpucnn.train import train_step, training_loss

# Every layer kind with per-step state: batch norm (running statistics), dropout (call counter),
# linear layers (our GEMM kernels inside a graph session, cuBLAS or NumPy outside).
SPEC = {
    "input_shape": [1, 8, 8],
    "num_classes": 3,
    "layers": [
        # No bias before batch norm: its gradient is rounding noise, which Adam would amplify.
        ["Conv2d", {"in_channels": 1, "out_channels": 4, "kernel_size": 3, "bias": False}],
        ["BatchNorm2d", {"num_features": 4}],
        ["ReLU", {}],
        ["MaxPool2d", {"kernel_size": 2}],
        ["Flatten", {}],
        ["Dropout", {"p": 0.25}],
        ["Linear", {"in_features": 36, "out_features": 16}],
        ["ReLU", {}],
        ["Linear", {"in_features": 16, "out_features": 3}],
    ],
}
STEPS = 6
# float32, a few steps: the captured step's linear layers sum in another order than the eager
# step's (our GEMM kernel against cuBLAS or NumPy), so values agree to rounding, not bitwise;
# after 6 updates the differences measured on cuda-emu are ~3e-8, far inside these.
RTOL, ATOL = 1e-4, 1e-6


def _optimizer(name, params):
    if name == "sgd":
        return optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    return optim.AdamW(params, lr=0.01, weight_decay=0.1)


def _train(backend, batches, optimizer_name, captured, seed):
    """STEPS updates from the same initial weights; the learning rate changes every step."""
    model = build_from_spec(SPEC, seed).to(backend)
    optimizer = _optimizer(optimizer_name, model.parameters())
    step = train_step(model, training_loss(0.1), optimizer)
    if captured:
        step = CapturedStep(step)
    losses = []
    for i, (x, y) in enumerate(batches):
        optimizer.lr = optimizer.lr * 0.8 if i else optimizer.lr
        logits, loss = step(backend.asarray(x), backend.asarray(y))
        losses.append(float(loss))
    return model, optimizer, losses, step


def _batches(rng, sizes):
    return [
        (rng.normal(size=(n, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, n)) for n in sizes
    ]


@pytest.mark.parametrize("device", KERNEL_BACKENDS)
@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_captured_steps_match_eager_steps(device, optimizer_name, rng):
    backend = make_backend(device)
    batches = _batches(rng, [8] * STEPS)
    seed = int(rng.integers(2**31))
    eager_model, eager_opt, eager_losses, _ = _train(backend, batches, optimizer_name, False, seed)
    model, opt, losses, step = _train(backend, batches, optimizer_name, True, seed)
    assert step.captured and step.calls == STEPS
    np.testing.assert_allclose(losses, eager_losses, rtol=RTOL, atol=ATOL, equal_nan=False)
    assert opt.steps == eager_opt.steps == STEPS
    state, eager_state = model.state_dict(), eager_model.state_dict()
    assert state.keys() == eager_state.keys()
    for name, value in state.items():
        np.testing.assert_allclose(
            value, eager_state[name], rtol=RTOL, atol=ATOL, err_msg=name, equal_nan=False
        )
    assert model.random_state() == eager_model.random_state()
    assert model.random_state()["5.calls"] == STEPS  # dropout drew a mask per step
    assert int(state["1.num_batches_tracked"]) == STEPS


@pytest.mark.parametrize("device", KERNEL_BACKENDS)
def test_a_smaller_last_batch_runs_eagerly(device, rng):
    backend = make_backend(device)
    batches = _batches(rng, [8, 8, 8, 8, 5])
    seed = int(rng.integers(2**31))
    eager_model, *_ = _train(backend, batches, "adamw", False, seed)
    model, opt, losses, step = _train(backend, batches, "adamw", True, seed)
    assert step.calls == 4 and opt.steps == 5  # the fifth batch did not go through the graph
    for name, value in model.state_dict().items():
        expected = eager_model.state_dict()[name]
        np.testing.assert_allclose(
            value, expected, rtol=RTOL, atol=ATOL, err_msg=name, equal_nan=False
        )


@pytest.mark.parametrize("device", KERNEL_BACKENDS)
@pytest.mark.parametrize("read", ["check_finite", "check_labels", "float", "format", "element"])
def test_a_step_that_reads_the_device_is_refused_at_its_capture(device, read, rng):
    """A loss's check of its values, float() or formatting of the loss, or float() of one logit
    reads the device: free in the warm-up calls, a named GraphCaptureError at the capture (on a
    GPU rather than CUDA's bare refusal; on cuda-emu rather than a check that a real graph would
    skip at every replay). The loss's checks are refused before any copy (by to_numpy)."""
    backend = make_backend(device)
    model = build_from_spec(SPEC, int(rng.integers(2**31))).to(backend)
    checks = {"check_finite": read == "check_finite", "check_labels": read == "check_labels"}
    step = train_step(model, nn.CrossEntropyLoss(**checks), optim.SGD(model.parameters(), 0.1))
    losses = []

    def reading_step(x, labels):
        logits, loss = step(x, labels)
        if read == "float":
            losses.append(float(loss))
        elif read == "format":
            losses.append(f"{loss:.4f}")
        elif read == "element":  # an element is a 0-d device array, as in CuPy: float() reads it
            losses.append(float(logits[0, 0]))
        return logits, loss

    captured = CapturedStep(reading_step, warmup=2)
    x, labels = (backend.asarray(a) for a in _batches(rng, [8])[0])
    captured(x, labels)
    captured(x, labels)
    # The loss's own reads are named as they happen; on a GPU, float() and the rest reach CUDA,
    # whose refusal the session quotes; either way the error says what not to do.
    named = r"(?=.*\(to_numpy\(\)\) while)" if read.startswith("check") else ""
    with pytest.raises(GraphCaptureError, match=f"{named}(?=.*CUDA graph)(?=.*read the device)"):
        captured(x, labels)
    assert not captured.captured and not backend.capturing
    assert np.isfinite(float(backend.to_numpy(step(x, labels)[1])))  # reads work again


@pytest.mark.emu
def test_a_per_step_scalar_argument_is_caught(rng):
    """A dropout seed passed by value, as the layer did before its counter moved to the device:
    a real graph would draw the same mask at every replay; the emulated session refuses it."""
    backend = make_backend("cuda-emu")
    calls = []

    def step(x):
        calls.append(1)
        return backend.dropout_forward(x, 0.5, seed=len(calls))[0]

    captured = CapturedStep(step, warmup=1)
    x = backend.asarray(rng.normal(size=(4, 16)).astype(np.float32))
    captured(x)
    captured(x)  # captured, then the first replay
    with pytest.raises(EmulationError, match=r"dropout_forward argument 4 is 3 but was 2"):
        captured(x)


@pytest.mark.emu
@pytest.mark.parametrize(
    ("replayed", "message"),
    [
        ([(8, 8)], r"graph replay 2: relu_forward argument 0 is \(8, 8\) but was \(4, 16\)"),
        ([(64, 64)], r"replay 2: launch 0 is relu_forward \(16,\), but the captured step launched"),
        ([(4, 16)] * 2, "graph replay 2: 2 kernel launches, the captured step had 1"),
        ([], "graph replay 2: 0 kernel launches, the captured step had 1"),
    ],
    ids=["array-shape", "grid", "more-launches", "fewer-launches"],
)
def test_a_replay_unlike_the_captured_step_is_caught(rng, replayed, message):
    """What a graph freezes besides scalar arguments: the kernels, their grids, their arrays'
    shapes; a replay whose launches differ in any of these is refused, naming the replay."""
    backend = make_backend("cuda-emu")
    shapes = [[(4, 16)], [(4, 16)], replayed]  # the warm-up, the capture's replay, replay 2

    def step(x):
        arrays = [rng.standard_normal(shape).astype(np.float32) for shape in shapes.pop(0)]
        return [backend.relu_forward(backend.asarray(a)) for a in arrays]

    captured = CapturedStep(step, warmup=1)
    x = backend.asarray(np.ones(3, np.float32))
    captured(x)
    captured(x)
    with pytest.raises(EmulationError, match=message):
        captured(x)


@pytest.mark.emu
def test_eager_launches_between_replays_are_not_taken_for_the_steps(rng):
    """A call of another shape runs eagerly (a last, smaller batch): its launches are not added
    to the captured step's, so the replay after it still matches and gives the step's result."""
    backend = make_backend("cuda-emu")
    captured = CapturedStep(backend.relu_forward, warmup=1)
    x = backend.asarray(rng.standard_normal((4, 16)).astype(np.float32))
    captured(x)
    captured(x)  # captured, then the first replay
    captured(x[:2])
    want = np.maximum(backend.to_numpy(x), 0)
    np.testing.assert_array_equal(backend.to_numpy(captured(x)), want)


def test_the_cpu_has_no_graphs(rng):
    backend = make_backend("cpu")
    step = CapturedStep(lambda x: x * 2)
    with pytest.raises(ValueError, match="CUDA graph capture needs device 'cuda'"):
        step(backend.asarray(rng.normal(size=(3,))))


def test_at_least_one_warmup_call():
    with pytest.raises(ValueError, match="at least one warm-up"):
        CapturedStep(lambda x: x, warmup=0)


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "linear_relu"])
@pytest.mark.parametrize("features", [20, 300], ids=["1x1_conv", "split_reduction"])
@pytest.mark.emu
def test_a_graph_step_needs_no_cublas_inside_the_session(rng, relu, features):
    """Inside a graph session the CUDA backend's linear layer runs on conv2d.cu's kernels (a 1x1
    convolution, or for few outputs and many input features the weight-gradient kernel's split
    reduction); it must give linear's results (forward, fused ReLU or not, and all three
    gradients), as the plain path does: both against the reference loops."""
    backend = make_backend("cuda-emu")
    x = rng.normal(size=(7, features)).astype(np.float32)
    w = rng.normal(size=(5, features)).astype(np.float32) / np.float32(np.sqrt(features))
    b = rng.normal(size=(5,)).astype(np.float32)
    gy = rng.normal(size=(7, 5)).astype(np.float32)
    y_ref = reference.linear_forward(x, w, b)
    want = [np.maximum(y_ref, 0) if relu else y_ref, *reference.linear_backward(gy, x, w)]
    x, w, b, gy = (backend.asarray(a) for a in (x, w, b, gy))

    modes = []

    def linear():
        modes.append(backend.capture_safe)
        return [backend.linear_forward(x, w, b, relu), *backend.linear_backward(gy, x, w)]

    plain = linear()
    assert relu == bool(np.any(backend.to_numpy(plain[0]) == 0))  # the ReLU cut some outputs
    kernels = backend.graph_session().run(linear, ())
    for path, outputs in (("graph session", kernels), ("plain", plain)):
        for name, got, expected in zip(["y", "gx", "gw", "gb"], outputs, want, strict=True):
            assert got.shape == expected.shape, (path, name)
            # float32 sums of at most 300 terms of order 1 against float64 loops
            np.testing.assert_allclose(
                backend.to_numpy(got), expected, rtol=1e-5, atol=1e-5, err_msg=f"{path} {name}"
            )
    assert modes == [False, True] and not backend.capture_safe  # the session's mode, only within


@pytest.mark.parametrize("features", [20, 300], ids=["1x1_conv", "split_reduction"])
@pytest.mark.parametrize("device", KERNEL_BACKENDS)
def test_a_graph_steps_linear_layer_takes_an_empty_batch(device, rng, features):
    """An empty batch through linear in a graph session gives the shapes it gives outside one
    (the split reduction's plan divided by its zero output tiles), and zero weight gradients."""
    backend = make_backend(device)
    w = backend.asarray(rng.normal(size=(5, features)).astype(np.float32))
    b = backend.asarray(rng.normal(size=(5,)).astype(np.float32))
    x = backend.asarray(np.zeros((0, features), np.float32))
    gy = backend.asarray(np.zeros((0, 5), np.float32))

    def linear():
        return [backend.linear_forward(x, w, b), *backend.linear_backward(gy, x, w)]

    y, gx, gw, gb = backend.graph_session().run(linear, ())
    assert (y.shape, gx.shape, gw.shape, gb.shape) == ((0, 5), (0, features), w.shape, b.shape)
    assert not np.any(backend.to_numpy(gw)) and not np.any(backend.to_numpy(gb))
