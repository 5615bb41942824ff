"""Module, Sequential and optimizer bookkeeping: parameters, state dicts, modes, devices, summary."""

import copy
import re

import numpy as np
import pytest
from conftest import make_backend

from gpucnn import nn, optim, reference
from gpucnn.backend import get_backend
from gpucnn.backend.base import Backend
from gpucnn.errors import DeviceMismatchError
from gpucnn.nn.zoo import build_from_spec, build_model, model_names, model_spec


def small_net(rng):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=rng), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(), nn.Linear(36, 2, rng=rng),
    )  # fmt: skip


def test_parameters_and_state_dict_names_follow_pytorch():
    model = small_net(np.random.default_rng())
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "6.weight", "6.bias"]
    state = model.state_dict()
    assert set(state) == set(names) | {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert state["0.weight"].shape == (4, 1, 3, 3) and state["6.weight"].shape == (2, 36)


def test_state_dict_round_trip_restores_outputs():
    rng = np.random.default_rng()
    a, b = small_net(rng).eval(), small_net(rng).eval()
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    assert not np.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(x), b(x))


def _conv_bn_training():
    """(model, Adam optimizer, step): a conv and a batch norm, so that a step changes weights,
    buffers and moments in place."""
    rng = np.random.default_rng()
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=rng), nn.BatchNorm2d(2), nn.Flatten())
    opt = optim.Adam(model.parameters(), 0.1)

    def step():
        model.zero_grad()
        out = model(rng.standard_normal((4, 1, 6, 6)).astype(np.float32))
        # A random upstream gradient: a constant one has no component through batch norm (the
        # sum of its outputs does not depend on its input), so the conv weights would get none,
        # and the step would leave them (sometimes exactly) as they were.
        model.backward(rng.standard_normal(out.shape).astype(np.float32))
        opt.step()

    return model, opt, step


def test_loaded_state_is_the_modules_own_copy():
    """Training updates weights, buffers and optimizer state in place; what was loaded from a dict
    must not write into that dict's arrays (a snapshot, or a second model loaded from it)."""
    model, opt, step = _conv_bn_training()
    step()  # so the optimizer has moment arrays to load
    snapshot, opt_state = model.state_dict(), opt.state_dict()
    kept = {k: np.array(v) for k, v in {**snapshot, **opt_state}.items()}
    model.load_state_dict(snapshot)
    opt.load_state_dict(opt_state)
    step()
    for key, value in {**snapshot, **opt_state}.items():
        np.testing.assert_array_equal(value, kept[key], err_msg=key)
    assert not np.array_equal(model.state_dict()["0.weight"], kept["0.weight"])  # it trained


def test_load_state_dict_refuses_mismatches():
    model = small_net(np.random.default_rng())
    state = model.state_dict()
    with pytest.raises(ValueError, match="missing"):
        model.load_state_dict({k: v for k, v in state.items() if k != "0.bias"})
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['7\.weight'\]"):
        model.load_state_dict({**state, "7.weight": np.zeros((2, 36), np.float32)})
    state["6.weight"] = np.zeros((3, 36), np.float32)
    with pytest.raises(ValueError, match=r"6\.weight.*\(3, 36\)"):
        model.load_state_dict(state)


def test_load_state_dict_refuses_values_its_cast_would_change():
    """Each value is cast to its array's dtype: integer weights, a float step count, float64
    past float32's range (inf once cast) and NaN were taken silently; each is refused, naming
    the key, and the module keeps its arrays."""
    model = small_net(np.random.default_rng())
    before = model.state_dict()
    for key, value, message in [
        ("0.weight", np.ones((4, 1, 3, 3), np.int64), "dtype int64, the module expects a float"),
        ("6.bias", np.ones(2, bool), "dtype bool, the module expects a floating"),
        ("1.num_batches_tracked", np.array(2.5), "dtype float64, the module expects an integer"),
        ("6.bias", np.array([1e39, 0.0]), "1 NaN or infinite values as float32"),
        ("1.running_var", np.full(4, np.nan, np.float32), "4 NaN or infinite values"),
    ]:
        with pytest.raises(ValueError, match=rf"state dict entry '{re.escape(key)}' has {message}"):
            model.load_state_dict({**before, key: value})
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    model.load_state_dict({**before, "6.bias": [1.5, -2], "1.num_batches_tracked": np.uint8(3)})
    assert model[6].bias.data.tolist() == [1.5, -2.0] and model[1].num_batches_tracked == 3


def test_zero_grad_train_eval_and_dropout():
    rng = np.random.default_rng()
    model = small_net(rng)
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    model.backward(np.ones_like(model(x)))
    assert any(np.abs(p.grad).sum() > 0 for p in model.parameters())
    model.zero_grad()
    assert all(np.abs(p.grad).sum() == 0 for p in model.parameters())
    model.eval()
    assert not model[4].training and not model[1].training
    np.testing.assert_array_equal(model(x), model(x))  # eval: deterministic
    model.train()
    assert model[4].training


def test_gradients_accumulate_and_zeroing_is_lazy():
    """After zero_grad the next gradient is taken as it is (no memset, no add); later ones add;
    reading the gradient in between gives zeros; a gradient unlike the parameter is copied in."""
    rng = np.random.default_rng()
    p = nn.Parameter(rng.standard_normal((3, 4)).astype(np.float32))
    g1, g2 = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2))
    p.accumulate(g1)
    np.testing.assert_array_equal(p.grad, g1)  # accumulated into the initial zeros
    p.zero_grad()
    p.accumulate(g1)
    assert p.grad is g1  # adopted: later accumulations add into g1 itself
    expected = g1 + g2
    p.accumulate(g2)
    np.testing.assert_array_equal(p.grad, expected)
    p.zero_grad()
    assert not p.grad.any()  # read while marked zero: zeros
    p.zero_grad()
    wide = g2.astype(np.float64)
    p.accumulate(wide)
    assert p.grad is not wide and p.grad.dtype == np.float32
    np.testing.assert_array_equal(p.grad, g2)
    p.zero_grad()
    p.accumulate(np.asfortranarray(g2))  # not C-contiguous: copied
    assert p.grad.flags.c_contiguous
    np.testing.assert_array_equal(p.grad, g2)


def test_dropout_random_state_resumes_the_same_masks():
    x = np.ones((2, 50), np.float32)
    drop = nn.Dropout(0.5, seed=7)
    drop(x)
    saved = drop.random_state()
    expected = drop(x)
    other = nn.Dropout(0.5, seed=123)
    other.set_random_state(saved)
    np.testing.assert_array_equal(other(x), expected)
    kept = expected != 0
    assert 0 < kept.sum() < x.size and np.all(expected[kept] == 2.0)
    for bad, message in [
        ({"seed": 1}, r"missing \['calls'\], unexpected \[\]"),
        ({**saved, "0.seed": 1}, r"missing \[\], unexpected \['0.seed'\]"),
        ({**saved, "calls": 2.7}, "random state 'calls' must be an int, got 2.7"),
        ({**saved, "calls": -1}, "random state 'calls' must be >= 0, got -1"),
        ({**saved, "seed": "x"}, "random state 'seed' must be an int, got 'x'"),
    ]:
        with pytest.raises((TypeError, ValueError), match=message):
            other.set_random_state(bad)


def test_dropout_layer_forward_and_backward_follow_the_reference(backend, rng):
    """The layer's two training calls against the reference loops: each call's mask is
    ``reference.dropout_mask`` of (seed, call), the output x * mask, and backward
    ``reference.dropout_backward`` (the gradient only through kept elements, scaled alike)."""
    x, gy = (rng.standard_normal((2, 3, 5, 6)).astype(np.float32) for _ in range(2))
    drop = nn.Dropout(0.3, seed=int(rng.integers(2**31)))
    for call in range(2):
        mask = reference.dropout_mask(x.shape, 0.3, drop.seed, call)
        y = backend.to_numpy(drop(backend.asarray(x)))
        gx = backend.to_numpy(drop.backward(backend.asarray(gy)))
        assert 0 < np.count_nonzero(mask) < mask.size
        np.testing.assert_allclose(y, reference.dropout_forward(x, mask), rtol=1e-6)
        np.testing.assert_allclose(gx, reference.dropout_backward(gy, mask), rtol=1e-6)


def test_dropout_layers_without_a_seed_draw_different_masks():
    """seed=None takes fresh entropy, as rng=None does everywhere: two such layers in one model
    must not drop the same elements (a fixed default seed would make them)."""
    a, b = nn.Dropout(0.5), nn.Dropout(0.5)
    x = np.ones((4, 64), np.float32)
    assert a.seed != b.seed and not np.array_equal(a(x), b(x))


def test_dropout_passes_values_through_at_p_0_and_in_eval_after_training(rng):
    """p=0 in training draws no mask (the input itself comes back, no call is counted); in eval
    after a training call, backward passes the gradient as it is, not through that call's mask."""
    x, gy = (rng.standard_normal((3, 8)).astype(np.float32) for _ in range(2))
    off = nn.Dropout(0.0)
    assert off(x) is x and off.calls == 0 and off.backward(gy) is gy
    drop = nn.Dropout(0.5)
    drop(x)
    drop.eval()
    assert drop(x) is x and drop.backward(gy) is gy


def test_an_optimizer_step_advances_its_clock_in_place():
    """The step count lives beside the weights and one in-place add advances it: on a GPU
    ``clock[0] += 1`` is two kernels, two nodes of a captured step (the add on a view, then
    CuPy's copy of it back through ``__setitem__``)."""

    class Recording(np.ndarray):
        writes = 0

        def __setitem__(self, key, value):
            Recording.writes += 1
            super().__setitem__(key, value)

    model = nn.Linear(3, 2, rng=0)
    for opt in (optim.SGD(model.parameters(), 0.1, momentum=0.9), optim.Adam(model.parameters())):
        opt._clock = opt._clock.view(Recording)
        for _ in range(2):
            model(np.ones((4, 3), np.float32))
            model.backward(np.ones((4, 2), np.float32))
            opt.step()
        assert opt.steps == 2 and Recording.writes == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda ps, f: optim.SGD(ps, 0.1, momentum=f(0.9), weight_decay=f(0.01), nesterov=True),
        lambda ps, f: optim.Adam(ps, 1e-2, betas=(f(0.9), f(0.999)), eps=f(1e-8)),
        lambda ps, f: optim.AdamW(ps, 1e-2, betas=(f(0.8), f(0.99)), weight_decay=f(0.05)),
    ],
    ids=["sgd", "adam", "adamw"],
)
def test_numpy_hyperparameters_train_as_the_python_numbers_they_hold(backend, rng, make):
    """Hyperparameters given as NumPy float64 scalars (read from an array, a config) train a
    float32 model to the bits Python floats give: NumPy 2 let a float64 scalar promote some of
    a step's float32 operations and not others, so the step's result depended on them, and on
    the backend's order of operations. Stored as Python floats."""
    x, gy = rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal((6, 3))
    results = []
    for number in (float, np.float64):
        model = nn.Linear(5, 3, rng=7).to(backend)
        opt = make(model.parameters(), number)
        assert all(type(v) is float for k, v in vars(opt).items() if k in HYPER)
        for _ in range(2):
            model(backend.asarray(x))
            model.backward(backend.asarray(gy.astype(np.float32)))
            opt.step()
        results.append([backend.to_numpy(p.data) for p in model.parameters()])
    for ours, python in zip(*results, strict=True):
        assert np.array_equal(ours, python)


HYPER = ("momentum", "weight_decay", "eps")


def test_batch_norm_with_numpy_eps_and_momentum_computes_as_the_python_numbers(backend, rng):
    """BatchNorm2d's eps and momentum given as NumPy float64 scalars give the bits and dtype
    Python floats give, in training (output, running statistics) and in eval: a float64 eps
    promoted float32 statistics in some ops and not others, and the CPU's eval output was
    float32 where the base's was float64 (found in review)."""
    x = (rng.standard_normal((6, 3, 4, 5)) * 2 + 1).astype(np.float32)
    results = []
    for number in (float, np.float64):
        layer = nn.BatchNorm2d(3, eps=number(1e-3), momentum=number(0.3)).to(backend)
        assert type(layer.eps) is float and type(layer.momentum) is float
        trained = layer(backend.asarray(x))
        evaluated = layer.eval()(backend.asarray(x))
        arrays = (trained, evaluated, layer.running_mean, layer.running_var)
        results.append([backend.to_numpy(a) for a in arrays])
    for ours, python in zip(*results, strict=True):
        assert ours.dtype == python.dtype == np.float32 and np.array_equal(ours, python)


def test_cpu_eval_batch_norm_with_wider_statistics_is_the_base_promotion(cpu, rng):
    """The backend called with float64 running statistics for a float32 input (no layer does)
    gives the base expression's float64 result, not the blocked pass's float32."""
    x = rng.standard_normal((4, 3, 2, 5)).astype(np.float32)
    gamma, beta, mean = (rng.standard_normal(3).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.5, 2, 3)  # float64
    got = cpu.batch_norm2d_forward_eval(x, gamma, beta, mean, var, 1e-5)
    want = Backend.batch_norm2d_forward_eval(cpu, x, gamma, beta, mean, var, 1e-5)
    assert got.dtype == want.dtype == np.float64 and np.array_equal(got, want)


def test_optimizer_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng()
    grads = [rng.standard_normal(5).astype(np.float32) for _ in range(4)]

    def run(steps, opt_state=None):
        p = nn.Parameter(np.arange(5, dtype=np.float32))
        opt = optim.Adam([p], 0.1)
        if opt_state is not None:
            p.data[...] = opt_state[0]
            opt.load_state_dict(opt_state[1])
        for g in steps:
            p.grad[...] = g
            opt.step()
        return p.data.copy(), opt.state_dict()

    full, _ = run(grads)
    half_p, half_state = run(grads[:2])
    resumed, _ = run(grads[2:], (half_p, half_state))
    np.testing.assert_array_equal(full, resumed)


def test_optimizer_load_state_dict_refuses_a_bad_state_whole():
    """Every entry is checked before any is taken, as Module.load_state_dict does: a refused
    state had already set its lr and step count and dropped the momentum of the parameters after
    the bad entry; a key without a parameter index was a bare unpacking error, a missing lr a
    KeyError, and a negative index was taken as a parameter counted from the end."""
    model = nn.Linear(3, 2, rng=0)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(np.ones((4, 3), np.float32))
    model.backward(np.ones((4, 2), np.float32))
    opt.step()
    good = opt.state_dict()
    for change, message in [
        (
            {"lr": np.array(0.5), "1.momentum_buffer": np.zeros(5, np.float32)},
            r"'1.momentum_buffer' has shape \(5,\), parameter 1 has \(2,\)",
        ),
        ({"momentum": np.array(0.9)}, "unexpected entry 'momentum'"),
        ({"-1.momentum_buffer": np.zeros(2, np.float32)}, "unexpected entry '-1.momentum_buffer'"),
        ({"2.momentum_buffer": np.zeros(2, np.float32)}, "unexpected entry '2.momentum_buffer'"),
        ({"0.exp_avg": np.zeros((2, 3), np.float32)}, "unexpected entry '0.exp_avg'"),
        ({"lr": None}, r"optimizer state is missing \['lr'\]"),
        ({"lr": np.array(-1.0)}, "learning rate must be non-negative"),
        ({"steps": np.array(-1)}, "optimizer state's steps must be >= 0, got -1"),
        ({"steps": np.array(2.5)}, "optimizer state's steps must be an int, got array"),
        ({"\u00b2.momentum_buffer": np.zeros(2, np.float32)}, "unexpected entry '\u00b2"),
        ({"lr": np.array("0.5")}, r"learning rate must be a number, got array\('0.5'"),
        ({"lr": np.array(True)}, r"learning rate must be a number, got array\(True\)"),
        ({"lr": np.array([0.1, 0.2])}, "learning rate must be a number, got array"),
        ({"0.momentum_buffer": np.full((2, 3), np.nan)}, "'0.momentum_buffer' has 6 NaN"),
        ({"1.momentum_buffer": np.ones(2, complex)}, "dtype complex128, parameter 1 expects a"),
        ({"1.momentum_buffer": np.array(["a", "b"])}, "dtype <U1, parameter 1 expects a float"),
    ]:
        state = {k: v for k, v in {**good, **change}.items() if v is not None}
        with pytest.raises((ValueError, TypeError), match=message):
            opt.load_state_dict(state)
        after = opt.state_dict()
        assert after.keys() == good.keys()
        for key, value in good.items():
            np.testing.assert_array_equal(after[key], value, err_msg=key)


def test_scheduler_load_state_dict_refuses_a_bad_state():
    """As the optimizer's: a missing entry was a KeyError, a last_epoch of 2.7 was truncated to
    2, a negative one or True taken, and a base_lr of "x" gave float()'s words."""
    sched = optim.StepLR(optim.SGD([nn.Parameter(np.zeros(3, np.float32))], 0.1), 2)
    good = sched.state_dict()
    for change, message in [
        ({"last_epoch": None}, r"schedule state is missing \['last_epoch'\]"),
        ({"last_epoch": np.array(2.7)}, "schedule state's last_epoch must be an int, got array"),
        ({"last_epoch": np.array(True)}, "schedule state's last_epoch must be an int"),
        ({"last_epoch": np.array(-3)}, "schedule state's last_epoch must be >= 0, got -3"),
        ({"base_lr": "x"}, "schedule state's base_lr must be a number, got 'x'"),
    ]:
        state = {k: v for k, v in {**good, **change}.items() if v is not None}
        with pytest.raises((ValueError, TypeError), match=message):
            sched.load_state_dict(state)
        assert sched.state_dict() == good and sched.optimizer.lr == 0.1


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_scheduler_state_dict_resumes_the_schedule(schedule):
    """A schedule rebuilt around an optimizer whose lr is already decayed (as after loading the
    optimizer's state) and given the saved state continues the uninterrupted schedule: its
    base_lr and the optimizer's lr for the saved epoch both come from the state."""

    def make(lr):
        opt = optim.SGD([nn.Parameter(np.zeros(3, np.float32))], lr)
        if schedule == "step":
            return opt, optim.StepLR(opt, 2, 0.5)
        return opt, optim.CosineAnnealingLR(opt, 7, 0.01)

    opt, sched = make(0.1)
    lrs = []
    for _ in range(6):
        sched.step()
        lrs.append(opt.lr)
    opt, sched = make(0.1)
    for _ in range(3):
        sched.step()
    saved = sched.state_dict()
    resumed_opt, resumed = make(0.0123)  # neither the base lr nor the lr of epoch 3
    resumed.load_state_dict(saved)
    assert resumed_opt.lr == pytest.approx(lrs[2], rel=1e-12)
    for want in lrs[3:]:
        resumed.step()
        assert resumed_opt.lr == pytest.approx(want, rel=1e-12)


def test_state_dicts_are_snapshots():
    """state_dict() of a model and of its optimizer are copies: training on after taking them
    (weights, batch-norm buffers and moments all change in place) leaves them as they were."""
    model, opt, step = _conv_bn_training()
    step()
    states = {**model.state_dict(), **{f"opt/{k}": v for k, v in opt.state_dict().items()}}
    kept = {k: np.array(v) for k, v in states.items()}
    step()
    changed = {**model.state_dict(), **{f"opt/{k}": v for k, v in opt.state_dict().items()}}
    for key, value in states.items():
        np.testing.assert_array_equal(value, kept[key], err_msg=key)
        if key != "opt/lr":
            assert not np.array_equal(changed[key], kept[key]), key  # it did change in place


def test_summary_lists_shapes_and_parameter_counts():
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 13 * 13, 10)
    )
    text = model.summary((1, 28, 28))
    assert "(16, 26, 26)" in text and "(16, 13, 13)" in text and "(10,)" in text
    assert "160" in text  # 16 * (3*3*1 + 1), the tutorial's count
    assert f"{160 + 2704 * 10 + 10:,}" in text


def test_summary_names_the_layer_that_cannot_take_its_input():
    """A shape that does not fit gave the op's message alone, naming no layer; the mode is kept."""
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 2)
    )
    with pytest.raises(
        ValueError,
        match=r"summary: layer 4 \(Linear\) cannot take its input of shape \(1, 64\): linear: "
        "input has 64 features",
    ):
        model.summary((1, 10, 10))
    with pytest.raises(ValueError, match=r"layer 0 \(Conv2d\) .* \(1, 3, 8, 8\): conv2d: input"):
        model.summary((3, 8, 8))
    assert model.training and "(2,)" in model.summary((1, 8, 8))


@pytest.mark.parametrize("shape", [(28, 28), (1, 1, 28, 28)])
def test_summary_of_a_shape_without_channels_or_with_a_batch_says_the_form(shape):
    """It gave the convolution's '4-D (N, C, H, W), got shape (1, 28, 28)', of the shape with
    the batch axis that summary adds, as if the user had given that."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 2))
    with pytest.raises(ValueError) as info:
        model.summary(shape)
    message = str(info.value)
    assert f"layer 0 (Conv2d) cannot take input_shape {shape} as a batch of one" in message
    assert "input_shape is one input's shape, without the batch axis: (C, H, W)" in message
    assert "(10,)" in nn.Sequential(nn.Linear(784, 10)).summary((784,))  # no channels: fine


@pytest.mark.parametrize(
    ("shape", "error", "message"),
    [
        (784, TypeError, "input_shape must be a tuple of sizes such as (C, H, W), got 784"),
        ((1, -28, 28), ValueError, "input_shape (1, -28, 28): a size must be >= 1, got -28"),
        ((1, 28.0, 28), TypeError, "input_shape (1, 28.0, 28): a size must be an int, got 28.0"),
    ],
)
def test_summary_names_an_input_shape_that_is_no_shape(shape, error, message):
    """These were NumPy's words about the probe it makes ('Value after * must be an iterable,
    not int', 'negative dimensions are not allowed'), or a Linear's about a (1,) input."""
    with pytest.raises(error, match=re.escape(f"summary: {message}")):
        nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).summary(shape)


def test_to_cpu_keeps_arrays_on_cpu():
    model = small_net(np.random.default_rng()).to("cpu")
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())
    assert model.backend.name == "cpu"


def test_backward_without_input_grad_gives_the_same_parameter_gradients():
    rng = np.random.default_rng()
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=rng), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(36, 2, rng=rng),
    )  # fmt: skip
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    g = rng.standard_normal((3, 2)).astype(np.float32)
    model(x)
    assert model.backward(g).shape == x.shape
    full = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    model(x)
    assert model.backward(g, input_grad=False) is None
    for got, want in zip(model.parameters(), full, strict=True):
        np.testing.assert_array_equal(got.grad, want)
        assert np.any(want != 0)


def test_optimizer_state_follows_the_model_to_another_device():
    emu = make_backend("cuda-emu")
    layer = nn.Linear(3, 2, rng=np.random.default_rng())
    opt = optim.SGD(layer.parameters(), 0.1, momentum=0.9)
    x = np.ones((4, 3), np.float32)
    layer.backward(np.ones_like(layer(x)))
    opt.step()
    layer.to(emu)
    opt.zero_grad()
    layer(emu.asarray(x))
    layer.backward(emu.asarray(np.ones((4, 2), np.float32)))
    opt.step()
    assert all(emu.owns(s["momentum_buffer"]) for s in opt.state)
    assert all(emu.owns(p.data) for p in layer.parameters())


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_in_eval_mode_gives_the_loss_alone(backend, rng, smoothing):
    """Evaluation needs no gradient: the same loss as in training mode, and backward after it
    is refused with the reason instead of returning a stale gradient."""
    logits = backend.asarray(rng.standard_normal((5, 4)).astype(np.float32))
    labels = backend.asarray(rng.integers(0, 4, 5))
    loss_fn = nn.CrossEntropyLoss(smoothing)
    trained = float(loss_fn(logits, labels))
    assert loss_fn.backward().shape == (5, 4)
    evaluated = float(loss_fn.eval()(logits, labels))
    assert evaluated == pytest.approx(trained, rel=1e-6)
    with pytest.raises(RuntimeError, match="eval mode"):
        loss_fn.backward()


def test_batch_norm_running_variance_keeps_its_precision_when_small(backend, rng):
    """The running variance is the batch's own unbiased variance, not one rebuilt from the
    float32 inverse std (1/invstd^2 - eps lost ~eps/var of it: 1e-3 at var 1e-8)."""
    layer = nn.BatchNorm2d(3, momentum=1.0).to(backend)  # running = this batch's statistics
    x = (rng.standard_normal((8, 3, 5, 5)) * 1e-4).astype(np.float32)
    layer(backend.asarray(x))
    exact = x.astype(np.float64).var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(backend.to_numpy(layer.running_var), exact, rtol=1e-5)


def test_batch_norm_takes_what_pytorch_takes(rng):
    """Momentum 0 (running statistics kept as they are) and, in training, a single image with
    more than one pixel per channel: PyTorch refuses neither, only one value per channel."""
    layer = nn.BatchNorm2d(3, momentum=0)
    x = (rng.standard_normal((1, 3, 2, 2)) * 3 + 1).astype(np.float32)
    y = layer(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert np.array_equal(layer.running_mean, np.zeros(3)) and np.all(layer.running_var == 1)
    assert int(layer.num_batches_tracked) == 1


@pytest.mark.parametrize(
    ("layer", "text"),
    [
        (nn.MaxPool2d(3, stride=2, padding=1), "MaxPool2d(kernel_size=3, stride=2, padding=1)"),
        (nn.AvgPool2d(2), "AvgPool2d(kernel_size=2, stride=None, padding=0)"),
        (nn.Dropout(0.25), "Dropout(p=0.25)"),
        (nn.BatchNorm2d(4, eps=1e-3, momentum=0.2), "BatchNorm2d(4, eps=0.001, momentum=0.2)"),
    ],
    ids=repr,
)
def test_layers_show_their_settings_in_print_model(layer, text):
    """``print(model)`` shows each layer's settings, as PyTorch's does."""
    assert repr(layer) == text


# Every layer with a backward, the input it takes, and whether it runs in eval mode.
GRAD_CHECKED_LAYERS = {
    "conv2d": (lambda rng: nn.Conv2d(3, 4, 3, rng=rng), (2, 3, 8, 8), False),
    "linear": (lambda rng: nn.Linear(5, 3, rng=rng), (2, 5), False),
    "max_pool2d": (lambda rng: nn.MaxPool2d(2), (2, 3, 6, 6), False),
    "avg_pool2d": (lambda rng: nn.AvgPool2d(2), (2, 3, 6, 6), False),
    "global_avg_pool2d": (lambda rng: nn.GlobalAvgPool2d(), (2, 3, 6, 6), False),
    "relu": (lambda rng: nn.ReLU(), (2, 3, 4, 4), False),
    "flatten": (lambda rng: nn.Flatten(), (2, 3, 4, 4), False),
    "dropout": (lambda rng: nn.Dropout(0.3, seed=1), (2, 3, 4, 4), False),
    "dropout_eval": (lambda rng: nn.Dropout(0.3, seed=1), (2, 3, 4, 4), True),
    "batch_norm2d": (lambda rng: nn.BatchNorm2d(3), (2, 3, 4, 4), False),
    "batch_norm2d_eval": (lambda rng: nn.BatchNorm2d(3), (2, 3, 4, 4), True),
}


@pytest.mark.parametrize("name", GRAD_CHECKED_LAYERS)
def test_layer_backward_refuses_a_gradient_unlike_the_forward_output(backend, rng, name):
    """A gradient for another batch size broadcast silently on the CPU (one sample's gradient
    given to a batch of two) or lost rows, another shape failed deep in NumPy, and a float64 one
    was taken as it came: each is refused, naming the layer, the shape or dtype expected and got;
    the right gradient still works after them."""
    make, x_shape, evaluating = GRAD_CHECKED_LAYERS[name]
    layer = make(rng).to(backend)
    layer.train(not evaluating)
    y = layer(backend.asarray(rng.standard_normal(x_shape).astype(np.float32)))
    shape, (n, *rest) = tuple(y.shape), y.shape
    for bad in [(1, *rest), (n + 1, *rest), (*shape[:-1], shape[-1] + 1)]:
        g = backend.asarray(rng.standard_normal(bad).astype(np.float32))
        expected = (
            rf"{type(layer).__name__}\.backward: grad_out must have shape {re.escape(str(shape))}"
        )
        with pytest.raises(ValueError, match=rf"{expected}.*got {re.escape(str(bad))}"):
            layer.backward(g)
    g = rng.standard_normal(shape)
    with pytest.raises(TypeError, match="must have dtype float32.*got float64"):
        layer.backward(backend.asarray(g))
    assert layer.backward(backend.asarray(g.astype(np.float32))).shape == x_shape


@pytest.mark.parametrize("name", [*GRAD_CHECKED_LAYERS, "cross_entropy"])
def test_layer_backward_refuses_a_gradient_on_another_device(rng, name):
    """A gradient on another device than the forward's output was taken as it came: on the CPU
    pooling returned an input gradient on the other device, and elsewhere NumPy or a kernel
    failed deep inside, naming neither the layer nor grad_out. Each is refused as the forward
    refuses mixed devices, naming the layer and both devices (a NumPy scalar, which goes with
    arrays of either device, is still taken by the loss)."""
    emu = make_backend("cuda-emu")
    for device, other in ((get_backend("cpu"), emu), (emu, get_backend("cpu"))):
        if name == "cross_entropy":
            layer, x_shape = nn.CrossEntropyLoss(), (3, 4)
        else:
            make, x_shape, evaluating = GRAD_CHECKED_LAYERS[name]
            layer = make(rng).to(device).train(not evaluating)
        x = device.asarray(rng.standard_normal(x_shape).astype(np.float32))
        y = layer(x, device.asarray([0, 1, 3])) if name == "cross_entropy" else layer(x)
        with pytest.raises(
            DeviceMismatchError,
            match=rf"{type(layer).__name__}\.backward: grad_out is on device '{other.name}' but "
            rf"the forward's output is on '{device.name}'",
        ):
            layer.backward(other.asarray(np.ones(y.shape, np.float32)))
        layer.backward(device.asarray(np.ones(y.shape, np.float32)))
        if name == "cross_entropy":
            layer.backward(np.float32(2.0))


def test_an_empty_sequential_is_the_identity_both_ways():
    """As PyTorch's: its forward returned the input, and its backward was an IndexError."""
    x = np.ones((2, 3), np.float32)
    model = nn.Sequential()
    assert model(x) is x and model.backward(x) is x
    assert model.backward(x, input_grad=False) is None


def test_a_slice_of_a_sequential_is_a_sequential_of_the_same_layers(rng):
    """As PyTorch's (it was a list): the layer objects themselves, numbered from "0", in the
    training mode of the whole, and the two halves of a model compose to it."""
    model = small_net(rng).eval()
    head, tail = model[:4], model[4:]
    assert isinstance(head, nn.Sequential) and isinstance(tail, nn.Sequential)
    assert [id(layer) for layer in (*head, *tail)] == [id(layer) for layer in model]
    assert list(tail.state_dict()) == ["2.weight", "2.bias"] and tail[2] is model[6]
    assert not head.training and model[::2][1] is model[2] and len(model[7:]) == 0
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(tail(head(x)), model(x))


def test_fused_backward_paths_check_the_gradient_too(rng):
    """A convolution's parameter-only backward and max pooling's ReLU-fused backward check it."""
    conv, pool = nn.Conv2d(1, 2, 3, rng=rng), nn.MaxPool2d(2)
    y = pool(conv(rng.standard_normal((2, 1, 6, 6)).astype(np.float32), relu=True))
    with pytest.raises(ValueError, match=r"MaxPool2d\.backward.*got \(1, 2, 2, 2\)"):
        pool.backward(np.ones((1, *y.shape[1:]), np.float32), relu=True)
    with pytest.raises(ValueError, match=r"Conv2d\.backward.*got \(2, 2, 4, 5\)"):
        conv.backward_params(np.ones((2, 2, 4, 5), np.float32))


def test_cross_entropy_backward_before_any_forward_says_so():
    """As every layer's: it was an AttributeError about a private attribute, '_grad'."""
    for grad_out in (None, np.array(1.0, np.float32)):
        with pytest.raises(
            RuntimeError, match=r"CrossEntropyLoss\.backward: called before forward"
        ):
            nn.CrossEntropyLoss().backward(grad_out)


def test_cross_entropy_backward_checks_a_given_gradient(backend, rng):
    """The loss's upstream gradient, when given, must be like the loss: shape () and its dtype."""
    loss_fn = nn.CrossEntropyLoss()
    logits = backend.asarray(rng.standard_normal((5, 4)).astype(np.float32))
    loss_fn(logits, backend.asarray(rng.integers(0, 4, 5)))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss\.backward.*shape \(\).*got \(5,\)"):
        loss_fn.backward(backend.asarray(np.ones(5, np.float32)))
    with pytest.raises(TypeError, match="dtype float32.*got float64"):
        loss_fn.backward(backend.asarray(np.array(2.0)))
    twice = loss_fn.backward(backend.asarray(np.array(2.0, np.float32)))
    np.testing.assert_allclose(backend.to_numpy(twice), 2 * backend.to_numpy(loss_fn.backward()))


@pytest.mark.parametrize(
    ("make", "fan_in"),
    [
        (lambda rng: nn.Conv2d(8, 64, (3, 5), groups=2, rng=rng), 4 * 3 * 5),
        (lambda rng: nn.Linear(300, 20, rng=rng), 300),
    ],
    ids=["conv2d", "linear"],
)
def test_weights_start_he_normal_and_biases_at_zero(make, fan_in, rng):
    """He (Kaiming) normal weights, std sqrt(2 / fan_in), fan_in the inputs of one output:
    in_channels / groups * kh * kw for a convolution, in_features for a linear layer (the
    tutorial's randn * sqrt(2 / fan_in)); zero biases. Over 3840 and 6000 draws the sample std
    lies within 10% of it and the mean within a tenth of it (6 standard errors or more); the
    other fan (out_channels * kh * kw = 960, or out_features = 20) gives a std 4x off."""
    layer = make(rng)
    weights = layer.weight.data
    assert weights.dtype == np.float32
    assert abs(weights.std() / np.sqrt(2 / fan_in) - 1) < 0.1
    assert abs(weights.mean()) < 0.1 * np.sqrt(2 / fan_in)
    np.testing.assert_array_equal(layer.bias.data, np.zeros(layer.bias.shape, np.float32))


def test_zoo_specs_are_copies_that_building_leaves_alone(rng):
    """model_spec gives a copy (editing it leaves the zoo alone), and building a model from a
    spec adds nothing to it (no generator or seed: the spec is stored in checkpoints as JSON)."""
    spec = model_spec("fashion-net")
    before = copy.deepcopy(spec)
    spec["layers"][0][1]["out_channels"] = 3
    assert model_spec("fashion-net") == before
    build_from_spec(before, rng)
    assert before == model_spec("fashion-net")
    with pytest.raises(ValueError, match="unknown model 'resnet'; choose one of: fashion-net, "):
        model_spec("resnet")


@pytest.mark.parametrize(
    "spec, error, message",
    [
        (None, TypeError, "a model spec is a dict with a 'layers' list, got None"),
        ({"name": "x"}, TypeError, "a model spec is a dict with a 'layers' list, got {'name'"),
        ({"layers": [["ReLU", {}], ["Linear"]]}, TypeError, r"layer 1 \(\['Linear'\]\): expec"),
        ({"layers": [[["ReLU"], {}]]}, ValueError, "layer 0 .*: unknown layer; known: Conv2d, "),
        ({"layers": [["Linear", [3, 2]]]}, TypeError, "layer 0 .*: its arguments must be a dict"),
        ({"layers": [["Linear", {"in_features": 3}]]}, TypeError, "layer 0 .*'out_features'"),
        (
            {"layers": [["ReLU", {}], ["MaxPool2d", {"kernel_size": 0}]]},
            ValueError,
            "layer 1 .*kernel_size must be positive",
        ),
    ],
)
def test_a_malformed_spec_is_refused_naming_the_layer_entry(spec, error, message):
    """Python's words ("'NoneType' object is not subscriptable", KeyError 'layers', "unhashable
    type: 'list'") named neither the spec nor which of its layers was wrong."""
    with pytest.raises(error, match=message):
        build_from_spec(spec)


def test_zoo_models_draw_every_weight_and_dropout_seed_from_the_rng(rng):
    """One seed rebuilds a model exactly, weights and dropout seeds alike; another seed gives
    other weights, and each dropout layer its own seed (two layers, or two models, sharing a
    seed would drop the same units)."""
    seeds = [int(s) for s in rng.integers(2**32, size=2)]
    models = [build_model("fashion-net", rng=s) for s in (*seeds, seeds[0])]
    states = [m.state_dict() for m in models]
    for key in states[0]:
        np.testing.assert_array_equal(states[0][key], states[2][key])
        if key.endswith("weight") and key.split(".")[0] in ("0", "4", "10", "13"):
            assert not np.array_equal(states[0][key], states[1][key]), key
    dropout = [[v for k, v in m.random_state().items() if k.endswith("seed")] for m in models]
    assert dropout[0] == dropout[2] and len(set(dropout[0] + dropout[1])) == 4


def test_zoo_convolutions_before_batch_norm_have_no_bias():
    """The norm's shift replaces a bias there (which would only cost parameters)."""
    for name in model_names():
        layers = list(build_model(name, rng=0))
        for layer, following in zip(layers[:-1], layers[1:], strict=True):
            if isinstance(following, nn.BatchNorm2d):
                assert isinstance(layer, nn.Conv2d) and layer.bias is None, name


def test_summary_probes_in_the_models_dtype_and_leaves_its_state_alone(rng):
    """A float64 model is summarised with a float64 probe (a float32 one is refused by its
    layers), in eval mode: batch norm's running statistics and dropout's counters are as before
    (a training-mode probe of zeros would move them). The table opens with the input's row,
    its columns apart; a layer's TypeError stays a TypeError, naming the layer."""
    f64 = np.float64
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, rng=rng, dtype=f64), nn.BatchNorm2d(3, dtype=f64), nn.ReLU(),
        nn.Dropout(0.5), nn.Flatten(), nn.Linear(48, 2, rng=rng, dtype=f64),
    )  # fmt: skip
    model[1].running_mean[...] = rng.standard_normal(3)  # away from the zeros' mean
    before, random_state = model.state_dict(), model.random_state()
    lines = model.summary((2, 6, 6)).splitlines()
    assert lines[1].split() == ["input", "(2,", "6,", "6)", "0"]
    assert all(re.match(r"(input|\d: \w+)  +\(", line) for line in lines[1:-1]), lines
    assert lines[-1].split() == ["total", f"{3 * (2 * 9 + 1) + 6 + 48 * 2 + 2:,}"]
    after = model.state_dict()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    assert model.random_state() == random_state and model.training
    mixed = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, dtype=f64), nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"summary: layer 2 \(Linear\) cannot take .* dtype"):
        mixed.summary((1, 2, 2))


def _forward_arrays(model):
    """(layer name, attribute) of every array a layer of ``model`` keeps for its backward."""
    return [
        (name, attr)
        for name, layer in model.named_modules()
        for attr in layer._forward_arrays
        if getattr(layer, attr, None) is not None
    ]


def test_a_sequentials_backward_releases_each_layers_arrays_and_runs_once(rng):
    """Once backward is done no layer keeps its forward's arrays (they are freed then, not at
    the next forward), and a second backward says to run the forward again; the fused ReLU's
    output (the max pool masks for it) goes as soon as the pool has read it. The gradients are
    those of a model whose layers keep everything (released after the fact here)."""
    model = small_net(rng)
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    g = rng.standard_normal((5, 2)).astype(np.float32)
    model(x)
    kept = _forward_arrays(model)
    assert ("2.", "_y") not in kept  # the ReLU, masked by the max pool after it
    assert {("0.", "_saved"), ("1.", "_cache"), ("3.", "_argmax"), ("6.", "_x")} <= set(kept)
    gx = model.backward(g)
    assert _forward_arrays(model) == []
    with pytest.raises(RuntimeError, match=r"Linear\.backward: called before forward \(or after"):
        model.backward(g)
    layers = list(copy.deepcopy(model).eval())  # the same weights, called one by one: unfused
    model.eval()(x)
    y, expected = x, g
    for layer in layers:
        y = layer(y)
    for layer in reversed(layers):
        expected = layer.backward(expected)
    assert all(layer._output_spec is not None for layer in layers)  # on their own, they keep all
    np.testing.assert_allclose(model.backward(g), expected, rtol=1e-5, atol=1e-6)
    assert gx.shape == x.shape


def _arrays_left(model):
    """(layer name, attribute) of every array a layer of ``model`` holds that is neither a
    parameter nor a buffer nor a dropout layer's counter: what a layer forgot to release too."""
    left = []
    for name, layer in model.named_modules():
        for attr, value in vars(layer).items():
            if attr in ("_parameters", "_buffers", "_modules", "_calls") or attr in layer._buffers:
                continue
            values = value if isinstance(value, tuple | list) else (value,)
            if any(isinstance(v, np.ndarray) for v in values):
                left.append((name, attr))
    return left


def test_a_train_step_an_evaluation_and_a_summary_leave_only_weights_and_their_state(rng):
    """What a trained model holds between steps: its weights, gradients and momentum, not the
    step's activations (fashion-net at batch 16 kept 7 MB of them before its layers' arrays were
    freed after their backward), nor an evaluation's or a summary's last batch. Looked for two
    ways: every layer attribute that holds an array, and the arrays traced meanwhile; and the
    evaluation's peak is an inference forward's."""
    import tracemalloc

    from gpucnn.data.loader import DataLoader
    from gpucnn.nn.summary import summarize
    from gpucnn.train import evaluate, train_step, training_loss

    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 16)

    def trained_step():
        model = build_model("fashion-net", rng=rng)
        opt = optim.SGD(model.parameters(), 0.01, momentum=0.9)
        return model, train_step(model, training_loss(0.0), opt)

    trained_step()[1](x, y)  # once untraced: the first step's one-time imports and caches
    model, step = trained_step()
    weights = sum(p.data.nbytes for p in model.parameters())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2):
            step(x, y)
        after_steps = tracemalloc.get_traced_memory()[0] - before
        left_by_steps = _arrays_left(model)
        tracemalloc.reset_peak()
        evaluate(model, DataLoader(x, y, 16))
        after_evaluation, evaluation_peak = np.subtract(tracemalloc.get_traced_memory(), before)
        left_by_evaluation = _arrays_left(model)
    finally:
        tracemalloc.stop()
    model(x)
    summarize(model, (1, 28, 28))  # its probe's forward, then nothing kept
    assert left_by_steps == left_by_evaluation == _arrays_left(model) == []
    # New since tracing began: the momentum and the gradients (each step's replace the zeros
    # made with the weights, untraced), one weights' worth each; 256 KiB for the rest.
    assert after_steps < 2 * weights + 2**18
    assert after_evaluation < 2 * weights + 2**18
    # Evaluated within inference(): under three first-layer activations (the test above).
    assert evaluation_peak < 2 * weights + 3 * (16 * 64 * 28 * 28 * 4)


def test_within_inference_a_forward_keeps_nothing_and_gives_the_same_output(rng):
    """No backward follows: every layer's arrays go as soon as it is done (nested Sequentials
    too), the output is the same bits, a backward says to run the forward again, and on the way
    out (an error too) the layers keep their arrays again for the next training forward."""
    model = nn.Sequential(small_net(rng), nn.ReLU()).eval()
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    expected = model(x)
    with model.inference():
        got = model(x)
        assert _arrays_left(model) == []
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(RuntimeError, match="called before forward"):
        model.backward(np.ones_like(got))
    with pytest.raises(ZeroDivisionError), model.inference():
        model(x)
        1 / 0  # noqa: B018 - an error inside the context
    model(x)
    assert ("0.0.", "_saved") in _arrays_left(model) and not model._inference


def test_an_inference_forward_peaks_at_about_one_layers_input_and_output(rng):
    """fashion-net's largest activation is its first convolution's output: within inference the
    traced peak of a forward stays under three of them (2.7 measured: batch norm's input, output
    and blocks), where a forward that keeps its arrays for backward takes 3.7."""
    import tracemalloc

    model = build_model("fashion-net", rng=rng).eval()
    # Batch 16: under cpu_threads.MIN_BATCH, so one thread whatever the cores (each thread holds
    # a convolution chunk's columns at once).
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    with model.inference():
        model(x)  # once untraced: one-time allocations
        tracemalloc.start()
        try:
            model(x)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 3 * (16 * 64 * 28 * 28 * 4)


def test_inference_contexts_count_per_module_and_thread(rng):
    """Contexts ended out of order (an ExitStack, a generator left inside one) leave no module
    in inference; a copy made inside one is not in it; another thread's forwards keep their
    arrays for backward; fused ReLUs (tutorial-mnist's) give the same bits within."""
    import threading

    model = build_model("tutorial-mnist", rng=rng)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    expected = model(x)
    first, second = model.inference(), model.inference()
    first.__enter__()
    second.__enter__()
    np.testing.assert_array_equal(model(x), expected)
    assert _arrays_left(model) == []
    copied = copy.deepcopy(model)
    first.__exit__(None, None, None)
    assert model._inference  # the second is still open
    second.__exit__(None, None, None)
    assert not model._inference and not copied._inference
    kept_elsewhere = []
    with model.inference():
        worker = threading.Thread(target=lambda: kept_elsewhere.append(model(x) is not None))
        worker.start()
        worker.join()
        assert _arrays_left(model) != []  # the other thread's forward kept them
    assert kept_elsewhere == [True]
    model(x)
    model.backward(np.ones_like(expected))
