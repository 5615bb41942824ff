"""The tutorial's MNIST net trained 20 steps from the same initial weights on each device: the
losses and final weights match the CPU's.

float32 tolerance: each step's gradients differ across devices by summation order only (~1e-6
relative); 20 SGD steps at lr 0.01 keep that well under rtol 1e-3 on the losses and atol 1e-4 on
weights of order 0.1-1 — a wrong kernel moves them by far more. Each batch is drawn clear of
near-ties for the CPU model's weights at that step (:mod:`near_ties`): at a near-tie the devices'
rounding may route a gradient differently (seen: 5 of fc1's 102,400 weights 3.5e-4 apart).
"""

import numpy as np
from near_ties import clear_of_ties

from gpucnn import nn, optim
from gpucnn.train import train_step


def tutorial_mnist(seed):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 128, rng=rng), nn.ReLU(), nn.Linear(128, 10, rng=rng),
    )  # fmt: skip


class Trainer:
    """The net from ``seed`` on ``backend`` with SGD-momentum; ``step(x, y)`` returns the loss."""

    def __init__(self, backend, seed):
        self.backend = backend
        self.model = tutorial_mnist(seed).to(backend)
        opt = optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self._step = train_step(self.model, nn.CrossEntropyLoss(), opt)

    def step(self, x, y) -> float:
        return float(self._step(self.backend.asarray(x), self.backend.asarray(y))[1])


def test_twenty_training_steps_match_cpu(kernel_backend, cpu, rng):
    seed = int(rng.integers(2**31))
    ours, reference = Trainer(kernel_backend, seed), Trainer(cpu, seed)
    losses, want_losses = [], []
    for _ in range(20):
        x = clear_of_ties(
            reference.model, lambda: rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
        )
        y = rng.integers(0, 10, 8)
        want_losses.append(reference.step(x, y))
        losses.append(ours.step(x, y))
    weights, want_weights = ours.model.state_dict(), reference.model.state_dict()
    assert np.all(np.isfinite(losses))
    np.testing.assert_allclose(losses, want_losses, rtol=1e-3)
    for key, value in want_weights.items():
        np.testing.assert_allclose(
            weights[key], value, rtol=1e-3, atol=1e-4, err_msg=key, equal_nan=False
        )
