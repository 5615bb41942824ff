"""Exceptions that name what is wrong and how to fix it."""


class GpuUnavailableError(RuntimeError):
    """The CUDA device was asked for but cannot be used (no CuPy, driver, GPU; wrong wheel)."""


class DeviceMismatchError(ValueError):
    """Arrays from different devices were mixed in one operation."""
