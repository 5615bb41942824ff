"""Launchers of kernels_cuda/activation.cu: ReLU both ways, and bias-then-ReLU in one pass."""

from __future__ import annotations

import math

from .launching import Launching, grid_1d, i64, shaped


class ActivationLaunchers(Launching):
    """activation.cu's launchers."""

    def relu_forward(self, x):
        """1-D grid-stride, block 256."""
        (x,) = self._floats("relu_forward", x)
        y = self.xp.empty_like(x)
        self._launch("activation", "relu_forward", grid_1d(x.size), x, y, i64(x.size))
        return y

    def relu_backward(self, gy, y):
        """1-D grid-stride, block 256."""
        gy, y = self._floats("relu_backward", gy, y)
        shaped("relu_backward", gy.shape, y=y)
        gx = self.xp.empty_like(gy)
        self._launch("activation", "relu_backward", grid_1d(gy.size), gy, y, gx, i64(gy.size))
        return gx

    def bias_relu_forward(self, x, b):
        """relu(x + b per channel) in one pass; x: (N, C, ...). 1-D grid-stride, block 256."""
        x, b = self._floats("bias_relu_forward", x, b)
        shaped("bias_relu_forward", x.shape[1:2], b=b)
        y = self.xp.empty_like(x)
        hw = i64(math.prod(x.shape[2:]))
        args = (x, b, y, i64(x.size), i64(x.shape[1]), hw)
        self._launch("activation", "bias_relu_forward", grid_1d(x.size), *args)
        return y
