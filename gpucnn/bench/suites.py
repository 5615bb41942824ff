"""The suites (``ops``, ``step``, ``epoch``, ``bandwidth``, ``compile``, ``memory``): build each
peer's runners, measure, collect."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import bandwidth, coldstart, memory, ops, training
from . import peers as P
from .peers import Peer, Unavailable, gpucnn_clock, is_graph
from .report import Result, format_bytes
from .timing import Runner, Samples, measure

DEFAULT_REPEATS = {"ops": 20, "step": 20, "epoch": 3, "bandwidth": 10, "compile": 3, "memory": 3}


@dataclass
class Options:
    """What a suite needs besides its peers: sizes, repeats and the suite-specific knobs."""

    batch_sizes: list[int]
    repeats: int
    cases: str | None = None  # ops: only cases whose name contains this
    tutorial_samples: int = 3  # step: samples the tutorial's loops are timed on
    epoch_samples: int = 60_000
    data_dir: str | None = None
    megabytes: float = 256  # bandwidth: the input tensor's size in MiB
    model: str = training.MODEL  # step, memory: the zoo model trained
    threads: int | None = None  # memory: --threads, for its processes (None: their default)
    conv_algorithm: str = "auto"  # memory: --conv-algorithm, for its processes


def _timed(samples: Samples) -> dict:
    """A result's fields from a runner's samples: its times, or why it failed while timed."""
    if samples.failure is not None:
        return {"status": samples.failure}
    return {"times": samples.times, "calls_per_sample": samples.number}


def _measured(suite, case, op, runners, missing, peers, repeats, **fields):
    """Results of one case and op, in peer order, unavailable and failed peers included with the
    reason; ``fields`` are the other fields every row has (its samples and batch size)."""
    timed = measure(runners, repeats, P.timing_failed)
    out = []
    for peer in peers:
        extra = _timed(timed[peer.name]) if peer.name in timed else {"status": missing[peer.name]}
        out.append(Result.of(peer, suite, case, op, **fields, **extra))
    return out


def _build(peers: list[Peer], make: Callable[..., Runner], *args):
    """Runners by peer name, ``make(peer, *args)``, and the reasons of the unavailable ones."""
    runners, missing = {}, {}
    for peer in peers:
        try:
            runners[peer.name] = P.setting_up(lambda peer=peer: make(peer, *args))
        except Unavailable as err:
            missing[peer.name] = str(err)
    return runners, missing


def run_ops(peers: list[Peer], opts: Options) -> list[Result]:
    """The ``ops`` suite: each op of each case (:func:`.ops.cases`) timed per peer, with each
    peer's output compared with the first peer's (``rel_diff``)."""
    results = []
    for case in ops.cases(opts.batch_sizes):
        if opts.cases and opts.cases not in case.name:
            continue
        for op, (runners, missing, outputs) in ops.runners(peers, case).items():
            name = f"{case.name} {case.shape}"
            rows = _measured("ops", name, op, runners, missing, peers, opts.repeats)
            first = next(iter(outputs.values()), None)
            for peer, r in zip(peers, rows, strict=True):
                if r.status == "ok" and is_graph(peer):  # a replay is GRAPH_CALLS calls
                    r.calls_per_sample *= ops.GRAPH_CALLS
                    r.annotate(f"replays of {ops.GRAPH_CALLS} calls, timed per call")
                if r.peer in outputs and outputs[r.peer] is not first:
                    diff = np.linalg.norm(outputs[r.peer] - first) / np.linalg.norm(first)
                    r.rel_diff = float(diff)
            results += rows
    return results


def run_step(peers: list[Peer], opts: Options) -> list[Result]:
    """The ``step`` suite: one training step of ``opts.model`` (the tutorial MNIST net by
    default) per batch size."""
    results = []
    for batch in opts.batch_sizes:
        args = (batch, opts.tutorial_samples, opts.model)
        runners, missing = _build(peers, training.step_runner, *args)
        case = f"{opts.model} b{batch}"
        rows = _measured(
            "step", case, "train step", runners, missing, peers, opts.repeats,
            samples_per_unit=batch, batch_size=batch,
        )  # fmt: skip
        for r in rows:
            if r.peer == "tutorial-loops" and r.status == "ok":
                r.annotate(f"timed on {len(r.times)} samples, scaled to the batch")
        results += rows
    return results


def run_epoch(peers: list[Peer], opts: Options) -> list[Result]:
    """The ``epoch`` suite: a training epoch with the data resident on the device (Fashion-MNIST
    from ``opts.data_dir``, else random images) per batch size."""
    largest = max(opts.batch_sizes)
    if opts.epoch_samples < largest:  # the last partial batch is dropped: nothing would be timed
        raise ValueError(
            f"--epoch-samples {opts.epoch_samples} is under --batch-size {largest}: an epoch "
            "of no whole batch"
        )
    if opts.data_dir:
        data = training.fashion_mnist(opts.data_dir, opts.epoch_samples)
    else:
        data = training.random_images(opts.epoch_samples)
    results = []
    for batch in opts.batch_sizes:
        runners, missing = _build(peers, training.epoch_runner, batch, data)
        samples = len(data.y) // batch * batch
        case = f"{data.source} {samples} samples b{batch}"
        results += _measured(
            "epoch", case, "epoch", runners, missing, peers, opts.repeats,
            samples_per_unit=samples, batch_size=batch,
        )  # fmt: skip
    return results


def run_bandwidth(peers: list[Peer], opts: Options) -> list[Result]:
    """Per peer, its copy and ops taking turns in one run (so the copy sees the same conditions)."""
    x_shape = bandwidth.shape(opts.megabytes)
    case = bandwidth.case_name(x_shape)
    results = []
    for peer in peers:
        try:  # the backend's warm-up compiles its kernels: a failure there is the peer's row
            backend = P.setting_up(lambda p=peer: P.gpucnn_backend(p))
            calls = P.setting_up(lambda b=backend: bandwidth.gpucnn_ops(b, x_shape))
        except Unavailable as err:
            results += [
                Result.of(peer, "bandwidth", case, op, status=str(err)) for op in bandwidth.TRAFFIC
            ]
            continue
        clock = gpucnn_clock(backend)
        runners = {op: Runner(fn, clock) for op, fn in calls.items()}
        rows = []
        for op, s in measure(runners, opts.repeats, P.timing_failed).items():
            moved = bandwidth.bytes_moved(op, x_shape)
            rows.append(Result.of(peer, "bandwidth", case, op, bytes=moved, **_timed(s)))
        bandwidth.add_copy_fractions(rows)
        results += rows
    return results


def run_compile(peers: list[Peer], opts: Options) -> list[Result]:
    """Cold compile and warm first step, each timed in new processes, with its goal noted."""
    results = []
    for peer in peers:
        try:  # the backend says why the GPU is unusable, before any child starts
            P.setting_up(lambda p=peer: P.gpucnn_backend(p))
            times = P.setting_up(lambda: coldstart.samples(opts.repeats))
        except Unavailable as err:
            results += [
                Result.of(peer, "compile", row.case, op, status=str(err))
                for op, row in coldstart.GOALS.items()
            ]
            continue
        for op, row in coldstart.GOALS.items():
            r = Result.of(peer, "compile", row.case, op, times=times[op], calls_per_sample=1)
            if row.goal is None:
                r.annotate(row.note)
            else:
                met = "met" if r.median <= row.goal else "missed"
                r.annotate(f"goal <= {row.goal:g} s: {met}")
            results.append(r)
    return results


def run_memory(peers: list[Peer], opts: Options) -> list[Result]:
    """The ``memory`` suite: per batch size, each peer's rise in memory over the first train steps
    of ``opts.model`` in new processes (:mod:`.memory`), the peers taking turns, ``opts.repeats``
    processes each."""
    missing = {}
    for peer in peers:  # before any child starts: a missing PyTorch, GPU or /proc
        try:
            P.setting_up(functools.partial(memory.check, peer))
        except Unavailable as err:
            missing[peer.name] = str(err)
    results = []
    for batch in opts.batch_sizes:
        case, status = f"{opts.model} b{batch}", dict(missing)
        samples: dict[str, list[tuple[int, int]]] = {p.name: [] for p in peers}
        for _ in range(opts.repeats):
            for peer in (p for p in peers if p.name not in status):
                one = functools.partial(
                    memory.sample, peer, opts.model, batch, opts.threads, opts.conv_algorithm
                )
                try:
                    samples[peer.name].append(P.failing_softly(one, P.MEASURING_FAILED))
                except Unavailable as err:
                    status[peer.name] = str(err)
        for peer in peers:
            op = memory.OPS[peer.device]
            if peer.name in status:
                results.append(Result.of(peer, "memory", case, op, status=status[peer.name]))
                continue
            befores, rises = zip(*samples[peer.name], strict=True)
            r = Result.of(peer, "memory", case, op, rise_bytes=list(rises), batch_size=batch)
            before = format_bytes(float(np.median(befores)))
            r.annotate(
                f"{memory.CALLS} step calls in a new process, {before} {memory.BEFORE[peer.device]}"
            )
            results.append(r)
    return results


SUITES = {
    "ops": run_ops,
    "step": run_step,
    "epoch": run_epoch,
    "bandwidth": run_bandwidth,
    "compile": run_compile,
    "memory": run_memory,
}
