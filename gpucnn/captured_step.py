"""A training step recorded once as a CUDA graph and replayed: ``TrainConfig(cuda_graph=True)``,
``gpucnn train --cuda-graph``.

An eager step costs one Python dispatch and one launch per op (about 25 for the tutorial's net:
15 of gpucnn's kernels, the rest CuPy's matrix products and sums; benchmarks/NOTES.md counts
them); a graph replays them all with one launch. What makes a step replayable: its per-step
values live in device memory (the optimizer's clock, dropout's call counter), its persistent
arrays are updated in place, nothing in it reads the device back, and it calls no cuBLAS (CuPy
refuses that during a capture, so linear layers run on our own GEMM kernels there). The device's
graph session (``Backend.graph_session``) does the capture; on ``cuda-emu`` it checks the frozen
arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .backend import backend_of


class CapturedStep:
    """``fn(*inputs)`` as a CUDA graph: ``warmup`` eager calls, then a capture, then replays.

    Every call is one real step, in order: the first ``warmup`` calls run eagerly on the graph's
    stream and memory pool (compiling kernels, creating the optimizer's state), the next is
    captured and replayed, and later calls replay. Inputs are copied into static device buffers
    first. The outputs of a replay are the graph's own arrays, rewritten by the next call (copy
    them to keep them). A call whose inputs differ in shape or dtype from the first call's (a last,
    smaller batch) runs eagerly. ``session``: the device's graph session if made already
    (``gpucnn train`` makes it first, so a device without graphs is refused before any data is
    loaded); else the first call makes it.
    """

    def __init__(self, fn: Callable[..., Any], warmup: int = 2, session: Any = None):
        if warmup < 1:
            raise ValueError(f"a captured step needs at least one warm-up call, got {warmup}")
        self.fn, self.warmup = fn, warmup
        self.calls = 0
        self._session = session
        self._static: tuple = ()
        self._signature: tuple = ()

    @property
    def captured(self) -> bool:
        return self._session is not None and self._session.captured

    def __call__(self, *inputs: Any) -> Any:
        signature = tuple((tuple(a.shape), str(a.dtype)) for a in inputs)
        if not self._static:  # the first call
            backend = backend_of(inputs[0])
            if self._session is None:
                self._session = backend.graph_session()
            self._signature = signature
            self._static = tuple(backend.xp.empty_like(a) for a in inputs)
        if signature != self._signature:
            return self.fn(*inputs)
        for buffer, a in zip(self._static, inputs, strict=True):
            buffer[...] = a
        self.calls += 1
        if self.calls <= self.warmup:
            return self._session.run(self.fn, self._static)
        if not self._session.captured:
            self._session.capture(self.fn, self._static)
        return self._session.replay()
