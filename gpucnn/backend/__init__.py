"""Device backends: ``get_backend(device)``, the backend of an array, moving arrays across devices.

Devices: ``"cpu"`` (NumPy), ``"cuda"`` (CuPy + gpucnn's CUDA kernels), ``"cuda-emu"`` (the same CUDA
kernels and launchers run on the CPU by the emulation runner, for testing without a GPU) and
``"auto"`` (the GPU when usable, else the CPU, saying so once).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..errors import GpuUnavailableError
from .base import Backend

DEVICES = ("cpu", "cuda", "cuda-emu", "auto")

_instances: dict[str, Backend] = {}
_auto_fallback_reported = False


def _create(device: str) -> Backend:
    if device == "cpu":
        from .numpy_backend import NumpyBackend

        return NumpyBackend()
    if device == "cuda":
        from .cupy_backend import create_cuda_backend

        return create_cuda_backend()
    if device == "cuda-emu":
        from .emulation import create_emulated_backend

        return create_emulated_backend()
    raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")


def get_backend(device: str | Backend = "cpu") -> Backend:
    """The backend for ``device`` (one instance per device per process).

    ``"cuda"`` raises :class:`GpuUnavailableError` naming what is missing; ``"auto"`` returns the
    CUDA backend when it is usable and otherwise the CPU backend, printing the reason once.
    """
    global _auto_fallback_reported
    if isinstance(device, Backend):
        return device
    if device == "auto":
        try:
            return get_backend("cuda")
        except GpuUnavailableError as err:
            if not _auto_fallback_reported:
                print(f"gpucnn: device 'auto' uses the CPU: {err}", file=sys.stderr)
                _auto_fallback_reported = True
            return get_backend("cpu")
    if not isinstance(device, str) or device not in _instances:  # _create refuses a list by name
        _instances[device] = _create(device)
    return _instances[device]


def backend_of(array: Any, name: str = "") -> Backend:
    """The backend whose device holds ``array``; a TypeError, naming the argument ``name`` when
    given, for anything that is not an array (a list, say: arrays are never made implicitly)."""
    if type(array) is np.ndarray:  # the CPU's, whatever else is registered: every op asks
        return get_backend("cpu")
    for backend in _instances.values():
        if backend.name != "cpu" and backend.owns(array):
            return backend
    if type(array).__module__.split(".")[0] == "cupy":
        return get_backend("cuda")
    cpu = get_backend("cpu")
    if cpu.owns(array):
        return cpu
    what = f"{name} must be" if name else "expected"
    raise TypeError(f"{what} a NumPy or CuPy array, got {type(array).__name__}")


def to_device(array: Any, device: str | Backend) -> Any:
    """Copy ``array`` (from any device) to ``device``; returns it unchanged if already there."""
    return get_backend(device).asarray(array)


__all__ = ["Backend", "DEVICES", "GpuUnavailableError", "backend_of", "get_backend", "to_device"]
