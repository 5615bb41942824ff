"""The oracle: every op as naive loops in float64, written for clarity, not speed.

These are the tutorial's loops (slide a window, multiply, sum; scatter the gradient back through the
same window), generalised to batches, channels, stride, asymmetric padding, dilation and groups. The
tests compare every backend with them, so they share no code with the backends: not even the
output-size formula, which here is "count the window positions that fit".

Argument conventions are those of :mod:`gpucnn.backend.base`: arrays NCHW; ``stride``, ``dilation``
and ``kernel`` are ``(h, w)`` pairs; conv ``padding`` is ``((top, bottom), (left, right))``; pool
``padding`` is ``(ph, pw)`` on both sides. Every function returns new float64 arrays; keep shapes
small.
"""

from __future__ import annotations

import math

import numpy as np

Pair = tuple[int, int]
Padding2d = tuple[Pair, Pair]


def _f64(a) -> np.ndarray:
    return np.array(a, dtype=np.float64)


def _pad_hw(x: np.ndarray, padding: Padding2d) -> np.ndarray:
    """x (N, C, H, W) with zeros added around H and W."""
    return np.pad(x, ((0, 0), (0, 0), padding[0], padding[1]))


def _positions(padded: int, kernel: int, stride: int, dilation: int) -> int:
    """How many window starts 0, stride, 2*stride, ... keep the whole dilated window inside."""
    count = 0
    while count * stride + dilation * (kernel - 1) < padded:
        count += 1
    return count


def _window(xp: np.ndarray, n: int, chans: slice, i: int, j: int, kernel, stride, dilation):
    """View of padded xp under output position (i, j): (channels, kh, kw), dilation applied."""
    h0, w0 = i * stride[0], j * stride[1]
    h1 = h0 + dilation[0] * (kernel[0] - 1) + 1
    w1 = w0 + dilation[1] * (kernel[1] - 1) + 1
    return xp[n, chans, h0 : h1 : dilation[0], w0 : w1 : dilation[1]]


# --------------------------------------------------------------------------------- convolution
def conv2d_forward(
    x, w, b=None, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1
):
    """Cross-correlation. x: (N, C, H, W), w: (K, C/groups, R, S), b: (K,) or None -> (N, K, Ho, Wo)

    Each output is the sum of the window's patch times the filter, as in the tutorial.
    """
    x, w = _f64(x), _f64(w)
    xp = _pad_hw(x, padding)
    n_k, c_per_group, r, s = w.shape
    k_per_group = n_k // groups
    ho = _positions(xp.shape[2], r, stride[0], dilation[0])
    wo = _positions(xp.shape[3], s, stride[1], dilation[1])
    y = np.zeros((x.shape[0], n_k, ho, wo))
    for n in range(x.shape[0]):
        for k in range(n_k):
            g = k // k_per_group
            chans = slice(g * c_per_group, (g + 1) * c_per_group)
            for i in range(ho):
                for j in range(wo):
                    patch = _window(xp, n, chans, i, j, (r, s), stride, dilation)
                    y[n, k, i, j] = np.sum(patch * w[k]) + (0.0 if b is None else b[k])
    return y


def conv2d_backward(gy, x, w, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
    """Gradients of conv2d by the tutorial's scatter loops -> (gx, gw, gb), shaped x, w, (K,)."""
    gy, x, w = _f64(gy), _f64(x), _f64(w)
    xp = _pad_hw(x, padding)
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    gb = np.zeros(w.shape[0])
    n_k, c_per_group, r, s = w.shape
    k_per_group = n_k // groups
    for n in range(gy.shape[0]):
        for k in range(n_k):
            g = k // k_per_group
            chans = slice(g * c_per_group, (g + 1) * c_per_group)
            for i in range(gy.shape[2]):
                for j in range(gy.shape[3]):
                    d = gy[n, k, i, j]
                    gb[k] += d
                    gw[k] += d * _window(xp, n, chans, i, j, (r, s), stride, dilation)
                    _window(gxp, n, chans, i, j, (r, s), stride, dilation)[...] += d * w[k]
    (top, _), (left, _) = padding
    gx = gxp[:, :, top : top + x.shape[2], left : left + x.shape[3]]
    return np.ascontiguousarray(gx), gw, gb


# ------------------------------------------------------------------------------------- pooling
def _pool_out(x_shape, kernel, stride, padding) -> Pair:
    return (
        _positions(x_shape[2] + 2 * padding[0], kernel[0], stride[0], 1),
        _positions(x_shape[3] + 2 * padding[1], kernel[1], stride[1], 1),
    )


def max_pool2d_forward(x, kernel, stride, padding=(0, 0)):
    """Max over each window, padding never chosen -> (y, argmax int32 flat index h * W + w).

    The window is scanned in row-major order and only a strictly larger value replaces the current
    best, so ties go to the first maximum; a NaN beats any number and stays, so a window with a
    NaN gives NaN at its first NaN (PyTorch's max pool propagates NaN too).
    """
    x = _f64(x)
    n_, c_, h_, w_ = x.shape
    ho, wo = _pool_out(x.shape, kernel, stride, padding)
    y = np.zeros((n_, c_, ho, wo))
    argmax = np.zeros((n_, c_, ho, wo), dtype=np.int32)
    for n in range(n_):
        for c in range(c_):
            for i in range(ho):
                for j in range(wo):
                    best, best_at = -math.inf, -1
                    for r in range(kernel[0]):
                        for s in range(kernel[1]):
                            h = i * stride[0] - padding[0] + r
                            ww = j * stride[1] - padding[1] + s
                            if not (0 <= h < h_ and 0 <= ww < w_):
                                continue
                            v = x[n, c, h, ww]
                            nan_first = math.isnan(v) and not math.isnan(best)
                            if best_at < 0 or v > best or nan_first:
                                best, best_at = v, h * w_ + ww
                    if best_at < 0:
                        raise ValueError(f"pool window ({i}, {j}) lies entirely in the padding")
                    y[n, c, i, j], argmax[n, c, i, j] = best, best_at
    return y, argmax


def max_pool2d_backward(gy, x, kernel, stride, padding=(0, 0)):
    """Each gy element goes to its window's first maximum in x; overlaps add up -> gx like x."""
    gy = _f64(gy)
    _, argmax = max_pool2d_forward(x, kernel, stride, padding)
    gx = np.zeros(np.shape(x))
    width = gx.shape[3]
    for n, c, i, j in np.ndindex(*gy.shape):
        flat = argmax[n, c, i, j]
        gx[n, c, flat // width, flat % width] += gy[n, c, i, j]
    return gx


def avg_pool2d_forward(x, kernel, stride, padding=(0, 0)):
    """Mean over each window with padded zeros counted (divisor kh * kw) -> (N, C, Ho, Wo)."""
    x = _f64(x)
    xp = _pad_hw(x, ((padding[0],) * 2, (padding[1],) * 2))
    ho, wo = _pool_out(x.shape, kernel, stride, padding)
    y = np.zeros((x.shape[0], x.shape[1], ho, wo))
    for n, c, i, j in np.ndindex(*y.shape):
        window = _window(xp, n, c, i, j, kernel, stride, (1, 1))
        y[n, c, i, j] = np.sum(window) / (kernel[0] * kernel[1])
    return y


def avg_pool2d_backward(gy, x_shape, kernel, stride, padding=(0, 0)):
    """Spread each gy element evenly (1 / (kh * kw)) over its window; overlaps add up."""
    gy = _f64(gy)
    n_, c_, h_, w_ = x_shape
    gxp = np.zeros((n_, c_, h_ + 2 * padding[0], w_ + 2 * padding[1]))
    for n, c, i, j in np.ndindex(*gy.shape):
        window = _window(gxp, n, c, i, j, kernel, stride, (1, 1))
        window += gy[n, c, i, j] / (kernel[0] * kernel[1])
    return gxp[:, :, padding[0] : padding[0] + h_, padding[1] : padding[1] + w_].copy()


def global_avg_pool2d_forward(x):
    """Mean of each (H, W) plane: (N, C, H, W) -> (N, C)."""
    x = _f64(x)
    y = np.zeros(x.shape[:2])
    for n, c in np.ndindex(*y.shape):
        y[n, c] = np.sum(x[n, c]) / (x.shape[2] * x.shape[3])
    return y


def global_avg_pool2d_backward(gy, x_shape):
    """gy (N, C) spread evenly over each H x W plane -> (N, C, H, W)."""
    gy = _f64(gy)
    gx = np.zeros(x_shape)
    for n, c in np.ndindex(*gy.shape):
        gx[n, c] = gy[n, c] / (x_shape[2] * x_shape[3])
    return gx


# ----------------------------------------------------------------------- elementwise and dense
def relu_forward(x):
    """max(x, 0) elementwise."""
    return np.where(_f64(x) > 0, _f64(x), 0.0)


def relu_backward(gy, x):
    """gy where the ReLU's input x > 0, else 0."""
    return np.where(_f64(x) > 0, _f64(gy), 0.0)


def bias_relu_forward(x, b):
    """relu(x + b[c]) for x (N, C, H, W), b (C,)."""
    x, b = _f64(x), _f64(b)
    z = np.zeros_like(x)
    for c in range(x.shape[1]):
        z[:, c] = x[:, c] + b[c]
    return relu_forward(z)


def linear_forward(x, w, b=None):
    """y[n, o] = sum_i x[n, i] * w[o, i] + b[o]. x: (N, in), w: (out, in) -> (N, out)."""
    x, w = _f64(x), _f64(w)
    y = np.zeros((x.shape[0], w.shape[0]))
    for n, o in np.ndindex(*y.shape):
        y[n, o] = np.sum(x[n] * w[o]) + (0.0 if b is None else b[o])
    return y


def linear_backward(gy, x, w):
    """Gradients of linear -> (gx (N, in), gw (out, in), gb (out,))."""
    gy, x, w = _f64(gy), _f64(x), _f64(w)
    gx, gw, gb = np.zeros_like(x), np.zeros_like(w), np.zeros(w.shape[0])
    for n, o in np.ndindex(*gy.shape):
        gx[n] += gy[n, o] * w[o]
        gw[o] += gy[n, o] * x[n]
        gb[o] += gy[n, o]
    return gx, gw, gb


# ------------------------------------------------------------------------------------- losses
def _target(labels, n: int, k: int, smoothing: float) -> np.ndarray:
    """Row n of the smoothed one-hot target: 1 - smoothing + smoothing/K at the label, else
    smoothing/K."""
    row = np.full(k, smoothing / k)
    row[int(labels[n])] += 1.0 - smoothing
    return row


def softmax_cross_entropy_forward(logits, labels, smoothing: float = 0.0):
    """Mean over the batch of -sum_k target[n, k] * log softmax(logits[n])[k], the target one-hot
    at labels[n] (smoothed by ``smoothing``) -> (loss float, probs (N, K))."""
    logits = _f64(logits)
    probs = np.zeros_like(logits)
    total = 0.0
    for n in range(logits.shape[0]):
        row = logits[n] - np.max(logits[n])  # exp of anything <= 0 cannot overflow
        exp = np.exp(row)
        probs[n] = exp / np.sum(exp)
        log_probs = row - np.log(np.sum(exp))
        target = _target(labels, n, logits.shape[1], smoothing)
        kept = target > 0  # a zero target adds nothing, also where log_probs is -inf
        total -= np.sum(target[kept] * log_probs[kept])
    return total / logits.shape[0], probs


def softmax_cross_entropy_backward(logits, labels, smoothing: float = 0.0):
    """d(mean loss)/d(logits) = (softmax(logits) - target) / N."""
    _, probs = softmax_cross_entropy_forward(logits, labels)
    g = probs.copy()
    for n in range(g.shape[0]):
        g[n] -= _target(labels, n, g.shape[1], smoothing)
    return g / g.shape[0]


# -------------------------------------------------------------------------------- batch norm
def batch_norm2d_forward_train(x, gamma, beta, eps):
    """Per-channel batch statistics (biased variance) -> (y, mean (C,), invstd (C,))."""
    x = _f64(x)
    y = np.zeros_like(x)
    mean, invstd = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for c in range(x.shape[1]):
        values = x[:, c]
        mean[c] = np.mean(values)
        var = np.mean((values - mean[c]) ** 2)
        invstd[c] = 1.0 / math.sqrt(var + eps)
        y[:, c] = gamma[c] * (values - mean[c]) * invstd[c] + beta[c]
    return y, mean, invstd


def batch_norm2d_forward_eval(x, gamma, beta, running_mean, running_var, eps):
    """(x - running_mean) / sqrt(running_var + eps) * gamma + beta, per channel."""
    x = _f64(x)
    y = np.zeros_like(x)
    for c in range(x.shape[1]):
        y[:, c] = (x[:, c] - running_mean[c]) / math.sqrt(running_var[c] + eps) * gamma[c] + beta[c]
    return y


def batch_norm2d_backward(gy, x, gamma, eps):
    """Training-mode gradients, chain rule through mean and variance -> (gx, ggamma, gbeta)."""
    gy, x = _f64(gy), _f64(x)
    gx = np.zeros_like(x)
    ggamma, gbeta = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    m = x.shape[0] * x.shape[2] * x.shape[3]
    for c in range(x.shape[1]):
        centred = x[:, c] - np.mean(x[:, c])
        var = np.mean(centred**2)
        invstd = 1.0 / math.sqrt(var + eps)
        gbeta[c] = np.sum(gy[:, c])
        ggamma[c] = np.sum(gy[:, c] * centred * invstd)
        g_xhat = gy[:, c] * gamma[c]
        g_var = np.sum(g_xhat * centred) * -0.5 * invstd**3
        g_mean = -np.sum(g_xhat) * invstd + g_var * np.mean(-2.0 * centred)
        gx[:, c] = g_xhat * invstd + g_var * 2.0 * centred / m + g_mean / m
    return gx, ggamma, gbeta


def batch_norm2d_backward_eval(gy, x, gamma, running_mean, running_var, eps):
    """Eval-mode gradients: the forward is a fixed affine map per channel, so gx = gy * gamma /
    sqrt(running_var + eps) -> (gx, ggamma, gbeta)."""
    gy, x = _f64(gy), _f64(x)
    gx = np.zeros_like(x)
    ggamma, gbeta = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for c in range(x.shape[1]):
        invstd = 1.0 / math.sqrt(running_var[c] + eps)
        gx[:, c] = gy[:, c] * gamma[c] * invstd
        ggamma[c] = np.sum(gy[:, c] * (x[:, c] - running_mean[c]) * invstd)
        gbeta[c] = np.sum(gy[:, c])
    return gx, ggamma, gbeta


# ------------------------------------------------------------------------------------ dropout
_MASK64 = (1 << 64) - 1


def _uniform24(seed: int, index: int) -> float:
    """splitmix64 finaliser of ``(index + 1) * golden + seed`` mod 2**64; top 24 bits in [0, 1)."""
    z = ((index + 1) * 0x9E3779B97F4A7C15 + (seed & _MASK64)) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 40) / float(1 << 24)


def dropout_mask(shape, p: float, seed: int, calls: int = 0):
    """Keep-mask scaled by 1/(1-p): flat element i is kept when u(seed', i) >= p (float64), where
    seed' = seed + calls * golden mod 2**64 (a layer's mask of its calls-th training step)."""
    count = math.prod(shape)
    call_seed = seed + calls * 0x9E3779B97F4A7C15  # _uniform24 takes it mod 2**64
    keep = [1.0 / (1.0 - p) if _uniform24(call_seed, i) >= p else 0.0 for i in range(count)]
    return np.array(keep, dtype=np.float64).reshape(shape)


def dropout_forward(x, mask):
    """x * mask, for a given scaled keep-mask."""
    return _f64(x) * _f64(mask)


def dropout_backward(gy, mask):
    """gy * mask: the gradient flows only through kept elements, scaled alike."""
    return _f64(gy) * _f64(mask)


# --------------------------------------------------------------------------------- optimisers
def sgd_step(p, g, velocity, lr, momentum=0.0, nesterov=False, weight_decay=0.0, first_step=True):
    """One step of PyTorch's SGD (dampening 0) -> (new p, new velocity or None)."""
    p, g = _f64(p), _f64(g)
    d = g + weight_decay * p
    new_velocity = None
    if momentum:
        new_velocity = d.copy() if first_step else momentum * _f64(velocity) + d
        d = d + momentum * new_velocity if nesterov else new_velocity
    return p - lr * d, new_velocity


def adam_step(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay=0.0, decoupled=False):
    """One step of PyTorch's Adam (decoupled=False) or AdamW (True) -> (new p, new m, new v)."""
    p, g, m, v = _f64(p), _f64(g), _f64(m), _f64(v)
    if decoupled:
        p = p * (1.0 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    m_hat = m / (1.0 - beta1**step)
    v_hat = v / (1.0 - beta2**step)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v
