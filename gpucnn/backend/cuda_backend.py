"""The CUDA backend: one launcher per kernel of ``kernels_cuda/``, written once for two runners.

:class:`CudaBackend` holds the launchers. They allocate only through ``self.xp`` and reach kernels
only through ``self.runner.module(...)``, so the same code drives CuPy on a GPU
(``cupy_backend.CupyBackend``, device ``"cuda"``) and NumPy under the CPU emulation runner
(``"cuda-emu"``).
Every launcher checks dtypes (float32/float64), makes its inputs C-contiguous (a kernel reads raw
memory: a strided view would be read wrongly), and casts each scalar to the kernel parameter's exact
type: ``np.int64`` for sizes and indices (kernels take them 64-bit and switch to 32-bit index
arithmetic themselves where every index fits), ``np.int32`` for ``int`` flags, and the array's own
float type for ``T``.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from ..shapes import Padding2d, Pair, pool_output_shape, window_output_shape
from . import kernels
from .base import Backend

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_BLOCK = 256  # BLOCK_1D in common.cuh, and the 16 x 16 threads of conv2d.cu's GEMM tiles
_MAX_GRID_1D = 65535  # grid-stride kernels cover larger arrays by looping
_MAX_GRID_YZ = 65535  # CUDA's limit on gridDim.y and gridDim.z
_TILE = 64  # TILE_M == TILE_P in conv2d.cu
_TILE_Q = 16  # TILE_Q in conv2d.cu
_TARGET_BLOCKS = 512  # enough blocks to fill a large GPU, for the split weight-gradient reduction
_MIN_SPLIT = 128  # reduction steps per block below which splitting stops paying
_MAX_SPATIAL = 2**30  # conv2d.cu's pixel coordinates and window reaches are int
_PLANE_LOOP_BLOCKS = 4096  # 1M threads: a few waves even on the largest GPUs
_BN_ITEMS = 16  # BN_ITEMS in batchnorm.cu: images per thread in a partial-sum block
_OPTIM_SLOTS = 8  # FOR_SLOTS in optim.cu: parameters updated by one launch
_LOSS_BLOCK_ROWS = 128  # rows up to which softmax_cross_entropy_train's one block is quicker
# A graph session's linear forward with fewer output tiles than _FEW_TILES and at least
# _LONG_REDUCTION input features splits its reduction (see CudaBackend._linear_split).
_FEW_TILES, _LONG_REDUCTION = 16, 256
_i64 = np.int64
_i32 = np.int32
_POINTWISE = ((1, 1), ((0, 0), (0, 0)), (1, 1), 1)  # stride, padding, dilation, groups of a 1x1


def _blocks(count: int, per_block: int = _BLOCK) -> int:
    return -(-count // per_block)


def _grid_1d(count: int) -> tuple[int]:
    """Grid of a 1-D grid-stride kernel over ``count`` elements."""
    return (min(_blocks(count), _MAX_GRID_1D),)


def _grid_plane_loop(plane_size: int, planes: int) -> tuple[int, int]:
    """Grid (pixel blocks, plane blocks) of a kernel whose threads each keep one pixel position
    and loop over planes: about _PLANE_LOOP_BLOCKS blocks, so each thread's setup is shared by
    many planes of a large tensor."""
    x = _blocks(plane_size)
    return (x, max(1, min(planes, _PLANE_LOOP_BLOCKS // x, _MAX_GRID_YZ)))


def _shaped(op: str, shape: tuple, **arrays: Any) -> None:
    """Raise ValueError unless every array given has ``shape`` (a kernel would read past it)."""
    for name, a in arrays.items():
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(a.shape)}")


@functools.lru_cache(maxsize=512)
def _conv_scalars(x_shape, w_shape, stride, padding, dilation, groups) -> tuple:
    """CudaBackend._conv_args for hashable (tuple) arguments, checked and converted once."""
    out_hw = window_output_shape(x_shape[2:], w_shape[2:], stride, padding, dilation, "conv2d")
    n, c, h, w = x_shape
    k, cg, r, s = w_shape
    if groups < 1 or c != cg * groups or k % groups:
        raise ValueError(f"conv2d: x {tuple(x_shape)} and w {tuple(w_shape)} with groups={groups}")
    if groups > _MAX_GRID_YZ or _blocks(max(k // groups, c // groups), _TILE) > _MAX_GRID_YZ:
        raise ValueError(f"conv2d: {groups} groups of {k // groups} filters exceed the grid")
    spans = (o * st for o, st in zip(out_hw, stride, strict=True))
    reaches = (h, w, *spans, *padding[0], *padding[1], r * dilation[0], s * dilation[1])
    if max(reaches) >= _MAX_SPATIAL:  # the kernels keep pixel coordinates in int
        raise ValueError(f"conv2d: spatial sizes past 2^30 are not supported, got x {x_shape}")
    dims = (n, c, h, w, k, *out_hw, r, s, *stride, padding[0][0], padding[1][0], *dilation)
    return out_hw, (*(_i64(v) for v in dims), _i64(groups))


@functools.lru_cache(maxsize=512)
def _weight_splits(reduction: int, filters: int, columns: int, groups: int) -> tuple[int, int]:
    """(chunk, splits) of a weight gradient's reduction of ``reduction`` (N*Ho*Wo) steps: about
    _TARGET_BLOCKS blocks in all, at least _MIN_SPLIT steps each, in whole TILE_Q slabs."""
    tiles = _blocks(filters // groups, _TILE) * _blocks(columns, _TILE) * groups
    want = min(_blocks(_TARGET_BLOCKS, tiles), _blocks(reduction, _MIN_SPLIT))
    chunk = _blocks(reduction, max(1, min(want, _MAX_GRID_YZ // groups)))
    chunk = max(1, _blocks(chunk, _TILE_Q)) * _TILE_Q
    return chunk, max(1, _blocks(reduction, chunk))


class _PoolPlan(NamedTuple):
    """What every pool2d.cu launch of one geometry needs: (Ho, Wo), the scalars after the arrays,
    and the grids of the forwards (a thread per output pixel) and backwards (per input pixel)."""

    out_hw: tuple[int, int]
    args: tuple
    forward_grid: tuple[int, int]
    backward_grid: tuple[int, int]


@functools.lru_cache(maxsize=512)
def _pool_plan(what: str, x_shape, kernel, stride, padding) -> _PoolPlan:
    """CudaBackend._pool: made once per geometry."""
    n, c, h, w = x_shape
    out_hw = pool_output_shape(x_shape, kernel, stride, padding, what)
    args = tuple(_i64(v) for v in (n * c, h, w, *out_hw, *kernel, *stride, *padding))
    forward = _grid_plane_loop(out_hw[0] * out_hw[1], n * c)
    return _PoolPlan(out_hw, args, forward, _grid_plane_loop(h * w, n * c))


class CudaBackend(Backend):
    """The CUDA kernels' launchers over an array module ``xp`` and a kernel ``runner``."""

    name = "cuda"

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self._functions: dict[tuple[str, str, str], Any] = {}
        # True while a graph session runs a step: every op then avoids cuBLAS (see linear_forward).
        self.capture_safe = False

    @contextlib.contextmanager
    def capture_safe_ops(self) -> Iterator[None]:
        """Within: only ops a CUDA graph capture allows (see :meth:`linear_forward`)."""
        self.capture_safe = True
        try:
            yield
        finally:
            self.capture_safe = False

    # ------------------------------------------------------------------ helpers
    def _kernel(self, family: str, kernel: str, dtype: Any) -> Any:
        """The compiled ``kernel<T>`` of ``kernels_cuda/<family>.cu`` for float dtype ``dtype``."""
        key = (family, kernel, _CTYPES[np.dtype(dtype)])
        if key not in self._functions:
            module = self.runner.module(family, kernels.name_expressions(family))
            self._functions[key] = module.get_function(f"{kernel}<{key[2]}>")
        return self._functions[key]

    def _launch(self, family: str, kernel: str, grid: tuple, *args: Any) -> None:
        """Launch ``kernel<T>`` (T from args[0], always a T array) with 256-thread blocks; an
        empty grid launches nothing."""
        if all(grid):
            self._kernel(family, kernel, args[0].dtype)(grid, (_BLOCK,), args)

    def _floats(self, op: str, *arrays: Any) -> tuple[Any, ...]:
        """``arrays`` C-contiguous (copied if needed), checked to share a float dtype."""
        dtype = arrays[0].dtype
        if dtype not in _CTYPES or any(a.dtype != dtype for a in arrays):
            got = ", ".join(str(a.dtype) for a in arrays)
            raise TypeError(f"{op}: expected float32 or float64 arrays of one dtype, got {got}")
        return tuple(a if a.flags.c_contiguous else self.xp.ascontiguousarray(a) for a in arrays)

    @staticmethod
    def _in_place(op: str, **arrays: Any) -> None:
        """Refuse arrays updated in place that are not C-contiguous (a copy would be lost)."""
        for name, a in arrays.items():
            if a is not None and not a.flags.c_contiguous:
                raise ValueError(f"{op}: {name} must be C-contiguous to be updated in place")

    def _labels(self, op: str, labels: Any, n: int, classes: int) -> Any:
        """labels (N,) of an integer dtype -> int64, C-contiguous. The range [0, classes) is checked
        once per step by ``functional.check_labels``, not again here (each check reads the GPU);
        where a caller skipped it, the forward kernel makes a bad label's loss NaN."""
        labels = self.xp.asarray(labels)
        if labels.shape != (n,) or labels.dtype.kind not in "iu":
            raise ValueError(
                f"{op}: labels must be ({n},) integers, got {labels.shape} {labels.dtype}"
            )
        return self.xp.ascontiguousarray(labels.astype(self.xp.int64, copy=False))

    # ------------------------------------------------------------- convolution
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
        """Implicit-GEMM kernel, bias and ReLU in its epilogue. grid = (N*Ho*Wo / 64,
        K/groups / 64, groups), block = 256."""
        x, w, *bias = self._floats("conv2d_forward", x, w, *([] if b is None else [b]))
        out_hw, args = self._conv_args(x.shape, w.shape, stride, padding, dilation, groups)
        n, k = x.shape[0], w.shape[0]
        if bias:
            _shaped("conv2d_forward", (k,), b=bias[0])
        y = self.xp.empty((n, k, *out_hw), dtype=x.dtype)
        grid = (_blocks(n * out_hw[0] * out_hw[1], _TILE), _blocks(k // groups, _TILE), groups)
        # Without a bias the kernel never reads its bias pointer; w stands in for it.
        bias_ptr = bias[0] if bias else w
        flags = (_i32(bool(bias)), _i32(bool(relu)))
        self._launch("conv2d", "conv2d_forward", grid, x, w, bias_ptr, y, *args, *flags)
        return y

    def conv2d_backward_input(self, gy, w, x_shape, stride, padding, dilation, groups):
        """Gather-form implicit GEMM. grid = (N*H*W / 64, C/groups / 64, groups), block = 256."""
        gy, w = self._floats("conv2d_backward_input", gy, w)
        n, c, h, width = x_shape
        out_hw, args = self._conv_args(x_shape, w.shape, stride, padding, dilation, groups)
        _shaped("conv2d_backward_input", (n, w.shape[0], *out_hw), gy=gy)
        gx = self.xp.empty(tuple(x_shape), dtype=gy.dtype)
        grid = (_blocks(n * h * width, _TILE), _blocks(c // groups, _TILE), groups)
        self._launch("conv2d", "conv2d_backward_input", grid, gy, w, gx, *args)
        return gx

    def conv2d_backward_weight(self, gy, x, w_shape, stride, padding, dilation, groups):
        """Implicit GEMM over (n, oh, ow), split in fixed chunks summed in a fixed order.

        grid = (C/groups*R*S / 64, K/groups / 64, groups * splits), block = 256; then, when
        splits > 1, ``sum_partials`` over its K*C/groups*R*S outputs (32 a block).
        """
        geometry = (stride, padding, dilation, groups)
        return self._weight_gradient(gy, x, w_shape, geometry, with_bias=False)[0]

    def conv2d_backward_params(self, gy, x, w_shape, stride, padding, dilation, groups):
        """:meth:`conv2d_backward_weight` with the bias gradient as one more column of its GEMM
        (a column of ones): no launch of its own. Where the weight's columns fill whole tiles
        (C/groups*R*S a multiple of 64) that column takes a tile of its own, which reads gy once
        more; so would :meth:`conv2d_backward_bias`, with one block per channel instead of the
        split GEMM's many."""
        geometry = (stride, padding, dilation, groups)
        return self._weight_gradient(gy, x, w_shape, geometry, with_bias=True)

    def _weight_gradient(self, gy, x, w_shape, geometry, with_bias: bool):
        """(gw, gb or None): the split GEMM, then ``sum_partials`` when split; the bias gradient
        (with_bias) follows gw in one buffer, each returned as a contiguous view of it."""
        stride, padding, dilation, groups = geometry
        gy, x = self._floats("conv2d_backward_weight", gy, x)
        k, cg, r, s = w_shape
        out_hw, args = self._conv_args(x.shape, w_shape, stride, padding, dilation, groups)
        _shaped("conv2d_backward_weight", (x.shape[0], k, *out_hw), gy=gy)
        columns = cg * r * s + with_bias
        chunk, splits = _weight_splits(gy.shape[0] * out_hw[0] * out_hw[1], k, columns, groups)
        weights = math.prod(w_shape)
        out = self.xp.empty(weights + (k if with_bias else 0), dtype=gy.dtype)
        part = out if splits == 1 else self.xp.empty((splits, out.size), dtype=gy.dtype)
        grid = (_blocks(columns, _TILE), _blocks(k // groups, _TILE), groups * splits)
        flags = (_i64(chunk), _i32(with_bias))
        self._launch("conv2d", "conv2d_backward_weight", grid, gy, x, part, *args, *flags)
        if splits > 1:
            sums = (_blocks(out.size, 32),)  # 32 outputs a block
            self._launch("conv2d", "sum_partials", sums, part, out, _i64(splits), _i64(out.size))
        gw = out[:weights].reshape(tuple(w_shape))
        return gw, (out[weights:] if with_bias else None)

    def conv2d_backward_bias(self, gy):
        """One block per output channel, a fixed-order tree sum. grid = (K,), block = 256."""
        (gy,) = self._floats("conv2d_backward_bias", gy)
        n, k = gy.shape[:2]
        gb = self.xp.empty((k,), dtype=gy.dtype)
        hw = _i64(math.prod(gy.shape[2:]))
        self._launch("conv2d", "conv2d_backward_bias", (k,), gy, gb, _i64(n), _i64(k), hw)
        return gb

    # ----------------------------------------------------------------- linear
    def linear_forward(self, x, w, b, relu=False):
        """cuBLAS through CuPy's matmul, then bias and ReLU in one kernel; inside a graph session
        (:attr:`capture_safe`) a 1x1 convolution on conv2d.cu's kernels instead, since CuPy
        refuses cuBLAS calls while a stream is being captured (cupy/cupy#6290)."""
        n, k = x.shape[0], w.shape[0]
        if self.capture_safe:
            few_tiles = _blocks(n, _TILE) * _blocks(k, _TILE) < _FEW_TILES
            if few_tiles and x.shape[1] >= _LONG_REDUCTION:
                return self._linear_split(x, w, b, relu)
            x4, w4 = x.reshape(n, -1, 1, 1), w.reshape(k, -1, 1, 1)
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

    # ---------------------------------------------------------------- pooling
    @staticmethod
    def _pool(what: str, x_shape, kernel: Pair, stride: Pair, padding: Pair) -> _PoolPlan:
        """The checked output size, kernel scalars and grids of a pooling geometry."""
        key = (tuple(x_shape), tuple(kernel), tuple(stride), tuple(padding))
        return _pool_plan(what, *key)

    def max_pool2d_forward(self, x, kernel: Pair, stride: Pair, padding: Pair):
        """One thread per output pixel position, looping over the planes (grid
        :func:`_grid_plane_loop`, block 256) -> (y, argmax int32)."""
        (x,) = self._floats("max_pool2d_forward", x)
        if x.shape[2] * x.shape[3] >= 2**31:
            raise ValueError(
                f"max_pool2d: a {x.shape[2]}x{x.shape[3]} plane overflows int32 argmax"
            )
        plan = self._pool("max_pool2d", x.shape, kernel, stride, padding)
        y = self.xp.empty((*x.shape[:2], *plan.out_hw), dtype=x.dtype)
        argmax = self.xp.empty(y.shape, dtype=self.xp.int32)
        self._launch("pool2d", "max_pool2d_forward", plan.forward_grid, x, y, argmax, *plan.args)
        return y, argmax

    def max_pool2d_backward(
        self, gy, argmax, x_shape, kernel: Pair, stride: Pair, padding: Pair, relu_y=None
    ):
        """One thread per pixel position gathers its windows, looping over the planes
        (grid :func:`_grid_plane_loop`, block 256); ``relu_y`` masks what it gathers."""
        op = "max_pool2d_backward"
        if relu_y is None:
            (gy,) = self._floats(op, gy)
            mask = gy  # the kernel never reads it
        else:
            gy, mask = self._floats(op, gy, relu_y)
            _shaped(op, gy.shape, relu_y=mask)
        if argmax.dtype != np.int32 or argmax.shape != gy.shape:
            got = f"{argmax.dtype} {argmax.shape}"
            raise TypeError(f"{op}: argmax must be int32 {gy.shape}, got {got}")
        plan = self._pool("max_pool2d", x_shape, kernel, stride, padding)
        _shaped(op, (*x_shape[:2], *plan.out_hw), gy=gy)
        argmax = self.xp.ascontiguousarray(argmax)
        gx = self.xp.empty(tuple(x_shape), dtype=gy.dtype)
        arrays = (gy, argmax, mask, gx)
        flag = _i32(relu_y is not None)
        self._launch("pool2d", op, plan.backward_grid, *arrays, *plan.args, flag)
        return gx

    def avg_pool2d_forward(self, x, kernel: Pair, stride: Pair, padding: Pair):
        """One thread per output pixel position, looping over the planes (grid
        :func:`_grid_plane_loop`, block 256); divisor kh*kw."""
        (x,) = self._floats("avg_pool2d_forward", x)
        plan = self._pool("avg_pool2d", x.shape, kernel, stride, padding)
        y = self.xp.empty((*x.shape[:2], *plan.out_hw), dtype=x.dtype)
        divisor = x.dtype.type(kernel[0] * kernel[1])
        self._launch("pool2d", "avg_pool2d_forward", plan.forward_grid, x, y, *plan.args, divisor)
        return y

    def avg_pool2d_backward(self, gy, x_shape, kernel: Pair, stride: Pair, padding: Pair):
        """One thread per pixel position gathers its windows, looping over the planes
        (grid :func:`_grid_plane_loop`, block 256)."""
        (gy,) = self._floats("avg_pool2d_backward", gy)
        plan = self._pool("avg_pool2d", x_shape, kernel, stride, padding)
        _shaped("avg_pool2d_backward", (*x_shape[:2], *plan.out_hw), gy=gy)
        gx = self.xp.empty(tuple(x_shape), dtype=gy.dtype)
        divisor = gy.dtype.type(kernel[0] * kernel[1])
        args = (gy, gx, *plan.args, divisor)
        self._launch("pool2d", "avg_pool2d_backward", plan.backward_grid, *args)
        return gx

    def global_avg_pool2d_forward(self, x):
        """One block per (n, c) plane, a fixed-order tree sum. grid = (N*C,), block = 256."""
        (x,) = self._floats("global_avg_pool2d_forward", x)
        y = self.xp.empty(x.shape[:2], dtype=x.dtype)
        hw = _i64(x.shape[2] * x.shape[3])
        self._launch("pool2d", "global_avg_pool2d_forward", (y.size,), x, y, hw)
        return y

    def global_avg_pool2d_backward(self, gy, x_shape):
        """1-D grid-stride over N*C*H*W, block 256."""
        (gy,) = self._floats("global_avg_pool2d_backward", gy)
        _shaped("global_avg_pool2d_backward", x_shape[:2], gy=gy)
        gx = self.xp.empty(tuple(x_shape), dtype=gy.dtype)
        hw = _i64(x_shape[2] * x_shape[3])
        self._launch(
            "pool2d", "global_avg_pool2d_backward", _grid_1d(gx.size), gy, gx, _i64(gy.size), hw
        )
        return gx

    # ------------------------------------------------------------ elementwise
    def relu_forward(self, x):
        """1-D grid-stride, block 256."""
        (x,) = self._floats("relu_forward", x)
        y = self.xp.empty_like(x)
        self._launch("activation", "relu_forward", _grid_1d(x.size), x, y, _i64(x.size))
        return y

    def relu_backward(self, gy, y):
        """1-D grid-stride, block 256."""
        gy, y = self._floats("relu_backward", gy, y)
        _shaped("relu_backward", gy.shape, y=y)
        gx = self.xp.empty_like(gy)
        self._launch("activation", "relu_backward", _grid_1d(gy.size), gy, y, gx, _i64(gy.size))
        return gx

    def bias_relu_forward(self, x, b):
        """relu(x + b per channel) in one pass; x: (N, C, ...). 1-D grid-stride, block 256."""
        x, b = self._floats("bias_relu_forward", x, b)
        _shaped("bias_relu_forward", x.shape[1:2], b=b)
        y = self.xp.empty_like(x)
        hw = _i64(math.prod(x.shape[2:]))
        args = (x, b, y, _i64(x.size), _i64(x.shape[1]), hw)
        self._launch("activation", "bias_relu_forward", _grid_1d(x.size), *args)
        return y

    def _counter(self, op: str, name: str, array: Any, dtype: Any, size: int) -> Any:
        """A device array of ``size`` values of ``dtype`` that a kernel reads by pointer (a call
        counter or an optimizer clock); refused unless it is exactly that, on this device."""
        if not self.owns(array) or array.dtype != dtype or array.shape != (size,):
            raise ValueError(
                f"{op}: {name} must be a ({size},) {np.dtype(dtype).name} array on {self.name}, "
                f"got {type(array).__name__} {getattr(array, 'shape', '')} "
                f"{getattr(array, 'dtype', '')}"
            )
        return self.xp.ascontiguousarray(array)

    def _dropout_args(self, op: str, count: int, p: float, seed: int, calls: Any, dtype) -> tuple:
        """The scalars and counter the dropout kernels take; no counter means call 0."""
        if calls is None:
            calls = self.xp.zeros(1, dtype=np.uint64)
        calls = self._counter(op, "calls", calls, np.uint64, 1)
        scale = np.dtype(dtype).type(1.0 / (1.0 - p))  # rounded like base's float64 -> dtype cast
        return (_i64(count), np.uint64(seed & 0xFFFFFFFFFFFFFFFF), calls, np.float64(p), scale)

    def dropout_mask(self, shape, p: float, seed: int, dtype, calls=None):
        """Counter-based mask, the same bits as the CPU's. 1-D grid-stride, block 256."""
        mask = self.xp.empty(tuple(shape), dtype=dtype)
        self._floats("dropout_mask", mask)
        args = (mask, *self._dropout_args("dropout_mask", mask.size, p, seed, calls, dtype))
        self._launch("dropout", "dropout_mask", _grid_1d(mask.size), *args)
        return mask

    def dropout_forward(self, x, p: float, seed: int, calls=None):
        """(x * mask, mask) in one pass. 1-D grid-stride, block 256."""
        (x,) = self._floats("dropout_forward", x)
        y, mask = self.xp.empty_like(x), self.xp.empty_like(x)
        args = (x, y, mask, *self._dropout_args("dropout_forward", x.size, p, seed, calls, x.dtype))
        self._launch("dropout", "dropout_forward", _grid_1d(x.size), *args)
        return y, mask

    # ------------------------------------------------------------- batch norm
    @staticmethod
    def _bn_grids(x_shape) -> tuple[tuple[int, int, int], int, tuple[int, int, int]]:
        """The grids (pixel blocks, C, slices) of batchnorm.cu's training kernels: for the
        partial sums (at most _BN_ITEMS images per thread) with how many partials that makes per
        channel, and for the elementwise passes (about _PLANE_LOOP_BLOCKS blocks, each thread
        looping over its images)."""
        n, c = x_shape[:2]
        if c > _MAX_GRID_YZ or _blocks(n, _BN_ITEMS) > _MAX_GRID_YZ:
            raise ValueError(f"batch_norm2d: {tuple(x_shape)} exceeds the grid")
        pixel_blocks = _blocks(math.prod(x_shape[2:]))
        slices = max(1, min(n, _PLANE_LOOP_BLOCKS // (pixel_blocks * c)))
        partial_grid = (pixel_blocks, c, _blocks(n, _BN_ITEMS))
        return partial_grid, pixel_blocks * partial_grid[2], (pixel_blocks, c, slices)

    def batch_norm2d_forward_train(
        self, x, gamma, beta, eps: float, running_mean=None, running_var=None, momentum=0.1
    ):
        """Partial sums per block, combined per channel (grid (C,)) with the running statistics'
        update, then y elementwise; grids from :meth:`_bn_grids`, block 256."""
        op = "batch_norm2d_forward_train"
        x, gamma, beta = self._floats(op, x, gamma, beta)
        n, c = x.shape[:2]
        _shaped(op, (c,), gamma=gamma, beta=beta)
        update = running_mean is not None
        if update:
            self._in_place(op, running_mean=running_mean, running_var=running_var)
            self._floats(op, x, running_mean, running_var)  # a dtype check: no copy is made
            _shaped(op, (c,), running_mean=running_mean, running_var=running_var)
        y = self.xp.empty_like(x)
        mean, invstd = self.xp.empty((c,), x.dtype), self.xp.empty((c,), x.dtype)
        hw = math.prod(x.shape[2:])
        sizes = (_i64(n), _i64(c), _i64(hw))
        partial_grid, partials, grid = self._bn_grids(x.shape)
        part = self.xp.empty((3, c, partials), dtype=x.dtype)
        self._launch("batchnorm", "batch_norm2d_partial_stats", partial_grid, x, part, *sizes)
        t, count = x.dtype.type, n * hw
        args = (part, mean, invstd, _i64(c), _i64(partials), _i64(count), t(eps))
        # Without an update the kernel never touches the running arrays; mean stands in for them.
        running = (running_mean, running_var) if update else (mean, mean)
        factors = (t(1 - momentum), t(momentum), t(count / max(count - 1, 1)), _i32(update))
        self._launch("batchnorm", "batch_norm2d_stats", (c,), *args, *running, *factors)
        args = (x, gamma, beta, mean, invstd, y, *sizes)
        self._launch("batchnorm", "batch_norm2d_normalize", grid, *args)
        return y, mean, invstd

    def batch_norm2d_forward_eval(self, x, gamma, beta, running_mean, running_var, eps: float):
        """Elementwise with running statistics. 1-D grid-stride, block 256."""
        op = "batch_norm2d_forward_eval"
        arrays = self._floats(op, x, gamma, beta, running_mean, running_var)
        x = arrays[0]
        _shaped(op, x.shape[1:2], gamma=gamma, beta=beta, mean=running_mean, var=running_var)
        y = self.xp.empty_like(x)
        hw = _i64(math.prod(x.shape[2:]))
        args = (*arrays, y, _i64(x.size), _i64(x.shape[1]), hw, x.dtype.type(eps))
        self._launch("batchnorm", "batch_norm2d_forward_eval", _grid_1d(x.size), *args)
        return y

    def batch_norm2d_backward(self, gy, x, gamma, mean, invstd):
        """Partial sums of gy and gy*xhat per block, combined per channel (grid (C,)), then gx
        elementwise; grids from :meth:`_bn_grids`, block 256."""
        op = "batch_norm2d_backward"
        gy, x, gamma, mean, invstd = self._floats(op, gy, x, gamma, mean, invstd)
        n, c = x.shape[:2]
        _shaped(op, x.shape, gy=gy)
        _shaped(op, (c,), gamma=gamma, mean=mean, invstd=invstd)
        gx = self.xp.empty_like(gy)
        ggamma, gbeta = self.xp.empty((c,), gx.dtype), self.xp.empty((c,), gx.dtype)
        sizes = (_i64(n), _i64(c), _i64(math.prod(x.shape[2:])))
        partial_grid, partials, grid = self._bn_grids(x.shape)
        part = self.xp.empty((2, c, partials), dtype=x.dtype)
        args = (gy, x, mean, invstd, part, *sizes)
        self._launch("batchnorm", "batch_norm2d_partial_grad_sums", partial_grid, *args)
        args = (part, ggamma, gbeta, _i64(c), _i64(partials))
        self._launch("batchnorm", "batch_norm2d_grad_sums", (c,), *args)
        args = (gy, x, gamma, mean, invstd, ggamma, gbeta, gx, *sizes)
        self._launch("batchnorm", "batch_norm2d_backward", grid, *args)
        return gx, ggamma, gbeta

    # ------------------------------------------------------------ loss, optim
    def softmax_cross_entropy_forward(self, logits, labels, smoothing: float = 0.0):
        """One block per row (grid (N,)), then one block for the batch mean -> (loss 0-d, probs)."""
        (logits,) = self._floats("softmax_cross_entropy_forward", logits)
        n, k = logits.shape  # a ValueError for anything but (N, K)
        labels = self._labels("softmax_cross_entropy_forward", labels, n, k)
        probs = self.xp.empty_like(logits)
        row_loss, loss = self.xp.empty((n,), logits.dtype), self.xp.empty((1,), logits.dtype)
        fam = "softmax_xent"
        args = (logits, labels, probs, row_loss, _i64(k), logits.dtype.type(smoothing))
        self._launch(fam, "softmax_cross_entropy_forward", (n,), *args)
        self._launch(fam, "mean_of_rows", (1,), row_loss, loss, _i64(n))
        return loss.reshape(()), probs

    def softmax_cross_entropy_train(self, logits, labels, smoothing: float = 0.0):
        """Up to _LOSS_BLOCK_ROWS rows: one block for loss and gradient (grid (1,)); more rows
        take the three kernels, whose one block per row wins there."""
        (logits,) = self._floats("softmax_cross_entropy_train", logits)
        n, k = logits.shape
        if n > _LOSS_BLOCK_ROWS:
            return super().softmax_cross_entropy_train(logits, labels, smoothing)
        labels = self._labels("softmax_cross_entropy_train", labels, n, k)
        grad, loss = self.xp.empty_like(logits), self.xp.empty((1,), logits.dtype)
        args = (logits, labels, grad, loss, _i64(n), _i64(k), logits.dtype.type(smoothing))
        self._launch("softmax_xent", "softmax_cross_entropy_train", (1,), *args)
        return loss.reshape(()), grad

    def softmax_cross_entropy_backward(self, probs, labels, smoothing: float = 0.0):
        """(probs - target) / N, elementwise. 1-D grid-stride, block 256."""
        (probs,) = self._floats("softmax_cross_entropy_backward", probs)
        n, k = probs.shape
        labels = self._labels("softmax_cross_entropy_backward", labels, n, k)
        grad = self.xp.empty_like(probs)
        args = (probs, labels, grad, _i64(n), _i64(k), probs.dtype.type(smoothing))
        self._launch("softmax_xent", "softmax_cross_entropy_backward", _grid_1d(grad.size), *args)
        return grad

    def _launch_slots(self, kernel: str, slots: list[tuple], scalars) -> None:
        """Launch optim.cu's ``kernel`` over ``slots`` (each a parameter's arrays, then its
        size): up to _OPTIM_SLOTS of one dtype a launch, the unused slots repeating the first
        with size 0; ``scalars(dtype)`` gives the arguments after the slots. grid = (blocks of
        the largest, slots in use), block 256."""
        groups: dict[Any, list[tuple]] = {}
        for slot in slots:
            groups.setdefault(np.dtype(slot[0].dtype), []).append(slot)
        for dtype, group in groups.items():
            for start in range(0, len(group), _OPTIM_SLOTS):
                used = group[start : start + _OPTIM_SLOTS]
                filler = (*used[0][:-1], _i64(0))
                args = [a for slot in used + [filler] * (_OPTIM_SLOTS - len(used)) for a in slot]
                grid = (_grid_1d(max(int(slot[-1]) for slot in used))[0], len(used))
                self._launch("optim", kernel, grid, *args, *scalars(dtype))

    def sgd_update(self, p, g, velocity, clock, momentum, nesterov, weight_decay, first_step):
        """In place on p (and velocity); lr read from ``clock`` on the device. One slot of
        :meth:`sgd_update_many`."""
        hyper = (momentum, nesterov, weight_decay, first_step)
        self.sgd_update_many([p], [g], [velocity], clock, *hyper)

    def sgd_update_many(
        self, params, grads, velocities, clock, momentum, nesterov, weight_decay, first_step
    ):
        """In place on each p (and velocity), 8 parameters a launch (:meth:`_launch_slots`)."""
        clock = self._counter("sgd_update", "clock", clock, np.float64, 2)
        slots = []
        for p, g, velocity in zip(params, grads, velocities, strict=True):
            self._in_place("sgd_update", p=p, velocity=velocity)
            if momentum and velocity is None:
                raise ValueError("sgd_update: momentum needs a velocity buffer")
            g = self._floats("sgd_update", p, g, *([velocity] if momentum else []))[1]
            _shaped("sgd_update", p.shape, g=g, **({"velocity": velocity} if momentum else {}))
            # Without momentum the kernel never touches velocity; p stands in for it.
            slots.append((p, g, velocity if momentum else p, _i64(p.size)))
        flags = (_i32(bool(momentum)), _i32(bool(nesterov)), _i32(bool(first_step)))
        self._launch_slots(
            "sgd_update",
            slots,
            lambda dtype: (clock, dtype.type(momentum), dtype.type(weight_decay), *flags),
        )

    def adam_update(self, p, g, m, v, clock, beta1, beta2, eps, weight_decay, decoupled):
        """In place on p, m, v; step and lr read from ``clock`` on the device, the bias corrections
        derived there. One slot of :meth:`adam_update_many`."""
        hyper = (beta1, beta2, eps, weight_decay, decoupled)
        self.adam_update_many([p], [g], [m], [v], clock, *hyper)

    def adam_update_many(
        self, params, grads, ms, vs, clock, beta1, beta2, eps, weight_decay, decoupled
    ):
        """In place on each p, m, v, 8 parameters a launch (:meth:`_launch_slots`)."""
        clock = self._counter("adam_update", "clock", clock, np.float64, 2)
        slots = []
        for p, g, m, v in zip(params, grads, ms, vs, strict=True):
            self._in_place("adam_update", p=p, m=m, v=v)
            g = self._floats("adam_update", p, g, m, v)[1]
            _shaped("adam_update", p.shape, g=g, m=m, v=v)
            slots.append((p, g, m, v, _i64(p.size)))
        betas = (np.float64(beta1), np.float64(beta2))
        decay = (np.float64(weight_decay), _i32(bool(decoupled)))
        self._launch_slots(
            "adam_update", slots, lambda dtype: (clock, *betas, dtype.type(eps), *decay)
        )
