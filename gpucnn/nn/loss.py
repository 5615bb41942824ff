"""``CrossEntropyLoss``: fused, numerically stable softmax cross-entropy, mean over the batch."""

from __future__ import annotations

from .. import functional as F
from .module import Module


class CrossEntropyLoss(Module):
    """``loss = loss_fn(logits, labels)``: a 0-d array on the logits' device (``float(loss)`` works).

    logits: (N, K) float, labels: (N,) int in [0, K). ``backward()`` returns d(loss)/d(logits).
    ``label_smoothing`` e trains towards (1 - e) * onehot(labels) + e / K, as PyTorch's does.
    With ``check_finite`` (default) a NaN or infinite loss raises ValueError at once instead of
    silently corrupting the weights, and ``check_labels`` (default) refuses labels outside
    [0, K); on the GPU each costs a device-to-host read per call. A training loop whose labels
    were validated up front turns both off and checks the loss when it reads it anyway, as
    ``gpucnn.train`` does (an unchecked bad label gives a NaN loss on the GPU, never a stray read).
    In eval mode (``.eval()``) it computes the loss alone, without the gradient.
    """

    def __init__(
        self, label_smoothing: float = 0.0, check_finite: bool = True, check_labels: bool = True
    ):
        super().__init__()
        F.check_label_smoothing(label_smoothing)  # now, not at the first step
        F.check_flag(check_finite, "check_finite")
        F.check_flag(check_labels, "check_labels")
        self.label_smoothing = label_smoothing
        self.check_finite = check_finite
        self.check_labels = check_labels

    def forward(self, logits, labels):
        smoothing = self.label_smoothing
        self._backend, self._labels = F.cross_entropy_arguments(
            logits, labels, smoothing, self.check_labels
        )
        if self.training:
            # The gradient comes with the loss (one launch for both on the GPU); backward returns it.
            loss, self._grad = self._backend.softmax_cross_entropy_train(
                logits, self._labels, smoothing
            )
        else:  # evaluation: the loss alone
            loss = self._backend.softmax_cross_entropy_forward(logits, self._labels, smoothing)[0]
            self._grad = None
        if self.check_finite and not self._backend.to_numpy(self._backend.xp.isfinite(loss)):
            raise ValueError(
                f"cross-entropy loss is {float(loss)}: the logits {tuple(logits.shape)} contain "
                "NaN or infinite values (try a lower learning rate), or, with check_labels off on "
                "a GPU, a label lies outside [0, classes)"
            )
        return self._keep_output(loss)

    def backward(self, grad_out=None):
        """d(loss)/d(logits), times ``grad_out`` (an array of the loss's shape () and dtype) if given."""
        self._check_forward_ran()
        if self._grad is None:
            raise RuntimeError(
                "CrossEntropyLoss.backward: the last forward ran in eval mode, which computes the "
                "loss alone; call .train() on the loss before the forward whose gradient you need"
            )
        if grad_out is None:
            return self._grad
        self._check_grad_out(grad_out)
        return self._grad * grad_out
