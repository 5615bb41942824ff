"""Launchers of kernels_cuda/dropout.cu: the counter-based mask, and dropout in one pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from .launching import Launching, grid_1d, i64


class DropoutLaunchers(Launching):
    """dropout.cu's launchers."""

    def _dropout_args(self, op: str, count: int, p: float, seed: int, calls: Any, dtype) -> tuple:
        """The scalars and counter the dropout kernels take; no counter means call 0."""
        if calls is None:
            calls = self.xp.zeros(1, dtype=np.uint64)
        calls = self._counter(op, "calls", calls, np.uint64, 1)
        scale = np.dtype(dtype).type(1.0 / (1.0 - p))  # rounded like base's float64 -> dtype cast
        return (i64(count), np.uint64(seed & 0xFFFFFFFFFFFFFFFF), calls, np.float64(p), scale)

    def dropout_mask(self, shape, p: float, seed: int, dtype, calls=None):
        """Counter-based mask, the same bits as the CPU's. 1-D grid-stride, block 256."""
        mask = self.xp.empty(tuple(shape), dtype=dtype)
        self._floats("dropout_mask", mask)
        args = (mask, *self._dropout_args("dropout_mask", mask.size, p, seed, calls, dtype))
        self._launch("dropout", "dropout_mask", grid_1d(mask.size), *args)
        return mask

    def dropout_forward(self, x, p: float, seed: int, calls=None):
        """(x * mask, mask) in one pass. 1-D grid-stride, block 256."""
        (x,) = self._floats("dropout_forward", x)
        y, mask = self.xp.empty_like(x), self.xp.empty_like(x)
        args = (x, y, mask, *self._dropout_args("dropout_forward", x.size, p, seed, calls, x.dtype))
        self._launch("dropout", "dropout_forward", grid_1d(x.size), *args)
        return y, mask
