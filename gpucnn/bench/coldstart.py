"""The ``compile`` suite: what a new process pays on the GPU before it trains, in child processes.

Two goals of the benchmark issue: compiling every kernel family into an empty kernel cache takes
<= 2 s (``warmup()``, CuPy's ``CUPY_CACHE_DIR`` pointed at a new empty folder), and with that cache
filled a new process goes from creating the tutorial MNIST net to the end of its first train step
(batch 64) in <= 100 ms. Every sample runs in fresh processes, so no in-process memo hides a
compile. Each child makes its CUDA context before its clock starts: that cost is the driver's.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import NamedTuple

import numpy as np

from ..backend import get_backend
from . import training
from .children import run_child

BATCH = 64
CACHE_ENV = "CUPY_CACHE_DIR"


class Row(NamedTuple):
    """One row of the compile suite: its case, its goal in seconds (None for a row that only
    explains another, with ``note`` saying how), and the :func:`child` phase that times it."""

    case: str
    goal: float | None
    phase: str
    note: str = ""


GOALS = {
    "cold compile": Row("every kernel family, empty cache", 2.0, "cold"),
    "warm first train step": Row(f"{training.MODEL} b{BATCH}, filled cache", 0.1, "warm"),
    # The same with cuBLAS already initialised (one tiny matmul before the clock): the difference
    # is what cuBLAS's first call (library load, handle) costs the first step.
    "warm first train step, cuBLAS ready": Row(
        f"{training.MODEL} b{BATCH}, filled cache", None, "warm-cublas",
        "no goal: shows what cuBLAS's first call adds to the row above",
    ),
}  # fmt: skip
_CHILD = "from gpucnn.bench.coldstart import child; child({phase!r})"


def _first_step(backend, x: np.ndarray, y: np.ndarray) -> None:
    """Create the model and its optimizer, train one step on (x, y), wait for the GPU."""
    step = training.gpucnn_step(backend)
    step(backend.asarray(x), backend.asarray(y))
    backend.synchronize()


def child(phase: str) -> None:
    """Time ``phase`` in this (fresh) process and print ``{"seconds": s}`` as the last line.

    "cold": ``warmup()``, then one untimed step so the cache also holds the CuPy kernels a step
    uses; "warm": model creation to the end of the first train step; "warm-cublas": the same
    after a 2x2 matmul.
    """
    backend = get_backend("cuda")
    ones = backend.asarray(np.ones((2, 2), np.float32))  # the CUDA context, before the clock
    if phase == "warm-cublas":
        ones @ ones
    backend.synchronize()
    x, y = training.random_batch(BATCH)
    timed = backend.warmup if phase == "cold" else lambda: _first_step(backend, x, y)
    start = time.perf_counter()
    timed()
    seconds = time.perf_counter() - start
    if phase == "cold":
        _first_step(backend, x, y)
    print(json.dumps({"seconds": seconds}))


def _run_child(phase: str, cache_dir: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "CUPY_CACHE_IN_MEMORY"}  # it skips the disk
    env[CACHE_ENV] = cache_dir
    code = _CHILD.format(phase=phase)
    return float(run_child(code, f"{phase} compile-suite", env)["seconds"])


def samples(repeats: int) -> dict[str, list[float]]:
    """Seconds of each op of :data:`GOALS`, one sample per new empty cache (cold first, which
    fills it, then the warm ones)."""
    times: dict[str, list[float]] = {op: [] for op in GOALS}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="gpucnn-kernel-cache-") as cache:
            for op, row in GOALS.items():
                times[op].append(_run_child(row.phase, cache))
    return times
