"""Finite-difference gradient checks (float64) of every differentiable op case on every backend,
and tests that :func:`gpucnn.gradcheck.gradcheck` itself catches wrong gradients."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import GRAD_CASES, distinct

import gpucnn
from gpucnn import nn
from gpucnn.gradcheck import gradcheck


@pytest.mark.parametrize("case", GRAD_CASES, ids=repr)
def test_gradients_match_finite_differences(case, backend, rng):
    """Backward of each op agrees with central differences along random directions."""
    inputs = case.sample(rng, np.float64)
    fn, args, grad_fn = case.gradient(backend, inputs)
    gradcheck(fn, args, grad_fn, seed=int(rng.integers(2**63)))


F64 = np.float64
LAYERS = {
    "conv2d": lambda: nn.Conv2d(4, 3, 3, stride=2, padding=1, dtype=F64),
    "conv2d_groups_dilation": lambda: nn.Conv2d(
        4, 2, 2, padding=1, dilation=2, groups=2, dtype=F64
    ),
    "linear": lambda: nn.Sequential(nn.Flatten(), nn.Linear(4 * 5 * 5, 3, dtype=F64)),
    "batch_norm2d": lambda: nn.BatchNorm2d(4, dtype=F64),
    "batch_norm2d_eval": lambda: _with_running_statistics(nn.BatchNorm2d(4, dtype=F64)).eval(),
    "max_pool2d": lambda: nn.MaxPool2d(3, stride=2, padding=1),
    "avg_pool2d": lambda: nn.AvgPool2d(2, stride=1, padding=1),
    "tutorial_net": lambda: nn.Sequential(
        nn.Conv2d(4, 3, 3, dtype=F64),
        nn.BatchNorm2d(3, dtype=F64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3, 2, dtype=F64),
    ),
}


def _with_running_statistics(layer: nn.BatchNorm2d) -> nn.BatchNorm2d:
    """The layer with running statistics and an affine part other than the initial 0, 1."""
    rng = np.random.default_rng()
    layer.running_mean[...] = rng.standard_normal(4)
    layer.running_var[...] = rng.uniform(0.5, 2.0, 4)
    layer.weight.data[...] = rng.uniform(0.5, 1.5, 4)
    return layer


@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_pass_gradcheck(name, backend, rng):
    """gpucnn.nn layers on each backend: input and parameter gradients match finite differences."""
    layer = LAYERS[name]().to(backend)
    x = backend.asarray(distinct(rng, (2, 4, 5, 5), F64))
    gradcheck(layer, (x,), seed=int(rng.integers(2**63)))


def test_public_gradcheck_stays_callable(rng):
    """``gpucnn.gradcheck`` stays the function once the submodule gpucnn.gradcheck is imported."""
    x = rng.standard_normal(4)
    for _ in range(2):
        gpucnn.gradcheck(np.sin, (x,), lambda gy: (gy * np.cos(x),))


class _Parameter:
    """The shape of gpucnn.nn.Parameter that gradcheck relies on: ``data`` and ``grad``."""

    def __init__(self, data):
        self.data, self.grad = data, np.zeros_like(data)


class _Affine:
    """y = x @ w.T + b as a module; ``wrong`` breaks one gradient on purpose."""

    def __init__(self, rng, wrong=""):
        self.w = _Parameter(rng.standard_normal((3, 4)))
        self.b = _Parameter(rng.standard_normal(3))
        self.wrong = wrong

    def parameters(self):
        return [self.w, self.b]

    def forward(self, x):
        self.x = x
        return x @ self.w.data.T + self.b.data

    def backward(self, gy):
        self.w.grad += gy.T @ self.x * (1.5 if self.wrong == "w" else 1.0)
        self.b.grad += gy.sum(axis=0)
        return gy @ self.w.data * (1.01 if self.wrong == "x" else 1.0)


def test_gradcheck_accepts_a_module_and_leaves_its_state_alone(rng):
    """A correct module passes; parameter data and accumulated grads are as before the check."""
    module = _Affine(rng)
    module.w.grad += 1.0
    w_before = module.w.data.copy()
    x = rng.standard_normal((5, 4))
    gradcheck(module, (x,))
    assert np.array_equal(module.w.data, w_before)
    assert np.array_equal(module.w.grad, np.ones((3, 4)))
    assert np.array_equal(module.b.grad, np.zeros(3))


@pytest.mark.parametrize(("wrong", "culprit"), [("x", "input 0"), ("w", "parameter 0")])
def test_gradcheck_names_the_wrong_gradient(rng, wrong, culprit):
    """A 1% error in the input gradient, or 50% in a parameter's, fails and is named."""
    with pytest.raises(AssertionError, match=culprit) as info:
        gradcheck(_Affine(rng, wrong), (rng.standard_normal((5, 4)),), seed=7)
    assert "seed=7" in str(info.value)


def test_gradcheck_with_grad_fn_catches_a_wrong_gradient(rng):
    """With a plain forward and grad_fn: sin passes, a cos that is off by a sign fails."""
    x = rng.standard_normal((4, 3))
    gradcheck(np.sin, (x,), lambda gy: (gy * np.cos(x),))
    with pytest.raises(AssertionError, match="numeric"):
        gradcheck(np.sin, (x,), lambda gy: (-gy * np.cos(x),))


def test_gradcheck_refuses_float32(rng):
    """float32 differences are too noisy to decide anything: a TypeError, not a verdict."""
    x = rng.standard_normal(5).astype(np.float32)
    with pytest.raises(TypeError, match="float64"):
        gradcheck(np.sin, (x,), lambda gy: (gy * np.cos(x),))


def test_gradcheck_refuses_a_float32_parameter_or_output_by_name(rng):
    """Parameters and the output are checked for float64 as the inputs are."""
    x = rng.standard_normal((5, 4))
    module = _Affine(rng)
    module.b.data = module.b.data.astype(np.float32)
    with pytest.raises(TypeError, match=r"float64 arrays \(parameter 1 is float32\)"):
        gradcheck(module, (x,))
    with pytest.raises(TypeError, match=r"float64 arrays \(the output is float32\)"):
        gradcheck(lambda x: np.sin(x).astype(np.float32), (x,), lambda gy: (gy * np.cos(x),))


def test_gradcheck_wants_a_gradient_per_input_and_checks_every_direction(rng):
    """grad_fn giving fewer gradients than inputs is an error; a wrong gradient fails in each of
    the ``directions`` random directions, each reported."""
    x, y = rng.standard_normal(3), rng.standard_normal(3)
    with pytest.raises(ValueError, match="backward gave 1 gradients for 2 inputs"):
        gradcheck(lambda x, y: x * y, (x, y), lambda gy: (gy * y,))
    with pytest.raises(AssertionError) as info:
        gradcheck(np.sin, (x,), lambda gy: (-gy * np.cos(x),), directions=4)
    assert [f"direction {d}:" in str(info.value) for d in range(5)] == [True] * 4 + [False]


def test_gradcheck_scales_its_tolerance_with_the_terms_not_their_sum(rng):
    """A correct gradient whose directional derivative is a difference of two large terms
    that cancel passes: the finite differences' rounding is far above rtol times that near-zero
    sum, but not above rtol times the terms' size (the documented scale)."""
    while True:  # g and v, as gradcheck draws them from the seed, away from zero
        seed = int(rng.integers(2**63))
        draws = np.random.default_rng(seed)
        g, v = draws.standard_normal(2), draws.standard_normal(2)
        if min(abs(g * v)) > 0.01:
            break
    a = 1e4 / (g * v) * np.array([1.0, -1.0])  # a*g*v = (1e4, -1e4): <g, a*v> is about 0
    x = np.full(2, 100.0)
    gradcheck(lambda x: a * x, (x,), lambda gy: (gy * a,), directions=1, seed=seed)
