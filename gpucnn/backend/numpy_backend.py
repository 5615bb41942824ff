"""The CPU backend: sliding windows in NumPy, as strided views and matrix products.

Convolution runs as im2col, a chunk of samples at a time (:mod:`.im2col`). Pooling loops over
the kernel taps (4 for 2x2), each a vectorised pass; no Python loop touches pixels or samples.
For batches of MIN_BATCH (32) and more, the chunks and batch slices run in parallel threads; BLAS
runs on one thread in every op (:mod:`.cpu_threads`: its bits change with its thread count), and
a chunk's share of a weight gradient is summed in chunk order, so results do not depend on the
thread count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..shapes import pool_output_shape, symmetric, window_output_shape
from . import cpu_batch_norm, cpu_elementwise
from .base import Backend
from .cpu_threads import blas_held, for_slices
from .im2col import ConvGeometry, each_chunk, offset_slices, pad_hw, window_view

# linear_backward's two products run side by side from this many multiply-adds each: fashion-net's
# fc1 (64 x 256 x 6272 at batch 64 and more). tutorial-mnist's fc1 (26M at batch 256) slowed its
# step when split (benchmarks/NOTES.md).
SIDE_BY_SIDE_MACS = 64 * 2**20
# max_pool2d_forward gathers a thread's samples' windows in pieces of at most this much input:
# fashion-net's pool1 at batch 128 (12.8 MB a thread) took 15-20 ms in one piece, 6 ms in two
# of 6.4 MB, on 2 cores; tutorial-mnist's pools (at most 5.5 MB a thread at batch 256) were no
# faster in smaller pieces, and 1-2 MiB ones slowed them 5-20% (benchmarks/NOTES.md).
POOL_CHUNK_BYTES = 8 << 20


class NumpyBackend(Backend):
    """Every op on the CPU with NumPy; the oracle for the other devices is gpucnn.reference."""

    name = "cpu"
    xp = np

    def asarray(self, a: Any, dtype: Any = None) -> np.ndarray:
        if hasattr(a, "get") and not isinstance(a, np.ndarray):  # a CuPy array
            a = a.get()
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return self.asarray(a)

    def owns(self, a: Any) -> bool:
        # Another device's ndarray subclass (cuda-emu's EmuArray) names its device.
        return isinstance(a, np.ndarray) and getattr(a, "gpucnn_device", "cpu") == "cpu"

    # ------------------------------------------------------------ convolution
    @staticmethod
    def _conv_geometry(x_shape, w_shape, stride, padding, dilation, groups) -> ConvGeometry:
        """The geometry with compact rows: forward (the product lands in y's layout) and weight
        gradients (gy used as it is) run in it; only the input gradient runs wide
        (:meth:`ConvGeometry.with_wide_rows`). Measured at batch 256 on tutorial-mnist's
        layers against wide rows: conv2 forward 2.9 ms against 3.6, conv1's weight gradient
        per 32 samples 137 us against 301."""
        kernel = (w_shape[2], w_shape[3])
        out_hw = window_output_shape(x_shape[2:], kernel, stride, padding, dilation, "conv2d")
        padded = (x_shape[2] + sum(padding[0]), x_shape[3] + sum(padding[1]))
        return ConvGeometry(kernel, dilation, out_hw, padded, False, stride, padding, groups)

    def conv2d_forward(self, x, w, b, stride, padding, dilation, groups, relu=False):
        return self.conv2d_forward_saving(x, w, b, stride, padding, dilation, groups, relu)[0]

    def conv2d_forward_saving(self, x, w, b, stride, padding, dilation, groups, relu=False):
        """Forward; what it keeps for :meth:`conv2d_backward_saved` is x."""
        n, k = x.shape[0], w.shape[0]
        geo = self._conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
        y = np.empty((n, k, *geo.out_hw), dtype=np.result_type(x, w))
        wg = geo.weights(w)
        if b is not None:  # the bias as one more column, against the columns' row of ones
            wg = np.concatenate([wg, b.reshape(groups, k // groups, 1)], axis=2)

        def compute(_: int, part: slice) -> None:  # the product (with bias) into y, ReLU
            out = y[part]
            cols = geo.columns(x[part], ones=b is not None)
            np.matmul(wg, cols, out=out.reshape(*cols.shape[:2], k // groups, cols.shape[3]))
            if relu:
                np.maximum(out, 0, out=out)

        each_chunk(geo.chunks(x.shape, y.itemsize), n, compute)
        return y, x

    def conv2d_backward_input(self, gy, w, x_shape, stride, padding, dilation, groups):
        geo = self._conv_geometry(x_shape, w.shape, stride, padding, dilation, groups)
        return self._conv_backward(gy, geo, x_shape, w.shape, w=w)[0]

    def conv2d_backward_weight(self, gy, x, w_shape, stride, padding, dilation, groups):
        geo = self._conv_geometry(x.shape, w_shape, stride, padding, dilation, groups)
        return self._conv_backward(gy, geo, x.shape, w_shape, x=x)[1]

    def conv2d_backward_params(self, gy, x, w_shape, stride, padding, dilation, groups):
        geo = self._conv_geometry(x.shape, w_shape, stride, padding, dilation, groups)
        return self._conv_backward(gy, geo, x.shape, w_shape, x=x, bias=True)[1:]

    def conv2d_backward_saved(
        self, gy, saved, w, x_shape, stride, padding, dilation, groups, input_grad=True, bias=True
    ):
        geo = self._conv_geometry(x_shape, w.shape, stride, padding, dilation, groups)
        w_input = w if input_grad else None
        return self._conv_backward(gy, geo, x_shape, w.shape, w=w_input, x=saved, bias=bias)

    @staticmethod
    def _conv_backward(gy, geo: ConvGeometry, x_shape, w_shape, w=None, x=None, bias=False):
        """(gx given w, gw given x, gb with ``bias`` (and x); None for the others), chunk by
        chunk; the bias gradient comes out of the weight gradient's product, against the
        columns' row of ones. Each chunk's share of gw and gb is kept apart and the shares are
        summed in chunk order, so that no result depends on the thread count, and the chunks
        are the compact geometry's whether or not gx is made, so neither do gw and gb."""
        n, k, groups = len(gy), w_shape[0], geo.groups
        chunks = geo.chunks(x_shape, gy.itemsize)
        gx = None if w is None else np.empty(tuple(x_shape), dtype=np.result_type(gy, w))
        shares = None
        if x is not None:  # each chunk's gw (and gb), transposed per group: (G, R*S*C/G+1, K/G)
            share = (groups, int(np.prod(w_shape[1:])) + bias, k // groups)
            shares = np.empty((len(chunks), *share), dtype=np.result_type(gy, x))
        wide = geo.with_wide_rows()
        wt = None if w is None else np.ascontiguousarray(geo.weights(w).transpose(0, 2, 1))

        def gradients(i: int, part: slice) -> None:
            if gx is not None:
                wide.input_gradient(wide.widened(gy[part]), wt, gx[part])
            if shares is not None:  # columns @ gy^T: BLAS's fastest order for these shapes
                gy_t = geo.widened(gy[part]).transpose(0, 1, 3, 2)
                np.matmul(geo.columns(x[part], ones=bias), gy_t).sum(axis=0, out=shares[i])

        each_chunk(chunks, n, gradients)
        if shares is None:
            return gx, None, None
        total = shares.sum(axis=0).transpose(0, 2, 1)  # (G, K/G, R*S*C/G (+1))
        gw = geo.weights_back(total[..., : total.shape[2] - bias], w_shape)
        gb = total[..., -1].reshape(k) if bias else None
        return gx, gw, gb

    # ---------------------------------------------------------------- linear
    def linear_forward(self, x, w, b, relu=False):
        with blas_held():
            return super().linear_forward(x, w, b, relu)

    def linear_backward(self, gy, x, w):
        """The input and the weight gradient's products side by side on two threads, each whole
        on one BLAS thread (the same bits), where they are large enough to pay for it."""
        products, out = (lambda: gy @ w, lambda: gy.T @ x), [None, None]

        def run(part: slice) -> None:
            for i in range(part.start, part.stop):
                out[i] = products[i]()

        big = gy.shape[0] * w.shape[0] * w.shape[1] >= SIDE_BY_SIDE_MACS
        for_slices(2, gy.shape[0] if big else 1, run)
        return out[0], out[1], gy.sum(axis=0)

    # -------------------------------------------------- elementwise, in threads
    def relu_forward(self, x):
        return cpu_elementwise.relu_forward(x)

    def dropout_mask(self, shape, p, seed, dtype, calls=None):
        return cpu_elementwise.dropout_mask(shape, p, seed, dtype, calls)

    def dropout_forward(self, x, p, seed, calls=None):
        mask = self.dropout_mask(x.shape, p, seed, x.dtype, calls)
        return cpu_elementwise.multiply(x, mask), mask

    def sgd_update(self, p, g, velocity, clock, momentum, nesterov, weight_decay, first_step):
        hyper = (momentum, nesterov, weight_decay, first_step)
        if not _contiguous(p, g, velocity):  # a view: updated as it is
            return super().sgd_update(p, g, velocity, clock, *hyper)
        cpu_elementwise.sgd_update(p, g, velocity, float(clock[1]), *hyper)

    def adam_update(self, p, g, m, v, clock, beta1, beta2, eps, weight_decay, decoupled):
        if not _contiguous(p, g, m, v):  # a view: updated as it is
            return super().adam_update(
                p, g, m, v, clock, beta1, beta2, eps, weight_decay, decoupled
            )
        step, lr = (float(c) for c in clock)
        hyper = (beta1, beta2, eps, weight_decay, decoupled)
        cpu_elementwise.adam_update(p, g, m, v, step, lr, *hyper)

    # ------------------------------------------------------------- batch norm
    def batch_norm2d_forward_train(
        self, x, gamma, beta, eps, running_mean=None, running_var=None, momentum=0.1
    ):
        return cpu_batch_norm.forward_train(
            x, gamma, beta, eps, running_mean, running_var, momentum
        )

    def batch_norm2d_forward_eval(self, x, gamma, beta, running_mean, running_var, eps):
        if np.result_type(x, gamma, beta, running_mean, running_var, eps) != x.dtype:
            # wider statistics or a NumPy float64 eps: the base's promoted result, as it is
            return super().batch_norm2d_forward_eval(x, gamma, beta, running_mean, running_var, eps)
        return cpu_batch_norm.forward_eval(x, gamma, beta, running_mean, running_var, eps)

    def batch_norm2d_backward(self, gy, x, gamma, mean, invstd):
        return cpu_batch_norm.backward(gy, x, gamma, mean, invstd)

    # ---------------------------------------------------------------- pooling
    @staticmethod
    def _window_origins(out_hw, stride, padding, width):
        """Flat input index (h*W + w, possibly negative) of each window's top-left corner: (Ho, Wo)."""
        rows = np.arange(out_hw[0], dtype=np.int32)[:, None] * stride[0] - padding[0]
        cols = np.arange(out_hw[1], dtype=np.int32)[None, :] * stride[1] - padding[1]
        return rows * width + cols

    def max_pool2d_forward(self, x, kernel, stride, padding):
        n, c, h, w = x.shape
        pads, out_hw = (
            symmetric(padding),
            pool_output_shape(x.shape, kernel, stride, padding, "max_pool2d"),
        )
        best = np.empty((n, c, *out_hw), dtype=x.dtype)
        argmax = np.empty(best.shape, dtype=np.int32)
        origins = self._window_origins(out_hw, stride, padding, w)

        taps = kernel[0] * kernel[1]
        tap_type = np.min_scalar_type(taps - 1)  # the window's tap number of each maximum

        def gathered(part: slice) -> np.ndarray:
            """(kh*kw, n, C, Ho, Wo), contiguous: branch-free flat passes from here on."""
            windows = window_view(pad_hw(x[part], pads, -np.inf), kernel, stride, (1, 1), out_hw)
            windows = windows.transpose(2, 3, 0, 1, 4, 5).copy()  # a writable copy, always
            return windows.reshape(taps, *best[part].shape)

        def pool(part: slice) -> None:
            windows = gathered(part)
            top, shape = windows[0], windows.shape[1:]  # top: the running maximum, in place
            tap, number = np.zeros(shape, dtype=tap_type), np.empty(shape, dtype=tap_type)
            better = np.empty(shape, dtype=bool)
            for t in range(1, taps):
                # Strictly greater keeps the first maximum in row-major window order; taps come
                # in increasing order, so a later better one is also the larger tap number.
                np.greater(windows[t], top, out=better)
                np.multiply(better, tap_type.type(t), out=number)
                np.maximum(tap, number, out=tap)
                np.maximum(top, windows[t], out=top)
            if top.size and np.isnan(top.max()):  # a NaN in a window (maximum keeps it): rare
                _first_nan_taps(gathered(part), top, tap)  # windows[0] is the maximum now
            if any(padding):  # a padded tap ties an all -inf window's maximum: never chosen
                _first_in_bounds_taps(top, tap, kernel, stride, padding)
            best[part] = top
            # Tap t = r*kw + s lies r*W + s = t + r*(W - kw) past its window's origin (a table
            # lookup here, np.take, costs several times these four passes).
            offset = argmax[part]
            np.floor_divide(tap, offset.dtype.type(kernel[1]), out=offset)  # kw may be 2**8
            np.multiply(offset, w - kernel[1], out=offset)
            np.add(offset, tap, out=offset)
            np.add(offset, origins, out=offset)

        for_slices(n, n, in_chunks(x.itemsize * c * h * w, pool))
        return best, argmax

    def max_pool2d_backward(self, gy, argmax, x_shape, kernel, stride, padding, relu_y=None):
        n, c, h, w = x_shape
        if relu_y is not None and relu_y.shape != gy.shape:
            raise ValueError(f"max_pool2d_backward: relu_y {relu_y.shape} is not gy's shape")
        # Disjoint windows give every input element at most one gradient: a plain scatter.
        # Overlapping ones may pick the same maximum: add up (in float64, in a fixed order).
        disjoint = stride[0] >= kernel[0] and stride[1] >= kernel[1]
        gx = np.empty(tuple(x_shape), dtype=gy.dtype)

        def route(part: slice) -> None:
            g, out = gy[part], gx[part]
            if relu_y is not None:
                g = g * (relu_y[part] > 0)  # as relu_backward, at the pooled size
            planes = np.arange(out.shape[0] * c, dtype=np.int64).reshape(out.shape[0], c, 1, 1)
            flat = (argmax[part] + planes * (h * w)).ravel()
            if disjoint:
                out[...] = 0
                out.reshape(-1)[flat] = g.ravel()
            else:
                out[...] = np.bincount(flat, g.ravel(), out.size).reshape(out.shape)

        for_slices(n, n, route)
        return gx

    def avg_pool2d_forward(self, x, kernel, stride, padding):
        pads, out_hw = (
            symmetric(padding),
            pool_output_shape(x.shape, kernel, stride, padding, "avg_pool2d"),
        )
        xp = pad_hw(x, pads)
        total = np.zeros((*x.shape[:2], *out_hw), dtype=x.dtype)
        for r in range(kernel[0]):
            for s in range(kernel[1]):
                total += xp[offset_slices(r, s, (1, 1), stride, out_hw)]
        total /= kernel[0] * kernel[1]
        return total

    def avg_pool2d_backward(self, gy, x_shape, kernel, stride, padding):
        n, c, h, w = x_shape
        ph, pw = padding
        share = gy / (kernel[0] * kernel[1])
        if tuple(stride) == tuple(kernel) and not any(padding):
            # The windows tile the input: each element takes its window's share, repeated over
            # the window (no adds; pool1 of tutorial-mnist at b256: 1.9 ms against 3.7).
            (kh, kw), (ho, wo) = kernel, gy.shape[2:]
            shares = np.repeat(np.repeat(share, kw, axis=3), kh, axis=2)
            if (ho * kh, wo * kw) == (h, w):
                return shares
            gx = np.zeros(tuple(x_shape), dtype=shares.dtype)  # rows or columns no window covers
            gx[:, :, : ho * kh, : wo * kw] = shares
            return gx
        gx = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=gy.dtype)
        for r in range(kernel[0]):
            for s in range(kernel[1]):
                gx[offset_slices(r, s, (1, 1), stride, gy.shape[2:])] += share
        return np.ascontiguousarray(gx[:, :, ph : ph + h, pw : pw + w])


def _contiguous(*arrays) -> bool:
    """Whether every array given (None aside) is C-contiguous: the blocked optimizer updates
    walk flat views, which a strided parameter's reshape would copy."""
    return all(a.flags.c_contiguous for a in arrays if a is not None)


def in_chunks(sample_bytes: int, body: Callable[[slice], None]) -> Callable[[slice], None]:
    """``body`` over a slice of samples as equal consecutive pieces of at most POOL_CHUNK_BYTES
    (one sample's being ``sample_bytes``), at least a sample each."""

    def chunked(part: slice) -> None:
        count, most = part.stop - part.start, max(1, POOL_CHUNK_BYTES // max(sample_bytes, 1))
        pieces = -(-count // most)
        for i in range(pieces):
            body(slice(part.start + count * i // pieces, part.start + count * (i + 1) // pieces))

    return chunked


def _first_in_bounds_taps(top, tap, kernel, stride, padding) -> None:
    """Where a window's maximum is -inf, point ``tap`` at its first in-bounds tap, as the reference
    and the GPU do: tap 0, a padded one, is no pixel of the window (its gradient went astray).
    top and tap: (..., Ho, Wo). Only the top rows and left columns of windows start in the
    padding; every window has an in-bounds tap, padding being at most half the kernel
    (shapes.check_pool_padding)."""
    h0 = np.arange(top.shape[-2])[:, None] * stride[0] - padding[0]  # the windows' corners
    w0 = np.arange(top.shape[-1])[None, :] * stride[1] - padding[1]
    first = np.maximum(-h0, 0) * kernel[1] + np.maximum(-w0, 0)  # (Ho, Wo); 0 where in bounds
    top_rows, left_cols = -(-padding[0] // stride[0]), -(-padding[1] // stride[1])
    for edge in (np.s_[..., :top_rows, :], np.s_[..., :left_cols]):
        moved = top[edge] == -np.inf
        tap[edge][moved] = np.broadcast_to(first[edge], moved.shape)[moved]


def _first_nan_taps(windows: np.ndarray, top: np.ndarray, tap: np.ndarray) -> None:
    """Where a window holds a NaN (``top`` is NaN there: np.maximum propagates it), point ``tap``
    at its first NaN, as the reference and the GPU do: ``np.greater`` skipped the NaNs.
    windows: (taps, ...) of the windows, top and tap: (...)."""
    nan_windows = np.isnan(top)
    for t in reversed(range(len(windows))):  # the first NaN is written last
        tap[nan_windows & np.isnan(windows[t])] = t
