"""Launchers of kernels_cuda/winograd.cu: a large 3x3 stride-1 convolution's forward and input
gradient as Winograd F(2x2, 3x3) and its weight gradient as F(3x3, 2x2), each 2.25 times fewer
multiply-adds than the direct product; every other convolution stays on the direct implicit GEMMs
of :class:`~.conv2d.Conv2dLaunchers`."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from .conv2d import Conv2dLaunchers
from .launching import MAX_GRID_YZ, blocks, grid_1d, i32, i64, shaped

POINTS = 16  # the 4 x 4 transform's points: the GEMMs per convolution (WINOGRAD_POINTS)
# Where Winograd pays, by arithmetic (to be tuned by the bench's same-run A/B on a GPU): at
# least _MIN_CHANNELS input and output channels (a block's 32 rows filled; per tile and input
# channel, the input transform's ~50 operations against 16 multiply-adds a filter) and
# _MIN_MACS multiply-adds in the direct product (~30 us at an H100's float32 peak: smaller
# layers are launch-bound, and Winograd takes two launches where the direct GEMM takes one).
_MIN_CHANNELS = 32
_MIN_MACS = 2**30
BLOCK_TILES, BLOCK_ROWS = 32, 32  # the kernels' block: WINOGRAD_TILES x WINOGRAD_ROWS
SLAB_CHANNELS = 8  # WINOGRAD_CHANNELS: the transformed filters' reduction is padded to it
# The weight gradient's split of its reduction over tiles: about _TARGET_BLOCKS blocks (a few
# waves of 2 blocks on each of 132 SMs), at least _MIN_CHUNK tiles (8 slabs) a block.
_TARGET_BLOCKS, _MIN_CHUNK = 512, 64
_MAX_COLUMNS = 2**30  # the kernel keeps an image's and a tile's index in int
ALGORITHMS = ("auto", "direct", "winograd")
_algorithm = "auto"  # set by convolution_algorithm


@contextlib.contextmanager
def convolution_algorithm(name: str) -> Iterator[None]:
    """Within it, convolutions run as ``name``: ``"direct"``, never Winograd (the bench's
    same-run comparison, peer ``gpucnn-cuda-baseline-graph``); ``"winograd"``, wherever the
    window allows it, whatever the size (tests and the sanitizer's driver, on small shapes);
    ``"auto"``, :func:`winograd_applies`'s choice (the default)."""
    global _algorithm
    if name not in ALGORITHMS:
        raise ValueError(f"convolution algorithm {name!r}: choose from {', '.join(ALGORITHMS)}")
    before, _algorithm = _algorithm, name
    try:
        yield
    finally:
        _algorithm = before


def winograd_applies(x_shape, w_shape, stride, dilation, groups) -> bool:
    """True where a convolution's forward and gradients run as Winograd: a 3x3 window, stride 1,
    no dilation, one group, and (unless :func:`convolution_algorithm` says otherwise) at least
    _MIN_CHANNELS channels in and out and _MIN_MACS multiply-adds."""
    if _algorithm == "direct":
        return False
    window, large = _shape_rule(tuple(x_shape), tuple(w_shape), tuple(stride), tuple(dilation),
                                groups)  # fmt: skip
    return window and (large or _algorithm == "winograd")


def _tile_splits(tiles: int, blocks_per_split: int) -> tuple[int, int]:
    """(chunk, splits) of the weight gradient's reduction over ``tiles`` output tiles: about
    _TARGET_BLOCKS blocks in all, at least _MIN_CHUNK tiles each, chunks of whole slabs."""
    want = min(blocks(_TARGET_BLOCKS, blocks_per_split), tiles // _MIN_CHUNK, MAX_GRID_YZ)
    want = max(1, want)
    chunk = max(1, blocks(blocks(tiles, want), SLAB_CHANNELS)) * SLAB_CHANNELS
    return chunk, max(1, blocks(tiles, chunk))  # one split at least: it writes zeros for no tiles


@functools.lru_cache(maxsize=512)
def _shape_rule(x_shape, w_shape, stride, dilation, groups) -> tuple[bool, bool]:
    """(the window allows Winograd, the layer is large enough to gain), once per geometry."""
    (n, c, h, w), (k, _, r, s) = x_shape, w_shape
    tiles = n * blocks(h, 2) * blocks(w, 2)
    window = (r, s, *stride, *dilation, groups) == (3, 3, 1, 1, 1, 1, 1)
    window &= tiles < _MAX_COLUMNS and blocks(k, BLOCK_ROWS) <= MAX_GRID_YZ  # the weights' grid
    macs = n * h * w * k * c * r * s  # about: the output is H x W at 'same' padding
    return window, min(c, k) >= _MIN_CHANNELS and macs >= _MIN_MACS


class WinogradLaunchers(Conv2dLaunchers):
    """winograd.cu's launchers: :meth:`conv2d_forward`, :meth:`conv2d_backward_input` and the
    weight gradient (of :meth:`conv2d_backward_weight` and :meth:`conv2d_backward_params`) where
    :func:`winograd_applies`, else conv2d.cu's."""

    def conv2d_forward(self, x, w, b, stride, padding, dilation, groups, relu=False):
        """Where :func:`winograd_applies`: the filters' transform, then one kernel for the input
        transform, the 16 GEMMs and the output transform with the bias and ReLU; else the
        direct implicit GEMM. Winograd's grid = (N*ceil(Ho/2)*ceil(Wo/2) / 32 * K / 32,) (row
        blocks fastest), block = 256."""
        if not winograd_applies(x.shape, w.shape, stride, dilation, groups):
            return super().conv2d_forward(x, w, b, stride, padding, dilation, groups, relu)
        x, w, *bias = self._floats("conv2d_forward", x, w, *([] if b is None else [b]))
        out_hw, _ = self._conv_args(x.shape, w.shape, stride, padding, dilation, groups)
        if bias:
            shaped("conv2d_forward", (w.shape[0],), b=bias[0])
        pads = (padding[0][0], padding[1][0])
        return self._winograd(x, w, bias[0] if bias else None, out_hw, pads, relu, flip=False)

    def conv2d_backward_input(self, gy, w, x_shape, stride, padding, dilation, groups):
        """Where :func:`winograd_applies`: gy convolved with w rotated 180 degrees, channels
        swapped, at padding 2 - the forward's, as :meth:`conv2d_forward`'s Winograd path (2
        launches); else the direct gather-form GEMM."""
        if not winograd_applies(x_shape, w.shape, stride, dilation, groups):
            return super().conv2d_backward_input(gy, w, x_shape, stride, padding, dilation, groups)
        gy, w = self._floats("conv2d_backward_input", gy, w)
        out_hw, _ = self._conv_args(x_shape, w.shape, stride, padding, dilation, groups)
        shaped("conv2d_backward_input", (x_shape[0], w.shape[0], *out_hw), gy=gy)
        pads = (2 - padding[0][0], 2 - padding[1][0])
        return self._winograd(gy, w, None, tuple(x_shape[2:]), pads, relu=False, flip=True)

    def _weight_gradient(self, gy, x, w_shape, geometry, with_bias: bool):
        """Where :func:`winograd_applies`: the weight gradient (and, ``with_bias``, the bias
        gradient, in the same pass) as Winograd F(3x3, 2x2), its reduction over the output's
        2 x 2 tiles split across blocks, then ``sum_partials``; else conv2d.cu's split GEMM.
        Returns (gw, gb or None), views of one buffer as conv2d.cu's."""
        stride, padding, dilation, groups = geometry
        if not winograd_applies(x.shape, w_shape, stride, dilation, groups):
            return super()._weight_gradient(gy, x, w_shape, geometry, with_bias)
        gy, x = self._floats("conv2d_backward_weight", gy, x)
        (n, c, h, width), k = x.shape, w_shape[0]
        out_hw, _ = self._conv_args(x.shape, w_shape, stride, padding, dilation, groups)
        shaped("conv2d_backward_weight", (n, k, *out_hw), gy=gy)
        tiles_h, tiles_w = blocks(out_hw[0], 2), blocks(out_hw[1], 2)
        per_split = blocks(c, BLOCK_TILES) * blocks(k, BLOCK_ROWS)
        chunk, splits = _tile_splits(n * tiles_h * tiles_w, per_split)
        weights = k * c * 9
        out = self.xp.empty(weights + (k if with_bias else 0), dtype=gy.dtype)
        part = out if splits == 1 else self.xp.empty((splits, out.size), dtype=gy.dtype)
        sizes = (n, c, h, width, k, *out_hw, tiles_h, tiles_w, padding[0][0], padding[1][0], chunk)
        grid = (blocks(c, BLOCK_TILES), blocks(k, BLOCK_ROWS), splits)
        args = (gy, x, part, *map(i64, sizes), i32(with_bias))
        self._launch("winograd", "winograd_backward_weight", grid, *args)
        if splits > 1:
            sums = (blocks(out.size, 32),)  # 32 outputs a block
            self._launch("conv2d", "sum_partials", sums, part, out, i64(splits), i64(out.size))
        return out[:weights].reshape(tuple(w_shape)), (out[weights:] if with_bias else None)

    def _winograd(self, x, w, bias, out_hw, pads, relu, flip):
        """y (N, rows, *out_hw) = x (N, reduction, H, W) convolved with w (K, C, 3, 3), stride 1,
        padded by ``pads`` (top, left; negative crops): rows, reduction = K, C, or with ``flip``
        C, K and w rotated 180 degrees. The filters' transforms (16 values a filter, padded) are
        the only workspace."""
        n, reduction, h, width = x.shape
        rows = w.shape[1] if flip else w.shape[0]
        tiles_h, tiles_w = blocks(out_hw[0], 2), blocks(out_hw[1], 2)
        # The transforms, padded with zeros to whole blocks of rows and slabs of the reduction.
        padded = (
            blocks(reduction, SLAB_CHANNELS) * SLAB_CHANNELS,
            blocks(rows, BLOCK_ROWS) * BLOCK_ROWS,
        )
        u = self.xp.empty((POINTS, *padded), dtype=x.dtype)
        filter_args = (w, u, i64(rows), i64(reduction), i32(flip))
        self._launch("winograd", "winograd_filter", grid_1d(padded[0] * padded[1]), *filter_args)
        y = self.xp.empty((n, rows, *out_hw), dtype=x.dtype)
        sizes = (n, reduction, h, width, rows, *out_hw, tiles_h, tiles_w, *pads)
        flags = (i32(bias is not None), i32(bool(relu)))
        bias_ptr = x if bias is None else bias  # never read without a bias
        grid = (blocks(n * tiles_h * tiles_w, BLOCK_TILES) * blocks(rows, BLOCK_ROWS),)
        args = (x, u, bias_ptr, y, *map(i64, sizes), *flags)
        self._launch("winograd", "winograd_conv2d", grid, *args)
        return y
