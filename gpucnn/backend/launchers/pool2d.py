"""Launchers of kernels_cuda/pool2d.cu: max, average and global-average pooling, both ways."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ...shapes import Pair, pool_output_shape
from .launching import Launching, grid_1d, grid_per_item, grid_plane_loop, i32, i64, shaped


class _PoolPlan(NamedTuple):
    """What every pool2d.cu launch of one geometry needs: (Ho, Wo), the scalars after the arrays,
    and the grids of the forwards (a thread per output pixel) and backwards (per input pixel)."""

    out_hw: tuple[int, int]
    args: tuple
    forward_grid: tuple[int, int]
    backward_grid: tuple[int, int]


@functools.lru_cache(maxsize=512)
def _pool_plan(what: str, x_shape, kernel, stride, padding) -> _PoolPlan:
    """Pool2dLaunchers._pool: made once per geometry."""
    n, c, h, w = x_shape
    out_hw = pool_output_shape(x_shape, kernel, stride, padding, what)
    args = tuple(i64(v) for v in (n * c, h, w, *out_hw, *kernel, *stride, *padding))
    forward = grid_plane_loop(out_hw[0] * out_hw[1], n * c)
    return _PoolPlan(out_hw, args, forward, grid_plane_loop(h * w, n * c))


class Pool2dLaunchers(Launching):
    """pool2d.cu's launchers."""

    @staticmethod
    def _pool(what: str, x_shape, kernel: Pair, stride: Pair, padding: Pair) -> _PoolPlan:
        """The checked output size, kernel scalars and grids of a pooling geometry."""
        key = (tuple(x_shape), tuple(kernel), tuple(stride), tuple(padding))
        return _pool_plan(what, *key)

    def max_pool2d_forward(self, x, kernel: Pair, stride: Pair, padding: Pair):
        """One thread per output pixel position, looping over the planes (grid
        :func:`grid_plane_loop`, block 256) -> (y, argmax int32)."""
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
        (grid :func:`grid_plane_loop`, block 256); ``relu_y`` masks what it gathers."""
        op = "max_pool2d_backward"
        if relu_y is None:
            (gy,) = self._floats(op, gy)
            mask = gy  # the kernel never reads it
        else:
            gy, mask = self._floats(op, gy, relu_y)
            shaped(op, gy.shape, relu_y=mask)
        if argmax.dtype != np.int32 or argmax.shape != gy.shape:
            got = f"{argmax.dtype} {argmax.shape}"
            raise TypeError(f"{op}: argmax must be int32 {gy.shape}, got {got}")
        plan = self._pool("max_pool2d", x_shape, kernel, stride, padding)
        shaped(op, (*x_shape[:2], *plan.out_hw), gy=gy)
        argmax = self.xp.ascontiguousarray(argmax)
        gx = self.xp.empty(tuple(x_shape), dtype=gy.dtype)
        arrays = (gy, argmax, mask, gx)
        flag = i32(relu_y is not None)
        self._launch("pool2d", op, plan.backward_grid, *arrays, *plan.args, flag)
        return gx

    def avg_pool2d_forward(self, x, kernel: Pair, stride: Pair, padding: Pair):
        """One thread per output pixel position, looping over the planes (grid
        :func:`grid_plane_loop`, block 256); divisor kh*kw."""
        (x,) = self._floats("avg_pool2d_forward", x)
        plan = self._pool("avg_pool2d", x.shape, kernel, stride, padding)
        y = self.xp.empty((*x.shape[:2], *plan.out_hw), dtype=x.dtype)
        divisor = x.dtype.type(kernel[0] * kernel[1])
        self._launch("pool2d", "avg_pool2d_forward", plan.forward_grid, x, y, *plan.args, divisor)
        return y

    def avg_pool2d_backward(self, gy, x_shape, kernel: Pair, stride: Pair, padding: Pair):
        """One thread per pixel position gathers its windows, looping over the planes
        (grid :func:`grid_plane_loop`, block 256)."""
        (gy,) = self._floats("avg_pool2d_backward", gy)
        plan = self._pool("avg_pool2d", x_shape, kernel, stride, padding)
        shaped("avg_pool2d_backward", (*x_shape[:2], *plan.out_hw), gy=gy)
        gx = self.xp.empty(tuple(x_shape), dtype=gy.dtype)
        divisor = gy.dtype.type(kernel[0] * kernel[1])
        args = (gy, gx, *plan.args, divisor)
        self._launch("pool2d", "avg_pool2d_backward", plan.backward_grid, *args)
        return gx

    def global_avg_pool2d_forward(self, x):
        """One block per (n, c) plane, a fixed-order tree sum. grid = (N*C,), block = 256."""
        op = "global_avg_pool2d_forward"
        (x,) = self._floats(op, x)
        grid = grid_per_item(op, x.shape[0] * x.shape[1], "plane")
        y = self.xp.empty(x.shape[:2], dtype=x.dtype)
        hw = i64(x.shape[2] * x.shape[3])
        self._launch("pool2d", op, grid, x, y, hw)
        return y

    def global_avg_pool2d_backward(self, gy, x_shape):
        """1-D grid-stride over N*C*H*W, block 256."""
        (gy,) = self._floats("global_avg_pool2d_backward", gy)
        shaped("global_avg_pool2d_backward", x_shape[:2], gy=gy)
        gx = self.xp.empty(tuple(x_shape), dtype=gy.dtype)
        hw = i64(x_shape[2] * x_shape[3])
        self._launch(
            "pool2d", "global_avg_pool2d_backward", grid_1d(gx.size), gy, gx, i64(gy.size), hw
        )
        return gx
