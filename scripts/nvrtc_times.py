"""Time NVRTC on each kernel module as CuPy compiles it (one per kernel and float type), no GPU
needed: a stand-in for the cold-compile goal (<= 2 s) where no GPU is lent.

CuPy builds each module with NVRTC straight to a cubin (``-arch=sm_XX``, C++17, our
``-DGPUCNN_NAMED_ONLY``) and ``CupyRunner.warmup`` compiles them all in parallel threads, a thread
per core, so the cold compile takes about the modules' sum over the cores, and at least the
slowest module's time (plus loading). This prints each module's time, their sum, and the wall time
with ``--threads``.
NVRTC comes from ``--library``, else the pip wheel CuPy depends on (nvidia-cuda-nvrtc), else the
CUDA toolkit.

    python scripts/nvrtc_times.py [--arch sm_90] [--threads 14] [--library PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import functools
import glob
import os
import site
import time
from concurrent.futures import ThreadPoolExecutor

from gpucnn.backend.kernels import NAMED_ONLY, families, load_source, name_expressions
from gpucnn.cli import run_reporting_errors


def find_nvrtc() -> str:
    """The first NVRTC library found: the nvidia wheel's, the loader's, the CUDA toolkit's."""
    roots = [*site.getsitepackages(), site.getusersitepackages()]
    patterns = [f"{root}/nvidia/*/lib/libnvrtc.so.*" for root in roots]
    cuda = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    patterns.append(f"{cuda}/lib64/libnvrtc.so*")
    found = [p for pattern in patterns for p in sorted(glob.glob(pattern)) if "builtins" not in p]
    system = ctypes.util.find_library("nvrtc")
    if found or system:
        return found[0] if found else system
    raise OSError("no NVRTC library found: pip install nvidia-cuda-nvrtc, or pass --library PATH")


@functools.cache
def _source(family: str) -> bytes:
    """``family``'s source, read once: the timed passes then spend their time in NVRTC alone."""
    return load_source(family).encode()


class Nvrtc:
    """The few NVRTC calls a timed compile needs, through ctypes."""

    def __init__(self, path: str) -> None:
        self.lib = ctypes.CDLL(path)
        if not hasattr(self.lib, "nvrtcCompileProgram"):
            raise OSError(f"{path} is not an NVRTC library (no nvrtcCompileProgram)")

    def _call(self, what: str, *args) -> None:
        status = getattr(self.lib, what)(*args)
        if status != 0:
            raise RuntimeError(f"{what} failed with NVRTC status {status}")

    def build(self, family: str, name: str, arch: str) -> tuple[float, bytes]:
        """(seconds NVRTC takes, the cubin) of ``family``'s module of kernel ``name``."""
        program = ctypes.c_void_p()
        self._call(
            "nvrtcCreateProgram",
            *(ctypes.byref(program), _source(family), family.encode(), 0, None, None),
        )
        try:
            self._call("nvrtcAddNameExpression", program, name.encode())
            options = [f"-arch={arch}", "-std=c++17", NAMED_ONLY]
            argv = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            start = time.perf_counter()
            status = self.lib.nvrtcCompileProgram(program, len(options), argv)
            seconds = time.perf_counter() - start
            if status != 0:
                raise RuntimeError(f"NVRTC cannot build {name} ({family}):\n{self._log(program)}")
            size = ctypes.c_size_t()
            self._call("nvrtcGetCUBINSize", program, ctypes.byref(size))
            cubin = ctypes.create_string_buffer(size.value)
            self._call("nvrtcGetCUBIN", program, cubin)
            return seconds, cubin.raw
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(program))

    def _log(self, program: ctypes.c_void_p) -> str:
        """The compiler's messages for ``program`` (its errors, after a failed build)."""
        size = ctypes.c_size_t()
        self._call("nvrtcGetProgramLogSize", program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        self._call("nvrtcGetProgramLog", program, log)
        return log.value.decode(errors="replace")

    def compile_seconds(self, family: str, name: str, arch: str) -> float:
        """Seconds NVRTC takes to build ``family``'s module of kernel ``name`` to a cubin."""
        return self.build(family, name, arch)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--threads", type=int, default=0, help="also time all modules at once")
    parser.add_argument("--library", help="path of libnvrtc.so (default: searched)")
    args = parser.parse_args(argv)
    nvrtc = Nvrtc(args.library or find_nvrtc())
    modules = [(f, name) for f in families() for name in name_expressions(f)]
    times = {m: nvrtc.compile_seconds(*m, args.arch) for m in modules}
    for (_, name), seconds in times.items():
        print(f"{name:42} {seconds * 1e3:7.0f} ms")
    slowest = max(times, key=times.get)
    print(f"sum {sum(times.values()):.2f} s; slowest {slowest[1]} {times[slowest]:.2f} s")
    if args.threads:
        start = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(lambda m: nvrtc.compile_seconds(*m, args.arch), modules))
        print(f"all {len(modules)} on {args.threads} threads: {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors("nvrtc_times.py", main))
