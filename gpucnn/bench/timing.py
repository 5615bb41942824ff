"""Timing: warm-up first, peers measured alternately in one run, medians of the samples.

A clock turns ``number`` calls of a function into seconds per call: the host clock on the CPU
(after the device's ``synchronize``), CUDA events on the GPU (CuPy's for gpucnn, PyTorch's for
PyTorch), with the device drained before the start event so no earlier work is counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

MIN_SAMPLE_S = 5e-3  # calls per sample are raised until a sample lasts this long
MAX_CALLS = 1000


class Clock(Protocol):
    """How a runner's calls are timed: :class:`HostClock` on the CPU, :class:`EventClock` on a
    GPU."""

    def seconds(
        self, fn: Callable[[], Any], number: int, rewarm: Callable[[], Any] | None = None
    ) -> float:
        """Seconds per call over ``number`` back-to-back calls of ``fn``; ``rewarm`` (default
        ``fn``) is what a clock that re-warms before timing calls untimed."""


# Longer than OpenBLAS's idle threads spin (2^28 cycles) and OpenMP's (~ms); ``gpucnn bench
# --settle`` sets it.
SETTLE_S = 0.2
# After the settling pause a peer runs untimed calls for this long (at least one) before it is
# timed: back from idle, its first calls run slow (caches, its own thread pool). Measured here for
# tutorial-mnist's b256 step, the 1st/2nd/3rd call after 0.2 s idle: gpucnn 43/29/25 ms, PyTorch
# 27/24/25 ms; one untimed call left gpucnn timed on its second.
REWARM_S = 0.1


@dataclass
class HostClock:
    """``time.perf_counter`` around the calls, the device synchronised on both sides.

    Peers on the CPU share its cores: the thread pools of one library (NumPy's OpenBLAS,
    PyTorch's OpenMP) keep spinning for a while after its call returns, and measured right after
    it the other runs up to 2x slower (seen here on 2 cores). So each sample first waits
    SETTLE_S for those threads to sleep, then makes untimed calls of its own for REWARM_S (at
    least one; back to the steady state of calls in a row), and times the calls after that:
    each peer as if it ran alone, as a training loop runs it. A runner whose call is long (an
    epoch) re-warms with its short warm-up instead (a few steps), not with a whole call.
    """

    sync: Callable[[], None] = lambda: None

    def seconds(
        self, fn: Callable[[], Any], number: int, rewarm: Callable[[], Any] | None = None
    ) -> float:
        time.sleep(SETTLE_S)
        rewarmed = time.perf_counter() + REWARM_S
        while True:
            (rewarm or fn)()
            self.sync()
            if time.perf_counter() >= rewarmed:
                break
        start = time.perf_counter()
        for _ in range(number):
            fn()
        self.sync()
        return (time.perf_counter() - start) / number


@dataclass
class EventClock:
    """Elapsed time between two CUDA events recorded around the calls."""

    make_event: Callable[[], Any]
    elapsed_ms: Callable[[Any, Any], float]
    sync: Callable[[], None]

    def seconds(
        self, fn: Callable[[], Any], number: int, rewarm: Callable[[], Any] | None = None
    ) -> float:
        self.sync()  # the device drained; no re-warming: the GPU has no idle pause to recover from
        start, end = self.make_event(), self.make_event()
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        return self.elapsed_ms(start, end) / 1e3 / number


def cupy_clock() -> EventClock:
    """CUDA events of CuPy's current stream (gpucnn's device arrays)."""
    import cupy

    return EventClock(cupy.cuda.Event, cupy.cuda.get_elapsed_time, cupy.cuda.Device().synchronize)


def torch_clock() -> EventClock:
    """CUDA events of PyTorch's current stream."""
    import torch

    return EventClock(
        lambda: torch.cuda.Event(enable_timing=True),
        lambda start, end: start.elapsed_time(end),
        torch.cuda.synchronize,
    )


@dataclass
class Runner:
    """One peer's work for one case: ``fn`` is one call, timed by ``clock``.

    ``scale`` converts seconds per call into seconds per reported unit (the tutorial's loops do one
    sample per call, reported per batch); ``number`` fixes the calls per sample (None: calibrate);
    ``max_samples`` caps the samples of a slow peer; ``warmup`` replaces ``fn`` for the warm-up
    and for the host clock's re-warming before each sample.
    """

    fn: Callable[[], Any]
    clock: Clock = field(default_factory=HostClock)
    scale: float = 1.0
    number: int | None = None
    max_samples: int | None = None
    warmup: Callable[[], Any] | None = None


@dataclass
class Samples:
    """Seconds per unit of each sample, and the calls each sample averaged; ``failure`` says why
    the runner was dropped (its error), None for one measured to the end."""

    times: list[float]
    number: int
    failure: str | None = None


def _calls_per_sample(runner: Runner) -> int:
    if runner.number is not None:
        return runner.number
    once = runner.clock.seconds(runner.fn, 1, runner.warmup)
    return max(1, min(MAX_CALLS, math.ceil(MIN_SAMPLE_S / max(once, 1e-9))))


def _warm(runner: Runner, samples: Samples, warmups: int) -> None:
    """The warm-up calls, then the calls each sample makes."""
    for _ in range(warmups):
        (runner.warmup or runner.fn)()
    samples.number = _calls_per_sample(runner)


def _sample(runner: Runner, samples: Samples) -> None:
    """One more sample, unless the runner has its ``max_samples``."""
    if runner.max_samples is None or len(samples.times) < runner.max_samples:
        seconds = runner.clock.seconds(runner.fn, samples.number, runner.warmup)
        samples.times.append(seconds * runner.scale)


def _unless_failed(
    failed: Callable[[Exception], str],
    work: Callable[..., None],
    runner: Runner,
    samples: Samples,
    *args: Any,
) -> None:
    """``work(runner, samples, *args)`` for a runner that has not failed; an error from it (a CUDA
    error, out of memory) fails the runner, ``failed(error)`` its ``failure``, not the whole run."""
    if samples.failure is None:
        try:
            work(runner, samples, *args)
        except Exception as err:
            samples.failure = failed(err)


def measure(
    runners: dict[str, Runner], repeats: int, failed: Callable[[Exception], str], warmups: int = 2
) -> dict[str, Samples]:
    """Warm every runner up, then take ``repeats`` samples of each, alternating between them.

    The order rotates every round so no peer always runs right after the same other one. A runner
    that raises is dropped there, with ``failed(error)`` as its samples' ``failure``; the others
    are still measured.
    """
    samples = {name: Samples([], 0) for name in runners}
    for name, runner in runners.items():
        _unless_failed(failed, _warm, runner, samples[name], warmups)
    names = list(runners)
    for round_ in range(repeats):
        k = round_ % len(names) if names else 0
        for name in names[k:] + names[:k]:
            _unless_failed(failed, _sample, runners[name], samples[name])
    return samples
