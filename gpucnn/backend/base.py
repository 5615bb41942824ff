"""The backend interface, and every op that is the same code on both devices, written once (``xp``).

A backend owns one device's arrays (``xp`` is ``numpy`` or ``cupy``). The sliding-window ops
(convolution and pooling, forward and backward) differ per device and are implemented by
``NumpyBackend`` and ``CudaBackend`` under the same names. Everything else here works for both array
modules; the CUDA backend overrides an op with a hand-written kernel where that pays (fusion, fewer
launches, determinism), keeping the same name and contract.

Conventions for every op: arrays are NCHW, float32 or float64, C-contiguous; shape arguments are
already normalised by :mod:`gpucnn.shapes` (``stride``/``dilation``/``kernel`` are ``(h, w)`` pairs
of ints, conv ``padding`` is ``((top, bottom), (left, right))``, pool ``padding`` is ``(ph, pw)``). The
public, validating entry points are in :mod:`gpucnn.functional` and :mod:`gpucnn.nn`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..shapes import Padding2d, Pair

# Counter-based dropout RNG (splitmix64 finaliser), identical in kernels_cuda/dropout.cu, so the
# CPU and the GPU draw the same mask from the same seed.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class Backend:
    """Base of every device backend: array handling plus the device-independent ops."""

    name: str = "abstract"
    xp: Any = np

    # ----------------------------------------------------------------- arrays
    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Return ``a`` as an array of this device (copying across devices when needed)."""
        raise NotImplementedError

    def to_numpy(self, a: Any) -> np.ndarray:
        """Return a host ``numpy.ndarray`` with the contents of ``a``."""
        raise NotImplementedError

    def owns(self, a: Any) -> bool:
        """True when ``a`` is an array that lives on this backend's device."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    def graph_session(self) -> Any:
        """A CUDA graph session (``run``, ``capture``, ``replay``) for :mod:`gpucnn.captured_step`;
        only the CUDA devices have one."""
        raise ValueError(
            f"CUDA graph capture needs device 'cuda' (or 'cuda-emu' to check a step without a "
            f"GPU), but the arrays are on {self.name!r}"
        )

    # ------------------------------------------------- device-specific (windows)
    def conv2d_forward(
        self, x, w, b, stride: Pair, padding: Padding2d, dilation: Pair, groups: int, relu=False
    ):
        """y = conv2d(x, w) + b. x: (N, C, H, W), w: (K, C/groups, R, S), b: (K,) or None.

        Returns (N, K, Ho, Wo); with ``relu``, max(y, 0) in the same pass (the values
        :meth:`relu_forward` of y gives, without a pass of its own).
        """
        raise NotImplementedError

    def conv2d_backward_input(self, gy, w, x_shape, stride, padding, dilation, groups):
        """d(loss)/dx for conv2d. gy: (N, K, Ho, Wo), w: (K, C/groups, R, S) -> (N, C, H, W)."""
        raise NotImplementedError

    def conv2d_backward_weight(self, gy, x, w_shape, stride, padding, dilation, groups):
        """d(loss)/dw for conv2d. gy: (N, K, Ho, Wo), x: (N, C, H, W) -> w_shape."""
        raise NotImplementedError

    def conv2d_backward_params(self, gy, x, w_shape, stride, padding, dilation, groups):
        """(d(loss)/dw, d(loss)/db) for conv2d: :meth:`conv2d_backward_weight` and
        :meth:`conv2d_backward_bias`, which a device may compute in one pass (the GPU does)."""
        gw = self.conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation, groups)
        return gw, self.conv2d_backward_bias(gy)

    def conv2d_forward_saving(self, x, w, b, stride, padding, dilation, groups, relu=False):
        """conv2d_forward that also returns what :meth:`conv2d_backward_saved` needs.

        Layers use this pair so a backend can keep work from forward (the CPU keeps its im2col
        matrix); by default what is saved is x itself.
        """
        return self.conv2d_forward(x, w, b, stride, padding, dilation, groups, relu), x

    def conv2d_backward_saved(
        self, gy, saved, w, x_shape, stride, padding, dilation, groups, input_grad=True, bias=True
    ):
        """A conv layer's whole backward from what :meth:`conv2d_forward_saving` returned:
        (gx, or None without ``input_grad``; gw; gb, or None without ``bias``)."""
        geometry = (stride, padding, dilation, groups)
        gx = self.conv2d_backward_input(gy, w, x_shape, *geometry) if input_grad else None
        if bias:
            return (gx, *self.conv2d_backward_params(gy, saved, w.shape, *geometry))
        return gx, self.conv2d_backward_weight(gy, saved, w.shape, *geometry), None

    def max_pool2d_forward(self, x, kernel: Pair, stride: Pair, padding: Pair):
        """Max over windows (padding is never chosen). x: (N, C, H, W) -> (y, argmax).

        ``argmax`` is int32 (N, C, Ho, Wo): the flat index ``h * W + w`` of the window's first
        maximum in row-major order (ties go to the first), which backward routes the gradient to.
        """
        raise NotImplementedError

    def max_pool2d_backward(
        self, gy, argmax, x_shape, kernel: Pair, stride: Pair, padding: Pair, relu_y=None
    ):
        """Route gy (N, C, Ho, Wo) to the recorded maxima -> gx (N, C, H, W); overlaps add up.

        ``relu_y``: the forward's output y, when a ReLU came right before the pool. gy is then
        masked by y > 0 first, which is that ReLU's backward done at the pooled size: a window's
        maximum is the ReLU output at its argmax. The result equals :meth:`relu_backward` of the
        plain routed gradient (bit for bit where windows do not overlap; where they do, a masked
        sum may be -0.0 for +0.0).
        """
        raise NotImplementedError

    def avg_pool2d_forward(self, x, kernel: Pair, stride: Pair, padding: Pair):
        """Mean over windows, padded zeros counted (count_include_pad=True) -> (N, C, Ho, Wo)."""
        raise NotImplementedError

    def avg_pool2d_backward(self, gy, x_shape, kernel: Pair, stride: Pair, padding: Pair):
        """Spread gy / (kh * kw) back over each window -> gx (N, C, H, W); overlaps add up."""
        raise NotImplementedError

    # ------------------------------------------------------- device-independent
    def conv2d_backward_bias(self, gy):
        """d(loss)/db for conv2d: gy (N, K, Ho, Wo) summed over N, Ho, Wo -> (K,)."""
        return gy.sum(axis=(0, 2, 3))

    def global_avg_pool2d_forward(self, x):
        """Mean over H and W. x: (N, C, H, W) -> (N, C)."""
        return x.mean(axis=(2, 3))

    def global_avg_pool2d_backward(self, gy, x_shape):
        """gy (N, C) spread evenly over each H x W plane -> (N, C, H, W)."""
        n, c, h, w = x_shape
        g = gy / (h * w)
        return self.xp.ascontiguousarray(self.xp.broadcast_to(g[:, :, None, None], x_shape))

    def relu_forward(self, x):
        """max(x, 0), elementwise."""
        return self.xp.maximum(x, 0)

    def relu_backward(self, gy, y):
        """gy where the ReLU's output y > 0, else 0."""
        return gy * (y > 0)

    def bias_relu_forward(self, x, b):
        """relu(x + b[None, :, None, None]) for x (N, C, H, W) (one fused kernel on the GPU)."""
        return self.xp.maximum(x + b.reshape(1, -1, 1, 1), 0)

    def linear_forward(self, x, w, b, relu=False):
        """x @ w.T + b. x: (N, in), w: (out, in), b: (out,) or None -> (N, out); with ``relu``,
        max(., 0) of that, as :meth:`relu_forward` gives it."""
        y = x @ w.T
        if b is not None:
            y += b
        if relu:
            self.xp.maximum(y, 0, out=y)
        return y

    def linear_backward(self, gy, x, w):
        """Gradients of linear. gy: (N, out) -> (gx (N, in), gw (out, in), gb (out,))."""
        return gy @ w, gy.T @ x, gy.sum(axis=0)

    def dropout_mask(self, shape, p: float, seed: int, dtype, calls=None):
        """Keep-mask scaled by 1/(1-p): element i is kept when u(seed, i) >= p.

        u is a counter-based uniform in [0, 1) with 24 bits (splitmix64 of seed and the flat index),
        so the mask depends only on (seed, shape, p) and both devices draw the same one. ``calls``
        (a (1,) uint64 array on this device, read there) moves the seed to seed + calls * golden,
        a layer's mask of its calls-th step; None means call 0.
        """
        xp = self.xp
        count = int(np.prod(shape))
        idx = xp.arange(1, count + 1, dtype=xp.uint64)
        call_seed = xp.full(1, np.uint64(seed & 0xFFFFFFFFFFFFFFFF), dtype=xp.uint64)
        if calls is not None:
            call_seed += calls.astype(xp.uint64) * xp.uint64(_GOLDEN)  # arrays wrap silently
        z = idx * xp.uint64(_GOLDEN) + call_seed
        z = (z ^ (z >> xp.uint64(30))) * xp.uint64(_MIX1)
        z = (z ^ (z >> xp.uint64(27))) * xp.uint64(_MIX2)
        z = z ^ (z >> xp.uint64(31))
        u = (z >> xp.uint64(40)).astype(xp.float64) * (1.0 / (1 << 24))
        scale = 1.0 / (1.0 - p)
        return xp.where(u >= p, scale, 0.0).astype(dtype).reshape(shape)

    def dropout_forward(self, x, p: float, seed: int, calls=None):
        """Inverted dropout: returns (x * mask, mask), mask as in :meth:`dropout_mask`."""
        mask = self.dropout_mask(x.shape, p, seed, x.dtype, calls)
        return x * mask, mask

    def batch_norm2d_forward_train(
        self, x, gamma, beta, eps: float, running_mean=None, running_var=None, momentum=0.1
    ):
        """Normalise with batch statistics. x: (N, C, H, W) -> (y, mean (C,), invstd (C,)).

        Uses the biased variance, as PyTorch does for the normalisation itself. Given
        ``running_mean`` and ``running_var``, also updates them in place as PyTorch does:
        ``running = (1 - momentum) * running + momentum * batch``, with the unbiased variance
        (the GPU does it in the statistics kernel, instead of a dozen elementwise launches).
        """
        mean = x.mean(axis=(0, 2, 3))
        centred = x - mean.reshape(1, -1, 1, 1)
        var = (centred * centred).mean(axis=(0, 2, 3))
        invstd = (1.0 / self.xp.sqrt(var + eps)).astype(x.dtype)
        if running_mean is not None:
            count = x.shape[0] * x.shape[2] * x.shape[3]
            unbiased = var * (count / max(count - 1, 1))
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * unbiased
        scale = (gamma * invstd).reshape(1, -1, 1, 1)
        return centred * scale + beta.reshape(1, -1, 1, 1), mean, invstd

    def batch_norm2d_forward_eval(self, x, gamma, beta, running_mean, running_var, eps: float):
        """Normalise with running statistics. x: (N, C, H, W) -> y."""
        invstd = 1.0 / self.xp.sqrt(running_var + eps)
        scale = gamma * invstd
        shift = beta - running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def batch_norm2d_backward(self, gy, x, gamma, mean, invstd):
        """Gradients of training-mode batch norm -> (gx, ggamma, gbeta)."""
        m = x.shape[0] * x.shape[2] * x.shape[3]
        xhat = (x - mean.reshape(1, -1, 1, 1)) * invstd.reshape(1, -1, 1, 1)
        gbeta = gy.sum(axis=(0, 2, 3))
        ggamma = (gy * xhat).sum(axis=(0, 2, 3))
        k = (gamma * invstd / m).reshape(1, -1, 1, 1)
        gx = k * (m * gy - gbeta.reshape(1, -1, 1, 1) - xhat * ggamma.reshape(1, -1, 1, 1))
        return gx, ggamma, gbeta

    def softmax_cross_entropy_forward(self, logits, labels, smoothing: float = 0.0):
        """Mean cross-entropy of softmax(logits). logits: (N, K), labels: (N,) int -> (loss, probs).

        The target is (1 - smoothing) * onehot(labels) + smoothing / K (PyTorch's label smoothing).
        Stable: subtracts each row's maximum before exponentiating.
        """
        xp = self.xp
        n = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        probs = exp / total
        target = shifted[xp.arange(n), labels]
        if smoothing:
            target = (1 - smoothing) * target + smoothing * shifted.mean(axis=1)
        loss = xp.asarray((xp.log(total[:, 0]) - target).mean())  # 0-d array, not a NumPy scalar
        return loss, probs

    def softmax_cross_entropy_train(self, logits, labels, smoothing: float = 0.0):
        """(loss, d(loss)/d(logits)) at once, as a training step needs them: the forward and the
        backward, which a device may run as one launch (the GPU does, for up to 128 rows)."""
        loss, probs = self.softmax_cross_entropy_forward(logits, labels, smoothing)
        return loss, self.softmax_cross_entropy_backward(probs, labels, smoothing)

    def softmax_cross_entropy_backward(self, probs, labels, smoothing: float = 0.0):
        """d(mean loss)/d(logits) = (probs - target) / N, the target as in the forward."""
        xp = self.xp
        n, k = probs.shape
        g = probs.copy()
        g[xp.arange(n), labels] -= 1 - smoothing
        if smoothing:
            g -= smoothing / k
        g /= n
        return g

    def sgd_update(self, p, g, velocity, clock, momentum, nesterov, weight_decay, first_step):
        """One in-place SGD step on p with PyTorch's rule (dampening 0).

        ``clock`` is the optimizer's (2,) float64 array {step, lr} on this device; the learning rate
        is read from it. ``velocity`` (same shape as p, or None when momentum is 0) is updated in
        place; on the first step it is set to the gradient, as PyTorch does.
        """
        lr = float(self.to_numpy(clock)[1])
        d = g + weight_decay * p if weight_decay else g
        if momentum:
            if first_step:
                velocity[...] = d
            else:
                velocity *= momentum
                velocity += d
            d = d + momentum * velocity if nesterov else velocity
        p -= lr * d

    def sgd_update_many(
        self, params, grads, velocities, clock, momentum, nesterov, weight_decay, first_step
    ):
        """:meth:`sgd_update` of each parameter of the lists (``velocities`` holds None where
        there is no momentum), in as few launches as the device can (the GPU: one per
        8 parameters of a dtype)."""
        hyper = (momentum, nesterov, weight_decay, first_step)
        for p, g, velocity in zip(params, grads, velocities, strict=True):
            self.sgd_update(p, g, velocity, clock, *hyper)

    def adam_update_many(self, params, grads, ms, vs, clock, *hyper):
        """:meth:`adam_update` of each parameter of the lists (``hyper``: beta1, beta2, eps,
        weight_decay, decoupled), in as few launches as the device can, as
        :meth:`sgd_update_many`."""
        for p, g, m, v in zip(params, grads, ms, vs, strict=True):
            self.adam_update(p, g, m, v, clock, *hyper)

    def adam_update(self, p, g, m, v, clock, beta1, beta2, eps, weight_decay, decoupled):
        """One in-place Adam (decoupled=False) or AdamW (decoupled=True) step, PyTorch's rule; step
        t (already counting this step) and lr are read from ``clock``, as in :meth:`sgd_update`."""
        step, lr = (float(c) for c in self.to_numpy(clock))
        if weight_decay:
            if decoupled:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * (g * g)
        bias1 = 1 - beta1**step
        bias2 = 1 - beta2**step
        denom = self.xp.sqrt(v) / math.sqrt(bias2) + eps
        p -= (lr / bias1) * (m / denom)
