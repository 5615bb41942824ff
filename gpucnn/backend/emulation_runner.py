"""The emulation runner: CUDA C kernels launched on the CPU with CuPy's ``RawKernel`` call shape.

``EmulationRunner().module(family, names).get_function(name)(grid, block, args, shared_mem=0)``
mirrors ``cupy.RawModule(code=..., name_expressions=names).get_function(name)(...)``. The
arguments are checked against the kernel's C++ parameter types; every array is copied between guard
zones, so writes out of bounds are reported and reads out of bounds read NaN (all-ones bytes).
``GPUCNN_EMU_FENCE=after`` (or ``before``) puts each array's end (or start) against a page no access
may touch, so that a read just past it, whose value may never be used, ends the process with
SIGSEGV and the Python stack of the launch (as compute-sanitizer's memcheck stops a GPU run): for a
test's child process, or a debugging run.
"""

from __future__ import annotations

import ctypes
import faulthandler
import hashlib
import mmap
import os
import platform
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import kernels
from .emulation_build import EmulationBuildError, build, find_compiler, translate

_ALIGNMENT = 256  # the largest alignment a kernel may test for (CUDA allocations have 256)
# Under a fence, the widest access (a 16-byte pack): at most 15 bytes between array and fence.
_FENCED_ALIGNMENT = 16
_libc = ctypes.CDLL(None, use_errno=True)  # mprotect, for GPUCNN_EMU_FENCE
# Whether the runtime can flush subnormal floats as a GPU does (emulation_runtime.h: x86-64's MXCSR).
FLUSHES_SUBNORMALS = platform.machine() in ("x86_64", "amd64")
POISON_ENV = "GPUCNN_EMU_POISON"
ORDER_ENV = "GPUCNN_EMU_ORDER"
FENCE_ENV = "GPUCNN_EMU_FENCE"
RACECHECK_ENV = "GPUCNN_EMU_RACECHECK"
_SETTINGS = {  # default first
    ORDER_ENV: ("usual", "reverse"),
    POISON_ENV: ("nan", "finite"),
    FENCE_ENV: ("none", "after", "before"),
    RACECHECK_ENV: ("off", "on"),
}


def check_settings() -> None:
    """A ValueError for a ``GPUCNN_EMU_*`` value the runtime does not know: it would silently
    run the usual order or poison (or fence each array's start, not its end, or check no race),
    and a test that believes it ran perturbed (fenced, race-checked) as asked checks nothing."""
    for name, values in _SETTINGS.items():
        value = os.environ.get(name)
        if value and value not in values:
            raise ValueError(f"{name}={value!r}: expected {' or '.join(values)}, or unset")


def poison_byte() -> int:
    """The byte that fills guard zones, fresh shared and fresh device memory: 0xFF (NaN as a
    float, -1 as an int), or 0x3F with ``GPUCNN_EMU_POISON=finite`` (0.747 as a float32,
    finite). A kernel that reads memory it should not gives other bits under the two, even
    where an op absorbs a NaN (a maximum drops it)."""
    check_settings()
    return 0x3F if os.environ.get(POISON_ENV) == "finite" else 0xFF


GUARD_BYTES = 4096
SHARED_LIMIT = 48 * 1024
_BLOCK_LIMITS = (1024, 1024, 64)
_GRID_LIMITS = (2**31 - 1, 65535, 65535)
_LAUNCH_LOCK = threading.Lock()  # the compiled libraries keep one launch's state in globals
_NUMPY_NAME = {
    ("f", 4): "numpy.float32",
    ("f", 8): "numpy.float64",
    ("i", 1): "numpy.int8",
    ("i", 2): "numpy.int16",
    ("i", 4): "numpy.int32",
    ("i", 8): "numpy.int64",
}


class EmulationError(RuntimeError):
    """An emulated kernel misbehaved: out-of-bounds write, divergent barrier, failed assert."""


class _ParamInfo(ctypes.Structure):
    _fields_ = [
        ("is_pointer", ctypes.c_int),
        ("size", ctypes.c_int),
        ("category", ctypes.c_char),
        ("type_name", ctypes.c_char_p),
    ]


class _KernelEntry(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("nparams", ctypes.c_int),
        ("params", ctypes.POINTER(_ParamInfo)),
        ("fn", ctypes.c_void_p),
        ("launch", ctypes.c_void_p),
    ]


class _Param:
    def __init__(self, info: _ParamInfo):
        self.is_pointer = bool(info.is_pointer)
        self.size = info.size
        self.category = info.category.decode()
        self.type_name = info.type_name.decode()

    def numpy_hint(self) -> str:
        return _NUMPY_NAME.get((self.category, self.size), f"a {self.size}-byte NumPy scalar")


def _category(dtype: np.dtype) -> str:
    return "f" if dtype.kind == "f" else "i" if dtype.kind in "iub" else "o"


def _dims(value: Any, what: str, limits: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(value) if isinstance(value, tuple | list) else (value,)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, int | np.integer) for d in dims):
        raise TypeError(f"{what} must be an int or a tuple of 1 to 3 ints, got {value!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if any(d < 1 or d > lim for d, lim in zip(dims, limits, strict=True)):
        raise ValueError(f"invalid launch configuration: {what} {dims} outside 1..{limits}")
    return dims


class _Region:
    """One guarded copy of a stretch of host memory (one array, or arrays that overlap).

    The guards repeat the bytes (tag, P, P, P), P the :func:`poison_byte`: NaN read as float32 or
    float64, negative as an integer. ``tag`` differs per region, so a value copied from one guard
    into another is seen.
    The copy keeps the host address's offset from a 256-byte boundary, so a kernel sees a view one
    element into its array as unaligned, as on a GPU (and takes its unaligned path). Under
    ``GPUCNN_EMU_FENCE`` one guard shrinks to the under 16 bytes that keep the offset from a
    16-byte boundary, and a page no access may touch lies beyond it (:func:`_fenced_buffer`).
    """

    def __init__(self, start: int, end: int, tag: int):
        self.start, self.end = start, end
        size = end - start
        fence = os.environ.get(FENCE_ENV) or "none"  # empty: unset, as check_settings takes it
        if fence == "none":
            room = np.empty(2 * GUARD_BYTES + size + _ALIGNMENT, np.uint8)
            shift = (start - room.ctypes.data - GUARD_BYTES) % _ALIGNMENT
            self.buffer = room[shift : shift + 2 * GUARD_BYTES + size]
            self.below = GUARD_BYTES
        else:
            self.buffer, self.below = _fenced_buffer(start, size, fence == "after")
            if not faulthandler.is_enabled():  # a fault at a fence prints the Python stack
                faulthandler.enable()
        p = poison_byte()
        self.guard = np.resize(np.array([tag & 0xFF, p, p, p], np.uint8), GUARD_BYTES)
        self.above = len(self.buffer) - self.below - size
        self.buffer[: self.below] = self.guard[: self.below]
        self.buffer[self.below + size :] = self.guard[: self.above]
        self.base = self.buffer.ctypes.data + self.below
        ctypes.memmove(self.base, start, end - start)
        self.members: list[tuple[int, np.ndarray]] = []

    def host_bytes(self) -> np.ndarray:
        return np.ctypeslib.as_array(
            (ctypes.c_uint8 * (self.end - self.start)).from_address(self.start)
        )

    def overrun(self) -> str | None:
        """Describe a changed guard byte, or None when both guards are intact."""
        size = self.end - self.start
        below = np.flatnonzero(self.buffer[: self.below] != self.guard[: self.below])
        above = np.flatnonzero(self.buffer[self.below + size :] != self.guard[: self.above])
        if above.size:
            index, a = max(self.members, key=lambda m: m[1].ctypes.data + m[1].nbytes)
            return (
                f"wrote past the end of argument {index} ({a.dtype} array, {a.size} elements): "
                f"first stray write at element {a.size + above[0] // a.itemsize}"
            )
        if below.size:
            index, a = min(self.members, key=lambda m: m[1].ctypes.data)
            before = (self.below - below[-1] - 1) // a.itemsize + 1
            return (
                f"wrote before the start of argument {index} ({a.dtype} array, {a.size} "
                f"elements): stray write at element -{before}"
            )
        return None

    def copy_back(self) -> bool:
        """Copy the device bytes back to the host arrays; False if a read-only array changed."""
        size = self.end - self.start
        device = self.buffer[self.below : self.below + size]
        if all(a.flags.writeable for _, a in self.members):
            ctypes.memmove(self.start, self.base, size)
            return True
        return bool(np.array_equal(device, self.host_bytes()))


def _fenced_buffer(start: int, size: int, after: bool) -> tuple[np.ndarray, int]:
    """(buffer, bytes below the array) for ``size`` bytes copied from ``start``: a guard zone on
    one side; on the other, a page mapped with no access, the array's end (``after``) or start
    as close to it as its offset from a 16-byte boundary allows. Freeing the buffer unmaps it."""
    page = mmap.PAGESIZE
    pages = -(-(size + GUARD_BYTES + _FENCED_ALIGNMENT) // page)
    room = np.frombuffer(mmap.mmap(-1, (pages + 1) * page), np.uint8)  # holds the mapping
    fence = room.ctypes.data + (pages * page if after else 0)
    if _libc.mprotect(ctypes.c_void_p(fence), ctypes.c_size_t(page), 0):
        raise OSError(ctypes.get_errno(), "mprotect could not fence a guard page")
    room = room[: pages * page] if after else room[page:]
    if after:
        base = len(room) - size
        base -= (room.ctypes.data + base - start) % _FENCED_ALIGNMENT
        return room[base - GUARD_BYTES :], GUARD_BYTES
    below = (start - room.ctypes.data) % _FENCED_ALIGNMENT
    return room[: below + size + GUARD_BYTES], below


class EmulatedKernel:
    """One kernel of an emulated module, called like ``cupy.RawKernel``."""

    def __init__(self, module: EmulatedModule, index: int, entry: _KernelEntry):
        self._module = module
        self._index = index
        self.name = entry.name.decode()
        self.params = [_Param(entry.params[i]) for i in range(entry.nparams)]
        self.launches = 0  # completed launches, for coverage checks
        # CuPy compiles with -ftz=true: a kernel that works in float flushes subnormals to zero.
        floats = any(p.category == "f" and p.size == 4 for p in self.params)
        self.flushes_subnormals = FLUSHES_SUBNORMALS and floats

    def _fail(self, index: int, problem: str) -> TypeError:
        p = self.params[index]
        return TypeError(f"kernel {self.name}: argument {index} ({p.type_name}) {problem}")

    def _check_array(self, i: int, a: np.ndarray) -> None:
        p = self.params[i]
        if not p.is_pointer:
            raise self._fail(i, f"is a scalar parameter, got a {a.dtype} array")
        if self._module.device_arrays_only and not isinstance(a, self._module.device_array_type):
            raise self._fail(i, "got a host numpy.ndarray; a GPU kernel needs a device array")
        if not a.flags.c_contiguous:
            raise self._fail(
                i,
                f"got a non-contiguous array (shape {a.shape}, strides "
                f"{a.strides}); a kernel reads raw memory, pass a contiguous copy",
            )
        fits = p.category == "v" or (
            p.size == a.itemsize and (p.category not in "fi" or p.category == _category(a.dtype))
        )
        if not fits:
            raise self._fail(i, f"got a {a.dtype} array ({a.itemsize}-byte elements)")

    def _scalar(self, i: int, value: Any) -> ctypes.Array:
        p = self.params[i]
        if isinstance(value, bool | int | float | complex) and not isinstance(value, np.generic):
            raise self._fail(
                i,
                f"got a Python {type(value).__name__}; CuPy would send it as a "
                f"64-bit value: pass {p.numpy_hint()}",
            )
        if not isinstance(value, np.generic):
            raise self._fail(i, f"got an unsupported argument of type {type(value).__name__}")
        if p.is_pointer:
            raise self._fail(i, f"is a pointer parameter, got the scalar {value!r}")
        cat = _category(value.dtype)
        if value.itemsize != p.size or (p.category in "fi" and cat != p.category):
            raise self._fail(
                i, f"got numpy.{value.dtype} ({value.itemsize} bytes): pass {p.numpy_hint()}"
            )
        return ctypes.create_string_buffer(value.tobytes(), max(value.itemsize, 1))

    def __call__(
        self, grid: Any, block: Any, args: Sequence[Any], shared_mem: int = 0, stream: Any = None
    ) -> None:
        """Launch over ``grid`` x ``block`` threads; arrays are updated in place, as on a GPU.

        ``stream`` is accepted for CuPy compatibility and ignored: emulated launches are blocking.
        """
        check_settings()
        grid3 = _dims(grid, "grid", _GRID_LIMITS)
        block3 = _dims(block, "block", _BLOCK_LIMITS)
        if block3[0] * block3[1] * block3[2] > _BLOCK_LIMITS[0]:
            raise ValueError(
                f"invalid launch configuration: block {block3} has more than 1024 threads"
            )
        if not 0 <= int(shared_mem) <= SHARED_LIMIT:
            raise ValueError(f"shared_mem={shared_mem} outside 0..{SHARED_LIMIT} bytes")
        args = tuple(args)
        if len(args) != len(self.params):
            raise TypeError(
                f"kernel {self.name} takes {len(self.params)} arguments, got {len(args)}"
            )
        keep: list[Any] = []
        pointers = (ctypes.c_void_p * max(len(args), 1))()
        arrays: list[tuple[int, np.ndarray]] = []
        for i, a in enumerate(args):
            if a is None and self.params[i].is_pointer:
                keep.append(ctypes.c_void_p(None))
            elif isinstance(a, np.ndarray):
                self._check_array(i, a)
                arrays.append((i, a))
                keep.append(ctypes.c_void_p())
            else:
                keep.append(self._scalar(i, a))
            pointers[i] = ctypes.addressof(keep[-1])
        regions = _regions(arrays)
        for region in regions:
            for i, a in region.members:
                keep[i].value = region.base + (a.ctypes.data - region.start)
        with _LAUNCH_LOCK:
            self._module.launch(
                self._index, self.name, grid3, block3, int(shared_mem), pointers,
                self.flushes_subnormals,
            )  # fmt: skip
        self.launches += 1
        for region in regions:
            problem = region.overrun()
            if problem:
                raise EmulationError(f"kernel {self.name} {problem}")
        for region in regions:
            if not region.copy_back():
                indices = ", ".join(str(i) for i, _ in region.members)
                raise EmulationError(f"kernel {self.name} wrote to read-only argument {indices}")


def _regions(arrays: list[tuple[int, np.ndarray]]) -> list[_Region]:
    """Guarded copies of the arrays' memory; arrays that overlap share one (aliasing is kept)."""
    spans = sorted(arrays, key=lambda m: m[1].ctypes.data)
    regions: list[_Region] = []
    groups: list[list[tuple[int, np.ndarray]]] = []
    end = -1
    for member in spans:
        start = member[1].ctypes.data
        if groups and start < end:
            groups[-1].append(member)
            end = max(end, start + member[1].nbytes)
        else:
            groups.append([member])
            end = start + member[1].nbytes
    for tag, group in enumerate(groups):
        start = group[0][1].ctypes.data
        region = _Region(start, max(a.ctypes.data + a.nbytes for _, a in group), tag)
        region.members = group
        regions.append(region)
    return regions


class EmulatedModule:
    """The kernels of one built source; ``get_function`` as on ``cupy.RawModule``."""

    def __init__(self, path: str, device_array_type: type | None):
        self._lib = ctypes.CDLL(path)
        self._lib.gpucnn_emu_kernel.restype = ctypes.POINTER(_KernelEntry)
        self._lib.gpucnn_emu_launch.restype = ctypes.c_int
        self.device_array_type = device_array_type or np.ndarray
        self.device_arrays_only = device_array_type is not None
        self._kernels: dict[str, EmulatedKernel] = {}
        for k in range(self._lib.gpucnn_emu_kernel_count()):
            entry = self._lib.gpucnn_emu_kernel(k).contents
            kernel = EmulatedKernel(self, k, entry)
            self._kernels[kernel.name] = kernel

    def get_function(self, name_expression: str) -> EmulatedKernel:
        """The kernel registered under ``name_expression``."""
        try:
            return self._kernels[name_expression]
        except KeyError:
            raise KeyError(
                f"{name_expression!r} is not among this module's name expressions "
                f"{sorted(self._kernels)}"
            ) from None

    def launch(
        self, index: int, name: str, grid, block, shared_mem: int, pointers, flush: bool
    ) -> None:
        """Run kernel ``index`` (called by EmulatedKernel with the guarded argument pointers);
        ``flush``: subnormal floats flush to zero, as on a GPU under CuPy's -ftz=true."""
        err = ctypes.create_string_buffer(1024)
        rc = self._lib.gpucnn_emu_launch(
            ctypes.c_int(index),
            (ctypes.c_uint * 3)(*grid),
            (ctypes.c_uint * 3)(*block),
            ctypes.c_ulonglong(shared_mem),
            pointers,
            ctypes.c_int(flush),
            err,
            ctypes.c_int(len(err)),
        )
        if rc:
            raise EmulationError(f"kernel {name}: {err.value.decode(errors='replace')}")


class EmulationRunner:
    """Builds CUDA C sources with the host C++ compiler and runs their kernels on the CPU.

    ``device_array_type``: when given (the ``cuda-emu`` backend passes ``EmuArray``), array
    arguments of any other type are refused, as CuPy refuses NumPy arrays. ``extra_flags`` go to
    g++ after the standard ones. ``compiles`` counts g++ runs (0 when all came from the cache).
    """

    def __init__(self, device_array_type: type | None = None, extra_flags: Sequence[str] = ()):
        cxx = find_compiler()
        if cxx is None:
            raise EmulationBuildError("no C++ compiler found: install g++ or set CXX")
        self.cxx = cxx
        self.extra_flags = tuple(extra_flags)
        self.device_array_type = device_array_type
        self.compiles = 0
        self._modules: dict[str, EmulatedModule] = {}

    def module(self, family: str, name_expressions: Sequence[str]) -> EmulatedModule:
        """The kernels ``name_expressions`` of ``<family>.cu``, read by ``kernels.load_source``."""
        source = kernels.load_source(family)
        return self.module_from_source(source, name_expressions, f"{family}.cu")

    def warmup(self) -> None:
        """Build every kernel family of ``kernels.kernel_dir()`` now (each once per cache)."""
        for family in kernels.families():
            self.module(family, kernels.name_expressions(family))

    def module_from_source(
        self, source: str, name_expressions: Sequence[str], label: str = "kernel.cu"
    ) -> EmulatedModule:
        """Build (or fetch from the cache) ``source`` and export ``name_expressions``."""
        cpp = translate(source, list(name_expressions), label)
        key = hashlib.sha256(cpp.encode()).hexdigest()
        if key not in self._modules:
            path, compiled = build(cpp, self.cxx, self.extra_flags)
            self.compiles += compiled
            self._modules[key] = EmulatedModule(str(path), self.device_array_type)
        return self._modules[key]
