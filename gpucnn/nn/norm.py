"""``BatchNorm2d``: per-channel batch normalisation with running statistics."""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..shapes import is_real, positive_int
from .module import Module, Parameter


class BatchNorm2d(Module):
    """Normalise each channel of (N, C, H, W) by batch statistics (training) or running ones (eval).

    Running statistics follow PyTorch: ``running = (1 - momentum) * running + momentum * batch``,
    with the unbiased batch variance.
    """

    _forward_arrays = ("_cache",)

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, dtype=np.float32
    ):
        super().__init__()
        num_features = positive_int(num_features, "num_features")
        dtype = F.float_dtype(dtype, "dtype")
        if not is_real(momentum) or not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm2d momentum must be a number in [0, 1], got {momentum!r}")
        if not is_real(eps) or not 0 < eps < math.inf:  # NaN too
            raise ValueError(
                f"BatchNorm2d eps must be a positive finite number (it keeps a constant channel's "
                f"1 / sqrt(variance + eps) finite), got {eps!r}"
            )
        # Python floats: a NumPy float64 eps would promote float32 statistics to float64 (NumPy 2)
        # in some of the ops and not others, as the optimizers' hyperparameters would.
        self.num_features, self.eps, self.momentum = num_features, float(eps), float(momentum)
        self.weight = Parameter(np.ones(num_features, dtype=dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
        self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))

    def forward(self, x):
        backend = F.check_float_array(x, "BatchNorm2d input", 4)
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm2d({self.num_features}) got {x.shape[1]} channels, shape {tuple(x.shape)}"
            )
        gamma, beta = self.weight.data, self.bias.data
        F.check_same_device(backend, weight=gamma)
        F.check_same_dtype(x, weight=gamma)
        if not self.training:
            self._cache = (backend, x, None, None)  # backward: by the running statistics
            return self._keep_output(
                backend.batch_norm2d_forward_eval(
                    x, gamma, beta, self.running_mean, self.running_var, self.eps
                )
            )
        if x.shape[0] * x.shape[2] * x.shape[3] < 2:  # its variance would be 0 / 0
            raise ValueError(
                f"BatchNorm2d in training needs more than one value per channel, got input "
                f"shape {tuple(x.shape)}"
            )
        # The running statistics are updated in place: a captured CUDA graph replays its writes
        # into these very arrays.
        y, mean, invstd = backend.batch_norm2d_forward_train(
            x, gamma, beta, self.eps, self.running_mean, self.running_var, self.momentum
        )
        self.num_batches_tracked += 1
        self._cache = (backend, x, mean, invstd)
        return self._keep_output(y)

    def backward(self, grad_out):
        self._check_grad_out(grad_out)
        backend, x, mean, invstd = self._cache
        if mean is None:
            gx, ggamma, gbeta = self._eval_backward(backend.xp, grad_out, x)
        else:
            gx, ggamma, gbeta = backend.batch_norm2d_backward(
                grad_out, x, self.weight.data, mean, invstd
            )
        self.weight.accumulate(ggamma)
        self.bias.accumulate(gbeta)
        return gx

    def _eval_backward(self, xp, gy, x):
        """Gradients of the eval forward, y = (x - running_mean) * s * gamma + beta with
        s = 1/sqrt(running_var + eps): an affine map per channel (not a hot path: array ops)."""
        channel = (1, -1, 1, 1)
        scale = 1 / xp.sqrt(self.running_var + self.eps)
        normalised = (x - self.running_mean.reshape(channel)) * scale.reshape(channel)
        gx = gy * (self.weight.data * scale).reshape(channel)
        return gx, (gy * normalised).sum(axis=(0, 2, 3)), gy.sum(axis=(0, 2, 3))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
