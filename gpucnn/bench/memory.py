"""The ``memory`` suite: how much memory training takes, per peer, each in a new process.

Each sample is a new process (:mod:`.children`), so that no peer reuses memory another left in an
allocator. It starts its library (imports, PyTorch's lazy ones too, the CUDA context, gpucnn's
kernels), reads its memory, then builds the peer's step as the ``step`` suite does (the batch on
the device, the model with the same weights, SGD with momentum; a graph peer's warm-up and
capture), calls it CALLS times, and reports how far its memory rose above what it had before.
Both libraries are measured the same way:

- host peers (``gpucnn-cpu``, ``gpucnn-cuda-emu``, ``pytorch-cpu``): the resident set, from
  Linux's /proc/self/status: its high-water mark, reset just before (/proc/self/clear_refs), over
  the resident size then, less the rise of its file-backed part (library code read in on first
  use: shared, and dropped when memory is short), so that what is left is the process's own;
- CUDA peers: the device memory in use, the driver's count (cudaMemGetInfo, through the peer's own
  library, so whatever holds it: CuPy's pools, PyTorch's caching allocator, cuBLAS and cuDNN
  handles, a graph's), after over before, plus what PyTorch's allocator had handed back from its
  peak by then (it empties its cache as a graph capture begins); CuPy's pools hand nothing back.
  The count is the whole device's: run it with nothing else on the GPU.

PyTorch runs with cuDNN's autotuning off (its default: the trials' workspaces would stay in its
cache), where the timed suites turn it on.
"""

from __future__ import annotations

import gc
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..backend.launchers.winograd import convolution_algorithm
from . import peers as P
from . import training
from .children import run_child

# Calls of the built step (a graph peer's warm-up and capture come with the build): the first makes
# the optimizer's momentum, the later ones reuse what the allocators keep.
CALLS = 4
OPS = {"cpu": "host memory rise", "cuda": "device memory rise"}
BEFORE = {"cpu": "resident before", "cuda": "in use on the device before (every process's)"}
STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
RESET_PEAK = "5"  # what clear_refs takes to reset the resident set's high-water mark (Linux 4.0)
_CHILD = (
    "from gpucnn.bench.memory import child; "
    "child({peer!r}, {model!r}, {batch!r}, {threads!r}, {algorithm!r})"
)


class Meter(Protocol):
    """``start()`` returns the bytes in use now; ``rise()`` how far they rose since at most."""

    def start(self) -> int: ...

    def rise(self) -> int: ...


def _status_bytes(key: str) -> int:
    """A size from /proc/self/status ("VmRSS:  1234 kB"), in bytes."""
    for line in STATUS.read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            number, unit = value.split()
            assert unit == "kB", line  # the kernel prints every size in kB
            return int(number) * 1024
    raise KeyError(f"{STATUS} has no {key}")


def check_host() -> None:
    """Raise RuntimeError where this process cannot read its resident set's sizes and reset its
    high-water mark (not Linux, or a kernel or sandbox that refuses)."""
    try:
        _status_bytes("VmHWM")
        _status_bytes("RssFile")
        CLEAR_REFS.write_text(RESET_PEAK)
    except (OSError, KeyError) as err:
        raise RuntimeError(
            f"the memory suite reads host memory from Linux's {STATUS} and {CLEAR_REFS}, "
            f"which are not usable here ({type(err).__name__}: {err})"
        ) from err


class HostMeter:
    """The resident set's rise: its high-water mark, reset by :meth:`start`, over its size then,
    less the rise of its file-backed pages (code read in; they only grow meanwhile)."""

    def __init__(self) -> None:
        self._before = self._file = 0

    def start(self) -> int:
        CLEAR_REFS.write_text(RESET_PEAK)
        self._before, self._file = _status_bytes("VmRSS"), _status_bytes("RssFile")
        return self._before

    def rise(self) -> int:
        code = _status_bytes("RssFile") - self._file
        return _status_bytes("VmHWM") - self._before - code


class DeviceMeter:
    """The device memory in use, after over before, plus ``released()``: what an allocator had
    handed back from its peak by the end (``reset()`` starts its count)."""

    def __init__(
        self,
        in_use: Callable[[], int],
        released: Callable[[], int] = lambda: 0,
        reset: Callable[[], None] = lambda: None,
    ) -> None:
        self._in_use, self._released, self._reset = in_use, released, reset
        self._before = 0

    def start(self) -> int:
        self._reset()
        self._before = self._in_use()
        return self._before

    def rise(self) -> int:
        return self._in_use() - self._before + self._released()


def _device_meter(peer: P.Peer) -> DeviceMeter:
    """A CUDA peer's meter, through its own library (which makes the CUDA context)."""
    if peer.name.startswith("gpucnn-"):
        cupy = importlib.import_module("cupy")

        def in_use() -> int:
            cupy.cuda.Device().synchronize()
            free, total = cupy.cuda.runtime.memGetInfo()
            return total - free

        return DeviceMeter(in_use)
    torch = importlib.import_module("torch")

    def torch_in_use() -> int:
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        return total - free

    def released() -> int:
        return torch.cuda.max_memory_reserved() - torch.cuda.memory_reserved()

    return DeviceMeter(torch_in_use, released, torch.cuda.reset_peak_memory_stats)


def _torch_start_up(peer: P.Peer) -> None:
    """PyTorch's start-up: its device, and the modules its optimizers import when the first is made
    (torch._dynamo, sympy: 816 modules, 68 MiB of a process's own memory with PyTorch 2.13 on the
    CPU), which a training run pays once, whatever its model."""
    import torch

    P.torch_device(peer)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def child(peer_name: str, model: str, batch: int, threads: int | None, algorithm: str) -> None:
    """In a new process: measure CALLS calls of ``peer_name``'s train step of ``model`` at
    ``batch``, built after the meter starts; print ``{"before": bytes, "rise": bytes}`` as the
    last line (:mod:`.children`). ``threads`` and ``algorithm`` are the parent's ``--threads``
    and ``--conv-algorithm``."""
    peer = P.PEERS[peer_name]
    gpucnn = peer.name.startswith("gpucnn-")
    if threads:
        P.set_threads(threads, torch_too=not gpucnn)
    P.CUDNN_AUTOTUNE = False
    (P.gpucnn_backend if gpucnn else _torch_start_up)(peer)  # the library's, not training's
    meter: Meter = HostMeter() if peer.device == "cpu" else _device_meter(peer)
    gc.collect()  # the start-up's garbage, not the steps'
    before = meter.start()
    with convolution_algorithm(algorithm):
        step = training.step_runner(peer, batch, 1, model).fn
        for _ in range(CALLS):
            step()
    print(json.dumps({"before": before, "rise": meter.rise()}))


def check(peer: P.Peer) -> None:
    """Raise :class:`~.peers.Unavailable` where ``peer`` cannot run or be measured here, before
    any child starts (for gpucnn's CUDA peers this also fills the kernel cache the children read)."""
    if peer.device == "cpu":
        try:
            check_host()
        except RuntimeError as err:
            raise P.Unavailable(str(err)) from err
    if peer.name.startswith("gpucnn-"):
        P.gpucnn_backend(peer)
    else:
        P.torch_device(peer)


def sample(peer: P.Peer, model: str, batch: int, threads: int | None, algorithm: str) -> tuple:
    """(bytes before, their rise) in one new process of ``peer`` (:func:`child`'s arguments)."""
    code = _CHILD.format(
        peer=peer.name, model=model, batch=batch, threads=threads, algorithm=algorithm
    )
    out = run_child(code, f"{peer.name} memory-suite")
    return int(out["before"]), int(out["rise"])
