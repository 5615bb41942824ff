"""The CPU backend: sliding windows in NumPy, as strided views and batched matrix products.

Convolution is im2col: the windows of the padded input are gathered once into a
(groups, C/groups*R*S, N*Ho*row) matrix, so forward and both backward passes are each one large
matrix product (BLAS) per group. With stride 1 each kernel tap is a contiguous run of the flattened
planes (rows computed Wp wide, the extra columns cropped), so the gather copies long runs; other
strides gather from a strided view. Backward-input and pooling loop over the kernel taps (9 for a
3x3 kernel), each a vectorised add; no Python loop touches pixels or samples. For batches of 128
and more, the gathers, scatters, pooling, layout copies and the conv products themselves run on
batch slices in parallel threads, BLAS held to one thread meanwhile (:mod:`.cpu_threads`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..shapes import Padding2d, Pair, pool_output_shape, symmetric, window_output_shape
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

    Sizes: kernel, dilation, output and padded input (h, w), and whether the im2col rows are
    ``wide`` (stride 1: the padded width, extra columns cropped) or compact.
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
    def flat_length(self) -> int:
        """Flattened padded plane plus the overrun of the last tap's run."""
        return self.padded[0] * self.padded[1] + (self.kernel[1] - 1) * self.dilation[1]

    def tap_offset(self, r: int, s: int) -> int:
        """Where tap (r, s)'s run starts in a flattened padded plane."""
        return r * self.dilation[0] * self.padded[1] + s * self.dilation[1]

    def chunks(self, x_shape, itemsize: int) -> list[slice]:
        """The batch of x_shape cut into chunks whose im2col matrix takes about _CHUNK_BYTES; the
        chunks depend on the shapes alone, never on the thread count."""
        n, c = x_shape[:2]
        taps = self.kernel[0] * self.kernel[1]
        per_sample = itemsize * c * taps * self.out_hw[0] * self.row
        size = max(1, _CHUNK_BYTES // per_sample)
        return [slice(lo, min(lo + size, n)) for lo in range(0, n, size)]

    def columns(self, x: np.ndarray, ones: bool = False) -> np.ndarray:
        """im2col of the samples x: (n, G, C/G*R*S, Ho*row), so that each pass is one matrix
        product per sample and group, with no layout change on the way in or out. ``ones``: one
        more row of ones per group, so that a product with the bias as one more column of the
        weights adds the bias, and a product with gy sums the bias gradient."""
        (kh, kw), (n, c), groups = self.kernel, x.shape[:2], self.groups
        length = self.out_hw[0] * self.row
        cols = np.empty((n, groups, c // groups * kh * kw + ones, length), dtype=x.dtype)
        if ones:
            cols[:, :, -1] = 1
        taps = cols[:, :, : cols.shape[2] - ones].reshape(n, groups, c // groups, kh, kw, length)
        if self.wide:
            # Stride 1: tap (r, s) of every output is one contiguous run of the flattened padded
            # plane, shifted by r*dh*Wp + s*dw; rows come out Wp wide (the extra columns wrap into
            # the next row and are cropped from the result).
            flat = self._flat_zeros(n, c, x.dtype)
            self._planes(flat)[(..., *self._inside(x.shape[2:]))] = x
            flat = flat.reshape(n, groups, c // groups, -1)
            for r in range(kh):
                for s in range(kw):
                    start = self.tap_offset(r, s)
                    taps[:, :, :, r, s] = flat[..., start : start + length]
        else:
            xp = _pad(x, self.padding)
            windows = _windows(xp, self.kernel, self.stride, self.dilation, self.out_hw)
            shape = (n, groups, c // groups, kh, kw, *self.out_hw)  # both views: split axes only
            taps.reshape(shape)[...] = windows.reshape(shape)
        return cols

    def widened(self, gy: np.ndarray) -> np.ndarray:
        """gy (n, K, Ho, Wo) -> (n, G, K/G, Ho*row), zero in the extra columns of wide rows."""
        n, k, ho, wo = gy.shape
        out = np.empty((n, k, ho, self.row), dtype=gy.dtype)
        out[..., :wo] = gy
        out[..., wo:] = 0
        return out.reshape(n, self.groups, k // self.groups, -1)

    def cropped(self, product: np.ndarray) -> np.ndarray:
        """A product's (n, G, K/G, Ho*row) rows as an (n, K, Ho, Wo) view, extra columns cut."""
        planes = product.reshape(len(product), -1, self.out_hw[0], self.row)
        return planes[..., : self.out_hw[1]]

    def input_gradient(self, gy_wide: np.ndarray, w: np.ndarray, hw: Pair) -> np.ndarray:
        """gx (n, C, H, W) of a chunk from :meth:`widened` gy: the product with w, then every
        tap's columns added back where they were gathered from (col2im)."""
        (kh, kw), groups, k = self.kernel, self.groups, w.shape[0]
        n, c = len(gy_wide), w.shape[1] * groups
        wt = np.ascontiguousarray(w.reshape(groups, k // groups, -1).transpose(0, 2, 1))
        gcols = np.matmul(wt, gy_wide).reshape(n, c, kh, kw, -1)
        flat = self._flat_zeros(n, c, gcols.dtype)
        planes = self._planes(flat)
        for r in range(kh):
            for s in range(kw):
                if self.wide:  # each tap's contiguous run
                    start = self.tap_offset(r, s)
                    flat[:, :, start : start + gcols.shape[-1]] += gcols[:, :, r, s]
                else:
                    taps = _offset_slices(r, s, self.dilation, self.stride, self.out_hw)
                    planes[taps] += gcols[:, :, r, s].reshape(n, c, *self.out_hw)
        return planes[(..., *self._inside(hw))]

    def _flat_zeros(self, n: int, c: int, dtype) -> np.ndarray:
        """Zeroed padded planes, flattened: (n, C, flat_length)."""
        return np.zeros((n, c, self.flat_length), dtype=dtype)

    def _planes(self, flat: np.ndarray) -> np.ndarray:
        """The (n, C, Hp, Wp) planes of an (n, C, flat_length) array."""
        return flat[:, :, : self.padded[0] * self.padded[1]].reshape(*flat.shape[:2], *self.padded)

    def _inside(self, hw: Pair) -> tuple[slice, slice]:
        """Where an (H, W) image lies within its padded plane."""
        (top, _), (left, _) = self.padding
        return slice(top, top + hw[0]), slice(left, left + hw[1])


# Bytes of im2col matrix per chunk of samples. Each conv pass runs chunk by chunk (gather the
# chunk's columns, multiply, write its outputs or gradients), so the columns and the product stay
# in a core's L2 cache instead of making round trips to memory; backward gathers the columns again
# rather than keeping the whole matrix from forward. Measured on tutorial-mnist's step at batch 256
# (2 cores, 2 MiB L2 each): TUNING.
_CHUNK_BYTES = 1 << 21


def _each_chunk(chunks: list[slice], batch: int, body: Callable[[int, slice], None]) -> None:
    """``body(i, chunks[i])`` for every chunk of an op on ``batch`` samples, the chunks shared
    among the CPU threads (:func:`.cpu_threads.for_slices`)."""

    def run(indices: slice) -> None:
        for i in range(indices.start, indices.stop):
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
        kernel = (w_shape[2], w_shape[3])
        out_hw = window_output_shape(x_shape[2:], kernel, stride, padding, dilation, "conv2d")
        padded = (x_shape[2] + sum(padding[0]), x_shape[3] + sum(padding[1]))
        wide = tuple(stride) == (1, 1)
        return _ConvGeometry(kernel, dilation, out_hw, padded, wide, stride, padding, groups)

    def conv2d_forward(self, x, w, b, stride, padding, dilation, groups, relu=False):
        return self.conv2d_forward_saving(x, w, b, stride, padding, dilation, groups, relu)[0]

    def conv2d_forward_saving(self, x, w, b, stride, padding, dilation, groups, relu=False):
        """Forward; what it keeps for :meth:`conv2d_backward_saved` is the geometry and x."""
        n, k = x.shape[0], w.shape[0]
        geo = self._conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
        y = np.empty((n, k, *geo.out_hw), dtype=np.result_type(x, w))
        wg = w.reshape(groups, k // groups, -1)
        if b is not None:  # the bias as one more column, against the columns' row of ones
            wg = np.concatenate([wg, b.reshape(groups, k // groups, 1)], axis=2)

        def compute(_: int, part: slice) -> None:  # the product (with bias), ReLU, rows cropped
            product = geo.cropped(np.matmul(wg, geo.columns(x[part], ones=b is not None)))
            if relu:
                np.maximum(product, 0, out=y[part])
            else:
                y[part] = product

        _each_chunk(geo.chunks(x.shape, y.itemsize), n, compute)
        return y, (geo, x)

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
        geo, x = saved
        w_input = w if input_grad else None
        return self._conv_backward(gy, geo, x_shape, w.shape, w=w_input, x=x, bias=bias)

    @staticmethod
    def _conv_backward(gy, geo: _ConvGeometry, x_shape, w_shape, w=None, x=None, bias=False):
        """(gx given w, gw given x, gb with ``bias`` (and x); None for the others), chunk by
        chunk with gy widened once per chunk for all three; the bias gradient comes out of the
        weight gradient's product, against the columns' row of ones. Each chunk's share of gw
        and gb is kept apart and the shares are summed in chunk order, so that no result depends
        on the thread count."""
        n, k, groups = len(gy), w_shape[0], geo.groups
        chunks = geo.chunks(x_shape, gy.itemsize)
        gx = None if w is None else np.empty(tuple(x_shape), dtype=np.result_type(gy, w))
        shares = None
        if x is not None:  # each chunk's gw (and gb), transposed per group: (G, C/G*R*S+1, K/G)
            share = (groups, int(np.prod(w_shape[1:])) + bias, k // groups)
            shares = np.empty((len(chunks), *share), dtype=np.result_type(gy, x))

        def gradients(i: int, part: slice) -> None:
            gy_wide = geo.widened(gy[part])
            if gx is not None:
                gx[part] = geo.input_gradient(gy_wide, w, x_shape[2:])
            if shares is not None:  # columns @ gy^T: BLAS's fastest order for these shapes
                cols = geo.columns(x[part], ones=bias)
                np.matmul(cols, gy_wide.transpose(0, 1, 3, 2)).sum(axis=0, out=shares[i])

        _each_chunk(chunks, n, gradients)
        if shares is None:
            return gx, None, None
        total = shares.sum(axis=0).transpose(0, 2, 1)  # (G, K/G, C/G*R*S (+1))
        gw = total[..., : total.shape[2] - bias].reshape(w_shape)
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
        gx = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=gy.dtype)
        for r in range(kernel[0]):
            for s in range(kernel[1]):
                gx[_offset_slices(r, s, (1, 1), stride, gy.shape[2:])] += share
        return np.ascontiguousarray(gx[:, :, ph : ph + h, pw : pw + w])
