"""The ``ops`` suite: each backend op called directly, against PyTorch's op on the same inputs.

Cases are the tutorial MNIST net's layers at each batch size (conv1 1->16 28x28, pool1 16x26x26,
conv2 16->32 13x13, pool2 32x11x11, the 10-class loss) plus a 3x3 64->64 56x56 layer at batch 64.
Shape arguments are passed already normalised, as :mod:`gpucnn.backend.base` expects.

The eager peers pay one launch from Python per call, which at these sizes can cost more than the
kernel (a CuPy launch 15-20 us of host time, PyTorch's 8-11 us, measured on an H200). The graph
peers record GRAPH_CALLS calls of an op as one CUDA graph and replay it: the kernels then run back
to back, the graph's one launch spread over GRAPH_CALLS calls, and the time reported per call is
about the kernels' own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend.launchers.conv2d import square_tiles_only
from ..backend.launchers.winograd import convolution_algorithm
from . import peers as P
from .timing import Runner

ONE = (1, 1)
WINDOW = (2, 2)
NO_PAD = (0, 0)
CONV_OPS = ("conv forward", "conv backward-input", "conv backward-weight")
POOL_OPS = ("max-pool forward", "max-pool backward", "avg-pool forward", "avg-pool backward")
XENT_OPS = ("softmax-xent forward", "softmax-xent backward")
GRAPH_CALLS = 20  # an op's calls per captured graph (the graph peers)


@dataclass(frozen=True)
class Case:
    """One layer shape: ``kind`` is conv, pool or xent; x is (n, c, h, w) or logits (n, c)."""

    name: str
    kind: str
    n: int
    c: int
    h: int = 1
    w: int = 1
    k: int = 0  # conv output channels
    pad: int = 0  # conv padding on every side

    @property
    def ops(self) -> tuple[str, ...]:
        return {"conv": CONV_OPS, "pool": POOL_OPS, "xent": XENT_OPS}[self.kind]

    @property
    def shape(self) -> str:
        if self.kind == "xent":
            return f"{self.n}x{self.c} logits"
        head = f"{self.n}x{self.c}x{self.h}x{self.w}"
        return f"{head} -> {self.k} 3x3 pad {self.pad}" if self.kind == "conv" else head


def cases(batch_sizes: list[int]) -> list[Case]:
    """The tutorial net's layers at each batch size, then the 56x56 layer at batch 64."""
    out = []
    for b in batch_sizes:
        out += [
            Case(f"conv1 b{b}", "conv", b, 1, 28, 28, k=16),
            Case(f"pool1 b{b}", "pool", b, 16, 26, 26),
            Case(f"conv2 b{b}", "conv", b, 16, 13, 13, k=32),
            Case(f"pool2 b{b}", "pool", b, 32, 11, 11),
            Case(f"xent b{b}", "xent", b, 10),
        ]
    return out + [Case("conv3x3 64->64 56x56 b64", "conv", 64, 64, 56, 56, k=64, pad=1)]


def inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Host float32 inputs (and int64 labels) of every op of ``case``, drawn once."""
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    n, c, h, w = case.n, case.c, case.h, case.w
    if case.kind == "xent":
        return {"logits": normal(n, c), "labels": rng.integers(0, c, n)}
    if case.kind == "pool":
        return {"x": normal(n, c, h, w), "gy": normal(n, c, h // 2, w // 2)}
    ho, wo = h + 2 * case.pad - 2, w + 2 * case.pad - 2
    return {
        "x": normal(n, c, h, w),
        "w": normal(case.k, c, 3, 3) / np.float32(3 * np.sqrt(c)),
        "b": normal(case.k),
        "gy": normal(n, case.k, ho, wo),
    }


def gpucnn_ops(backend, case: Case, host: dict) -> dict[str, Callable[[], Any]]:
    """Each op of ``case`` as a call of ``backend`` on device copies of ``host`` (arrays already on
    the device are used as they are)."""
    a = {name: backend.asarray(v) for name, v in host.items()}
    if case.kind == "xent":
        _, probs = backend.softmax_cross_entropy_forward(a["logits"], a["labels"])
        return {
            "softmax-xent forward": lambda: backend.softmax_cross_entropy_forward(
                a["logits"], a["labels"]
            )[0],
            "softmax-xent backward": lambda: backend.softmax_cross_entropy_backward(
                probs, a["labels"]
            ),
        }
    x, gy = a["x"], a["gy"]
    if case.kind == "pool":
        _, argmax = backend.max_pool2d_forward(x, WINDOW, WINDOW, NO_PAD)
        return {
            "max-pool forward": lambda: backend.max_pool2d_forward(x, WINDOW, WINDOW, NO_PAD)[0],
            "max-pool backward": lambda: backend.max_pool2d_backward(
                gy, argmax, x.shape, WINDOW, WINDOW, NO_PAD
            ),
            "avg-pool forward": lambda: backend.avg_pool2d_forward(x, WINDOW, WINDOW, NO_PAD),
            "avg-pool backward": lambda: backend.avg_pool2d_backward(
                gy, x.shape, WINDOW, WINDOW, NO_PAD
            ),
        }
    w, geometry = a["w"], (ONE, ((case.pad,) * 2,) * 2, ONE, 1)
    return {
        "conv forward": lambda: backend.conv2d_forward(x, w, a["b"], *geometry),
        "conv backward-input": lambda: backend.conv2d_backward_input(gy, w, x.shape, *geometry),
        "conv backward-weight": lambda: backend.conv2d_backward_weight(gy, x, w.shape, *geometry),
    }


def torch_ops(device, case: Case, host: dict) -> dict[str, Callable[[], Any]]:
    """PyTorch's ops for ``case``: the functional forward, the aten kernels autograd calls."""
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    t = {name: P.to_torch(v, device) for name, v in host.items()}
    if case.kind == "xent":
        logp = torch.log_softmax(t["logits"], 1)
        _, total = aten.nll_loss_forward(logp, t["labels"], None, 1, -100)
        one = torch.ones((), device=device)
        return {
            "softmax-xent forward": lambda: F.cross_entropy(t["logits"], t["labels"]),
            "softmax-xent backward": lambda: aten._log_softmax_backward_data(
                aten.nll_loss_backward(one, logp, t["labels"], None, 1, -100, total),
                logp,
                1,
                torch.float32,
            ),
        }
    x, gy = t["x"], t["gy"]
    if case.kind == "pool":
        _, index = aten.max_pool2d_with_indices(x, WINDOW, WINDOW)
        return {
            "max-pool forward": lambda: aten.max_pool2d_with_indices(x, WINDOW, WINDOW)[0],
            "max-pool backward": lambda: aten.max_pool2d_with_indices_backward(
                gy, x, WINDOW, WINDOW, NO_PAD, ONE, False, index
            ),
            "avg-pool forward": lambda: F.avg_pool2d(x, WINDOW),
            "avg-pool backward": lambda: aten.avg_pool2d_backward(
                gy, x, WINDOW, WINDOW, NO_PAD, False, True, None
            ),
        }
    w, pad = t["w"], [case.pad] * 2

    def backward(mask):
        return aten.convolution_backward(gy, x, w, None, ONE, pad, ONE, False, NO_PAD, 1, mask)

    return {
        "conv forward": lambda: F.conv2d(x, w, t["b"], padding=pad),
        "conv backward-input": lambda: backward([True, False, False])[0],
        "conv backward-weight": lambda: backward([False, True, False])[1],
    }


@dataclass
class GraphReplay:
    """GRAPH_CALLS calls of ``fn`` captured as one CUDA graph: calling this replays the graph and
    returns the last call's output. It keeps ``fn`` as long as the graph: ``fn``'s closure holds
    the op's inputs, which the graph reads at every replay and which nothing else keeps (freed,
    their memory would go to other arrays and the replays would read those)."""

    replay: Callable[[], Any]
    fn: Callable[[], Any]

    def __call__(self) -> Any:
        return self.replay()


def gpucnn_graph(
    backend, fn: Callable[[], Any], within: Callable[[], Any] = contextlib.nullcontext
) -> GraphReplay:
    """``fn``'s calls captured in a graph session of ``backend``, after two eager runs in it
    (which compile and fill its memory pool); the runs, the capture and each replay happen
    ``within()`` (the emulated session re-runs ``fn`` at a replay)."""
    session = backend.graph_session()

    def calls():
        return [fn() for _ in range(GRAPH_CALLS)]

    def replay():
        with within():
            return session.replay()[-1]

    with within():
        for _ in range(2):
            session.run(calls, ())
        session.capture(calls, ())
    return GraphReplay(replay, fn)


def torch_graph(fn: Callable[[], Any]) -> GraphReplay:
    """PyTorch's ``fn``'s calls captured with :func:`.peers.torch_capture`; the replay holds the
    graph and its outputs."""
    graph, outputs = P.torch_capture(lambda: [fn() for _ in range(GRAPH_CALLS)])

    def replay():
        graph.replay()
        return outputs[-1]

    return GraphReplay(replay, fn)


@contextlib.contextmanager
def baseline_kernels() -> Iterator[None]:
    """Every convolution as the direct implicit GEMM on the 64 x 64 tile, as before the narrow
    tile and Winograd: the ``-baseline`` graph peer, whose ratio to the plain graph peer is
    their gain in the same run (each row has at most one of them: the narrow tile serves GEMMs
    of at most 16 rows, Winograd layers of at least 32 channels)."""
    with square_tiles_only(), convolution_algorithm("direct"):
        yield


def _peer_ops(peer: P.Peer, case: Case, host: dict):
    """(ops by name, clock, to_numpy) of one peer; a graph peer's op replays GRAPH_CALLS calls."""
    if peer.name.startswith("gpucnn-"):
        backend = P.gpucnn_backend(peer)
        ops = gpucnn_ops(backend, case, host)
        if P.is_graph(peer):
            within = baseline_kernels if P.baseline_kernels(peer) else contextlib.nullcontext
            ops = P.capturing(
                lambda: {name: gpucnn_graph(backend, fn, within) for name, fn in ops.items()}
            )
        return ops, P.gpucnn_clock(backend), backend.to_numpy
    device = P.torch_device(peer)  # sets the peer's TF32 mode, which a capture keeps
    ops = torch_ops(device, case, host)
    if P.is_graph(peer):
        ops = P.capturing(lambda: {name: torch_graph(fn) for name, fn in ops.items()})
    else:
        ops = {name: P.torch_call(peer, fn) for name, fn in ops.items()}
    return ops, P.torch_clock_for(peer), lambda t: t.detach().cpu().numpy()


def runners(peers: list[P.Peer], case: Case, seed: int = 0):
    """Per op: (runners by peer, unavailable reasons by peer, outputs by peer for the check). A
    graph peer's runner times a replay of GRAPH_CALLS calls and reports it per call."""
    host = inputs(case, np.random.default_rng(seed))
    per_op = {op: ({}, {}, {}) for op in case.ops}
    for peer in peers:
        try:
            built = P.setting_up(lambda peer=peer: _peer_runners(peer, case, host))
        except P.Unavailable as err:
            for _, missing, _ in per_op.values():
                missing[peer.name] = str(err)
            continue
        for op, (runner, output) in built.items():
            run, _, outputs = per_op[op]
            run[peer.name], outputs[peer.name] = runner, output
    return per_op


def _peer_runners(peer: P.Peer, case: Case, host: dict) -> dict[str, tuple[Runner, np.ndarray]]:
    """Per op, the peer's runner and its output (float64, for the check against the first)."""
    ops, clock, to_numpy = _peer_ops(peer, case, host)
    scale = 1 / GRAPH_CALLS if P.is_graph(peer) else 1.0
    return {
        op: (Runner(fn, clock, scale), np.asarray(to_numpy(fn()), dtype=np.float64))
        for op, fn in ops.items()
    }
