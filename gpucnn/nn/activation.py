"""Elementwise layers: ``ReLU`` and ``Dropout``."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..backend import backend_of
from ..shapes import integer, make_rng, non_negative_int
from .module import Module


class ReLU(Module):
    """max(x, 0); backward passes the gradient where the output is positive."""

    _forward_arrays = ("_y",)

    def forward(self, x):
        self._backend = F.check_float_array(x, "ReLU input")
        self._y = self._keep_output(self._backend.relu_forward(x))
        return self._y

    def backward(self, grad_out):
        self._check_grad_out(grad_out)
        return self._backend.relu_backward(grad_out, self._y)

    def rectified(self, y):
        """Take ``y``, which the layer before already rectified (a fused forward), as this
        layer's output."""
        self._backend = F.check_float_array(y, "ReLU input")
        self._y = self._keep_output(y)
        return y


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and scale by 1/(1-p).

    Each training forward draws its mask from (seed, call count) with a counter-based RNG, so the
    CPU and the GPU drop the same elements and a resumed run continues the same sequence. The call
    count lives on the layer's device and the kernel reads it there, so a captured CUDA graph draws
    a new mask on every replay; reading :attr:`calls` waits for the device.
    """

    _forward_arrays = ("_mask",)

    def __init__(self, p: float = 0.5, seed: int | None = None):
        super().__init__()
        F.check_dropout_probability(p)
        self.p = p
        if seed is not None:  # an int, as F.dropout's seed; make_rng refuses a negative one
            seed = integer(seed, "seed")
        self.seed = int(make_rng(seed, "seed").integers(2**62))
        self._calls = np.zeros(1, dtype=np.uint64)
        self._mask = None

    @property
    def calls(self) -> int:
        """Training forwards so far (each drew its own mask)."""
        return int(backend_of(self._calls).to_numpy(self._calls)[0])

    @calls.setter
    def calls(self, value: int) -> None:
        # 2.5 would be truncated, -1 NumPy's OverflowError
        self._calls = np.full(1, non_negative_int(value, "calls"), dtype=np.uint64)

    def forward(self, x):
        backend = F.check_float_array(x, "Dropout input")
        if not self.training or self.p == 0.0:
            self._mask = None
            return self._keep_output(x)
        if not backend.owns(self._calls):
            self._calls = backend.asarray(self._calls)
        y, self._mask = backend.dropout_forward(x, self.p, self.seed, self._calls)
        self._calls += 1
        return self._keep_output(y)

    def backward(self, grad_out):
        self._check_grad_out(grad_out)
        return grad_out if self._mask is None else grad_out * self._mask

    def own_random_state(self) -> dict[str, int]:
        return {"seed": self.seed, "calls": self.calls}

    def load_own_random_state(self, state: dict[str, int]) -> None:
        self.seed, self.calls = int(state["seed"]), int(state["calls"])

    def extra_repr(self) -> str:
        return f"p={self.p}"
