"""The peers a benchmark compares, where their figures are taken, and how to reach their devices.

A peer's ``device`` is the hardware its figures come from ("cpu" or "cuda"): ratios are only ever
taken between peers of one device. ``gpucnn-cuda-emu`` runs the CUDA kernels on the CPU, so its
figures are CPU figures (useful to test the harness, not as a speed).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backend import Backend, cpu_threads, get_backend
from ..errors import GpuUnavailableError
from .timing import Clock, HostClock, cupy_clock, torch_clock

SUITES = ("ops", "step", "epoch", "memory")  # a peer's suites unless it names its own
GPUCNN_SUITES = (*SUITES, "bandwidth")  # gpucnn's ops against its own device's copy


class Unavailable(Exception):
    """A peer that cannot run here; the message says why."""


@dataclass(frozen=True)
class Peer:
    """A competitor: its name, the device its figures come from, the suites it runs in."""

    name: str
    device: str
    suites: tuple[str, ...] = SUITES
    precision: str = "float32"
    note: str = ""


PEERS = {
    peer.name: peer
    for peer in (
        Peer("tutorial-loops", "cpu", ("step",), "float64", "the tutorial's per-sample loops"),
        Peer("gpucnn-cpu", "cpu", GPUCNN_SUITES),
        Peer(
            "gpucnn-cuda-emu",
            "cpu",
            GPUCNN_SUITES,
            note="CUDA kernels emulated on the CPU: a test, not a speed",
        ),
        Peer("pytorch-cpu", "cpu"),
        Peer("gpucnn-cuda", "cuda", (*GPUCNN_SUITES, "compile"), note="eager"),
        Peer("gpucnn-cuda-graph", "cuda", note="captured CUDA graph"),
        Peer(
            "gpucnn-cuda-baseline-graph",
            "cuda",
            ("ops",),
            note="captured CUDA graph, direct convs, 64 x 64 tiles: narrow tile's, Winograd's A/B",
        ),
        Peer("pytorch-cuda", "cuda", note="eager, cuDNN, TF32 off"),
        Peer("pytorch-cuda-graph", "cuda", note="captured CUDA graph, TF32 off"),
        Peer(
            "pytorch-cuda-tf32",
            "cuda",
            ("ops", "step", "epoch"),  # its memory is pytorch-cuda's, less a workspace or two
            precision="tf32",
            note="eager, cuDNN, TF32 on: apart",
        ),
    )
}

DEFAULT_PEERS = {
    "cpu": ("tutorial-loops", "gpucnn-cpu", "pytorch-cpu"),
    "cuda-emu": ("tutorial-loops", "gpucnn-cuda-emu", "pytorch-cpu"),
    "cuda": (
        "gpucnn-cuda",
        "gpucnn-cuda-graph",
        "gpucnn-cuda-baseline-graph",
        "pytorch-cuda",
        "pytorch-cuda-graph",
        "pytorch-cuda-tf32",
    ),
}


def select(device: str, suite: str, names: list[str] | None = None) -> list[Peer]:
    """The peers of ``suite``: ``names`` when given (checked), else the device's defaults."""
    unknown = sorted(set(names or ()) - set(PEERS))
    if unknown:
        raise ValueError(f"unknown peers {unknown}; choose from: {', '.join(PEERS)}")
    chosen = names or DEFAULT_PEERS[device]
    peers = [PEERS[name] for name in dict.fromkeys(chosen) if suite in PEERS[name].suites]
    if not peers:
        where = " or ".join(dict.fromkeys(p.device for p in PEERS.values() if suite in p.suites))
        raise ValueError(
            f"none of the peers {list(chosen)} runs in the {suite} suite (it runs on --device "
            f"{where})"
        )
    return peers


# ----------------------------------------------------------------------------------- gpucnn
def is_graph(peer: Peer) -> bool:
    """True for the peers that replay a captured CUDA graph (of the step, or of an op's calls)."""
    return peer.name.endswith("-graph")


CAPTURE_FAILED = "the CUDA graph capture failed"
SETUP_FAILED = "setting the peer up failed"
TIMING_FAILED = "timing the peer failed"  # in its warm-up or a sample: a CUDA error, out of memory
MEASURING_FAILED = "measuring the peer failed"  # a memory-suite process of its own failed


def failure_reason(failure: str, err: Exception) -> str:
    """Why a peer failed: ``failure``, the error and the one it was raised from or in handling
    (PyTorch's end of a capture reports its own), as Python's traceback shows them: not one
    dropped with ``from None``. The traceback goes to stderr."""
    traceback.print_exception(err, file=sys.stderr)
    reason = f"{failure}: {type(err).__name__}: {err}"
    if err.__cause__ is not None:
        reason += f" (from {type(err.__cause__).__name__}: {err.__cause__})"
    elif err.__context__ is not None and not err.__suppress_context__:
        reason += f" (while handling {type(err.__context__).__name__}: {err.__context__})"
    return reason


def failing_softly(make: Callable[[], Any], failure: str) -> Any:
    """``make()``; an error from it (other than :class:`Unavailable`) makes the peer unavailable,
    with :func:`failure_reason` as the reason: the peer's rows say so, the goals that need a gpucnn
    peer that failed count as missed (:mod:`.goals`), the command exits 1 (:func:`own_failure`),
    and the run's other figures still come out."""
    try:
        return make()
    except Unavailable:
        raise
    except Exception as err:
        raise Unavailable(failure_reason(failure, err)) from err


def capturing(make: Callable[[], Any]) -> Any:
    """``make()``, which warms up and captures a CUDA graph, failing softly."""
    return failing_softly(make, CAPTURE_FAILED)


def setting_up(make: Callable[[], Any]) -> Any:
    """``make()``, which builds a peer's runners (a cuDNN error, say), failing softly."""
    return failing_softly(make, SETUP_FAILED)


def timing_failed(err: Exception) -> str:
    """The status of a peer whose calls raised while it was measured (:func:`.timing.measure`),
    failing softly as :func:`failing_softly` does."""
    return failure_reason(TIMING_FAILED, err)


def own_failure(peer: str, status: str) -> bool:
    """True where a gpucnn peer failed (its setup, its capture, its timed calls or a process of
    its own in the memory suite): gpucnn's own error, which no missing PyTorch or GPU excuses."""
    failed = (CAPTURE_FAILED, SETUP_FAILED, TIMING_FAILED, MEASURING_FAILED)
    return peer.startswith("gpucnn-") and status.startswith(failed)


def baseline_kernels(peer: Peer) -> bool:
    """True for the peers that run every convolution as the direct GEMM on the 64 x 64 tile
    (``-baseline``): the conv kernels without the narrow tile and Winograd."""
    return "-baseline" in peer.name


def gpucnn_backend(peer: Peer) -> Backend:
    """The gpucnn backend a ``gpucnn-*`` peer runs on."""
    device = peer.name.removeprefix("gpucnn-").removesuffix("-graph").removesuffix("-baseline")
    try:
        backend = get_backend(device)
    except GpuUnavailableError as err:
        raise Unavailable(str(err)) from err
    if hasattr(backend, "warmup"):
        backend.warmup()
    return backend


def gpucnn_clock(backend: Backend) -> Clock:
    """CUDA events on a GPU, else the host clock."""
    return cupy_clock() if backend.name == "cuda" else HostClock(backend.synchronize)


# ---------------------------------------------------------------------------------- PyTorch
_MODES_BEFORE: list[tuple[bool, bool, bool]] = []  # PyTorch's modes before the first CUDA peer
# cuDNN's autotuning for the CUDA peers: on where they are timed; the memory suite's processes turn
# it off (PyTorch's default), as the workspaces of its trials would stay in PyTorch's cache.
CUDNN_AUTOTUNE = True


def _modes(torch: Any) -> tuple[bool, bool, bool]:
    return (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    )


def restore_torch_modes() -> None:
    """Put back the PyTorch modes the CUDA peers set (TF32 for matmul and cuDNN, cuDNN
    autotuning) as they were before the first of them, so that a run inside a bigger process
    (the tests) leaves them as it found them."""
    if _MODES_BEFORE:
        import torch  # imported already: the modes were saved from it

        matmul, cudnn, benchmark = _MODES_BEFORE.pop()
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cudnn.benchmark = benchmark


def set_threads(count: int, torch_too: bool) -> None:
    """Run gpucnn's CPU backend (and, ``torch_too``, PyTorch) on ``count`` intra-op threads
    (``--threads``)."""
    cpu_threads.set_threads(count)
    if torch_too:
        import torch

        torch.set_num_threads(count)


def torch_device(peer: Peer) -> Any:
    """``torch.device`` of a ``pytorch-*`` peer, with cuDNN autotuning and its TF32 mode set."""
    try:
        import torch
    except ImportError as err:
        raise Unavailable("PyTorch is not installed (pip install torch)") from err
    if peer.device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise Unavailable("PyTorch sees no CUDA device (torch.cuda.is_available() is False)")
    if not _MODES_BEFORE:
        _MODES_BEFORE.append(_modes(torch))
    torch.backends.cudnn.benchmark = CUDNN_AUTOTUNE
    set_tf32(peer)
    return torch.device("cuda")


def set_tf32(peer: Peer) -> None:
    """Switch PyTorch's TF32 matmul and cuDNN modes to what ``peer`` measures."""
    import torch

    enabled = peer.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def torch_call(peer: Peer, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` under the peer's TF32 mode (the flags are global, and CUDA peers alternate)."""
    if peer.device == "cpu":
        return fn

    def call():
        set_tf32(peer)
        return fn()

    return call


def torch_clock_for(peer: Peer) -> Clock:
    """CUDA events for a CUDA peer, else the host clock."""
    return torch_clock() if peer.device == "cuda" else HostClock()


def torch_capture(fn: Callable[[], Any], reset: Callable[[], None] = lambda: None):
    """(graph, output): ``fn()`` captured once as a PyTorch CUDA graph, after three warm-up calls
    on a side stream, as PyTorch's capture recipe asks (cuDNN's autotuning runs there, not in
    the capture; the TF32 mode set now is the graph's). ``reset()`` runs before each warm-up
    call and before the capture, outside it (an optimizer's ``zero_grad``). The caller keeps
    the graph's inputs and ``output`` alive as long as it replays the graph."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            reset()
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    reset()
    with torch.cuda.graph(graph):
        output = fn()
    return graph, output


def to_torch(array: Any, device: Any) -> Any:
    """A host NumPy array as a PyTorch tensor on ``device`` (a copy)."""
    import torch

    return torch.from_numpy(array.copy()).to(device)
