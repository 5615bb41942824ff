"""Batch norm on the CPU: threads take ranges of channels, passes go in blocks.

The base backend's array expressions ran on one core, each operation a pass over the whole
batch into a new temporary, the statistics reduced over axes (0, 2, 3) at once: fashion-net's
batch norms (64 channels of 28x28 and 128 of 14x14 at batch 128) took 103 ms of a 250 ms
training step. Here each thread takes a range of channels (their statistics are its own) and
walks the samples in blocks of about BLOCK_BYTES, so that a block's steps (subtract, square, sum;
or subtract, scale, shift) run on data still in the core's cache, with one scratch block reused.
Sums are taken over each (sample, channel) plane first, by NumPy's pairwise summation along the
contiguous pixels, then over the samples in float64. Neither the blocks nor the thread that had a
channel change its values, so results are the same bits for any thread count.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .cpu_threads import for_slices

# A block of one thread's planes: within a core's L2 cache (2 MiB on the machines measured),
# with the block's scratch beside it.
BLOCK_BYTES = 512 * 1024


def _by_channel_ranges(n: int, c: int, pixels: int, dtype: np.dtype, body: Callable) -> None:
    """``body(part, blocks, scratch)`` for ranges ``part`` of the c channels, one per thread:
    ``blocks``, slices of the n samples whose planes in ``part`` fill about BLOCK_BYTES, and
    ``scratch``, one such block's worth of this thread's own memory."""

    def run(part: slice) -> None:
        row = (part.stop - part.start) * pixels  # one sample's planes in part
        step = max(1, min(n, BLOCK_BYTES // max(row * dtype.itemsize, 1)))
        blocks = [slice(i, min(i + step, n)) for i in range(0, n, step)]
        body(part, blocks, np.empty(step * row, dtype))

    for_slices(c, n, run)


def _planes_of(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C, H*W) with each plane contiguous (a copy where ``a`` is not C
    ordered): NumPy sums a strided plane (a channels-last view) pixel by pixel or pairwise
    depending on how many channels the call has, so its bits would depend on the threads."""
    n, c, h, w = a.shape
    return np.ascontiguousarray(a).reshape(n, c, h * w)


def _scratch(scratch: np.ndarray, like: np.ndarray) -> np.ndarray:
    """The first ``like.size`` elements of ``scratch`` shaped as ``like`` (a block's planes)."""
    return scratch[: like.size].reshape(like.shape)


def _planes(values: np.ndarray, pixels: int) -> np.ndarray:
    """(C,) -> (C, pixels), each channel's value along its row: a block's (N, C, pixels) and
    this meet in NumPy's contiguous loops, where a (C, 1) column took 1.7x as long a pass."""
    return np.repeat(values[:, None], pixels, axis=1)


def _over_samples(plane_sums: np.ndarray) -> np.ndarray:
    """(N, C) plane sums -> (C,), added in float64 along each channel's contiguous row: a sum
    over axis 0 would add a lone channel's column pairwise and several columns one sample after
    another, so a channel's bits would depend on how many its thread had."""
    return np.ascontiguousarray(plane_sums.T, dtype=np.float64).sum(axis=1)


def _mean_over_samples(plane_sums: np.ndarray, count: int) -> np.ndarray:
    """:func:`_over_samples` divided by ``count`` (NaN for no values, as NumPy's mean of
    nothing)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return _over_samples(plane_sums) / count


def forward_train(x, gamma, beta, eps, running_mean=None, running_var=None, momentum=0.1):
    """:meth:`Backend.batch_norm2d_forward_train` on NumPy arrays -> (y, mean, invstd)."""
    n, c, h, w = x.shape
    planes, count = _planes_of(x), n * h * w
    y = np.empty(x.shape, x.dtype)  # C order, whatever x's: its reshape must be a view
    out, plane_sums = y.reshape(planes.shape), np.empty((n, c), x.dtype)
    mean, var, invstd = (np.empty(c, x.dtype) for _ in range(3))

    def normalise(part: slice, blocks: list[slice], scratch: np.ndarray) -> None:
        sums = plane_sums[:, part]
        for b in blocks:
            planes[b, part].sum(axis=2, out=sums[b])
        mean[part] = _mean_over_samples(sums, count)
        centre = _planes(mean[part], h * w)
        for b in blocks:
            centred = _scratch(scratch, planes[b, part])
            np.subtract(planes[b, part], centre, out=centred)
            np.multiply(centred, centred, out=centred)
            centred.sum(axis=2, out=sums[b])
        var[part] = _mean_over_samples(sums, count)
        invstd[part] = 1.0 / np.sqrt(var[part] + eps)
        scale, shift = _planes(gamma[part] * invstd[part], h * w), _planes(beta[part], h * w)
        for b in blocks:
            np.subtract(planes[b, part], centre, out=out[b, part])
            np.multiply(out[b, part], scale, out=out[b, part])
            np.add(out[b, part], shift, out=out[b, part])

    _by_channel_ranges(n, c, h * w, x.dtype, normalise)
    if running_mean is not None:
        unbiased = var * (count / max(count - 1, 1))
        running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        running_var[...] = (1 - momentum) * running_var + momentum * unbiased
    return y, mean, invstd


def forward_eval(x, gamma, beta, running_mean, running_var, eps):
    """:meth:`Backend.batch_norm2d_forward_eval` on NumPy arrays, its bits: x * scale + shift
    per channel (the base's (1, C, 1, 1) broadcast ran on one core, 14 ms for fashion-net's
    first batch norm at batch 128)."""
    n, c, h, w = x.shape
    planes, y = _planes_of(x), np.empty(x.shape, x.dtype)
    out = y.reshape(planes.shape)
    scale = gamma * (1.0 / np.sqrt(running_var + eps))
    shift = beta - running_mean * scale

    def normalise(part: slice, blocks: list[slice], scratch: np.ndarray) -> None:
        scales, shifts = _planes(scale[part], h * w), _planes(shift[part], h * w)
        for b in blocks:
            np.multiply(planes[b, part], scales, out=out[b, part])
            np.add(out[b, part], shifts, out=out[b, part])

    _by_channel_ranges(n, c, h * w, x.dtype, normalise)
    return y


def backward(gy, x, gamma, mean, invstd):
    """:meth:`Backend.batch_norm2d_backward` on NumPy arrays -> (gx, ggamma, gbeta).

    gx = a*gy - a*gbeta/m - a*ggamma/m * xhat per channel, with a = gamma*invstd: the base
    backend's k*(m*gy - gbeta - xhat*ggamma) with its terms scaled apart, so that each step
    writes into gx or the scratch block."""
    n, c, h, w = x.shape
    planes, grads, m = _planes_of(x), _planes_of(gy), n * h * w
    gx = np.empty(gy.shape, gy.dtype)
    out, (gamma_sums, beta_sums) = gx.reshape(grads.shape), np.empty((2, n, c), gy.dtype)
    ggamma, gbeta = np.empty(c, gy.dtype), np.empty(c, gy.dtype)

    def gradients(part: slice, blocks: list[slice], scratch: np.ndarray) -> None:
        centre, spread = _planes(mean[part], h * w), _planes(invstd[part], h * w)
        for b in blocks:
            terms = _scratch(scratch, planes[b, part])
            np.subtract(planes[b, part], centre, out=terms)
            np.multiply(terms, spread, out=terms)  # xhat
            np.multiply(terms, grads[b, part], out=terms)
            terms.sum(axis=2, out=gamma_sums[b, part])
            grads[b, part].sum(axis=2, out=beta_sums[b, part])
        ggamma[part] = _over_samples(gamma_sums[:, part])
        gbeta[part] = _over_samples(beta_sums[:, part])
        a = gamma[part] * invstd[part]
        centred_scale = _planes(-a * ggamma[part] / m * invstd[part], h * w)  # xhat's, invstd in
        grad_scale, shift = _planes(a, h * w), _planes(a * gbeta[part] / m, h * w)
        for b in blocks:
            g, scaled = out[b, part], _scratch(scratch, planes[b, part])
            np.subtract(planes[b, part], centre, out=g)
            np.multiply(g, centred_scale, out=g)
            np.multiply(grads[b, part], grad_scale, out=scaled)
            np.add(g, scaled, out=g)
            np.subtract(g, shift, out=g)

    _by_channel_ranges(n, c, h * w, gy.dtype, gradients)
    return gx, ggamma, gbeta
