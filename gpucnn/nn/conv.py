"""``Conv2d``: a batched 2-D convolution layer (cross-correlation, as in PyTorch)."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..shapes import conv_padding, positive_int, positive_pair
from .init import he_normal
from .module import Module, Parameter


class Conv2d(Module):
    """x: (N, in_channels, H, W) -> (N, out_channels, Ho, Wo).

    ``weight``: (out_channels, in_channels / groups, kh, kw), ``bias``: (out_channels,).
    ``padding`` is an int, a pair, "same" or "valid".
    """

    fuses_next_relu = True

    _forward_arrays = ("_saved",)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        rng=None,
        dtype=np.float32,
    ):
        super().__init__()
        F.check_flag(bias, "bias")
        dtype = F.float_dtype(dtype, "dtype")
        in_channels = positive_int(in_channels, "in_channels")
        out_channels = positive_int(out_channels, "out_channels")
        groups = positive_int(groups, "groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels {in_channels} and out_channels {out_channels} must be divisible "
                f"by groups={groups}"
            )
        kh, kw = positive_pair(kernel_size, "kernel_size")
        # Checked here, as PyTorch does (padding="same" with a stride > 1), not at the first forward.
        conv_padding(
            padding, (kh, kw), positive_pair(dilation, "dilation"), positive_pair(stride, "stride")
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.dilation, self.groups = dilation, groups
        shape = (out_channels, in_channels // groups, kh, kw)
        fan_in = shape[1] * kh * kw
        self.weight = Parameter(he_normal(shape, fan_in, rng, dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None

    def forward(self, x, relu: bool = False):
        """The convolution; with ``relu``, max(., 0) of it in the same pass (a ReLU layer right
        after this one, fused by :class:`~gpucnn.nn.container.Sequential`)."""
        F.check_flag(relu, "relu")
        b = self.bias.data if self.bias is not None else None
        backend, stride, padding, dilation = F.conv2d_arguments(
            x, self.weight.data, b, self.stride, self.padding, self.dilation, self.groups
        )
        self._x_shape, self._backend = x.shape, backend
        self._args = (stride, padding, dilation, self.groups)
        y, self._saved = backend.conv2d_forward_saving(x, self.weight.data, b, *self._args, relu)
        return self._keep_output(y)

    def backward_params(self, grad_out):
        self._backward(grad_out, input_grad=False)

    def backward(self, grad_out):
        return self._backward(grad_out, input_grad=True)

    def _backward(self, grad_out, input_grad: bool):
        self._check_grad_out(grad_out)
        gx, gw, gb = self._backend.conv2d_backward_saved(
            grad_out, self._saved, self.weight.data, self._x_shape, *self._args,
            input_grad=input_grad, bias=self.bias is not None,
        )  # fmt: skip
        self.weight.accumulate(gw)
        if gb is not None:
            self.bias.accumulate(gb)
        return gx

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
            + (f", groups={self.groups}" if self.groups != 1 else "")
            + (", bias=False" if self.bias is None else "")
        )
