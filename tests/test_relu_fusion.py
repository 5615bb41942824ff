"""Sequential's ReLU fusion: the same values as the layers run one by one, with fewer launches.

A ReLU after a convolution or linear layer is applied in that layer's forward; a ReLU before a
max pool has its backward done by the pool's. The op-level cases (conv2d_relu, linear_relu,
relu_max_pool2d) are in the parity table (op_cases.py); here whole networks are compared, and
test_step_launches.py counts the launches saved.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpucnn import nn
from gpucnn.nn.zoo import build_model

NETS = {
    # Both fusions on one ReLU, a ReLU fused forward only (before a conv, before a linear), and
    # one fused backward only (after batch norm, before an overlapping pool).
    "mixed": lambda: nn.Sequential(
        nn.Conv2d(2, 4, 3, rng=0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1, rng=1),
        nn.ReLU(),
        nn.Conv2d(4, 3, 1, rng=2),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.Flatten(),
        nn.Linear(12, 6, rng=3),
        nn.ReLU(),
        nn.Linear(6, 3, rng=4),
        nn.ReLU(),
    ),  # fmt: skip
    # A ReLU first (its backward done by the pool after it) and two ReLUs in a row.
    "relu_first": lambda: nn.Sequential(
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2, 3, 3, rng=0),
        nn.ReLU(),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 2 * 2, 2, rng=1),
    ),  # fmt: skip
    "tutorial-mnist": lambda: build_model("tutorial-mnist", rng=0),
}
INPUT = {"mixed": (3, 2, 10, 10), "relu_first": (3, 2, 8, 8), "tutorial-mnist": (3, 1, 28, 28)}


def _forward_backward(model, x, gy, fused: bool, input_grad: bool):
    """Output, input gradient and parameter gradients, through Sequential (fused) or layer by
    layer (each layer on its own is never fused)."""
    model.zero_grad()
    if fused:
        y = model(x)
        gx = model.backward(gy, input_grad=input_grad)
    else:
        y = x
        for layer in model:
            y = layer(y)
        gx = gy
        for layer in reversed(list(model)):
            gx = layer.backward(gx)
    return [y, gx] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("input_grad", [True, False], ids=["input_grad", "params_only"])
@pytest.mark.parametrize("name", list(NETS))
def test_fused_sequential_matches_the_layers_one_by_one(name, input_grad, backend, rng):
    """Bit for bit: the fused epilogues and masks compute the very products the layers do."""
    x = rng.standard_normal(INPUT[name]).astype(np.float32)
    outputs = []
    for fused in (True, False):
        model = NETS[name]().to(backend)
        y = model(backend.asarray(x))  # the shape of the upstream gradient
        gy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        got = _forward_backward(model, backend.asarray(x), backend.asarray(gy), fused, input_grad)
        outputs.append([None if a is None else backend.to_numpy(a) for a in got])
    fused, plain = outputs
    if not input_grad:
        assert fused[1] is None
        fused, plain = fused[:1] + fused[2:], plain[:1] + plain[2:]
    for i, (got, want) in enumerate(zip(fused, plain, strict=True)):
        assert np.array_equal(got, want), f"output {i} of {name} differs when fused"
        assert np.any(want != 0), f"output {i} of {name} is all zeros: it proves nothing"
