"""The ``memory`` suite: how much memory a training step adds to a new process, per peer.

Each sample is a new process (:mod:`.children`), so that no peer reuses memory an earlier one
left in an allocator. It builds zoo model, optimizer and one batch on its device, reads its memory,
runs the first CALLS train steps (a captured peer captures on its third and replays on its
fourth) and reports how far its memory rose above what it had before them. What the first steps
create to keep (momentum buffers, the allocators' caches, a graph's memory) counts, as it does
in a real run. Both libraries are measured the same way:

- host peers (``gpucnn-cpu``, ``gpucnn-cuda-emu``, ``pytorch-cpu``): the resident set, from
  Linux's /proc/self/status: its high-water mark, reset just before the steps
  (/proc/self/clear_refs), over the resident size then;
- CUDA peers: the device memory in use, the driver's count (cudaMemGetInfo, through the peer's
  own library), after the steps over before them: whatever holds it, CuPy's pools, PyTorch's
  caching allocator, cuBLAS and cuDNN workspaces, a graph's. Both libraries keep what they
  allocated in their pools, so that is the most they held at once. The count is the whole
  device's: run it with nothing else on the GPU.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import peers as P
from . import training
from .children import run_child

CALLS = training.GRAPH_WARMUP_CALLS + 1  # a captured gpucnn step has replayed once by then
OPS = {"cpu": "host memory rise", "cuda": "device memory rise"}
STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
RESET_PEAK = "5"  # what clear_refs takes to reset the resident set's high-water mark (Linux 4.0)
_CHILD = "from gpucnn.bench.memory import child; child({peer!r}, {model!r}, {batch!r})"


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
    """Raise :class:`~.peers.Unavailable` where this process cannot read its resident set's size
    and reset its high-water mark (not Linux, or a kernel or sandbox that refuses)."""
    try:
        _status_bytes("VmHWM")
        CLEAR_REFS.write_text(RESET_PEAK)
    except (OSError, KeyError) as err:
        raise P.Unavailable(
            f"host memory is read from Linux's {STATUS} and {CLEAR_REFS}, which are not "
            f"usable here ({type(err).__name__}: {err})"
        ) from err


class HostMeter:
    """The resident set's rise: its high-water mark, reset by :meth:`start`, over its size then."""

    def start(self) -> int:
        CLEAR_REFS.write_text(RESET_PEAK)
        self._before = _status_bytes("VmRSS")
        return self._before

    def rise(self) -> int:
        return _status_bytes("VmHWM") - self._before


class DeviceMeter:
    """The device memory in use, after over before: ``in_use()`` waits for the device and reads
    the driver's count."""

    def __init__(self, in_use: Callable[[], int]) -> None:
        self._in_use = in_use

    def start(self) -> int:
        self._before = self._in_use()
        return self._before

    def rise(self) -> int:
        return self._in_use() - self._before


def _gpucnn(peer: P.Peer, x, y, model: str) -> tuple[Callable[[], Any], Any]:
    """(one train step, its meter) of a ``gpucnn-*`` peer: model, optimizer and batch built."""
    backend = P.gpucnn_backend(peer)
    step = training.gpucnn_step(backend, P.is_graph(peer), model)
    xd, yd = backend.asarray(x), backend.asarray(y)
    if peer.device == "cpu":
        return lambda: step(xd, yd), HostMeter()

    def in_use() -> int:
        backend.synchronize()
        free, total = backend.xp.cuda.runtime.memGetInfo()
        return total - free

    return lambda: step(xd, yd), DeviceMeter(in_use)


def _torch(peer: P.Peer, x, y, model: str) -> tuple[Callable[[], Any], Any]:
    """(one train step, its meter) of a ``pytorch-*`` peer; the graph peer captures on its first
    call, so that the capture's memory counts as gpucnn's does."""
    import torch

    device = P.torch_device(peer)
    tx, ty = P.to_torch(x, device), P.to_torch(y, device)
    if peer.name == "pytorch-cuda-graph":
        net, opt = training.torch_model(device, model)
        graph: list = []

        def step() -> None:
            if not graph:
                graph.append(training.torch_graph_step(net, opt, tx, ty))
            graph[0](tx, ty)
    else:
        eager = training.torch_step(device, model)
        step = P.torch_call(peer, lambda: eager(tx, ty))
    if peer.device == "cpu":
        return step, HostMeter()

    def in_use() -> int:
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        return total - free

    return step, DeviceMeter(in_use)


def child(peer_name: str, model: str, batch: int) -> None:
    """In a new process: build ``peer_name``'s step of ``model`` at ``batch``, run CALLS steps,
    print ``{"before": bytes, "rise": bytes}`` as the last line (:mod:`.children`)."""
    peer = P.PEERS[peer_name]
    x, y = training.random_batch(batch, model=model)
    make = _gpucnn if peer.name.startswith("gpucnn-") else _torch
    step, meter = make(peer, x, y, model)
    gc.collect()  # the set-up's garbage, not the steps'
    before = meter.start()
    for _ in range(CALLS):
        step()
    print(json.dumps({"before": before, "rise": meter.rise()}))


def check(peer: P.Peer) -> None:
    """Raise :class:`~.peers.Unavailable` where ``peer`` cannot run or be measured here, before
    any child starts (for gpucnn's CUDA peers this also fills the kernel cache the children read)."""
    if peer.device == "cpu":
        check_host()
    if peer.name.startswith("gpucnn-"):
        P.gpucnn_backend(peer)
    else:
        P.torch_device(peer)


def sample(peer: P.Peer, model: str, batch: int) -> tuple[int, int]:
    """(bytes before the steps, their rise) of one new process of ``peer``."""
    code = _CHILD.format(peer=peer.name, model=model, batch=batch)
    out = run_child(code, f"{peer.name} memory-suite")
    return int(out["before"]), int(out["rise"])
