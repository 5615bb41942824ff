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
    """Sizes a conv pass needs: kernel, dilation, output and padded input (h, w), and whether the
    im2col rows are ``wide`` (stride 1: the padded width, extra columns cropped) or compact."""

    kernel: Pair
    dilation: Pair
    out_hw: Pair
    padded: Pair
    wide: bool

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

    def flat_planes(self, x: np.ndarray, padding: Padding2d) -> np.ndarray:
        """x padded, channels first and flattened per plane: (C, N, flat_length)."""
        n, c = x.shape[:2]
        flat = np.zeros((c, n, self.flat_length), dtype=x.dtype)
        hp, wp = self.padded
        (pt, _), (pl, _) = padding
        planes = flat[:, :, : hp * wp].reshape(c, n, hp, wp)
        planes[:, :, pt : pt + x.shape[2], pl : pl + x.shape[3]] = x.transpose(1, 0, 2, 3)
        return flat

    def columns(self, part: slice) -> slice:
        """The im2col columns (last axis) of the samples in ``part``."""
        per_sample = self.out_hw[0] * self.row
        return slice(part.start * per_sample, part.stop * per_sample)

    def samples_first(self, gemm: np.ndarray) -> np.ndarray:
        """A product's (K, n*Ho*row) rows as (n, K, Ho, Wo), the wide rows' extra columns cut."""
        k = gemm.shape[0]
        planes = gemm.reshape(k, -1, self.out_hw[0], self.row)[..., : self.out_hw[1]]
        return planes.transpose(1, 0, 2, 3)

    def crop_planes(self, flat: np.ndarray, padding: Padding2d, hw: Pair) -> np.ndarray:
        """The inverse of :meth:`flat_planes`: (C, N, flat_length) -> (N, C, H, W) view."""
        c, n = flat.shape[:2]
        hp, wp = self.padded
        (pt, _), (pl, _) = padding
        planes = flat[:, :, : hp * wp].reshape(c, n, hp, wp)
        return planes[:, :, pt : pt + hw[0], pl : pl + hw[1]].transpose(1, 0, 2, 3)


# Pixels per partial product of a weight gradient: conv1's at batch 64 took 0.25 ms in runs of
# 4096 against 0.45 ms in one product (at 256: 1.1 against 1.9 ms); conv2's the same either way.
_REDUCTION_RUN = 4096


def _grouped_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a[g] @ b[g] for each group g, as 2-D products: NumPy hands 2-D (transposed) operands straight
    to BLAS, while a stacked 3-D matmul of transposed views can run several times slower."""
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=np.result_type(a, b))
    for g in range(a.shape[0]):
        np.matmul(a[g], b[g], out=out[g])
    return out


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
    def _conv_geometry(x_shape, w_shape, stride, padding, dilation) -> _ConvGeometry:
        kernel = (w_shape[2], w_shape[3])
        out_hw = window_output_shape(x_shape[2:], kernel, stride, padding, dilation, "conv2d")
        padded = (x_shape[2] + sum(padding[0]), x_shape[3] + sum(padding[1]))
        return _ConvGeometry(kernel, dilation, out_hw, padded, tuple(stride) == (1, 1))

    def _columns(self, x, geo: _ConvGeometry, stride, padding, groups):
        """im2col of x: (G, C/G*R*S, N*Ho*row), samples and pixels sharing the last axis so that
        each conv pass is one large matrix product."""
        n, c = x.shape[:2]
        (kh, kw), ho = geo.kernel, geo.out_hw[0]
        if geo.wide:
            # Stride 1: tap (r, s) of every output is one contiguous run of the flattened padded
            # planes, shifted by r*dh*Wp + s*dw; rows come out Wp wide (the extra columns wrap into
            # the next row and are cropped from the result).
            length = ho * geo.row
            cols = np.empty((c, kh, kw, n, length), dtype=x.dtype)

            def gather(part: slice) -> None:
                flat = geo.flat_planes(x[part], padding)
                for r in range(kh):
                    for s in range(kw):
                        start = geo.tap_offset(r, s)
                        cols[:, r, s, part] = flat[:, :, start : start + length]

            for_slices(n, n, gather)
        else:
            view = _windows(_pad(x, padding), geo.kernel, stride, geo.dilation, geo.out_hw)
            cols = view.transpose(1, 2, 3, 0, 4, 5)
        return cols.reshape(groups, -1, n * ho * geo.row)

    @staticmethod
    def _channels_first(gy, geo: _ConvGeometry, groups):
        """gy (N, K, Ho, Wo) -> (G, K/G, N*Ho*row), zero in the extra columns of wide rows."""
        n, k, ho, wo = gy.shape
        out = np.empty((k, n, ho, geo.row), dtype=gy.dtype)

        def copy(part: slice) -> None:
            out[:, part, :, :wo] = gy[part].transpose(1, 0, 2, 3)
            out[:, part, :, wo:] = 0

        for_slices(n, n, copy)
        return out.reshape(groups, k // groups, -1)

    def conv2d_forward(self, x, w, b, stride, padding, dilation, groups, relu=False):
        return self.conv2d_forward_saving(x, w, b, stride, padding, dilation, groups, relu)[0]

    def conv2d_forward_saving(self, x, w, b, stride, padding, dilation, groups, relu=False):
        """Forward that keeps its im2col matrix for :meth:`conv2d_backward_saved`."""
        n, k = x.shape[0], w.shape[0]
        geo = self._conv_geometry(x.shape, w.shape, stride, padding, dilation)
        cols = self._columns(x, geo, stride, padding, groups)  # (G, Q, N*Ho*row)
        y = np.empty((n, k, *geo.out_hw), dtype=np.result_type(x, w))

        def compute(part: slice) -> None:  # the product, samples first, bias, ReLU
            gemm = _grouped_matmul(w.reshape(groups, k // groups, -1), cols[..., geo.columns(part)])
            out = y[part]
            out[...] = geo.samples_first(gemm.reshape(k, -1))
            if b is not None:
                out += b.reshape(1, k, 1, 1)
            if relu:
                np.maximum(out, 0, out=out)

        for_slices(n, n, compute)
        return y, (geo, cols)

    def conv2d_backward_input(self, gy, w, x_shape, stride, padding, dilation, groups):
        geo = self._conv_geometry(x_shape, w.shape, stride, padding, dilation)
        gy_cols = self._channels_first(gy, geo, groups)
        return self._input_product(gy_cols, w, x_shape, geo, stride, padding, dilation, groups)

    def conv2d_backward_weight(self, gy, x, w_shape, stride, padding, dilation, groups):
        geo = self._conv_geometry(x.shape, w_shape, stride, padding, dilation)
        cols = self._columns(x, geo, stride, padding, groups)
        return self._weight_product(self._channels_first(gy, geo, groups), cols, w_shape, len(gy))

    def conv2d_backward_saved(
        self, gy, saved, w, x_shape, stride, padding, dilation, groups, input_grad=True, bias=True
    ):
        """The layer's backward with gy's channels-first copy made once for all three gradients
        and the im2col matrix kept from forward; the bias gradient is its rows' sums."""
        geo, cols = saved
        gy_cols = self._channels_first(gy, geo, groups)  # zero in wide rows' extra columns
        gx = None
        if input_grad:
            gx = self._input_product(gy_cols, w, x_shape, geo, stride, padding, dilation, groups)
        gb = gy_cols.sum(axis=2).reshape(-1) if bias else None
        return gx, self._weight_product(gy_cols, cols, w.shape, len(gy)), gb

    @staticmethod
    def _weight_product(gy_cols, cols, w_shape, batch: int):
        """gw from gy's channels-first (G, K/G, N*Ho*row) and im2col (G, Q, N*Ho*row) matrices
        of a batch of ``batch`` samples."""
        gw = np.empty((gy_cols.shape[0], gy_cols.shape[1], cols.shape[1]), dtype=gy_cols.dtype)

        def product(part: slice) -> None:  # columns of gw: each sums the whole batch itself
            # In runs of _REDUCTION_RUN pixels that stay in cache: BLAS streams a reduction this
            # long (N*Ho*row: 186,368 for conv1 at batch 256) with few outputs at half speed.
            out = gw[..., part]
            out[...] = 0
            for start in range(0, cols.shape[2], _REDUCTION_RUN):
                run = slice(start, start + _REDUCTION_RUN)
                out += _grouped_matmul(gy_cols[..., run], cols[:, part, run].transpose(0, 2, 1))

        for_slices(cols.shape[1], batch, product)
        return gw.reshape(w_shape)

    @staticmethod
    def _input_product(gy_cols, w, x_shape, geo: _ConvGeometry, stride, padding, dilation, groups):
        """gx from gy's channels-first matrix (G, K/G, N*Ho*row): the product with w, then
        col2im."""
        n, c, h, width = x_shape
        k, cg, kh, kw = w.shape
        wt = w.reshape(groups, k // groups, cg * kh * kw).transpose(0, 2, 1)
        if geo.wide:  # stride 1: add each tap's contiguous run back (col2im)
            gx = np.empty(tuple(x_shape), dtype=gy_cols.dtype)

            def scatter(part: slice) -> None:
                gcols = _grouped_matmul(wt, gy_cols[..., geo.columns(part)])
                gcols = gcols.reshape(c, kh, kw, part.stop - part.start, -1)
                flat = np.zeros((c, part.stop - part.start, geo.flat_length), dtype=gx.dtype)
                for r in range(kh):
                    for s in range(kw):
                        start = geo.tap_offset(r, s)
                        flat[:, :, start : start + gcols.shape[-1]] += gcols[:, r, s]
                gx[part] = geo.crop_planes(flat, padding, (h, width))

            for_slices(n, n, scatter)
            return gx
        gcols = _grouped_matmul(wt, gy_cols).reshape(c, kh, kw, n, *geo.out_hw)
        gx = np.zeros((c, n, *geo.padded), dtype=gy_cols.dtype)
        for r in range(kh):
            for s in range(kw):
                gx[_offset_slices(r, s, dilation, stride, geo.out_hw)] += gcols[:, r, s]
        (pt, _), (pl, _) = padding
        return np.ascontiguousarray(gx[:, :, pt : pt + h, pl : pl + width].transpose(1, 0, 2, 3))

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

        def pool(part: slice) -> None:
            # (kh, kw, n, C, Ho, Wo), contiguous: branch-free elementwise work from here on.
            windows = _windows(_pad(x[part], pads, -np.inf), kernel, stride, (1, 1), out_hw)
            windows = np.ascontiguousarray(windows.transpose(2, 3, 0, 1, 4, 5))
            top, offset = best[part], argmax[part]  # offset: r*W + s of the maximum so far
            top[...], offset[...] = windows[0, 0], 0
            for r in range(kernel[0]):
                for s in range(kernel[1]):
                    if r == s == 0:
                        continue
                    # Strictly greater keeps the first maximum in row-major window order.
                    better = (windows[r, s] > top).view(np.int8)
                    offset += better * (r * w + s - offset)
                    np.maximum(top, windows[r, s], out=top)
            offset += origins

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
