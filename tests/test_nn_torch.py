"""Layers, losses and optimizers against PyTorch: same weights in; same outputs, gradients, updates.

float32 tolerances: rtol 1e-4 / atol 1e-5 on values of order 1 cover float32 summation-order
differences between our matrix products and PyTorch's (errors ~1e-6 relative), and nothing more.
"""

import numpy as np
import pytest
from near_ties import clear_of_ties

from gpucnn import nn, optim

torch = pytest.importorskip("torch", reason="PyTorch is not installed: torch comparisons skipped")
pytestmark = pytest.mark.torch

RTOL, ATOL = 1e-4, 1e-5


def tutorial_mnist(rng, dtype=np.float32):
    """The tutorial's MNIST flowchart, with gpucnn layers."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, rng=rng, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, rng=rng, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 128, rng=rng, dtype=dtype), nn.ReLU(),
        nn.Linear(128, 10, rng=rng, dtype=dtype),
    )  # fmt: skip


def torch_twin(model):
    """The PyTorch network with the same layers and a copy of ``model``'s weights."""
    layers = []
    for layer in model:
        if isinstance(layer, nn.Conv2d):
            layers.append(
                torch.nn.Conv2d(
                    layer.in_channels,
                    layer.out_channels,
                    layer.kernel_size,
                    stride=layer.stride,
                    padding=layer.padding,
                )
            )
        elif isinstance(layer, nn.Linear):
            layers.append(torch.nn.Linear(layer.in_features, layer.out_features))
        elif isinstance(layer, nn.BatchNorm2d):
            layers.append(torch.nn.BatchNorm2d(layer.num_features))
        else:
            twin = {nn.ReLU: torch.nn.ReLU, nn.Flatten: torch.nn.Flatten}.get(type(layer))
            if twin is not None:
                layers.append(twin())
            else:
                layers.append(torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding))
    net = torch.nn.Sequential(*layers).double()
    net.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    return net if model[0].weight.data.dtype == np.float64 else net.float()


def assert_state_close(model, net, rtol=RTOL, atol=ATOL):
    ours = model.state_dict()
    for key, value in net.state_dict().items():
        np.testing.assert_allclose(
            ours[key], value.detach().numpy(), rtol=rtol, atol=atol, err_msg=key
        )


# SGD at lr 0.01: at 0.05 with momentum 0.9 the loss of this net on noise climbs from ~4 to ~80 by
# the second step, its gradients reach ~50, and float32 rounding in the gradients (~1e-6 of their
# size) times lr then exceeded ATOL on a small weight (measured over 150 seeds: worst 0.25 of the
# tolerance, and one failure in ~100 runs seen). At 0.01 the worst of 150 seeds is 0.007 of it,
# while a wrong momentum or Nesterov term still moves weights by ~lr, 1000x ATOL.
OPTIMIZERS = {
    "sgd-momentum": (lambda p: optim.SGD(p, 0.01, momentum=0.9),
                     lambda p: torch.optim.SGD(p, 0.01, momentum=0.9)),
    "sgd-nesterov-wd": (lambda p: optim.SGD(p, 0.01, momentum=0.9, nesterov=True, weight_decay=1e-3),
                        lambda p: torch.optim.SGD(p, 0.01, momentum=0.9, nesterov=True,
                                                  weight_decay=1e-3)),
    "adam-wd": (lambda p: optim.Adam(p, 1e-3, weight_decay=1e-3),
                lambda p: torch.optim.Adam(p, 1e-3, weight_decay=1e-3)),
    "adamw": (lambda p: optim.AdamW(p, 1e-3), lambda p: torch.optim.AdamW(p, 1e-3)),
}  # fmt: skip

# Adam's first steps move each weight by ~lr whatever the gradient's size, so in float32 a
# rounding-level gradient near zero can flip a step's sign: Adam is compared in float64 only.
CASES = [("sgd-momentum", np.float32), ("sgd-nesterov-wd", np.float32)] + [
    (name, np.float64) for name in OPTIMIZERS
]


@pytest.mark.parametrize(("optimizer", "dtype"), CASES)
def test_tutorial_mnist_training_steps_match_torch(optimizer, dtype, rng):
    """Three training steps of the tutorial's MNIST net: losses and weights as PyTorch's.

    float64 runs are held to 1e-9; float32 runs to RTOL/ATOL. Each batch is drawn clear of
    near-ties (see :func:`clear_of_ties`), and after each step's comparison PyTorch continues from
    our weights (the optimizers keep their own state), so no float32 rounding difference can route
    a gradient differently and grow over the next steps."""
    make_optimizer = OPTIMIZERS[optimizer]
    rtol, atol = (RTOL, ATOL) if dtype == np.float32 else (1e-9, 1e-12)
    model = tutorial_mnist(rng, dtype)
    net = torch_twin(model)
    ours, theirs = make_optimizer[0](model.parameters()), make_optimizer[1](net.parameters())
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(3):
        x = clear_of_ties(model, lambda: rng.standard_normal((16, 1, 28, 28)).astype(dtype))
        y = rng.integers(0, 10, 16)
        loss = loss_fn(model(x), y)
        model.zero_grad()
        model.backward(loss_fn.backward())
        ours.step()
        their_loss = torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y))
        theirs.zero_grad()
        their_loss.backward()
        theirs.step()
        assert np.isfinite(float(loss))
        np.testing.assert_allclose(float(loss), their_loss.item(), rtol=rtol)
        assert_state_close(model, net, rtol, atol)
        with torch.no_grad():
            for key, value in net.state_dict().items():
                value.copy_(torch.from_numpy(np.array(model.state_dict()[key])))


def test_batchnorm_and_dropout_eval_match_torch():
    rng = np.random.default_rng()
    bn = nn.BatchNorm2d(5)
    tbn = torch.nn.BatchNorm2d(5)
    for _ in range(3):
        x = rng.standard_normal((4, 5, 6, 7)).astype(np.float32) * 3 + 1
        gy = rng.standard_normal(x.shape).astype(np.float32)
        y = bn(x)
        gx = bn.backward(gy)
        tx = torch.tensor(x, requires_grad=True)
        ty = tbn(tx)
        ty.backward(torch.tensor(gy))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=RTOL, atol=ATOL)
    state = bn.state_dict()
    for key in ("running_mean", "running_var"):
        np.testing.assert_allclose(state[key], getattr(tbn, key).numpy(), rtol=RTOL, atol=ATOL)
    assert int(state["num_batches_tracked"]) == int(tbn.num_batches_tracked) == 3
    bn.eval()
    tbn.eval()
    x = rng.standard_normal((2, 5, 3, 3)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = tbn(tx)
    np.testing.assert_allclose(bn(x), ty.detach().numpy(), rtol=RTOL, atol=ATOL)
    # The eval forward's gradients (by the running statistics), as PyTorch's.
    gy = rng.standard_normal(x.shape).astype(np.float32)
    bn.zero_grad()
    tbn.zero_grad()
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(bn.backward(gy), tx.grad.numpy(), rtol=RTOL, atol=ATOL)
    for name in ("weight", "bias"):
        got, want = getattr(bn, name).grad, getattr(tbn, name).grad.numpy()
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)
    drop = nn.Dropout(0.5).eval()
    assert drop(x) is x


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_batchnorm_with_a_large_eps_matches_torch(training):
    """Variances of the size of eps (0.05), the running ones (eval) or the batch's (train):
    forward, every gradient and the running statistics after, where eps changes each channel's
    scale by far more than the tolerances."""
    rng = np.random.default_rng()
    bn, tbn = nn.BatchNorm2d(4, eps=0.05), torch.nn.BatchNorm2d(4, eps=0.05)
    state = {
        "weight": rng.uniform(0.5, 2.0, 4),
        "bias": rng.standard_normal(4),
        "running_mean": rng.standard_normal(4),
        "running_var": np.array([1e-3, 0.01, 0.05, 0.5]),
    }
    state = {k: v.astype(np.float32) for k, v in state.items()}
    bn.load_state_dict({**state, "num_batches_tracked": np.array(1)})
    tbn.load_state_dict(
        {**{k: torch.tensor(v) for k, v in state.items()}, "num_batches_tracked": torch.tensor(1)}
    )
    bn.train(training)
    tbn.train(training)
    x = rng.standard_normal((3, 4, 5, 5)) * np.sqrt(state["running_var"]).reshape(1, 4, 1, 1)
    x = x.astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = tbn(tx)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(bn(x), ty.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(bn.backward(gy), tx.grad.numpy(), rtol=RTOL, atol=ATOL)
    for name in ("weight", "bias"):
        got, want = getattr(bn, name).grad, getattr(tbn, name).grad.numpy()
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)
    for name in ("running_mean", "running_var"):
        got, want = getattr(bn, name), getattr(tbn, name).numpy()
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_schedules_match_torch(schedule):
    p = nn.Parameter(np.zeros(3, dtype=np.float32))
    tp = torch.nn.Parameter(torch.zeros(3))
    ours, theirs = optim.SGD([p], 0.1), torch.optim.SGD([tp], 0.1)
    if schedule == "step":
        s, ts = optim.StepLR(ours, 3, 0.5), torch.optim.lr_scheduler.StepLR(theirs, 3, 0.5)
    else:
        s = optim.CosineAnnealingLR(ours, 7, 0.01)
        ts = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, 7, 0.01)
    for _ in range(10):
        theirs.step()
        s.step()
        ts.step()
        assert ours.lr == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-9)


@pytest.mark.parametrize("kernel", [2, 3, (2, 3)])
def test_max_pool_of_windows_of_minus_inf_matches_torch(kernel):
    """A padded window whose pixels are all -inf: the layer's output and input gradient are
    PyTorch's (its argmax is the window's first pixel, never the padding), on the CPU."""
    rng = np.random.default_rng()
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    x[:, :, :3, :] = -np.inf
    x[:, :, :, :2] = -np.inf
    layer = nn.MaxPool2d(kernel, stride=2, padding=1)
    y = layer(x.copy())
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = layer.backward(gy)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, kernel, stride=2, padding=1)
    ty.backward(torch.tensor(gy))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=RTOL, atol=ATOL)
