"""``Linear`` (fully connected) and ``Flatten``."""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..backend import backend_of
from ..shapes import positive_int
from .init import he_normal
from .module import Module, Parameter


class Linear(Module):
    """x: (N, in_features) -> x @ weight.T + bias: (N, out_features); weight (out, in) as PyTorch."""

    fuses_next_relu = True

    _forward_arrays = ("_x",)

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, rng=None, dtype=np.float32
    ):
        super().__init__()
        F.check_flag(bias, "bias")
        dtype = F.float_dtype(dtype, "dtype")
        in_features = positive_int(in_features, "in_features")
        out_features = positive_int(out_features, "out_features")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(he_normal((out_features, in_features), in_features, rng, dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None

    def forward(self, x, relu: bool = False):
        """x @ weight.T + bias; with ``relu``, max(., 0) of it (a ReLU layer right after this
        one, fused by :class:`~gpucnn.nn.container.Sequential`)."""
        self._x, self._backend = x, backend_of(x, "Linear input")
        b = None if self.bias is None else self.bias.data
        return self._keep_output(F.linear(x, self.weight.data, b, relu))

    def backward(self, grad_out):
        self._check_grad_out(grad_out)
        gx, gw, gb = self._backend.linear_backward(grad_out, self._x, self.weight.data)
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        return gx

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W), keeping the batch axis; the input needs at least one axis
    after it (a (N,) input is refused, as PyTorch's Flatten does)."""

    def forward(self, x):
        """The reshape; the width is C*H*W itself, as -1 cannot be inferred for an empty batch."""
        if not hasattr(x, "ndim"):  # a list: the TypeError every layer gives, not an AttributeError
            backend_of(x, "Flatten input")
        if x.ndim < 2:
            raise ValueError(
                f"Flatten input must be (N, ...) with at least one feature axis, got shape "
                f"{tuple(x.shape)}"
            )
        self._shape = x.shape
        return self._keep_output(x.reshape(x.shape[0], math.prod(x.shape[1:])))

    def backward(self, grad_out):
        self._check_grad_out(grad_out)
        return grad_out.reshape(self._shape)
