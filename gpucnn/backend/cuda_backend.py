"""The CUDA backend: the launchers of every kernel of ``kernels_cuda/``, written once for two
runners.

:class:`CudaBackend` gathers the launchers, one class per kernel family (``launchers/<family>.py``
beside ``kernels_cuda/<family>.cu``; winograd's extends conv2d's). They allocate only through
``self.xp`` and reach kernels only through ``self.runner.module(...)``, so the same code drives
CuPy on a GPU (``cupy_backend.CupyBackend``, device ``"cuda"``) and NumPy under the CPU emulation
runner (``"cuda-emu"``). What every launcher checks and how it passes scalars:
:mod:`gpucnn.backend.launchers.launching`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import read_in_capture
from .launchers.activation import ActivationLaunchers
from .launchers.batchnorm import BatchNormLaunchers
from .launchers.dropout import DropoutLaunchers
from .launchers.optim import OptimLaunchers
from .launchers.pool2d import Pool2dLaunchers
from .launchers.softmax_xent import SoftmaxXentLaunchers
from .launchers.winograd import WinogradLaunchers


class CudaBackend(
    WinogradLaunchers,  # conv2d.cu's launchers, with Winograd where it applies
    Pool2dLaunchers,
    ActivationLaunchers,
    DropoutLaunchers,
    BatchNormLaunchers,
    SoftmaxXentLaunchers,
    OptimLaunchers,
):
    """The CUDA kernels' launchers over an array module ``xp`` and a kernel ``runner``."""

    name = "cuda"

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self._functions = {}
        self.capture_safe = False
        self.capturing = False

    def to_numpy(self, a: Any) -> Any:
        """A host copy of ``a``; a GraphCaptureError while a graph session captures a step."""
        if self.capturing:
            raise read_in_capture("to_numpy()")
        return self._host_copy(a)

    def _host_copy(self, a: Any) -> Any:
        raise NotImplementedError

    def capturing_graph(self) -> contextlib.AbstractContextManager:
        """Within: a graph session is capturing a step, which must not read the device."""
        return raised(self, "capturing")

    def capture_safe_ops(self) -> contextlib.AbstractContextManager:
        """Within: only ops a CUDA graph capture allows (see :meth:`linear_forward`)."""
        return raised(self, "capture_safe")


@contextlib.contextmanager
def raised(owner: Any, flag: str) -> Iterator[None]:
    """Within: ``owner.<flag>`` is True; False again after."""
    setattr(owner, flag, True)
    try:
        yield
    finally:
        setattr(owner, flag, False)
