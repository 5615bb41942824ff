"""The CPU backend: sliding windows in NumPy, as strided views and matrix products.

Convolution is im2col, one chunk of samples at a time (about _CHUNK_BYTES of columns, so a
chunk's columns and products stay in cache): each sample's windows are gathered into a tap-major
(G, R*S*C/G, Ho*Wo) matrix and every pass is one matrix product per sample and group (BLAS),
written straight into NCHW, with no layout transposes on the way in or out. The bias rides in
the products (a row of ones in the columns). The input gradient runs on wide rows (stride 1:
rows Wp wide, the extra columns zero), where each kernel tap is one contiguous run of a group's
flattened planes, so col2im is one contiguous add per tap. Backward gathers the columns again
rather than keeping the whole im2col matrix from forward. Pooling loops over the kernel taps (4
for 2x2), each a vectorised pass; no Python loop touches pixels or samples. For batches of
MIN_BATCH (64) and more, the chunks and batch slices run in parallel threads, BLAS held to one
thread meanwhile (:mod:`.cpu_threads`); a chunk's share of a weight gradient is summed in chunk
order, so results do not depend on the thread count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..shapes import Padding2d, Pair, pool_output_shape, symmetric, window_output_shape
from . import cpu_threads
from .base import Backend
from .cpu_threads import blas_held, for_slices


def _pad(x: np.ndarray, padding: Padding2d, value: float = 0.0) -> np.ndarray:
    """x padded on H and W by ((top, bottom), (left, right)); x itself when there is no padding."""
    if not any(padding[0]) and not any(padding[1]):
        return x
    return np.pad(x, ((0, 0), (0, 0), padding[0], padding[1]), constant_values=value)


def _offset_slices(r: int, s: int, dilation: Pair, stride: Pair, out_hw: Pair):
    """Index of the input pixels that kernel offset (r, s) meets, over all (Ho, Wo) outputs."""
    h0, w0 = r * dilation[0], s * dilation[1]
    return (
        slice(None),
        slice(None),
        slice(h0, h0 + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
        slice(w0, w0 + stride[1] * (out_hw[1] - 1) + 1, stride[1]),
    )


def _windows(
    xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair
) -> np.ndarray:
    """Read-only view (N, C, R, S, Ho, Wo) of the padded input xp: element [n, c, r, s, i, j] is
    xp[n, c, i*stride_h + r*dilation_h, j*stride_w + s*dilation_w]."""
    sn, sc, sh, sw = xp.strides
    shape = (*xp.shape[:2], *kernel, *out_hw)
    strides = (sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1])
    return as_strided(xp, shape=shape, strides=strides, writeable=False)


class _ConvGeometry(NamedTuple):
    """One convolution's sizes and arguments, and its passes over a chunk of samples.

    Sizes: kernel, dilation, output and padded input (h, w), and whether rows are ``wide``
    (stride 1, input gradient only: rows Wp wide, the extra columns zero) or compact (Wo). A
    sample's im2col matrix is tap-major, (G, R*S*C/G, Ho*row): a tap's rows for all of a group's
    channels lie together, so that with wide rows each tap of the input gradient adds back as
    one contiguous run over the group's flattened planes.
    """

    kernel: Pair
    dilation: Pair
    out_hw: Pair
    padded: Pair
    wide: bool
    stride: Pair
    padding: Padding2d
    groups: int

    @property
    def row(self) -> int:
        """Width of one output row in the im2col layout."""
        return self.padded[1] if self.wide else self.out_hw[1]

    @property
    def length(self) -> int:
        """Columns of one sample's im2col matrix: Ho rows of ``row``."""
        return self.out_hw[0] * self.row

    @property
    def plane(self) -> int:
        """Stride of the channels in flattened padded planes: the plane, and with wide rows the
        overrun of the last tap's run, so that a tap's run stays within its channel's plane
        (the last channel's overrun: :meth:`_flat_planes`)."""
        overrun = (self.kernel[1] - 1) * self.dilation[1] if self.wide else 0
        return self.padded[0] * self.padded[1] + overrun

    def with_wide_rows(self) -> _ConvGeometry:
        """This geometry with wide rows where it can have them (stride 1)."""
        return self._replace(wide=tuple(self.stride) == (1, 1))

    def tap_offsets(self) -> list[int]:
        """Where each tap's run starts in a flattened padded plane, taps in row-major order."""
        (kh, kw), (dh, dw) = self.kernel, self.dilation
        return [r * dh * self.padded[1] + s * dw for r in range(kh) for s in range(kw)]

    def chunks(self, x_shape, itemsize: int) -> list[slice]:
        """The batch of x_shape cut into chunks whose im2col matrix takes at most about
        _CHUNK_BYTES, their sizes within one sample of each other. From MIN_BATCH samples on
        (where the CPU threads take the chunks) their number is even, so that two threads get
        the same work (tutorial-mnist's conv1 at b256 on 2 cores: 4 chunks of 64 rather than 85,
        85, 85 and 1, forward 1.3 ms against 1.6). The chunks depend on the shapes alone, never
        on the thread count."""
        n, c = x_shape[:2]
        per_sample = itemsize * c * self.kernel[0] * self.kernel[1] * self.length
        most = max(1, _CHUNK_BYTES // per_sample)
        count = max(1, -(-n // most))  # one empty chunk for an empty batch
        if n >= cpu_threads.MIN_BATCH:
            count = min(n, count + count % 2)
        bounds = [n * i // count for i in range(count + 1)]
        return [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]

    def weights(self, w: np.ndarray) -> np.ndarray:
        """w (K, C/G, R, S) as the tap-major (G, K/G, R*S*C/G) matrices."""
        k, cg, kh, kw = w.shape
        g = self.groups
        return w.reshape(g, k // g, cg, kh, kw).transpose(0, 1, 3, 4, 2).reshape(g, k // g, -1)

    def weights_back(self, gw: np.ndarray, w_shape) -> np.ndarray:
        """The inverse of :meth:`weights`: (G, K/G, R*S*C/G) -> w_shape (K, C/G, R, S)."""
        k, cg, kh, kw = w_shape
        per_group = gw.reshape(self.groups, k // self.groups, kh, kw, cg)
        return per_group.transpose(0, 1, 4, 2, 3).reshape(w_shape)

    def columns(self, x: np.ndarray, ones: bool = False) -> np.ndarray:
        """im2col of the samples x, compact rows: (n, G, R*S*C/G, Ho*Wo), so that each pass is
        one matrix product per sample and group, with no layout change on the way in or out.
        ``ones``: one more row of ones per group, so that a product with the bias as one more
        column of the weights adds the bias, and a product with gy sums the bias gradient."""
        (kh, kw), (n, c), g = self.kernel, x.shape[:2], self.groups
        cg = c // g
        cols = np.empty((n, g, kh * kw * cg + ones, self.length), dtype=x.dtype)
        if ones:
            cols[:, :, -1] = 1
        windows = _windows(
            _pad(x, self.padding), self.kernel, self.stride, self.dilation, self.out_hw
        )
        windows = windows.reshape(n, g, cg, kh, kw, *self.out_hw).transpose(0, 1, 3, 4, 2, 5, 6)
        cols[:, :, : kh * kw * cg].reshape(n, g, kh, kw, cg, *self.out_hw)[...] = windows
        return cols

    def widened(self, gy: np.ndarray) -> np.ndarray:
        """gy (n, K, Ho, Wo) -> (n, G, K/G, Ho*row), zero in the extra columns of wide rows (gy
        itself, reshaped, with compact rows)."""
        n, k, ho, wo = gy.shape
        if not self.wide:
            return gy.reshape(n, self.groups, k // self.groups, -1)
        out = np.empty((n, k, ho, self.row), dtype=gy.dtype)
        out[..., :wo] = gy
        out[..., wo:] = 0
        return out.reshape(n, self.groups, k // self.groups, -1)

    def input_gradient(self, gy_wide: np.ndarray, wt: np.ndarray, out: np.ndarray) -> None:
        """gx of a chunk into out (n, C, H, W), from :meth:`widened` gy and the transposed
        tap-major weights wt (G, R*S*C/G, K/G): the product, then every tap's columns added back
        where they were gathered from (col2im)."""
        kw, g, (n, c) = self.kernel[1], self.groups, out.shape[:2]
        cg = c // g
        # Wide rows: a tap's run over one channel is a whole plane long, of which the first
        # ``length`` columns are the product's; the overrun adds zeros into the next plane.
        gcols = np.empty((n, g, wt.shape[1], self.plane if self.wide else self.length), out.dtype)
        gcols[..., self.length :] = 0
        np.matmul(wt, gy_wide, out=gcols[..., : self.length])
        flat, planes = self._flat_planes(n, c, out.dtype)
        for t, start in enumerate(self.tap_offsets()):
            tap = gcols[:, :, t * cg : (t + 1) * cg]
            if self.wide:  # each tap one contiguous run over the group's channels
                flat[..., start : start + cg * self.plane] += tap.reshape(n, g, -1)
            else:
                rows = _offset_slices(t // kw, t % kw, self.dilation, self.stride, self.out_hw)
                planes[(..., *rows[2:])] += tap.reshape(n, g, cg, *self.out_hw)
        out.reshape(n, g, cg, *out.shape[2:])[...] = planes[(..., *self._inside(out.shape[2:]))]

    def _flat_planes(self, n: int, c: int, dtype) -> tuple[np.ndarray, np.ndarray]:
        """Zeroed padded planes, flattened per group (n, G, C/G*plane + overrun of the last
        run), and the same memory as planes (n, G, C/G, Hp, Wp)."""
        (hp, wp), g = self.padded, self.groups
        overrun = self.tap_offsets()[-1] if self.wide else 0
        flat = np.zeros((n, g, c // g * self.plane + overrun), dtype=dtype)
        by_channel = flat[..., : c // g * self.plane].reshape(n, g, c // g, self.plane)
        return flat, by_channel[..., : hp * wp].reshape(n, g, c // g, hp, wp)

    def _inside(self, hw: Pair) -> tuple[slice, slice]:
        """Where an (H, W) image lies within its padded plane."""
        (top, _), (left, _) = self.padding
        return slice(top, top + hw[0]), slice(left, left + hw[1])


# Bytes of im2col matrix per chunk of samples. Each conv pass runs chunk by chunk (gather the
# chunk's columns, multiply, write its outputs or gradients), so the columns and the product stay
# near the core instead of making round trips to memory. tutorial-mnist's step at batch 256 (2
# cores, 2 MiB L2 each), runs interleaved: 1 MiB 23.0-24.0 ms, 1.5 MiB 22.2-22.5, 2 MiB 22.0-22.8;
# 512 KiB 26.4-26.8 (many small products, and the threads scale worse on short passes).
_CHUNK_BYTES = 1 << 21


def _each_chunk(chunks: list[slice], batch: int, body: Callable[[int, slice], None]) -> None:
    """``body(i, chunks[i])`` for every chunk of an op on ``batch`` samples, on the CPU threads
    (:func:`.cpu_threads.for_slices`), each taking the next chunk not yet taken, so that a
    thread slowed down meanwhile does fewer. Results do not depend on which thread ran a
    chunk: each chunk writes only its own outputs."""
    taken = iter(range(len(chunks)))
    lock = threading.Lock()

    def run(_: slice) -> None:
        while True:
            with lock:
                i = next(taken, None)
            if i is None:
                return
            body(i, chunks[i])

    for_slices(len(chunks), batch, run)


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
    def _conv_geometry(x_shape, w_shape, stride, padding, dilation, groups) -> _ConvGeometry:
        """The geometry with compact rows: forward (the product lands in y's layout) and weight
        gradients (gy used as it is) run in it; only the input gradient runs wide
        (:meth:`_ConvGeometry.with_wide_rows`). Measured at batch 256 on tutorial-mnist's
        layers against wide rows: conv2 forward 2.9 ms against 3.6, conv1's weight gradient
        per 32 samples 137 us against 301."""
        kernel = (w_shape[2], w_shape[3])
        out_hw = window_output_shape(x_shape[2:], kernel, stride, padding, dilation, "conv2d")
        padded = (x_shape[2] + sum(padding[0]), x_shape[3] + sum(padding[1]))
        return _ConvGeometry(kernel, dilation, out_hw, padded, False, stride, padding, groups)

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
            np.matmul(wg, cols, out=out.reshape(cols.shape[:2] + (k // groups, -1)))
            if relu:
                np.maximum(out, 0, out=out)

        _each_chunk(geo.chunks(x.shape, y.itemsize), n, compute)
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
    def _conv_backward(gy, geo: _ConvGeometry, x_shape, w_shape, w=None, x=None, bias=False):
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

        _each_chunk(chunks, n, gradients)
        if shares is None:
            return gx, None, None
        total = shares.sum(axis=0).transpose(0, 2, 1)  # (G, K/G, R*S*C/G (+1))
        gw = geo.weights_back(total[..., : total.shape[2] - bias], w_shape)
        gb = total[..., -1].reshape(k) if bias else None
        return gx, gw, gb

    # ---------------------------------------------------------------- linear
    def linear_forward(self, x, w, b, relu=False):
        with blas_held(x.shape[0]):
            return super().linear_forward(x, w, b, relu)

    def linear_backward(self, gy, x, w):
        with blas_held(x.shape[0]):
            return super().linear_backward(gy, x, w)

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

        def pool(part: slice) -> None:
            # (kh*kw, n, C, Ho, Wo), contiguous: branch-free flat passes from here on.
            windows = _windows(_pad(x[part], pads, -np.inf), kernel, stride, (1, 1), out_hw)
            windows = windows.transpose(2, 3, 0, 1, 4, 5).copy()  # a writable copy, always
            windows = windows.reshape(taps, *best[part].shape)
            top, shape = windows[0], windows.shape[1:]
            tap, number = np.zeros(shape, dtype=tap_type), np.empty(shape, dtype=tap_type)
            better = np.empty(shape, dtype=bool)
            for t in range(1, taps):
                # Strictly greater keeps the first maximum in row-major window order; taps come
                # in increasing order, so a later better one is also the larger tap number.
                np.greater(windows[t], top, out=better)
                np.multiply(better, tap_type.type(t), out=number)
                np.maximum(tap, number, out=tap)
                np.maximum(top, windows[t], out=top)
            best[part] = top
            # Tap t = r*kw + s lies r*W + s = t + r*(W - kw) past its window's origin (a table
            # lookup here, np.take, costs several times these four passes).
            offset = argmax[part]
            np.floor_divide(tap, tap_type.type(kernel[1]), out=offset)
            np.multiply(offset, w - kernel[1], out=offset)
            np.add(offset, tap, out=offset)
            np.add(offset, origins, out=offset)

        for_slices(n, n, pool)
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
            planes = np.arange(out.shape[0] * c, dtype=np.int64).reshape(-1, c, 1, 1)
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
        xp = _pad(x, pads)
        total = np.zeros((*x.shape[:2], *out_hw), dtype=x.dtype)
        for r in range(kernel[0]):
            for s in range(kernel[1]):
                total += xp[_offset_slices(r, s, (1, 1), stride, out_hw)]
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
                gx[_offset_slices(r, s, (1, 1), stride, gy.shape[2:])] += share
        return np.ascontiguousarray(gx[:, :, ph : ph + h, pw : pw + w])
