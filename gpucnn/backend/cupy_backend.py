"""Device ``"cuda"``: the CUDA launchers over CuPy arrays; checks that say why a GPU is unusable."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GpuUnavailableError
from . import kernels
from .cuda_backend import CudaBackend


class CupyBackend(CudaBackend):
    """Device ``"cuda"``: CuPy arrays on the current GPU, kernels compiled by CuPy (NVRTC)."""

    def __init__(self) -> None:
        import cupy

        super().__init__(kernels.CupyRunner())
        self.xp = cupy

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a)

    def owns(self, a: Any) -> bool:
        return isinstance(a, self.xp.ndarray)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def warmup(self) -> None:
        """Compile every kernel family now rather than at first use."""
        self.runner.warmup()


_INSTALL = "pip install 'gpucnn[cuda12]' (CUDA 12 driver) or 'gpucnn[cuda13]' (CUDA 13 driver)"


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def _check_device(cupy: Any) -> None:
    """Raise GpuUnavailableError naming what is missing: driver, device, or the right CuPy wheel."""
    runtime = cupy.cuda.runtime
    try:
        driver = runtime.driverGetVersion()
        wheel = runtime.runtimeGetVersion()
    except Exception as err:  # CuPy raises its own CUDARuntimeError, or fails to load libcudart
        raise GpuUnavailableError(
            f"the CUDA runtime could not be loaded ({err}); {_INSTALL}"
        ) from err
    if driver == 0:
        raise GpuUnavailableError("no NVIDIA driver found: install the NVIDIA driver to use 'cuda'")
    if driver // 1000 < wheel // 1000:
        raise GpuUnavailableError(
            f"the installed CuPy wheel needs CUDA {_cuda_version(wheel)} but the NVIDIA driver "
            f"supports CUDA {_cuda_version(driver)}: update the driver, or install the CuPy "
            f"wheel for your driver instead: {_INSTALL}"
        )
    try:
        count = runtime.getDeviceCount()
    except Exception as err:
        raise GpuUnavailableError(f"no usable NVIDIA GPU: {err}") from err
    if count == 0:
        raise GpuUnavailableError("no NVIDIA GPU found (the driver reports 0 devices)")


def create_cuda_backend() -> CupyBackend:
    """The ``"cuda"`` backend, or one GpuUnavailableError saying what is missing and the fix."""
    try:
        import cupy
    except ModuleNotFoundError as err:
        if err.name != "cupy":
            raise GpuUnavailableError(f"CuPy failed to import ({err}); {_INSTALL}") from err
        raise GpuUnavailableError(f"CuPy is not installed: {_INSTALL}") from err
    except Exception as err:  # a broken install: two CuPy wheels, missing CUDA libraries, ...
        raise GpuUnavailableError(
            f"CuPy failed to import ({err}); reinstall one wheel: {_INSTALL}"
        ) from err
    _check_device(cupy)
    return CupyBackend()
