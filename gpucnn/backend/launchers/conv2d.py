"""Launchers of kernels_cuda/conv2d.cu: the convolution's three passes (implicit GEMMs), the
split weight gradient's sum, and the linear layer, which runs on these kernels in a graph session."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

from ...shapes import Padding2d, Pair, window_output_shape
from .launching import MAX_GRID_YZ, Launching, blocks, i32, i64, shaped

# conv2d.cu's GEMM block tiles as (rows, columns) of the product: SquareTile and NarrowTile.
SQUARE_TILE, NARROW_TILE = (64, 64), (16, 256)
_TILE_Q = 16  # TILE_Q in conv2d.cu
_TARGET_BLOCKS = 512  # enough blocks to fill a large GPU, for the split weight-gradient reduction
_MIN_SPLIT = 128  # reduction steps per block below which splitting stops paying
_MAX_SPATIAL = 2**30  # conv2d.cu's pixel coordinates and window reaches are int
# A graph session's linear forward with fewer output tiles than _FEW_TILES and at least
# _LONG_REDUCTION input features splits its reduction (see Conv2dLaunchers._linear_split).
_FEW_TILES, _LONG_REDUCTION = 16, 256
_POINTWISE = ((1, 1), ((0, 0), (0, 0)), (1, 1), 1)  # stride, padding, dilation, groups of a 1x1


@functools.lru_cache(maxsize=512)
def _conv_scalars(x_shape, w_shape, stride, padding, dilation, groups) -> tuple:
    """Conv2dLaunchers._conv_args for hashable (tuple) arguments, checked and converted once."""
    out_hw = window_output_shape(x_shape[2:], w_shape[2:], stride, padding, dilation, "conv2d")
    n, c, h, w = x_shape
    k, cg, r, s = w_shape
    if groups < 1 or c != cg * groups or k % groups:
        raise ValueError(f"conv2d: x {tuple(x_shape)} and w {tuple(w_shape)} with groups={groups}")
    rows = max(k // groups, c // groups)  # the most GEMM rows of any pass: square tiles
    if groups > MAX_GRID_YZ or blocks(rows, SQUARE_TILE[0]) > MAX_GRID_YZ:
        raise ValueError(
            f"conv2d: {groups} groups of {k // groups} filters and {c // groups} channels "
            "exceed the grid"
        )
    spans = (o * st for o, st in zip(out_hw, stride, strict=True))
    reaches = (h, w, *spans, *padding[0], *padding[1], r * dilation[0], s * dilation[1])
    if max(reaches) >= _MAX_SPATIAL:  # the kernels keep pixel coordinates in int
        raise ValueError(f"conv2d: spatial sizes past 2^30 are not supported, got x {x_shape}")
    dims = (n, c, h, w, k, *out_hw, r, s, *stride, padding[0][0], padding[1][0], *dilation)
    return out_hw, (*(i64(v) for v in dims), i64(groups))


_square_only = False  # set by square_tiles_only


@contextlib.contextmanager
def square_tiles_only() -> Iterator[None]:
    """Within it, every conv2d.cu GEMM launched runs on SQUARE_TILE, as before the narrow tile
    existed: the bench's same-run comparison of the two (peer ``gpucnn-cuda-baseline-graph``)."""
    global _square_only
    before, _square_only = _square_only, True
    try:
        yield
    finally:
        _square_only = before


def gemm_tile(rows: int, columns: int) -> tuple[int, int]:
    """The block tile for a GEMM of ``rows`` x ``columns`` outputs: NARROW_TILE where it covers
    every row in one tile (so no block loads a B column another loads too) and multiplies fewer
    padded entries than SQUARE_TILE (conv1's 16 filters, the input gradient of 1 or 16 channels:
    a quarter of the multiply-adds); SQUARE_TILE otherwise, and on a tie (the tile measured
    first); always SQUARE_TILE inside :func:`square_tiles_only`. Both sum each output over its
    reduction in the same order, so the forward and the input gradient give the same bits with
    either; a weight gradient's split follows the tile's block count."""
    return SQUARE_TILE if _square_only else _least_padded_tile(rows, columns)


@functools.lru_cache(maxsize=512)
def _least_padded_tile(rows: int, columns: int) -> tuple[int, int]:
    """:func:`gemm_tile`'s choice, made once per shape (a launch asks for it every time)."""

    def padded(tile: tuple[int, int]) -> int:
        return blocks(rows, tile[0]) * tile[0] * blocks(columns, tile[1]) * tile[1]

    narrow = rows <= NARROW_TILE[0] and padded(NARROW_TILE) < padded(SQUARE_TILE)
    return NARROW_TILE if narrow else SQUARE_TILE


@functools.lru_cache(maxsize=512)
def _tile_grid(tile: tuple[int, int], rows: int, columns: int, layers: int) -> tuple:
    """Grid of a conv2d.cu GEMM, and its kernel's ``narrow`` flag, for ``tile``: (columns
    blocks, rows blocks, ``layers``) (groups, times the splits of a weight gradient)."""
    grid = (blocks(columns, tile[1]), blocks(rows, tile[0]), layers)
    return grid, i32(tile == NARROW_TILE)


@functools.lru_cache(maxsize=512)
def _weight_plan(tile: tuple[int, int], rows: int, columns: int, reduction: int, groups: int):
    """(chunk, splits, grid, narrow flag) of a weight gradient's GEMM on ``tile``."""
    tiles = blocks(rows, tile[0]) * blocks(columns, tile[1]) * groups
    chunk, splits = _weight_splits(reduction, tiles, groups)
    return (chunk, splits, *_tile_grid(tile, rows, columns, groups * splits))


def _weight_splits(reduction: int, tiles: int, groups: int) -> tuple[int, int]:
    """(chunk, splits) of a weight gradient's reduction of ``reduction`` (N*Ho*Wo) steps over
    ``tiles`` output tiles in all (every group's): about _TARGET_BLOCKS blocks in all, at least
    _MIN_SPLIT steps each, in whole TILE_Q slabs. No tiles (an empty gradient) is one split."""
    want = min(blocks(_TARGET_BLOCKS, max(1, tiles)), blocks(reduction, _MIN_SPLIT))
    chunk = blocks(reduction, max(1, min(want, MAX_GRID_YZ // groups)))
    chunk = max(1, blocks(chunk, _TILE_Q)) * _TILE_Q
    return chunk, max(1, blocks(reduction, chunk))


class Conv2dLaunchers(Launching):
    """conv2d.cu's launchers, and the linear layer's."""

    @staticmethod
    def _conv_args(x_shape, w_shape, stride, padding, dilation, groups) -> tuple:
        """(Ho, Wo) and the geometry scalars every conv2d kernel takes, in the kernels'
        parameter order: made once per geometry (a training step asks for the same few every
        time)."""
        pads = (tuple(padding[0]), tuple(padding[1]))
        return _conv_scalars(
            tuple(x_shape), tuple(w_shape), tuple(stride), pads, tuple(dilation), int(groups)
        )

    def conv2d_forward(
        self, x, w, b, stride: Pair, padding: Padding2d, dilation: Pair, groups, relu=False
    ):
        """Implicit-GEMM kernel, bias and ReLU in its epilogue. grid = (N*Ho*Wo / tile columns,
        K/groups / tile rows, groups), block = 256 (tile: :func:`gemm_tile`)."""
        x, w, *bias = self._floats("conv2d_forward", x, w, *([] if b is None else [b]))
        out_hw, args = self._conv_args(x.shape, w.shape, stride, padding, dilation, groups)
        n, k = x.shape[0], w.shape[0]
        if bias:
            shaped("conv2d_forward", (k,), b=bias[0])
        y = self.xp.empty((n, k, *out_hw), dtype=x.dtype)
        pixels = n * out_hw[0] * out_hw[1]
        grid, narrow = _tile_grid(gemm_tile(k // groups, pixels), k // groups, pixels, groups)
        # Without a bias the kernel never reads its bias pointer; w stands in for it.
        bias_ptr = bias[0] if bias else w
        flags = (i32(bool(bias)), i32(bool(relu)), narrow)
        self._launch("conv2d", "conv2d_forward", grid, x, w, bias_ptr, y, *args, *flags)
        return y

    def conv2d_backward_input(self, gy, w, x_shape, stride, padding, dilation, groups):
        """Gather-form implicit GEMM. grid = (N*H*W / tile columns, C/groups / tile rows,
        groups), block = 256 (tile: :func:`gemm_tile`)."""
        gy, w = self._floats("conv2d_backward_input", gy, w)
        n, c, h, width = x_shape
        out_hw, args = self._conv_args(x_shape, w.shape, stride, padding, dilation, groups)
        shaped("conv2d_backward_input", (n, w.shape[0], *out_hw), gy=gy)
        gx = self.xp.empty(tuple(x_shape), dtype=gy.dtype)
        rows, pixels = c // groups, n * h * width
        grid, narrow = _tile_grid(gemm_tile(rows, pixels), rows, pixels, groups)
        self._launch("conv2d", "conv2d_backward_input", grid, gy, w, gx, *args, narrow)
        return gx

    def conv2d_backward_weight(self, gy, x, w_shape, stride, padding, dilation, groups):
        """Implicit GEMM over (n, oh, ow), split in fixed chunks summed in a fixed order.

        grid = (C/groups*R*S / tile columns, K/groups / tile rows, groups * splits), block = 256
        (tile: :func:`gemm_tile`); then, when splits > 1, ``sum_partials`` over its
        K*C/groups*R*S outputs (32 a block).
        """
        geometry = (stride, padding, dilation, groups)
        return self._weight_gradient(gy, x, w_shape, geometry, with_bias=False)[0]

    def conv2d_backward_params(self, gy, x, w_shape, stride, padding, dilation, groups):
        """:meth:`conv2d_backward_weight` with the bias gradient as one more column of its GEMM
        (a column of ones): no launch of its own. Where the weight's columns fill whole tiles
        (C/groups*R*S a multiple of the tile's columns) that column takes a tile of its own,
        which reads gy once more; so would :meth:`conv2d_backward_bias`, with one block per
        channel instead of the split GEMM's many."""
        geometry = (stride, padding, dilation, groups)
        return self._weight_gradient(gy, x, w_shape, geometry, with_bias=True)

    def _weight_gradient(self, gy, x, w_shape, geometry, with_bias: bool):
        """(gw, gb or None): the split GEMM, then ``sum_partials`` when split; the bias gradient
        (with_bias) follows gw in one buffer, each returned as a contiguous view of it."""
        stride, padding, dilation, groups = geometry
        gy, x = self._floats("conv2d_backward_weight", gy, x)
        k, cg, r, s = w_shape
        out_hw, args = self._conv_args(x.shape, w_shape, stride, padding, dilation, groups)
        shaped("conv2d_backward_weight", (x.shape[0], k, *out_hw), gy=gy)
        columns, rows = cg * r * s + with_bias, k // groups
        reduction = gy.shape[0] * out_hw[0] * out_hw[1]
        plan = _weight_plan(gemm_tile(rows, columns), rows, columns, reduction, groups)
        chunk, splits, grid, narrow = plan
        weights = math.prod(w_shape)
        out = self.xp.empty(weights + (k if with_bias else 0), dtype=gy.dtype)
        part = out if splits == 1 else self.xp.empty((splits, out.size), dtype=gy.dtype)
        flags = (i64(chunk), i32(with_bias), narrow)
        self._launch("conv2d", "conv2d_backward_weight", grid, gy, x, part, *args, *flags)
        if splits > 1:
            sums = (blocks(out.size, 32),)  # 32 outputs a block
            self._launch("conv2d", "sum_partials", sums, part, out, i64(splits), i64(out.size))
        gw = out[:weights].reshape(tuple(w_shape))
        return gw, (out[weights:] if with_bias else None)

    def conv2d_backward_bias(self, gy):
        """One block per output channel, a fixed-order tree sum. grid = (K,), block = 256."""
        (gy,) = self._floats("conv2d_backward_bias", gy)
        n, k = gy.shape[:2]
        gb = self.xp.empty((k,), dtype=gy.dtype)
        hw = i64(math.prod(gy.shape[2:]))
        self._launch("conv2d", "conv2d_backward_bias", (k,), gy, gb, i64(n), i64(k), hw)
        return gb

    def linear_forward(self, x, w, b, relu=False):
        """cuBLAS through CuPy's matmul, then bias and ReLU in one kernel; inside a graph session
        (:attr:`capture_safe`) a 1x1 convolution on conv2d.cu's kernels instead, since CuPy
        refuses cuBLAS calls while a stream is being captured (cupy/cupy#6290)."""
        n, k = x.shape[0], w.shape[0]
        if self.capture_safe:
            few_tiles = blocks(n, SQUARE_TILE[1]) * blocks(k, SQUARE_TILE[0]) < _FEW_TILES
            if few_tiles and x.shape[1] >= _LONG_REDUCTION:
                return self._linear_split(x, w, b, relu)
            x4, w4 = x.reshape(n, x.shape[1], 1, 1), w.reshape(k, w.shape[1], 1, 1)
            return self.conv2d_forward(x4, w4, b, *_POINTWISE, relu).reshape(n, k)
        return self._linear_epilogue(x @ w.T, b, relu)

    def _linear_split(self, x, w, b, relu):
        """x @ w.T as the weight gradient of a one-image convolution whose reduction runs over
        the input features (gy = x as (1, N, C, 1), x = w as (1, K, C, 1)): the weight gradient's
        split reduction gives a small batch's few output tiles many blocks (fc1 at batch 64: 14
        blocks of 8 slabs, where the 1x1 conv forward has 2 blocks of 50). Then bias and ReLU."""
        (n, c), k = x.shape, w.shape[0]
        gy4, x4 = x.reshape(1, n, c, 1), w.reshape(1, k, c, 1)
        y = self.conv2d_backward_weight(gy4, x4, (n, k, 1, 1), *_POINTWISE).reshape(n, k)
        return self._linear_epilogue(y, b, relu)

    def _linear_epilogue(self, y, b, relu):
        """y + b, then max(., 0) with ``relu``: one kernel for both."""
        if b is None:
            return self.relu_forward(y) if relu else y
        if relu:
            return self.bias_relu_forward(y, b)
        y += b
        return y

    def linear_backward(self, gy, x, w):
        """As :meth:`linear_forward`: cuBLAS, or conv2d.cu's kernels in a graph session."""
        if not self.capture_safe:
            return super().linear_backward(gy, x, w)
        (n, k), c = gy.shape, w.shape[1]
        gy4 = gy.reshape(n, k, 1, 1)
        gx = self.conv2d_backward_input(gy4, w.reshape(k, c, 1, 1), (n, c, 1, 1), *_POINTWISE)
        x4 = x.reshape(n, c, 1, 1)
        gw, gb = self.conv2d_backward_params(gy4, x4, (k, c, 1, 1), *_POINTWISE)
        return gx.reshape(n, c), gw.reshape(k, c), gb
