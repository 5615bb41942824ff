"""Launchers of kernels_cuda/softmax_xent.cu: the loss forward, backward, and both in one launch."""

from __future__ import annotations

from .launching import Launching, grid_1d, grid_per_item, i64

_LOSS_BLOCK_ROWS = 128  # rows up to which softmax_cross_entropy_train's one block is quicker


class SoftmaxXentLaunchers(Launching):
    """softmax_xent.cu's launchers."""

    def softmax_cross_entropy_forward(self, logits, labels, smoothing: float = 0.0):
        """One block per row (grid (N,)), then one block for the batch mean -> (loss 0-d, probs)."""
        op = "softmax_cross_entropy_forward"
        (logits,) = self._floats(op, logits)
        n, k = logits.shape  # a ValueError for anything but (N, K)
        grid = grid_per_item(op, n, "row")
        labels = self._labels(op, labels, n, k)
        probs = self.xp.empty_like(logits)
        row_loss, loss = self.xp.empty((n,), logits.dtype), self.xp.empty((1,), logits.dtype)
        fam = "softmax_xent"
        args = (logits, labels, probs, row_loss, i64(k), logits.dtype.type(smoothing))
        self._launch(fam, op, grid, *args)
        self._launch(fam, "mean_of_rows", (1,), row_loss, loss, i64(n))
        return loss.reshape(()), probs

    def softmax_cross_entropy_train(self, logits, labels, smoothing: float = 0.0):
        """Up to _LOSS_BLOCK_ROWS rows: one block for loss and gradient (grid (1,)); more rows
        take the three kernels, whose one block per row wins there."""
        (logits,) = self._floats("softmax_cross_entropy_train", logits)
        n, k = logits.shape
        if n > _LOSS_BLOCK_ROWS:
            return super().softmax_cross_entropy_train(logits, labels, smoothing)
        labels = self._labels("softmax_cross_entropy_train", labels, n, k)
        grad, loss = self.xp.empty_like(logits), self.xp.empty((1,), logits.dtype)
        args = (logits, labels, grad, loss, i64(n), i64(k), logits.dtype.type(smoothing))
        self._launch("softmax_xent", "softmax_cross_entropy_train", (1,), *args)
        return loss.reshape(()), grad

    def softmax_cross_entropy_backward(self, probs, labels, smoothing: float = 0.0):
        """(probs - target) / N, elementwise. 1-D grid-stride, block 256."""
        (probs,) = self._floats("softmax_cross_entropy_backward", probs)
        n, k = probs.shape
        labels = self._labels("softmax_cross_entropy_backward", labels, n, k)
        grad = self.xp.empty_like(probs)
        args = (probs, labels, grad, i64(n), i64(k), probs.dtype.type(smoothing))
        self._launch("softmax_xent", "softmax_cross_entropy_backward", grid_1d(grad.size), *args)
        return grad
