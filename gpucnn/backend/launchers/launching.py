"""What every launcher of the CUDA backend shares: grids, argument checks, kernel lookup.

The launchers themselves sit beside their kernels, one module per family:
``launchers/<family>.py`` for ``kernels_cuda/<family>.cu``. Every launcher checks dtypes (float32
or float64), makes its inputs C-contiguous (a kernel reads raw memory: a strided view would be read
wrongly), and casts each scalar to the kernel parameter's exact type: :data:`i64` for sizes and
indices (kernels take them 64-bit and switch to 32-bit index arithmetic themselves where every
index fits), :data:`i32` for ``int`` flags, and the array's own float type for ``T``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels
from ..base import Backend

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
BLOCK = 256  # BLOCK_1D in common.cuh, and GEMM_THREADS of conv2d.cu's tiles
MAX_GRID_1D = 65535  # grid-stride kernels cover larger arrays by looping
MAX_GRID_X = 2**31 - 1  # CUDA's limit on gridDim.x
MAX_GRID_YZ = 65535  # CUDA's limit on gridDim.y and gridDim.z
PLANE_LOOP_BLOCKS = 4096  # 1M threads: a few waves even on the largest GPUs
i64 = np.int64
i32 = np.int32


def blocks(count: int, per_block: int = BLOCK) -> int:
    """How many blocks of ``per_block`` cover ``count``."""
    return -(-count // per_block)


def grid_1d(count: int) -> tuple[int]:
    """Grid of a 1-D grid-stride kernel over ``count`` elements."""
    return (min(blocks(count), MAX_GRID_1D),)


def grid_per_item(op: str, count: int, item: str) -> tuple[int]:
    """Grid (count,) of a kernel with one block per ``item`` (a plane, a row); a ValueError past
    CUDA's limit on gridDim.x, where the launch itself would fail without saying why."""
    if count > MAX_GRID_X:
        raise ValueError(f"{op}: {count} {item}s, one block each, exceed the grid's {MAX_GRID_X}")
    return (count,)


def grid_plane_loop(plane_size: int, planes: int) -> tuple[int, int]:
    """Grid (pixel blocks, plane blocks) of a kernel whose threads each keep one pixel position
    and loop over planes: about PLANE_LOOP_BLOCKS blocks, so each thread's setup is shared by
    many planes of a large tensor."""
    x = blocks(plane_size)
    return (x, max(1, min(planes, PLANE_LOOP_BLOCKS // x, MAX_GRID_YZ)))


def shaped(op: str, shape: tuple, **arrays: Any) -> None:
    """Raise ValueError unless every array given has ``shape`` (a kernel would read past it)."""
    for name, a in arrays.items():
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(a.shape)}")


class Launching(Backend):
    """The helpers of every family's launchers, over an array module ``xp`` and a kernel
    ``runner`` (set by :class:`~gpucnn.backend.cuda_backend.CudaBackend`)."""

    runner: Any
    _functions: dict[tuple[str, str, str], Any]
    # True while a graph session runs a step: every op then avoids cuBLAS (see linear_forward).
    capture_safe: bool

    def _kernel(self, family: str, kernel: str, dtype: Any) -> Any:
        """The compiled ``kernel<T>`` of ``kernels_cuda/<family>.cu`` for float dtype ``dtype``."""
        key = (family, kernel, _CTYPES[np.dtype(dtype)])
        if key not in self._functions:
            module = self.runner.module(family, kernels.name_expressions(family))
            self._functions[key] = module.get_function(f"{kernel}<{key[2]}>")
        return self._functions[key]

    def _launch(self, family: str, kernel: str, grid: tuple, *args: Any) -> None:
        """Launch ``kernel<T>`` (T from args[0], always a T array) with 256-thread blocks; an
        empty grid launches nothing."""
        if all(grid):
            self._kernel(family, kernel, args[0].dtype)(grid, (BLOCK,), args)

    def _floats(self, op: str, *arrays: Any) -> tuple[Any, ...]:
        """``arrays`` C-contiguous (copied if needed), checked to share a float dtype."""
        dtype = arrays[0].dtype
        if dtype not in _CTYPES or any(a.dtype != dtype for a in arrays):
            got = ", ".join(str(a.dtype) for a in arrays)
            raise TypeError(f"{op}: expected float32 or float64 arrays of one dtype, got {got}")
        return tuple(a if a.flags.c_contiguous else self.xp.ascontiguousarray(a) for a in arrays)

    @staticmethod
    def _in_place(op: str, **arrays: Any) -> None:
        """Refuse arrays updated in place that are not C-contiguous (a copy would be lost)."""
        for name, a in arrays.items():
            if a is not None and not a.flags.c_contiguous:
                raise ValueError(f"{op}: {name} must be C-contiguous to be updated in place")

    def _labels(self, op: str, labels: Any, n: int, classes: int) -> Any:
        """labels (N,) of an integer dtype -> int64, C-contiguous. The range [0, classes) is checked
        once per step by ``functional.check_labels``, not again here (each check reads the GPU);
        where a caller skipped it, the forward kernel makes a bad label's loss NaN."""
        labels = self.xp.asarray(labels)
        if labels.shape != (n,) or labels.dtype.kind not in "iu":
            raise ValueError(
                f"{op}: labels must be ({n},) integers, got {labels.shape} {labels.dtype}"
            )
        return self.xp.ascontiguousarray(labels.astype(self.xp.int64, copy=False))

    def _counter(self, op: str, name: str, array: Any, dtype: Any, size: int) -> Any:
        """A device array of ``size`` values of ``dtype`` that a kernel reads by pointer (a call
        counter or an optimizer clock); refused unless it is exactly that, on this device."""
        if not self.owns(array) or array.dtype != dtype or array.shape != (size,):
            raise ValueError(
                f"{op}: {name} must be a ({size},) {np.dtype(dtype).name} array on {self.name}, "
                f"got {type(array).__name__} {getattr(array, 'shape', '')} "
                f"{getattr(array, 'dtype', '')}"
            )
        return self.xp.ascontiguousarray(array)
