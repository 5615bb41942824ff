"""Intra-op threads of the CPU backend: one op's batch split into slices that run side by side.

NumPy runs each elementwise pass, gather and scatter on one core; only BLAS uses several. Like
PyTorch's intra-op parallelism, the CPU backend splits the batch of its memory-bound passes
(pooling, im2col and the layout copies around the matrix products) into one slice per thread.
The matrix products around them run on the same slices, with BLAS held to one thread meanwhile:
BLAS's own threads keep spinning for a while after each call, and on the same cores they would
slow the slices down instead. NumPy releases the GIL inside all of these, so the slices run at
once. Each slice writes only its own samples' rows (its own columns of a weight gradient). A
product over a slice may round differently from one over the whole batch, as BLAS's own threads
may: results agree across thread counts to rounding, not bit for bit.

``GPUCNN_CPU_THREADS`` (default: the cores this process may run on) sets the count; 1 runs every
op in the calling thread. ``gpucnn bench --threads N`` sets it with PyTorch's.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import ThreadpoolController

THREADS_ENV = "GPUCNN_CPU_THREADS"
MIN_SLICE_ELEMENTS = 1 << 15  # a slice smaller than this costs more to hand over than to run

_lock = threading.Lock()
_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_blas: ThreadpoolController | None = None


def _default_threads() -> int:
    value = os.environ.get(THREADS_ENV)
    if value:
        count = int(value)
        if count < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        return count
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


def blas_held() -> contextlib.AbstractContextManager:
    """A context in which BLAS (NumPy's, found once NumPy is loaded) runs on one thread, when
    this module runs threads of its own; else it changes nothing. The CPU backend makes every
    BLAS call in one: a BLAS thread left spinning by an earlier call would slow the slices."""
    global _blas
    if threads() == 1:
        return contextlib.nullcontext()
    with _lock:
        if _blas is None:
            _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def for_batch_slices(n: int, elements: int, body: Callable[[slice], None]) -> None:
    """``body(s)`` for slices ``s`` that cover ``range(n)`` (a batch's samples, or a weight
    gradient's columns): one slice per thread, each at least MIN_SLICE_ELEMENTS of the pass's
    ``elements``; the calling thread runs the first. ``body`` must write only its own rows."""
    parts = max(1, min(threads(), n, elements // MIN_SLICE_ELEMENTS))
    bounds = [n * i // parts for i in range(parts + 1)]
    slices = [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]
    with blas_held():
        futures = [_executor(threads() - 1).submit(body, s) for s in slices[1:]]
        body(slices[0])
        for future in futures:
            future.result()
