"""Elementwise passes of the CPU backend in threads and cache-sized blocks: ReLU, dropout, the
optimizers' updates.

The base backend writes these as array expressions, each operation a pass over the whole array
on one core into a new temporary: in fashion-net's training step at batch 128 dropout's mask (a
dozen passes over 64-bit hash state) took 10.6 ms, Adam 9.9, the ReLUs 5.3 and SGD 3. Here the
elements are split among the threads, and each thread walks its range in blocks of
BLOCK_ELEMENTS, running every step of the expression on a block while it is in cache, in place
or into one scratch block. The steps, their operands and their order are the base backend's,
so the results are its bits, for any thread count.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import cpu_threads
from .base import _GOLDEN, _MIX1, _MIX2

# A block: 256 KiB of dropout's uint64 hash state, Adam's four float32 arrays in 512 KiB.
BLOCK_ELEMENTS = 32 * 1024


def each_block(count: int, batch: int, body: Callable[[int, int], None]) -> None:
    """``body(lo, hi)`` for blocks of at most BLOCK_ELEMENTS covering ``range(count)``: a range
    per thread, as :func:`.cpu_threads.for_slices` splits an op on ``batch`` samples."""

    def walk(part: slice) -> None:
        for lo in range(part.start, part.stop, BLOCK_ELEMENTS):
            body(lo, min(lo + BLOCK_ELEMENTS, part.stop))

    cpu_threads.for_slices(count, batch, walk)


def _batch(shape: tuple) -> int:
    """The samples of an array of ``shape``: its first axis (a 0-d array: one)."""
    return shape[0] if shape else 1


def relu_forward(x: np.ndarray) -> np.ndarray:
    """max(x, 0), as :meth:`Backend.relu_forward`."""
    return _threaded(np.maximum, x, 0)


def dropout_mask(shape, p: float, seed: int, dtype, calls=None) -> np.ndarray:
    """:meth:`Backend.dropout_mask`: element i kept where u(seed, i) >= p. u = k / 2**24 with k
    the hash's top 24 bits, so u >= p is k >= p * 2**24, both sides exact in float64."""
    count = math.prod(shape)
    call_seed = np.full(1, seed & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    if calls is not None:
        call_seed += np.asarray(calls).astype(np.uint64) * _GOLDEN  # arrays wrap silently
    start, threshold = call_seed[0], p * float(1 << 24)
    scale = np.dtype(dtype).type(1.0 / (1.0 - p))
    mask = np.empty(count, dtype)

    def draw(lo: int, hi: int) -> None:
        z = np.arange(lo + 1, hi + 1, dtype=np.uint64)
        shifted = np.empty_like(z)
        z *= _GOLDEN
        z += start
        for shift, mix in ((30, _MIX1), (27, _MIX2), (31, None)):  # splitmix64's finaliser
            np.right_shift(z, np.uint64(shift), out=shifted)
            z ^= shifted
            if mix is not None:
                z *= mix
        z >>= np.uint64(40)
        np.multiply(z >= threshold, scale, out=mask[lo:hi])

    each_block(count, _batch(tuple(shape)), draw)
    return mask.reshape(shape)


def multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b for arrays of one shape (dropout applying its mask), in threads."""
    return _threaded(np.multiply, a, b)


def _threaded(ufunc: np.ufunc, a: np.ndarray, b) -> np.ndarray:
    """``ufunc(a, b)`` into a new C-ordered array, a's elements split among the threads in
    blocks; ``b`` an array of a's shape, or a scalar."""
    y = np.empty(a.shape, np.result_type(a, b))
    fa, out = a.reshape(-1), y.reshape(-1)
    fb = b.reshape(-1) if isinstance(b, np.ndarray) else None

    def apply(lo: int, hi: int) -> None:
        ufunc(fa[lo:hi], b if fb is None else fb[lo:hi], out=out[lo:hi])

    each_block(a.size, _batch(a.shape), apply)
    return y


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled) -> None:
    """:meth:`Backend.adam_update` on contiguous arrays, in place, step and lr given."""
    flat = [a.reshape(-1) for a in (p, g, m, v)]
    bias1, bias2 = 1 - beta1**step, 1 - beta2**step

    def update(lo: int, hi: int) -> None:
        pb, gb, mb, vb = (a[lo:hi] for a in flat)
        if weight_decay:
            if decoupled:
                pb *= 1 - lr * weight_decay
            else:
                gb = np.add(gb, np.multiply(weight_decay, pb))
        term = np.multiply(1 - beta1, gb)
        mb *= beta1
        mb += term
        np.multiply(gb, gb, out=term)
        np.multiply(1 - beta2, term, out=term)
        vb *= beta2
        vb += term
        np.sqrt(vb, out=term)
        np.divide(term, math.sqrt(bias2), out=term)
        np.add(term, eps, out=term)  # the denominator
        np.divide(mb, term, out=term)
        np.multiply(lr / bias1, term, out=term)
        pb -= term

    _each_block_of_a_parameter(p.size, update)


def _each_block_of_a_parameter(count: int, body: Callable[[int, int], None]) -> None:
    """:func:`each_block` for an optimizer's update, which has no batch: a parameter of two
    blocks or more is split among the threads as a batch of MIN_BATCH samples would be."""
    big = count >= 2 * BLOCK_ELEMENTS
    each_block(count, cpu_threads.MIN_BATCH if big else 1, body)


def sgd_update(p, g, velocity, lr, momentum, nesterov, weight_decay, first_step) -> None:
    """:meth:`Backend.sgd_update` on contiguous arrays, in place, lr given."""
    flat = [a.reshape(-1) for a in (p, g)]
    moving = velocity.reshape(-1) if momentum else None

    def update(lo: int, hi: int) -> None:
        pb, d = (a[lo:hi] for a in flat)
        if weight_decay:
            d = np.add(d, np.multiply(weight_decay, pb))
        if momentum:
            vb = moving[lo:hi]
            if first_step:
                vb[...] = d
            else:
                vb *= momentum
                vb += d
            d = np.add(d, np.multiply(momentum, vb)) if nesterov else vb
        pb -= np.multiply(lr, d)

    _each_block_of_a_parameter(p.size, update)
