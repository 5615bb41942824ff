"""``gpucnn info``: versions, devices and where compiled CUDA kernels are cached."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from .backend import emulation_build, get_backend
from .errors import GpuUnavailableError


def package_version(package: str) -> str | None:
    """The installed version of distribution ``package``, or None where it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _device_status(device: str) -> str:
    try:
        backend = get_backend(device)
    except (GpuUnavailableError, ImportError, OSError, RuntimeError) as err:
        return f"unavailable: {err}"
    return f"available ({type(backend).__name__})"


def _cuda_versions() -> str:
    try:
        import cupy
    except ImportError:
        return "CuPy not installed (pip install 'gpucnn[cuda12]' or 'gpucnn[cuda13]')"
    try:
        runtime = cupy.cuda.runtime.runtimeGetVersion()
        driver = cupy.cuda.runtime.driverGetVersion()
    except Exception as err:  # noqa: BLE001 - any CUDA failure is reported, not raised
        return f"CuPy {cupy.__version__}; CUDA not usable: {err}"
    return f"CuPy {cupy.__version__}, CUDA runtime {runtime}, driver {driver}"


def kernel_cache_dir() -> Path:
    """Where CuPy keeps compiled kernels: $CUPY_CACHE_DIR, else ~/.cupy/kernel_cache."""
    return Path(os.environ.get("CUPY_CACHE_DIR", Path.home() / ".cupy" / "kernel_cache"))


def describe() -> str:
    """A few lines about this installation, its devices and its kernel cache."""
    lines = [
        f"gpucnn {package_version('gpucnn') or '(not installed, run from a checkout)'}",
        f"Python {platform.python_version()}, NumPy {np.__version__}, {platform.platform()}",
        *(f"device {d:<9}{_device_status(d)}" for d in ("cpu", "cuda", "cuda-emu")),
        _cuda_versions(),
        f"kernel cache (cuda, CuPy's): {kernel_cache_dir()}",
        f"kernel cache (cuda-emu): {emulation_build.cache_dir()}",
    ]
    return "\n".join(lines)
