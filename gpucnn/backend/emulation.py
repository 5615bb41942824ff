"""The ``cuda-emu`` device: gpucnn's CUDA kernels and launchers, run on the CPU.

:class:`EmulationRunner` (in ``emulation_runner``) builds ``kernels_cuda/*.cu`` with g++ against
``cuda_compat.h`` and launches kernels with CuPy's ``RawKernel`` call shape; each block's threads
run as fibers, so barriers, shared memory and warp shuffles behave as on a GPU, and every array sits
between guard zones that catch out-of-bounds accesses. :class:`EmulatedCudaBackend` is the CUDA
backend with this runner in place of CuPy's and NumPy (wrapped by :data:`xp`) in place of CuPy, so
the launchers run unchanged. Slow; it is for tests and for debugging kernels without a GPU.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import GpuUnavailableError, read_in_capture
from .cuda_backend import CudaBackend, raised
from .emulation_build import EmulationBuildError, find_compiler
from .emulation_runner import (
    EmulatedKernel,
    EmulatedModule,
    EmulationError,
    EmulationRunner,
    poison_byte,
)


class EmuArray(np.ndarray):
    """A NumPy array that lives on the emulated device.

    Mixing one with a host ``numpy.ndarray`` in arithmetic raises TypeError, as CuPy refuses NumPy
    arrays (NumPy scalars and Python numbers are fine).
    """

    gpucnn_device = "cuda-emu"  # so the CPU backend knows this array is not its own

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out", ())
        for a in (*inputs, *out):
            if isinstance(a, np.ndarray) and not isinstance(a, EmuArray):
                raise TypeError(
                    f"cuda-emu: {ufunc.__name__} mixes a device array with a host numpy.ndarray "
                    f"of shape {a.shape}; move it with backend.asarray() first"
                )
        inputs = tuple(_plain(a) for a in inputs)
        if out:
            kwargs["out"] = tuple(_plain(a) for a in out)
        result = getattr(ufunc, method)(*inputs, **kwargs)
        if out:
            return out[0] if len(out) == 1 else out
        return _wrap(result, scalars=True)

    # As CuPy: an element is a 0-d device array, so indexing and iterating read nothing back.
    def __getitem__(self, key: Any) -> Any:
        item = super().__getitem__(key)
        return np.asarray(item).view(EmuArray) if isinstance(item, np.generic) else item

    def __iter__(self) -> Any:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self)))


# The reads of the device an EmuArray refuses while a graph session captures a step, as a GPU
# would: ndarray's method, and how the error names the read.
_HOST_READS = {
    "__bool__": "bool()", "__float__": "float()", "__int__": "int()", "__complex__": "complex()",
    "__index__": "use as an index", "__format__": "format()", "item": ".item()",
    "tolist": ".tolist()", "__repr__": "repr()", "__str__": "str()",
}  # fmt: skip


def _refused_in_capture(name: str, how: str) -> Callable:
    """ndarray's method ``name``, raising GraphCaptureError (naming ``how``) in a capture."""
    method = getattr(np.ndarray, name)

    def read(self: EmuArray, *args: Any) -> Any:
        _check_host_read(how)
        return method(self, *args)

    read.__name__ = read.__qualname__ = name
    return read


for _name, _how in _HOST_READS.items():
    setattr(EmuArray, _name, _refused_in_capture(_name, _how))


# Set while a graph session captures a step (EmulatedCudaBackend.capturing_graph): for every
# thread, as the backend's own ``capturing``.
_capture = types.SimpleNamespace(active=False)


def _check_host_read(how: str) -> None:
    if _capture.active:
        raise read_in_capture(how)


def _plain(a: Any) -> Any:
    return a.view(np.ndarray) if isinstance(a, EmuArray) else a


def _wrap(result: Any, scalars: bool = False) -> Any:
    """``result`` with ndarrays (and, if ``scalars``, NumPy scalars: CuPy's 0-d) as EmuArray."""
    if isinstance(result, np.ndarray):
        return result if isinstance(result, EmuArray) else result.view(EmuArray)
    if scalars and isinstance(result, np.generic):
        return np.asarray(result).view(EmuArray)
    if isinstance(result, tuple | list):
        return type(result)(_wrap(r, scalars) for r in result)
    return result


class _DeviceCallable:
    """A NumPy function or ufunc whose array results come back as EmuArray."""

    def __init__(self, fn: Any):
        self._fn = fn

    def __call__(self, *args, **kwargs):
        return _wrap(self._fn(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return _device(getattr(self._fn, name))


class _DeviceNumpy:
    """NumPy as the array module of the emulated device (``xp``): same names, EmuArray results.

    Types (``xp.float32``, ``xp.ndarray``, ``xp.dtype``) and constants are NumPy's own;
    submodules (``xp.linalg``, ``xp.random``) are wrapped in turn.
    """

    def __init__(self, module: types.ModuleType):
        self._module = module

    def __getattr__(self, name: str) -> Any:
        if self._module is np and name in ("empty", "empty_like"):
            return _DeviceCallable(_poisoned(getattr(np, name)))
        return _device(getattr(self._module, name))


def _poisoned(make: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """``np.empty`` or ``np.empty_like`` whose arrays hold the poison bytes (:func:`poison_byte`:
    NaN, -1) rather than what NumPy's memory happens to hold: zeros, often, or a freed array's
    values, such as a previous run's right answer. A kernel that leaves an output unwritten
    then shows, as on a GPU, where fresh memory holds anything."""

    def empty(*args: Any, **kwargs: Any) -> np.ndarray:
        a = make(*args, **kwargs)
        a[...] = np.frombuffer(bytes([poison_byte()]) * a.dtype.itemsize, a.dtype)[0]
        return a

    return empty


def _device(attr: Any) -> Any:
    if isinstance(attr, types.ModuleType):
        return _DeviceNumpy(attr)
    if callable(attr) and not isinstance(attr, type):
        return _DeviceCallable(attr)
    return attr


xp = _DeviceNumpy(np)


class EmulatedCudaBackend(CudaBackend):
    """Device ``"cuda-emu"``: the CUDA backend's launchers over EmuArray and the EmulationRunner."""

    name = "cuda-emu"

    def __init__(self) -> None:
        super().__init__(EmulationRunner(device_array_type=EmuArray))
        self.xp = xp
        self.launch_log: list | None = None  # kernel launches, recorded by a graph session

    def asarray(self, a: Any, dtype: Any = None) -> EmuArray:
        """``a`` (NumPy, EmuArray, CuPy or anything array-like) as a device array."""
        if isinstance(a, EmuArray):
            return a if dtype is None else a.astype(dtype, copy=False)
        if hasattr(a, "get") and not isinstance(a, np.ndarray):
            a = a.get()
        return np.array(a, dtype=dtype, copy=True).view(EmuArray)

    @contextlib.contextmanager
    def capturing_graph(self) -> Iterator[None]:
        """As on a GPU, and the device arrays' own reads (``float()``, ``bool()``, printing)
        refused too."""
        with super().capturing_graph(), raised(_capture, "active"):
            yield

    def _host_copy(self, a: Any) -> np.ndarray:
        """A host copy of ``a`` as a plain ``numpy.ndarray``."""
        return np.array(_plain(a), copy=True)

    def owns(self, a: Any) -> bool:
        """True for EmuArray, the emulated device's arrays."""
        return isinstance(a, EmuArray)

    def warmup(self) -> None:
        """Build every kernel family now rather than at first use."""
        self.runner.warmup()

    def _launch(self, family: str, kernel: str, grid: tuple, *args: Any) -> None:
        if self.launch_log is not None:
            self.launch_log.append((kernel, grid, tuple(_frozen(a) for a in args)))
        super()._launch(family, kernel, grid, *args)

    def graph_session(self) -> EmulatedGraphSession:
        return EmulatedGraphSession(self)


def _frozen(arg: Any) -> Any:
    """What a CUDA graph keeps of a kernel argument: a scalar's value, an array's shape and dtype
    (its address too, which the emulation cannot compare: each replay allocates anew)."""
    if isinstance(arg, np.ndarray):
        return ("array", arg.dtype.str, arg.shape)
    return (np.asarray(arg).dtype.str, arg.item() if isinstance(arg, np.generic) else arg)


class EmulatedGraphSession:
    """The graph session of ``cuda-emu``: a check of what a CUDA graph would freeze.

    A real capture records the step's launches with their arguments by value, and every replay
    launches exactly those. Here each replay runs the step's Python again; the first replay's
    kernel launches are kept, and every later replay must launch the same kernels with the same
    grids, scalar arguments and array shapes, or :class:`EmulationError` says which argument
    changed (a step count, a learning rate, a seed passed by value would). As in a capture, a
    replay may not read the device (:class:`~gpucnn.errors.GraphCaptureError`). A GPU graph is
    not emulated beyond that: array addresses are not compared.
    """

    def __init__(self, backend: EmulatedCudaBackend) -> None:
        self._backend = backend
        self._step: tuple[Callable, tuple] | None = None
        self._launches: list | None = None
        self.replays = 0

    @property
    def captured(self) -> bool:
        return self._step is not None

    def run(self, fn: Callable, inputs: tuple) -> Any:
        """``fn(*inputs)``, eagerly, with the ops a capture allows."""
        with self._backend.capture_safe_ops():
            return fn(*inputs)

    def capture(self, fn: Callable, inputs: tuple) -> None:
        """Keep the step; as on a GPU, nothing runs until :meth:`replay`."""
        self._step = (fn, inputs)

    def replay(self) -> Any:
        """Run the step again and check its launches against the first replay's (which stands
        for the capture: if it fails, nothing is captured)."""
        assert self._step is not None, "replay before capture"
        log: list = []
        self._backend.launch_log = log
        try:
            with self._backend.capturing_graph():
                outputs = self.run(*self._step)
        except BaseException:
            if self._launches is None:  # the capture failed: as on a GPU, nothing is captured
                self._step = None
            raise
        finally:
            self._backend.launch_log = None
        self.replays += 1
        if self._launches is None:
            self._launches = log
        else:
            _check_same_launches(self._launches, log, self.replays)
        return outputs


def _check_same_launches(captured: list, replayed: list, replay: int) -> None:
    """Raise EmulationError at the first launch of ``replayed`` that a graph could not replay."""
    for index, (old, new) in enumerate(zip(captured, replayed, strict=False)):
        if old[:2] != new[:2]:
            raise EmulationError(
                f"graph replay {replay}: launch {index} is {new[0]} {new[1]}, but the captured "
                f"step launched {old[0]} {old[1]} there"
            )
        for position, (was, now) in enumerate(zip(old[2], new[2], strict=True)):
            if was != now:
                raise EmulationError(
                    f"graph replay {replay}: {new[0]} argument {position} is {now[-1]!r} but "
                    f"was {was[-1]!r} when captured; a CUDA graph replays the captured value "
                    "(keep per-step values in device memory)"
                )
    if len(captured) != len(replayed):
        raise EmulationError(
            f"graph replay {replay}: {len(replayed)} kernel launches, the captured step had "
            f"{len(captured)}"
        )


def create_emulated_backend() -> Any:
    """The ``cuda-emu`` backend; GpuUnavailableError if there is no C++ compiler for the kernels."""
    if find_compiler() is None:
        raise GpuUnavailableError(
            "device 'cuda-emu' needs a C++17 compiler to build the CUDA kernels for the CPU: "
            "install g++ (e.g. apt install g++) or set CXX"
        )
    return EmulatedCudaBackend()


__all__ = [
    "EmuArray",
    "EmulatedCudaBackend",
    "EmulatedGraphSession",
    "EmulatedKernel",
    "EmulatedModule",
    "EmulationBuildError",
    "EmulationError",
    "EmulationRunner",
    "create_emulated_backend",
    "xp",
]
