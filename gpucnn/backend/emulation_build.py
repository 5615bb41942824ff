"""Turn a CUDA C source into a host shared library for the emulation runner (see ``emulation``).

The source is checked for features the emulation cannot run, its ``__shared__`` declarations are
rewritten into per-block allocations, ``cuda_compat.h`` is put in front and a table of the requested
kernels is appended; g++ builds it into a ``.so`` cached by a hash of everything that goes in.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

HEADER_DIR = Path(__file__).parent
HEADERS = ("cuda_compat.h", "emulation_runtime.h")  # all part of the cache key
CXX_FLAGS = (
    "-std=c++17",
    "-O1",
    "-shared",
    "-fPIC",
    "-fvisibility=hidden",
    "-fno-strict-aliasing",
    # Keep a * b + c as two roundings, like NumPy (nvcc contracts to FMA by default: see README).
    "-ffp-contract=off",
)

# Features that have no emulation, found in the source before g++ runs (functions such as
# __nanosleep are refused by static_asserts in cuda_compat.h instead).
_UNSUPPORTED = (
    (r"\basm\b|\b__asm__\b", "inline PTX assembly (asm)"),
    (r"\bcooperative_groups\b", "cooperative groups"),
    (r"\btexture\s*<|\bcudaTextureObject_t\b|\bsurface\s*<", "textures and surfaces"),
    (r"\bclock\s*\(\s*\)", "clock()"),
    (r"\b__managed__\b", "managed memory (__managed__)"),
    (r"<<<", "dynamic parallelism (kernel launches from the device)"),
    (r"\bcuda_fp16\.h\b|\b__half2?\b|\b__nv_bfloat16\b", "half precision (__half, __nv_bfloat16)"),
)

_STRINGS = r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\''
_TOKENS = re.compile(r"//[^\n]*|/\*.*?\*/|" + _STRINGS, re.S)
_ALIGN = re.compile(r"__align__\s*\(\s*\d+\s*\)")
_EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?P<type>[^;\[\]]*?)\s*\b(?P<name>\w+)\s*\[\s*\]\s*;"
)
_SHARED = re.compile(
    r"(?<![\w.])(?:static\s+)?__shared__\s+(?P<type>[^;\[\]={},]*?)\s*\b(?P<name>\w+)\s*"
    r"(?P<dims>(?:\[[^\];]*\]\s*)*);"
)


class EmulationBuildError(RuntimeError):
    """A kernel source could not be built for the emulation (unsupported feature or g++ error)."""


def find_compiler() -> str | None:
    """The C++ compiler to use: ``$CXX`` if set, else ``g++`` or ``c++`` on PATH; None if none."""
    env = os.environ.get("CXX")
    if env:
        return env if shutil.which(shlex.split(env)[0]) else None
    return shutil.which("g++") or shutil.which("c++")


def cache_dir() -> Path:
    """Where built libraries live: ``$GPUCNN_EMU_CACHE``, else ``~/.cache/gpucnn/emu``."""
    env = os.environ.get("GPUCNN_EMU_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpucnn" / "emu"


def _blank_comments(source: str) -> str:
    """``source`` with comments replaced by spaces (newlines kept, so line numbers stay)."""

    def blank(m: re.Match) -> str:
        text = m.group(0)
        return re.sub(r"[^\n]", " ", text) if text[0] == "/" else text

    return _TOKENS.sub(blank, source)


def check_supported(code: str, label: str) -> None:
    """Raise EmulationBuildError naming the first unsupported feature used in ``code``."""
    code = re.sub(_STRINGS, lambda m: " " * len(m.group(0)), code)
    for pattern, feature in _UNSUPPORTED:
        m = re.search(pattern, code)
        if m:
            line = code.count("\n", 0, m.start()) + 1
            raise EmulationBuildError(
                f"{label}:{line}: uses {feature}, which the gpucnn CUDA emulation does not support"
            )


def rewrite_shared(code: str) -> str:
    """Rewrite ``__shared__`` declarations into the emulation's per-block shared memory."""

    def dynamic(m: re.Match) -> str:
        t = _ALIGN.sub("", m["type"]).strip()
        return f"{t}* {m['name']} = static_cast<{t}*>(::gpucnn_emu::dynamic_shared());"

    counter = iter(range(1, 1 << 30))

    def static(m: re.Match) -> str:
        t, name, dims = _ALIGN.sub("", m["type"]).strip(), m["name"], m["dims"].strip()
        ref = f"(&{name}){dims}" if dims else f"&{name}"
        return f"{t} {ref} = *::gpucnn_emu::block_shared<{t}{dims}, {next(counter)}>();"

    return _SHARED.sub(static, _EXTERN_SHARED.sub(dynamic, code))


def translate(source: str, name_expressions: Sequence[str], label: str) -> str:
    """The C++ translation unit for ``source`` exporting the kernels ``name_expressions``."""
    if not name_expressions:
        raise ValueError("name_expressions is empty: name at least one kernel")
    code = _blank_comments(source)
    check_supported(code, label)
    entries = ",\n  ".join(f'::gpucnn_emu::entry("{n}", &{n})' for n in name_expressions)
    return (
        f'#include "cuda_compat.h"\n#line 1 "{label}"\n{rewrite_shared(code)}\n'
        f'#line 1 "<gpucnn-emu kernel table>"\nGPUCNN_EMU_KERNELS(\n  {entries})\n'
    )


@functools.cache
def _compiler_version(cxx: str) -> str:
    run = subprocess.run([*shlex.split(cxx), "--version"], capture_output=True, text=True)
    return run.stdout


def build(cpp: str, cxx: str, extra_flags: Sequence[str] = ()) -> tuple[Path, bool]:
    """Build ``cpp`` into a cached shared library -> (path, whether g++ ran this time)."""
    flags = (*CXX_FLAGS, *extra_flags)
    key = hashlib.sha256()
    headers = [(HEADER_DIR / h).read_text() for h in HEADERS]
    for part in (cpp, *headers, "\0".join(flags), cxx, _compiler_version(cxx)):
        key.update(part.encode() + b"\0")
    folder = cache_dir()
    target = folder / f"{key.hexdigest()[:32]}.so"
    if target.exists():
        return target, False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        workdir = tempfile.TemporaryDirectory(dir=folder)
    except OSError as err:  # a read-only or missing home: say which folder and how to move it
        raise EmulationBuildError(
            f"cannot write the cuda-emu build cache {folder} ({err.strerror or err}): "
            "set GPUCNN_EMU_CACHE (or XDG_CACHE_HOME) to a writable folder"
        ) from err
    with workdir as tmp:
        src, lib = Path(tmp) / "kernels.cpp", Path(tmp) / "kernels.so"
        src.write_text(cpp)
        cmd = [*shlex.split(cxx), *flags, "-I", str(HEADER_DIR), "-o", str(lib), str(src)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise EmulationBuildError(f"g++ could not build the emulated kernels:\n{run.stderr}")
        os.replace(src, target.with_suffix(".cpp"))  # kept for debugging the translation
        os.replace(lib, target)
    return target, True
