"""gpucnn's CUDA C sources: where they are, their text, lazy CuPy modules (per file and type).

A kernel *family* is one file ``kernels_cuda/<family>.cu`` (``conv2d``, ``pool2d``, ...). Its
kernels are ``template <typename T> __global__`` functions, compiled for ``float`` and ``double``
through CuPy's ``name_expressions`` (``conv2d_forward<float>``); the names are read from the
source, so there is no second list to keep in step. Nothing is compiled at import:
:class:`CupyRunner` builds a family on first use (once per process, one module per float type)
and :meth:`CupyRunner.warmup` builds them all up front.
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
_KERNEL = re.compile(r"(template\s*<\s*typename\s+T\s*>\s*)?__global__\s+void\s+(\w+)\s*\(")


def kernel_dir() -> Path:
    """The folder of the .cu sources: ``$GPUCNN_KERNEL_DIR``, else the installed package
    ``gpucnn.kernels_cuda`` (wheel or editable install), else the checkout's ``kernels_cuda/``."""
    override = os.environ.get(KERNEL_DIR_ENV)
    if override:
        return Path(override)
    try:
        installed = Path(str(importlib.resources.files("gpucnn.kernels_cuda")))
    except ModuleNotFoundError:
        installed = None
    if installed is not None and any(installed.glob("*.cu")):
        return installed
    return Path(__file__).resolve().parents[2] / "kernels_cuda"


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
        names.extend(f"{name}<{t}>" for t in KERNEL_TYPES) if template else names.append(name)
    if not names:
        raise ValueError(f"{family}.cu defines no __global__ kernel")
    return tuple(names)


def _template_type(name: str) -> str:
    """The T of a name expression ``kernel<T>`` ("" for a kernel that is no template)."""
    return name[name.index("<") + 1 : -1] if name.endswith(">") else ""


def _only_type_define(float_type: str) -> list[str]:
    """The define that limits a source's explicit instantiations to one of KERNEL_TYPES
    (common.cuh's GPUCNN_ONLY_FLOAT / _DOUBLE); none for a kernel that is no template."""
    return [f"-DGPUCNN_ONLY_{float_type.upper()}"] if float_type in KERNEL_TYPES else []


def modules_by_type(names) -> dict[str, tuple[list[str], list[str]]]:
    """How a family's name expressions split into modules, one per float type ("" for kernels
    that are no template): each type's extra compile options (its only-type define) and names."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(_template_type(name), []).append(name)
    return {t: (_only_type_define(t), group) for t, group in groups.items()}


class TypedModules:
    """A family's kernels as one CuPy ``RawModule`` per float type: each compiles its own type's
    instantiations only (``-DGPUCNN_ONLY_FLOAT`` / ``_DOUBLE``, see common.cuh), so a family's
    two types compile side by side and a float32 model loads no float64 code. ``get_function``
    picks the module by the name's type."""

    def __init__(self, cupy: Any, source: str, options: tuple[str, ...], names) -> None:
        self._modules = {
            t: cupy.RawModule(
                code=source, options=(*options, *defines), name_expressions=tuple(group)
            )
            for t, (defines, group) in modules_by_type(names).items()
        }

    def get_function(self, name: str) -> Any:
        return self._modules[_template_type(name)].get_function(name)

    def parts(self) -> list[Any]:
        """The modules, one per type, each compiled on its own."""
        return list(self._modules.values())


class CupyRunner:
    """Compiles each kernel family with CuPy (NVRTC) on first use, once per process.

    ``module(family, name_expressions)`` returns the family's :class:`TypedModules`; its
    ``get_function(name)`` gives a kernel called as ``kernel(grid, block, args, shared_mem=0)``.
    CuPy 14 also caches the binaries on disk (``CUPY_CACHE_DIR``), keyed on the source text,
    the options and the name expressions; CuPy before cupy/cupy#9801 and #10177 recompiled a
    module with name expressions in every process.
    """

    # CuPy's defaults (NVRTC's C++17 dialect); the sources need no headers or include paths.
    options: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._modules: dict[str, TypedModules] = {}
        self._lock = threading.Lock()

    def module(self, family: str, names: tuple[str, ...] | list[str]) -> TypedModules:
        with self._lock:
            if family not in self._modules:
                import cupy

                self._modules[family] = TypedModules(cupy, load_source(family), self.options, names)
            return self._modules[family]

    def warmup(self) -> None:
        """Compile every family's modules now (instead of at the first launch of each), side by
        side: one thread per family and type.

        CuPy runs NVRTC without holding the GIL, so the modules compile in parallel threads. Each
        thread first sets the caller's device, which (CUDA >= 12) makes its primary context current
        there: loading a module is a driver call that needs one, and a new thread has none.
        """
        import cupy

        device_id = cupy.cuda.runtime.getDevice()

        def build(part: Any) -> None:
            cupy.cuda.runtime.setDevice(device_id)
            part.compile()

        parts = [p for f in families() for p in self.module(f, name_expressions(f)).parts()]
        with ThreadPoolExecutor(max_workers=len(parts)) as pool:
            list(pool.map(build, parts))
