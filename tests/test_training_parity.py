"""The tutorial's MNIST net trained 20 steps from the same initial weights on each device: the
losses and final weights match the CPU's.

float32 tolerance: each step's gradients differ across devices by summation order only (~1e-6
relative); 20 SGD steps at lr 0.01 keep that well under rtol 1e-3 on the losses and atol 1e-4 on
weights of order 0.1-1 — a wrong kernel moves them by far more.
"""

import numpy as np

from gpucnn import nn, optim


def tutorial_mnist(seed):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 128, rng=rng), nn.ReLU(), nn.Linear(128, 10, rng=rng),
    )  # fmt: skip


def train(backend, seed, batches):
    """Losses of 20 SGD-momentum steps on ``backend`` and the final weights (host arrays)."""
    model = tutorial_mnist(seed).to(backend)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for x, y in batches:
        loss = loss_fn(model(backend.asarray(x)), backend.asarray(y))
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        losses.append(float(loss))
    return np.array(losses), model.state_dict()


def test_twenty_training_steps_match_cpu(backend, cpu, rng):
    seed = int(rng.integers(2**31))
    batches = [
        (rng.standard_normal((8, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 8))
        for _ in range(20)
    ]
    losses, weights = train(backend, seed, batches)
    want_losses, want_weights = train(cpu, seed, batches)
    assert np.all(np.isfinite(losses))
    np.testing.assert_allclose(losses, want_losses, rtol=1e-3)
    for key, value in want_weights.items():
        np.testing.assert_allclose(weights[key], value, rtol=1e-3, atol=1e-4, err_msg=key)
