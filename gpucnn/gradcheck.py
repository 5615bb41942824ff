"""Finite-difference gradient check along random directions (Chainer-style), on any device.

For an output y = f(x) and a random upstream gradient g, the analytic directional derivative of
<g, y> along a random direction v is <dx, v>, where dx is what backward returns for g. Central
differences give the same number as <g, (f(x + eps v) - f(x - eps v)) / (2 eps)>. One forward pair
per direction and per input checks the whole gradient tensor at once, so big tensors stay cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .backend import backend_of
from .shapes import check_non_negative, integer, is_real, make_rng, positive_int


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _check_float64(name: str, array: Any) -> None:
    dtype = getattr(array, "dtype", None)
    if dtype is None or dtype != np.float64:
        raise TypeError(
            f"gradcheck needs float64 arrays ({name} is {dtype}): float32 finite differences are "
            "too noisy to tell a wrong gradient from rounding"
        )


def _vdot(a: Any, b: Any) -> float:
    """Sum of a * b for two arrays of one device, as a Python float."""
    backend = backend_of(a)
    return float(backend.to_numpy((a * b).sum()))


def gradcheck(
    fn: Any,
    inputs: Sequence[Any],
    grad_fn: Callable[[Any], Any] | None = None,
    *,
    params: Sequence[Any] = (),
    directions: int = 3,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    seed: int | None = None,
) -> None:
    """Check backward against central differences of forward; AssertionError with numbers if not.

    ``fn`` is a module-like object (``fn.forward(*inputs)`` -> y, ``fn.backward(gy)`` -> input
    gradient(s), adding parameter gradients into ``Parameter.grad`` of ``params`` or, when none are
    given, ``fn.parameters()``), or a callable ``fn(*inputs) -> y`` with ``grad_fn(gy)`` -> the
    input gradients (a tuple, one per input; None where an input needs no check). Every input and
    parameter must be a float64 array (TypeError otherwise), on any one device. For each of
    ``directions`` random directions and each input/parameter separately, the check is
    ``|numeric - analytic| <= atol + rtol * sum(|grad * v|)``: the scale is the size of the terms
    of the dot product, so cancellation in a near-zero derivative cannot fail a correct gradient.
    ``seed`` fixes g and v (drawn from fresh entropy when None; the message shows it).
    """
    if hasattr(inputs, "shape"):  # an array's rows would be taken as the inputs
        raise TypeError(
            f"gradcheck: inputs must be a sequence of arrays, one per argument of fn (one array "
            f"goes in as [x]), got {type(inputs).__name__}"
        )
    inputs = tuple(inputs)
    # Checked now: 0 directions checked nothing and passed, eps=0 or NaN tolerances failed any
    # gradient, and seed=1.5 was NumPy's "SeedSequence expects int".
    directions = positive_int(directions, "directions")
    if not is_real(eps):
        raise TypeError(f"gradcheck: eps must be a number, got {eps!r}")
    if eps == 0 or not math.isfinite(eps):
        raise ValueError(f"gradcheck: eps must be a finite number other than 0, got {eps!r}")
    check_non_negative(rtol=rtol, atol=atol)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy)
    rng = make_rng(integer(seed, "seed"), "seed")
    module = grad_fn is None
    if module:
        if not (hasattr(fn, "forward") and hasattr(fn, "backward")):
            raise TypeError("gradcheck: give grad_fn, or an fn with forward() and backward()")
        forward = fn.forward
        params = tuple(params) if params else tuple(getattr(fn, "parameters", tuple)())
    else:
        forward = fn
        params = tuple(params)
    for i, x in enumerate(inputs):
        if x is not None:
            _check_float64(f"input {i}", x)
    for i, p in enumerate(params):
        _check_float64(f"parameter {i}", p.data)

    y = forward(*inputs)
    _check_float64("the output", y)
    backend = backend_of(y)
    g = backend.asarray(rng.standard_normal(y.shape))
    before = [None if p.grad is None else p.grad.copy() for p in params]
    try:
        grads = _as_tuple(fn.backward(g) if module else grad_fn(g))
        param_grads = [
            p.grad if old is None else p.grad - old for p, old in zip(params, before, strict=True)
        ]
    finally:
        for p, old in zip(params, before, strict=True):
            p.grad = old
    if len(grads) < len(inputs):
        raise ValueError(f"backward gave {len(grads)} gradients for {len(inputs)} inputs")

    def directional(args: list, param: Any, original: Any, v: Any, index: int) -> float:
        """<g, (f(+eps v) - f(-eps v)) / 2 eps>, moving input ``index`` or else ``param``."""
        outputs = []
        for step in (eps, -eps):
            if param is None:
                moved = list(args)
                moved[index] = args[index] + step * v
                outputs.append(forward(*moved))
            else:
                param.data[...] = original + step * v
                outputs.append(forward(*args))
        return _vdot(g, (outputs[0] - outputs[1]) / (2.0 * eps))

    checks = [(f"input {i}", None, x, grads[i], i) for i, x in enumerate(inputs) if x is not None]
    checks += [
        (f"parameter {i} {p!r}", p, p.data, gp, -1)
        for i, (p, gp) in enumerate(zip(params, param_grads, strict=True))
    ]
    failures = []
    for name, param, array, grad, index in checks:
        if grad is None:
            continue
        if tuple(grad.shape) != tuple(array.shape):
            raise AssertionError(f"{name}: gradient shape {grad.shape} != shape {array.shape}")
        original = array.copy()
        for direction in range(directions):
            v = backend_of(array).asarray(rng.standard_normal(array.shape))
            try:
                num = directional(list(inputs), param, original, v, index)
            finally:
                if param is not None:
                    param.data[...] = original
            ana = _vdot(grad, v)
            scale = _vdot(abs(grad), abs(v))
            if not abs(num - ana) <= atol + rtol * scale:
                failures.append(
                    f"{name}, direction {direction}: numeric {num:.12g} vs analytic {ana:.12g} "
                    f"(|diff| {abs(num - ana):.3g} > atol {atol:g} + rtol {rtol:g} * {scale:.6g})"
                )
    if failures:
        raise AssertionError(
            f"gradcheck failed (seed={seed}, eps={eps:g}):\n  " + "\n  ".join(failures)
        )
