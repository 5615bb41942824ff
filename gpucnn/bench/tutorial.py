"""The tutorial's training algorithm, as a peer: one sample at a time, in float64 loops.

A faithful re-implementation of the tutorial's ConvLayer / ReLULayer / MaxPoolLayer /
FlattenLayer / DenseLayer with forward() and backward(d_out, lr), stacked as its MNIST flowchart
(Conv3x3x16, ReLU, MaxPool2, Conv3x3x32, ReLU, MaxPool2, Flatten, Dense128, ReLU, Dense10), trained
with its train_step: softmax, cross-entropy, and a plain SGD update inside each backward.
"""

from __future__ import annotations

import numpy as np


class ConvLayer:
    """Valid 3-D cross-correlation of one sample (C, H, W) with F filters (F, C, k, k)."""

    def __init__(self, num_filters: int, kernel_size: int, input_channels: int, rng):
        scale = np.sqrt(2.0 / (kernel_size * kernel_size * input_channels))
        shape = (num_filters, input_channels, kernel_size, kernel_size)
        self.filters = rng.standard_normal(shape) * scale
        self.biases = np.zeros(num_filters)
        self.k = kernel_size

    def forward(self, x):
        self.x = x
        k = self.k
        out = np.zeros((len(self.filters), x.shape[1] - k + 1, x.shape[2] - k + 1))
        for f in range(out.shape[0]):
            for i in range(out.shape[1]):
                for j in range(out.shape[2]):
                    patch = x[:, i : i + k, j : j + k]
                    out[f, i, j] = np.sum(patch * self.filters[f]) + self.biases[f]
        return out

    def backward(self, d_out, lr):
        k = self.k
        d_filters = np.zeros_like(self.filters)
        d_biases = np.zeros_like(self.biases)
        d_x = np.zeros_like(self.x)
        for f in range(d_out.shape[0]):
            d_biases[f] = np.sum(d_out[f])
            for i in range(d_out.shape[1]):
                for j in range(d_out.shape[2]):
                    d_filters[f] += d_out[f, i, j] * self.x[:, i : i + k, j : j + k]
                    d_x[:, i : i + k, j : j + k] += d_out[f, i, j] * self.filters[f]
        self.filters -= lr * d_filters
        self.biases -= lr * d_biases
        return d_x


class MaxPoolLayer:
    """Non-overlapping p x p max pooling of (C, H, W), remembering a mask of the maxima."""

    def __init__(self, pool_size: int = 2):
        self.p = pool_size

    def forward(self, x):
        p = self.p
        self.mask = np.zeros_like(x)
        out = np.zeros((x.shape[0], x.shape[1] // p, x.shape[2] // p))
        for c in range(out.shape[0]):
            for i in range(out.shape[1]):
                for j in range(out.shape[2]):
                    window = x[c, i * p : (i + 1) * p, j * p : (j + 1) * p]
                    out[c, i, j] = np.max(window)
                    self.mask[c, i * p : (i + 1) * p, j * p : (j + 1) * p] = window == out[c, i, j]
        return out

    def backward(self, d_out, lr):
        p = self.p
        d_x = np.zeros_like(self.mask)
        for c in range(d_out.shape[0]):
            for i in range(d_out.shape[1]):
                for j in range(d_out.shape[2]):
                    window = (c, slice(i * p, (i + 1) * p), slice(j * p, (j + 1) * p))
                    d_x[window] += d_out[c, i, j] * self.mask[window]
        return d_x


class ReLULayer:
    """max(0, x), elementwise; backward passes d_out where x > 0."""

    def forward(self, x):
        self.x = x
        return np.maximum(0, x)

    def backward(self, d_out, lr):
        return d_out * (self.x > 0)


class FlattenLayer:
    """One sample (C, H, W) as a vector, and back for backward."""

    def forward(self, x):
        self.shape = x.shape
        return x.flatten()

    def backward(self, d_out, lr):
        return d_out.reshape(self.shape)


class DenseLayer:
    """x (in,) @ weights (in, out) + biases (out,)."""

    def __init__(self, input_size: int, output_size: int, rng):
        self.weights = rng.standard_normal((input_size, output_size)) * np.sqrt(2.0 / input_size)
        self.biases = np.zeros(output_size)

    def forward(self, x):
        self.x = x
        return x @ self.weights + self.biases

    def backward(self, d_out, lr):
        d_x = d_out @ self.weights.T
        self.weights -= lr * (self.x[:, np.newaxis] @ d_out[np.newaxis, :])
        self.biases -= lr * d_out
        return d_x


class TutorialMnistNet:
    """The tutorial's MNIST flowchart, trained one (1, 28, 28) sample per ``train_step``."""

    def __init__(self, rng: np.random.Generator | int | None = 0):
        rng = np.random.default_rng(rng)
        self.layers = [
            ConvLayer(16, 3, 1, rng), ReLULayer(), MaxPoolLayer(2),
            ConvLayer(32, 3, 16, rng), ReLULayer(), MaxPoolLayer(2),
            FlattenLayer(), DenseLayer(32 * 5 * 5, 128, rng), ReLULayer(), DenseLayer(128, 10, rng),
        ]  # fmt: skip

    def train_step(self, image, label: int, lr: float = 0.01) -> float:
        """Forward, softmax cross-entropy, backward with the update; returns the loss."""
        x = np.asarray(image, dtype=np.float64)
        for layer in self.layers:
            x = layer.forward(x)
        exp = np.exp(x - np.max(x))
        probs = exp / exp.sum()
        loss = -np.log(probs[label] + 1e-10)
        grad = probs.copy()
        grad[label] -= 1
        for layer in reversed(self.layers):
            grad = layer.backward(grad, lr)
        return float(loss)
