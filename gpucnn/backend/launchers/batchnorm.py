"""Launchers of kernels_cuda/batchnorm.cu: training forward (statistics, normalise), eval
forward and backward."""

from __future__ import annotations

import math

from .launching import MAX_GRID_YZ, PLANE_LOOP_BLOCKS, Launching, blocks, grid_1d, i32, i64, shaped

_BN_ITEMS = 16  # BN_ITEMS in batchnorm.cu: images per thread in a partial-sum block


class BatchNormLaunchers(Launching):
    """batchnorm.cu's launchers."""

    @staticmethod
    def _bn_grids(x_shape) -> tuple[tuple[int, int, int], int, tuple[int, int, int]]:
        """The grids (pixel blocks, C, slices) of batchnorm.cu's training kernels: for the
        partial sums (at most _BN_ITEMS images per thread) with how many partials that makes per
        channel, and for the elementwise passes (about PLANE_LOOP_BLOCKS blocks, each thread
        looping over its images). An input with no channel or no pixel gets empty grids (the
        statistics of no values are NaN, as on the CPU), not a division by zero."""
        n, c = x_shape[:2]
        if c > MAX_GRID_YZ or blocks(n, _BN_ITEMS) > MAX_GRID_YZ:
            raise ValueError(f"batch_norm2d: {tuple(x_shape)} exceeds the grid")
        pixel_blocks = blocks(math.prod(x_shape[2:]))
        slices = max(1, min(n, PLANE_LOOP_BLOCKS // max(pixel_blocks * c, 1)))
        partial_grid = (pixel_blocks, c, blocks(n, _BN_ITEMS))
        return partial_grid, pixel_blocks * partial_grid[2], (pixel_blocks, c, slices)

    def batch_norm2d_forward_train(
        self, x, gamma, beta, eps: float, running_mean=None, running_var=None, momentum=0.1
    ):
        """Partial sums per block, combined per channel (grid (C,)) with the running statistics'
        update, then y elementwise; grids from :meth:`_bn_grids`, block 256."""
        op = "batch_norm2d_forward_train"
        x, gamma, beta = self._floats(op, x, gamma, beta)
        n, c = x.shape[:2]
        shaped(op, (c,), gamma=gamma, beta=beta)
        update = running_mean is not None
        if update:
            self._in_place(op, running_mean=running_mean, running_var=running_var)
            self._floats(op, x, running_mean, running_var)  # a dtype check: no copy is made
            shaped(op, (c,), running_mean=running_mean, running_var=running_var)
        y = self.xp.empty_like(x)
        mean, invstd = self.xp.empty((c,), x.dtype), self.xp.empty((c,), x.dtype)
        hw = math.prod(x.shape[2:])
        sizes = (i64(n), i64(c), i64(hw))
        partial_grid, partials, grid = self._bn_grids(x.shape)
        part = self.xp.empty((3, c, partials), dtype=x.dtype)
        self._launch("batchnorm", "batch_norm2d_partial_stats", partial_grid, x, part, *sizes)
        t, count = x.dtype.type, n * hw
        args = (part, mean, invstd, i64(c), i64(partials), i64(count), t(eps))
        # Without an update the kernel never touches the running arrays; mean stands in for them.
        running = (running_mean, running_var) if update else (mean, mean)
        factors = (t(1 - momentum), t(momentum), t(count / max(count - 1, 1)), i32(update))
        self._launch("batchnorm", "batch_norm2d_stats", (c,), *args, *running, *factors)
        args = (x, gamma, beta, mean, invstd, y, *sizes)
        self._launch("batchnorm", "batch_norm2d_normalize", grid, *args)
        return y, mean, invstd

    def batch_norm2d_forward_eval(self, x, gamma, beta, running_mean, running_var, eps: float):
        """Elementwise with running statistics. 1-D grid-stride, block 256."""
        op = "batch_norm2d_forward_eval"
        arrays = self._floats(op, x, gamma, beta, running_mean, running_var)
        x = arrays[0]
        shaped(op, x.shape[1:2], gamma=gamma, beta=beta, mean=running_mean, var=running_var)
        y = self.xp.empty_like(x)
        hw = i64(math.prod(x.shape[2:]))
        args = (*arrays, y, i64(x.size), i64(x.shape[1]), hw, x.dtype.type(eps))
        self._launch("batchnorm", "batch_norm2d_forward_eval", grid_1d(x.size), *args)
        return y

    def batch_norm2d_backward(self, gy, x, gamma, mean, invstd):
        """Partial sums of gy and gy*xhat per block, combined per channel (grid (C,)), then gx
        elementwise; grids from :meth:`_bn_grids`, block 256."""
        op = "batch_norm2d_backward"
        gy, x, gamma, mean, invstd = self._floats(op, gy, x, gamma, mean, invstd)
        n, c = x.shape[:2]
        shaped(op, x.shape, gy=gy)
        shaped(op, (c,), gamma=gamma, mean=mean, invstd=invstd)
        gx = self.xp.empty_like(gy)
        ggamma, gbeta = self.xp.empty((c,), gx.dtype), self.xp.empty((c,), gx.dtype)
        sizes = (i64(n), i64(c), i64(math.prod(x.shape[2:])))
        partial_grid, partials, grid = self._bn_grids(x.shape)
        part = self.xp.empty((2, c, partials), dtype=x.dtype)
        args = (gy, x, mean, invstd, part, *sizes)
        self._launch("batchnorm", "batch_norm2d_partial_grad_sums", partial_grid, *args)
        args = (part, ggamma, gbeta, i64(c), i64(partials))
        self._launch("batchnorm", "batch_norm2d_grad_sums", (c,), *args)
        args = (gy, x, gamma, mean, invstd, ggamma, gbeta, gx, *sizes)
        self._launch("batchnorm", "batch_norm2d_backward", grid, *args)
        return gx, ggamma, gbeta
