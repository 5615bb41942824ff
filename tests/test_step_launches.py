"""The kernels a training step of tutorial-mnist launches, counted on cuda-emu.

On a GPU the step is launch-bound (benchmarks/NOTES.md): each launch is a CUDA-graph node of the
captured step, so the count is part of its speed. This pins it: the ReLUs fused into their
neighbours (conv and fc epilogues, the pools' backward), the conv bias gradients inside the weight
gradients' products, the loss and its gradient in one launch, and the whole optimizer in one.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import make_backend

from gpucnn import optim
from gpucnn.nn.zoo import build_model
from gpucnn.train import train_step, training_loss

EXPECTED = {
    "conv2d_forward": 2,  # conv1, conv2, each with bias and ReLU in its epilogue
    "max_pool2d_forward": 2,
    "bias_relu_forward": 1,  # fc1 after cuBLAS (fc2 has no ReLU: cuBLAS and CuPy's bias add)
    "softmax_cross_entropy_train": 1,  # loss and its gradient, one block (16 rows here)
    "relu_backward": 1,  # fc1's; the pools mask conv1's and conv2's
    "max_pool2d_backward": 2,
    "conv2d_backward_input": 1,  # conv2 only: the images need no gradient
    "conv2d_backward_weight": 2,  # with the bias gradient as one more column of the product
    "sum_partials": 2,  # the weight gradients' split reductions
}


@pytest.mark.parametrize(
    "make_optimizer, update",
    [
        (lambda ps: optim.SGD(ps, 0.01, momentum=0.9), "sgd_update"),
        (lambda ps: optim.AdamW(ps, 1e-3), "adam_update"),
    ],
    ids=["sgd", "adamw"],
)
@pytest.mark.emu
def test_a_tutorial_mnist_step_launches_these_kernels(make_optimizer, update, rng):
    backend = make_backend("cuda-emu")
    model = build_model("tutorial-mnist", rng=0).to(backend)
    step = train_step(model, training_loss(0.0), make_optimizer(model.parameters()))
    x = backend.asarray(rng.standard_normal((16, 1, 28, 28)).astype(np.float32))
    y = backend.asarray(rng.integers(0, 10, 16))
    step(x, y)  # the first step creates the optimizer's state
    launched = Counter()
    launch = backend._launch

    def counting(family, kernel, *args):
        launched[kernel] += 1
        launch(family, kernel, *args)

    backend._launch = counting
    try:
        step(x, y)
    finally:
        del backend._launch
    assert dict(launched) == {**EXPECTED, update: 1}  # 8 parameters, one launch
