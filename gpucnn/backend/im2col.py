"""im2col and col2im for the CPU backend's convolutions, one chunk of samples at a time.

A chunk holds about CHUNK_BYTES of columns, so its columns and products stay in cache: each
sample's windows are gathered into a tap-major (G, R*S*C/G, Ho*Wo) matrix and every pass is one
matrix product per sample and group (BLAS), written straight into NCHW, with no layout transposes
on the way in or out. The bias rides in the products (a row of ones in the columns). The input
gradient runs on wide rows (stride 1: rows Wp wide, the extra columns zero), where each kernel
tap is one contiguous run of a group's flattened planes, so col2im is one contiguous add per tap.
Backward gathers the columns again rather than keeping the whole im2col matrix from forward.
The pooling ops share the padding and window views.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..shapes import Padding2d, Pair
from . import cpu_threads
from .cpu_threads import for_slices


def pad_hw(x: np.ndarray, padding: Padding2d, value: float = 0.0) -> np.ndarray:
    """x padded on H and W by ((top, bottom), (left, right)); x itself when there is no padding."""
    if not any(padding[0]) and not any(padding[1]):
        return x
    return np.pad(x, ((0, 0), (0, 0), padding[0], padding[1]), constant_values=value)


def offset_slices(r: int, s: int, dilation: Pair, stride: Pair, out_hw: Pair):
    """Index of the input pixels that kernel offset (r, s) meets, over all (Ho, Wo) outputs."""
    h0, w0 = r * dilation[0], s * dilation[1]
    return (
        slice(None),
        slice(None),
        slice(h0, h0 + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
        slice(w0, w0 + stride[1] * (out_hw[1] - 1) + 1, stride[1]),
    )


def window_view(
    xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair
) -> np.ndarray:
    """Read-only view (N, C, R, S, Ho, Wo) of the padded input xp: element [n, c, r, s, i, j] is
    xp[n, c, i*stride_h + r*dilation_h, j*stride_w + s*dilation_w]."""
    sn, sc, sh, sw = xp.strides
    shape = (*xp.shape[:2], *kernel, *out_hw)
    strides = (sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1])
    return as_strided(xp, shape=shape, strides=strides, writeable=False)


class ConvGeometry(NamedTuple):
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

    def with_wide_rows(self) -> ConvGeometry:
        """This geometry with wide rows where it can have them (stride 1)."""
        return self._replace(wide=tuple(self.stride) == (1, 1))

    def tap_offsets(self) -> list[int]:
        """Where each tap's run starts in a flattened padded plane, taps in row-major order."""
        (kh, kw), (dh, dw) = self.kernel, self.dilation
        return [r * dh * self.padded[1] + s * dw for r in range(kh) for s in range(kw)]

    def chunks(self, x_shape, itemsize: int) -> list[slice]:
        """The batch of x_shape cut into chunks whose im2col matrix takes at most about
        CHUNK_BYTES, their sizes within one sample of each other. From MIN_BATCH samples on
        (where the CPU threads take the chunks) their number is even, so that two threads get
        the same work (tutorial-mnist's conv1 at b256 on 2 cores: 4 chunks of 64 rather than 85,
        85, 85 and 1, forward 1.3 ms against 1.6). The chunks depend on the shapes alone, never
        on the thread count."""
        n, c = x_shape[:2]
        per_sample = itemsize * c * self.kernel[0] * self.kernel[1] * self.length
        most = max(1, CHUNK_BYTES // per_sample)
        count = max(1, -(-n // most))  # one empty chunk for an empty batch
        if n >= cpu_threads.MIN_BATCH:
            count = min(n, count + count % 2)
        bounds = [n * i // count for i in range(count + 1)]
        return [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]

    def weights(self, w: np.ndarray) -> np.ndarray:
        """w (K, C/G, R, S) as the tap-major (G, K/G, R*S*C/G) matrices."""
        k, cg, kh, kw = w.shape
        g = self.groups
        return (
            w.reshape(g, k // g, cg, kh, kw)
            .transpose(0, 1, 3, 4, 2)
            .reshape(g, k // g, kh * kw * cg)
        )

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
        windows = window_view(
            pad_hw(x, self.padding), self.kernel, self.stride, self.dilation, self.out_hw
        )
        windows = windows.reshape(n, g, cg, kh, kw, *self.out_hw).transpose(0, 1, 3, 4, 2, 5, 6)
        cols[:, :, : kh * kw * cg].reshape(n, g, kh, kw, cg, *self.out_hw)[...] = windows
        return cols

    def widened(self, gy: np.ndarray) -> np.ndarray:
        """gy (n, K, Ho, Wo) -> (n, G, K/G, Ho*row), zero in the extra columns of wide rows (gy
        itself, reshaped, with compact rows)."""
        n, k, ho, wo = gy.shape
        if not self.wide:
            return gy.reshape(n, self.groups, k // self.groups, ho * wo)
        out = np.empty((n, k, ho, self.row), dtype=gy.dtype)
        out[..., :wo] = gy
        out[..., wo:] = 0
        return out.reshape(n, self.groups, k // self.groups, ho * self.row)

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
                flat[..., start : start + cg * self.plane] += tap.reshape(n, g, cg * self.plane)
            else:
                rows = offset_slices(t // kw, t % kw, self.dilation, self.stride, self.out_hw)
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
CHUNK_BYTES = 1 << 21


def each_chunk(chunks: list[slice], batch: int, body: Callable[[int, slice], None]) -> None:
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
