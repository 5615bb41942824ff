"""Batches drawn clear of near-ties, for tests that compare training across summation orders.

Two implementations that add in different orders (PyTorch and gpucnn, the CPU and a GPU) round the
same pre-activations a few ulp apart. Where a ReLU input sits that close to 0, or a max-pool
window's two largest values that close together, they can route a gradient to different places,
and over a few steps the weights drift apart far past any rounding tolerance: a test then fails
for no bug. These batches have no such place.
"""

from __future__ import annotations

import numpy as np

from gpucnn import nn


def _channel_scale(z: np.ndarray) -> np.ndarray:
    """Each channel's root mean square (axis 1), shaped to broadcast against ``z``: rounding is
    relative to a channel's own size (a unit that has shrunk to ~1e-5 rounds ~1e-12)."""
    axes = tuple(a for a in range(z.ndim) if a != 1)
    return np.sqrt(np.mean(z * z, axis=axes, keepdims=True))


def _pool_windows(z: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 2x2 windows of z (N, C, H, W) sorted ascending, (windows, 4), and each one's scale."""
    n, c, height, width = z.shape
    windows = z[:, :, : height // 2 * 2, : width // 2 * 2].reshape(
        n, c, height // 2, 2, width // 2, 2
    )
    flat = windows.transpose(0, 1, 2, 4, 3, 5).reshape(-1, 4)
    scales = np.broadcast_to(scale, (n, c, height // 2, width // 2)).reshape(-1)
    return np.sort(flat, axis=1), scales


def clear_of_ties(model, draw, margin=1e-5, tries=100):
    """A batch from ``draw()`` whose forward through ``model`` has no near-tie: no ReLU input
    within ``margin`` of 0 (for a ReLU before a 2x2 max pool: no window maximum), no such window
    whose two largest values lie within ``margin`` (where the largest is positive), ``margin``
    relative to the channel's root mean square. There float32 rounding in another summation
    order could pick the other side of the kink or the other maximum, and the gradient would go
    elsewhere (seen against PyTorch: one pool2 window of 16x32x5x5, conv2's weight gradient 5e-3
    apart)."""
    layers = list(model)
    for _ in range(tries):
        x = draw()
        h, relu_in, clear = np.asarray(x, np.float64), None, True
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.ReLU):
                relu_in = h
                pooled_next = i + 1 < len(layers) and isinstance(layers[i + 1], nn.MaxPool2d)
                clear &= pooled_next or bool(np.all(np.abs(h) >= margin * _channel_scale(h)))
            elif isinstance(layer, nn.MaxPool2d):
                z = relu_in if isinstance(layers[i - 1], nn.ReLU) else h  # the sign decides
                top, scales = _pool_windows(z, _channel_scale(z))
                tol = margin * scales
                clear &= bool(np.all(np.abs(top[:, 3]) >= tol))
                clear &= bool(np.all((top[:, 3] - top[:, 2] >= tol) | (top[:, 3] < 0)))
            h = np.asarray(layer(h.astype(x.dtype)), np.float64)
        if clear:
            return x
    raise AssertionError(f"no batch clear of near-ties in {tries} draws")
