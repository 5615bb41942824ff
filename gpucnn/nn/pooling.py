"""Pooling layers: ``MaxPool2d``, ``AvgPool2d`` and ``GlobalAvgPool2d``."""

from __future__ import annotations

from .. import functional as F
from .module import Module


class _Pool2d(Module):
    """Shared configuration of windowed pooling: kernel, stride (None = kernel), padding."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        # A bad window is refused here, as Conv2d refuses one, not at the first forward.
        F.pool2d_geometry(kernel_size, stride, padding, type(self).__name__)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def _arguments(self, x):
        backend, *geometry = F.pool2d_arguments(
            x, self.kernel_size, self.stride, self.padding, type(self).__name__
        )
        self._x_shape, self._geometry = x.shape, tuple(geometry)
        return backend

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max over each window; ties go to the first maximum in row-major order. (N, C, H, W)."""

    fuses_previous_relu = True
    _forward_arrays = ("_y", "_argmax")

    def forward(self, x):
        self._backend = self._arguments(x)
        self._y, self._argmax = self._backend.max_pool2d_forward(x, *self._geometry)
        return self._keep_output(self._y)

    def backward(self, grad_out, relu: bool = False):
        """The input gradient; with ``relu``, the gradient through a ReLU layer right before this
        one as well (fused by :class:`~gpucnn.nn.container.Sequential`): the ReLU's mask is
        applied at the pooled size, where a window's maximum is the ReLU's output at its argmax."""
        F.check_flag(relu, "relu")
        self._check_grad_out(grad_out)
        relu_y = self._y if relu else None
        return self._backend.max_pool2d_backward(
            grad_out, self._argmax, self._x_shape, *self._geometry, relu_y
        )


class AvgPool2d(_Pool2d):
    """Mean over each window, padded zeros included (PyTorch's default). (N, C, H, W)."""

    def forward(self, x):
        self._backend = self._arguments(x)
        return self._keep_output(self._backend.avg_pool2d_forward(x, *self._geometry))

    def backward(self, grad_out):
        self._check_grad_out(grad_out)
        return self._backend.avg_pool2d_backward(grad_out, self._x_shape, *self._geometry)


class GlobalAvgPool2d(Module):
    """Mean over each channel's plane: (N, C, H, W) -> (N, C)."""

    def forward(self, x):
        self._backend = F.global_avg_pool2d_arguments(x, "GlobalAvgPool2d")
        self._x_shape = x.shape
        return self._keep_output(self._backend.global_avg_pool2d_forward(x))

    def backward(self, grad_out):
        self._check_grad_out(grad_out)
        return self._backend.global_avg_pool2d_backward(grad_out, self._x_shape)
