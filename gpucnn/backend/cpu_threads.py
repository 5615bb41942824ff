"""Intra-op threads of the CPU backend: one op's batch split into slices that run side by side.

NumPy runs each elementwise pass, gather and scatter on one core; only BLAS uses several. Like
PyTorch's intra-op parallelism, the CPU backend splits the batch of its passes (pooling; the
convolutions' chunks of samples, each gathered, multiplied and written back) among its threads,
for batches of at least MIN_BATCH samples. BLAS runs on one thread in every op of the backend,
split or not: its result's bits depend on its thread count (OpenBLAS 0.3.31 gives other bits on
1 and 2 threads for every GEMM shape of tutorial-mnist's step), and its threads keep spinning for
a while after each call, on the same cores as the slices. NumPy releases the GIL inside all of
these, so the slices run at once. Each slice writes only its own samples' rows (a convolution
chunk its own share of a weight gradient, summed in chunk order afterwards), so results are the
same bits for any thread count.

``GPUCNN_CPU_THREADS`` (default: the cores this process may run on) sets the count; 1 runs every
op in the calling thread. ``gpucnn bench --threads N`` sets it with PyTorch's.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

THREADS_ENV = "GPUCNN_CPU_THREADS"
# Batches smaller than this run every op in the calling thread: each pass is then too short to
# pay for handing slices over. tutorial-mnist's training step on 2 cores (2026-12-01, BLAS on one
# thread): batch 32 3.25-3.5 ms split in two, 3.5-3.8 ms unsplit; batch 8 1.2 ms unsplit. (With
# BLAS on 2 threads, which changed the bits, batch 32 took 2.9 ms unsplit.)
MIN_BATCH = 32

_lock = threading.Lock()
_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_blas: Any = None  # threadpoolctl's ThreadpoolController, made once NumPy's BLAS is loaded


def _default_threads() -> int:
    value = os.environ.get(THREADS_ENV)
    if value:
        if not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads() -> int:
    """How many slices an op's batch is split into (at most)."""
    global _threads
    if _threads is None:
        _threads = _default_threads()
    return _threads


def set_threads(count: int) -> None:
    """Use ``count`` threads from now on (1: no threads)."""
    global _threads, _pool
    if count < 1:
        raise ValueError(f"the CPU thread count must be positive, got {count}")
    with _lock:
        if _pool is not None:
            _pool.shutdown()
        _threads, _pool = count, None


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="gpucnn-cpu")
        return _pool


def _blas_controller() -> Any:
    """threadpoolctl's controller of the loaded BLAS, or False where threadpoolctl is missing (a
    ``--no-deps`` install); made on first use, once NumPy has loaded its BLAS."""
    global _blas
    with _lock:
        if _blas is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                _blas = False
            else:
                _blas = ThreadpoolController()
    return _blas


def parallel(batch: int) -> bool:
    """Whether ops on a batch of ``batch`` samples run on this module's threads: never without
    threadpoolctl, since BLAS's spinning threads would then make them slower, not faster."""
    return threads() > 1 and batch >= MIN_BATCH and bool(_blas_controller())


def blas_held() -> contextlib.AbstractContextManager:
    """A context in which BLAS (NumPy's) runs on one thread, so that its bits are the same for
    any thread count of this module (where threadpoolctl is missing it changes nothing). The CPU
    backend makes every BLAS call in one; a BLAS thread left spinning by an earlier call (for
    ~0.1 s) would also slow the slices after it."""
    if not _blas_controller():
        return contextlib.nullcontext()
    return _blas_controller().limit(limits=1, user_api="blas")


def for_slices(count: int, batch: int, body: Callable[[slice], None]) -> None:
    """``body(s)`` for slices ``s`` that cover ``range(count)`` (a batch's samples, or a weight
    gradient's columns) of an op on ``batch`` samples: one slice per thread when
    :func:`parallel`, the calling thread running the first; else ``body(slice(0, count))``.
    ``body`` must write only its own slice's rows. Every slice runs under the calling thread's
    floating-point error handling (``np.errstate``, which is each thread's own)."""
    parts = max(1, min(threads(), count)) if parallel(batch) else 1  # count 0: one empty slice
    bounds = [count * i // parts for i in range(parts + 1)]
    slices = [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]
    errors = {**np.geterr(), "call": np.geterrcall()}
    with blas_held():
        futures = [
            _executor(threads() - 1).submit(_with_errors, errors, body, s) for s in slices[1:]
        ]
        body(slices[0])
        for future in futures:
            future.result()


def _with_errors(errors: dict, body: Callable[[slice], None], part: slice) -> None:
    """``body(part)`` with NumPy's floating-point ``errors`` handling (``np.geterr()`` and the
    ``call`` function of its "call" and "log" modes): a caller's ``np.errstate(over="ignore")``
    around a step covers its slices on other threads."""
    with np.errstate(**errors):
        body(part)
