"""gpucnn's CUDA C sources: where they are, their text, lazy CuPy modules (one per kernel).

A kernel *family* is one file ``kernels_cuda/<family>.cu`` (``conv2d``, ``pool2d``, ...). Its
kernels are ``template <typename T> __global__`` functions, compiled for ``float`` and ``double``
through CuPy's ``name_expressions`` (``conv2d_forward<float>``); the names are read from the
source, so there is no second list to keep in step. Each kernel and type is a module of its own.
Nothing is compiled at import: :class:`CupyRunner` builds a family's kernels of a float type at
the first launch of one (once per process), and :meth:`CupyRunner.warmup` builds them all up
front.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

KERNEL_DIR_ENV = "GPUCNN_KERNEL_DIR"
KERNEL_TYPES = ("float", "double")

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)
_LINE_COMMENT = re.compile(r"//[^\n]*")
_KERNEL = re.compile(
    r"(template\s*<\s*typename\s+T\s*>\s*)?__global__\s+void\s+"
    r"(?:__launch_bounds__\s*\((?:[^()]|\([^()]*\))*\)\s*)?(\w+)\s*\("
)


def kernel_dir() -> Path:
    """The folder of the .cu sources: ``$GPUCNN_KERNEL_DIR``, else the ``kernels_cuda/`` beside the
    imported package (a checkout, editable installs included), else the installed package
    ``gpucnn.kernels_cuda`` (a wheel). The checkout comes first so that its Python code never runs
    another checkout's kernels (an editable install maps ``gpucnn.kernels_cuda`` to its own
    checkout, also when another one is imported through ``PYTHONPATH``)."""
    override = os.environ.get(KERNEL_DIR_ENV)
    if override:
        return Path(override)
    beside = Path(__file__).resolve().parents[2] / "kernels_cuda"
    if any(beside.glob("*.cu")):
        return beside
    return Path(str(importlib.resources.files("gpucnn.kernels_cuda")))


def families() -> list[str]:
    """Every kernel family in :func:`kernel_dir`, sorted."""
    return sorted(p.stem for p in kernel_dir().glob("*.cu"))


def _inline_includes(text: str, folder: Path, seen: set[str]) -> str:
    def paste(match: re.Match) -> str:
        name = match.group(1)
        if name in seen:  # already pasted above: its include guard would drop it anyway
            return f"// {name}: already inlined above"
        seen.add(name)
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} (included from a kernel source) does not exist")
        body = _inline_includes(path.read_text(), folder, seen)
        return f"// ---- {name}, inlined by gpucnn.backend.kernels ----\n{body}\n// ---- end {name}"

    return _INCLUDE.sub(paste, text)


def load_source(family: str) -> str:
    """The text of ``<family>.cu`` with its local ``#include "x.cuh"`` files pasted in place, so a
    compile cache keyed on the source text also covers the headers."""
    folder = kernel_dir()
    path = folder / f"{family}.cu"
    if not path.is_file():
        raise FileNotFoundError(f"no kernel source {path} (kernel folder {folder})")
    return _inline_includes(path.read_text(), folder, set())


def name_expressions(family: str) -> tuple[str, ...]:
    """The kernels of ``family`` as compile name expressions, e.g. ``("relu_forward<float>",
    "relu_forward<double>", ...)``; a non-template kernel appears under its plain name."""
    source = _LINE_COMMENT.sub("", load_source(family))
    names: list[str] = []
    for template, name in _KERNEL.findall(source):
        if name == "__launch_bounds__":  # its arguments nest parentheses past what _KERNEL reads
            raise ValueError(
                f"{family}.cu: a kernel's __launch_bounds__(...) is too nested to read"
            )
        names.extend(f"{name}<{t}>" for t in KERNEL_TYPES) if template else names.append(name)
    if not names:
        raise ValueError(f"{family}.cu defines no __global__ kernel")
    return tuple(names)


# common.cuh: no explicit instantiations; a module's name expression instantiates its kernel.
NAMED_ONLY = "-DGPUCNN_NAMED_ONLY"
# The family whose modules NVRTC takes longest over (conv2d.cu's GEMM kernels, two tile paths
# each: 0.7-0.86 s a module, no other kernel over 0.15 s; scripts/nvrtc_times.py): warmup starts
# it first, then the other families, largest source first.
SLOWEST_TO_COMPILE = "conv2d"


def _template_type(name: str) -> str:
    """The T of a name expression ``kernel<T>`` ("" for a kernel that is no template)."""
    return name[name.index("<") + 1 : -1] if name.endswith(">") else ""


def _usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, which a container may limit, where
    the OS tells it; else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def compile_side_by_side(cupy: Any, modules: list[Any]) -> None:
    """Compile CuPy ``modules`` in parallel threads, a thread per usable core, started in order.

    CuPy runs NVRTC without holding the GIL, so the modules compile in parallel. Each thread first
    sets the caller's device, which (CUDA >= 12) makes its primary context current there: loading a
    module is a driver call that needs one, and a new thread has none. Compiling a module CuPy has
    compiled already (on this device) does nothing.
    """
    if not modules:
        return
    device_id = cupy.cuda.runtime.getDevice()

    def build(module: Any) -> None:
        cupy.cuda.runtime.setDevice(device_id)
        module.compile()

    with ThreadPoolExecutor(max_workers=min(len(modules), _usable_cores())) as pool:
        list(pool.map(build, modules))


class KernelModules:
    """A family's kernels as one CuPy ``RawModule`` per name expression (kernel and float type),
    each compiled with :data:`NAMED_ONLY`, so it instantiates its own kernel only.

    The first kernel asked of a float type compiles all the family's kernels of that type side by
    side (:func:`compile_side_by_side`): a model launches most of a family's kernels, and conv2d's
    three GEMM kernels, 0.3-0.9 s of NVRTC each, then cost the slowest one's time instead of
    their sum (they took 1.9 s as one module). No float64 code is built for a float32 model.
    """

    def __init__(self, cupy: Any, source: str, options: tuple[str, ...], names) -> None:
        self._cupy = cupy
        self._modules = {
            name: cupy.RawModule(
                code=source, options=(*options, NAMED_ONLY), name_expressions=(name,)
            )
            for name in names
        }
        self._compiled_types: set[str] = set()
        self._lock = threading.Lock()

    def get_function(self, name: str) -> Any:
        float_type = _template_type(name)
        with self._lock:
            if float_type not in self._compiled_types:
                compile_side_by_side(self._cupy, self.parts(float_type))
                self._compiled_types.add(float_type)
        return self._modules[name].get_function(name)

    def note_compiled(self) -> None:
        """Record every type's kernels as compiled (:meth:`CupyRunner.warmup` compiled them)."""
        with self._lock:
            self._compiled_types.update(_template_type(name) for name in self._modules)

    def parts(self, float_type: str | None = None) -> list[Any]:
        """The modules, one per kernel and type (only ``float_type``'s if given), each compiled
        on its own."""
        return [
            module
            for name, module in self._modules.items()
            if float_type is None or _template_type(name) == float_type
        ]


class CupyRunner:
    """Compiles kernels with CuPy (NVRTC) when first used, once per process: a family's kernels
    of a float type on the first use of one of them.

    ``module(family, name_expressions)`` returns the family's :class:`KernelModules`; its
    ``get_function(name)`` compiles as need be and gives the kernel, called as
    ``kernel(grid, block, args, shared_mem=0)``.
    CuPy 14 also caches the binaries on disk (``CUPY_CACHE_DIR``), keyed on the source text,
    the options and the name expressions; CuPy before cupy/cupy#9801 and #10177 recompiled a
    module with name expressions in every process.
    """

    # CuPy's defaults (NVRTC's C++17 dialect); the sources need no headers or include paths.
    options: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._modules: dict[str, KernelModules] = {}
        self._lock = threading.Lock()

    def module(self, family: str, names: tuple[str, ...] | list[str]) -> KernelModules:
        with self._lock:
            if family not in self._modules:
                import cupy

                self._modules[family] = KernelModules(
                    cupy, load_source(family), self.options, names
                )
            return self._modules[family]

    def warmup(self) -> None:
        """Compile every kernel's module now (instead of at first use), side by side
        (:func:`compile_side_by_side`), the slowest family's modules first, then the largest
        families' (the longest compiles start first)."""
        import cupy

        def order(family: str) -> tuple[bool, int]:
            return family != SLOWEST_TO_COMPILE, -len(load_source(family))

        largest_first = sorted(families(), key=order)
        families_modules = [self.module(f, name_expressions(f)) for f in largest_first]
        compile_side_by_side(
            cupy, [part for modules in families_modules for part in modules.parts()]
        )
        for modules in families_modules:
            modules.note_compiled()
