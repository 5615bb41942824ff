"""The ``step`` and ``epoch`` suites: training the tutorial MNIST net, one step or one epoch.

Every peer starts from the same weights (gpucnn's, copied into PyTorch) and trains with SGD,
momentum 0.9, mean softmax cross-entropy; the tutorial's loops train one sample at a time with
their plain SGD. The epoch suite keeps the whole training set on the device and shuffles it.
The step suite can train another zoo model (``--model``: fashion-net, with batch norm and
dropout, in training mode), the same way on every peer but the tutorial's loops.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import optim
from ..captured_step import CapturedStep
from ..data.loader import DataLoader
from ..nn.zoo import build_model, model_spec
from ..train import train_step, training_loss
from . import peers as P
from .timing import Runner
from .tutorial import TutorialMnistNet

MODEL = "tutorial-mnist"
LR, MOMENTUM = 0.01, 0.9
GRAPH_WARMUP_CALLS = 3  # a captured step runs eagerly twice, then captures: warmed after three
EPOCH_WARMUP_STEPS = GRAPH_WARMUP_CALLS  # an epoch's warm-up also captures a graph peer's step


@dataclass
class Images:
    """A training set: uint8 images (N, 1, 28, 28), int64 labels, the normalisation."""

    x: np.ndarray
    y: np.ndarray
    mean: float
    std: float
    source: str


def random_images(count: int, seed: int = 0) -> Images:
    """Random uint8 images of Fashion-MNIST's shape and labels in 0..9."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (count, 1, 28, 28), dtype=np.uint8)
    return Images(x, rng.integers(0, 10, count), 127.5, 73.9, "random")


def fashion_mnist(data_dir: str, count: int) -> Images:
    """The first ``count`` Fashion-MNIST training images from IDX files in ``data_dir``."""
    from ..data.datasets import load_dataset

    data = load_dataset("fashion-mnist", data_dir, train_size=count, test_size=1)
    return Images(data.train_x, data.train_y, data.mean, data.std, data.source)


def reference_weights(model: str = MODEL) -> dict[str, np.ndarray]:
    """The starting weights every peer copies (PyTorch key names)."""
    return build_model(model, rng=0).state_dict()


# ----------------------------------------------------------------------------------- steps
def gpucnn_step(backend, captured: bool = False, model: str = MODEL) -> Callable[[Any, Any], Any]:
    """A train step of zoo ``model`` on ``backend``, as the trainer does it: returns the loss.

    ``captured``: the step as a CUDA graph (:class:`~gpucnn.captured_step.CapturedStep`), which
    captures on its third call; warm it up with at least three.
    """
    net = build_model(model, rng=0).to(backend)
    opt = optim.SGD(net.parameters(), LR, momentum=MOMENTUM)
    step = train_step(net, training_loss(0.0), opt)
    if captured:
        step = CapturedStep(step)
    return lambda x, y: step(x, y)[1]


def torch_model(device, model: str = MODEL) -> tuple[Any, Any]:
    """PyTorch's twin of zoo ``model`` (same layers, same weights) and its SGD optimizer."""
    import torch

    layers = [getattr(torch.nn, kind)(**args) for kind, args in model_spec(model)["layers"]]
    net = torch.nn.Sequential(*layers)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in reference_weights(model).items()})
    net.to(device)
    return net, torch.optim.SGD(net.parameters(), LR, momentum=MOMENTUM)


def torch_step(device, model: str = MODEL) -> Callable[[Any, Any], Any]:
    """A train step of PyTorch's twin of ``model``, eager."""
    import torch.nn.functional as F

    net, opt = torch_model(device, model)

    def step(x, y):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step


@dataclass
class TorchGraphStep:
    """PyTorch's captured step: ``step(x, y)`` copies the batch into the static ``x`` and ``y``
    and replays the graph, as gpucnn's :class:`~gpucnn.captured_step.CapturedStep` does, so the
    two graph peers time the same work (a step on a new batch, copies included).

    The graph reads and writes the very memory of the net's weights, the optimizer's buffers and
    the static batch at every replay, so this object keeps them alive as long as the graph: once
    freed, PyTorch's allocator hands that memory to other tensors (seen on an H200: the replay's
    SGD update overwrote another peer's labels, and cross-entropy asserted).
    """

    graph: Any
    net: Any
    optimizer: Any
    x: Any
    y: Any

    def __call__(self, x, y) -> None:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()


def torch_graph_step(net, opt, x, y) -> TorchGraphStep:
    """The whole step of ``net`` and its optimizer ``opt`` (:func:`torch_model`) captured once as
    a CUDA graph (:func:`.peers.torch_capture`, the gradients set to None before each warm-up
    step and the capture), on copies of ``x`` and ``y``."""
    import torch.nn.functional as F

    static_x, static_y = x.clone(), y.clone()

    def step():
        F.cross_entropy(net(static_x), static_y).backward()
        opt.step()

    graph, _ = P.torch_capture(step, reset=lambda: opt.zero_grad(set_to_none=True))
    return TorchGraphStep(graph, net, opt, static_x, static_y)


# ------------------------------------------------------------------------------------ suites
def random_batch(batch: int, seed: int = 0, model: str = MODEL) -> tuple[np.ndarray, np.ndarray]:
    """Host images of zoo ``model``'s input shape ((batch, 1, 28, 28) float32 for
    tutorial-mnist) and labels (batch,) among its classes."""
    spec, rng = model_spec(model), np.random.default_rng(seed)
    images = rng.standard_normal((batch, *spec["input_shape"])).astype(np.float32)
    return images, rng.integers(0, spec["num_classes"], batch)


def step_runner(peer: P.Peer, batch: int, tutorial_samples: int, model: str = MODEL) -> Runner:
    """One train step of zoo ``model`` at ``batch`` (the tutorial: one sample per call, scaled
    to the batch; its loops are tutorial-mnist's alone)."""
    x, y = random_batch(batch, model=model)
    if peer.name == "tutorial-loops":
        if model != MODEL:
            raise P.Unavailable(f"the tutorial's loops train {MODEL} only")
        net, samples = (
            TutorialMnistNet(0),
            itertools.cycle(zip(x.astype(np.float64), y, strict=True)),
        )
        return Runner(
            lambda: net.train_step(*next(samples), LR), scale=batch, number=1,
            max_samples=tutorial_samples, warmup=lambda: net.train_step(x[0], y[0], LR),
        )  # fmt: skip
    if peer.name.startswith("gpucnn-"):
        backend = P.gpucnn_backend(peer)
        step = gpucnn_step(backend, P.is_graph(peer), model)
        xd, yd = backend.asarray(x), backend.asarray(y)
        if P.is_graph(peer):  # captured now, so that a refused capture is the peer's row
            P.capturing(lambda: [step(xd, yd) for _ in range(GRAPH_WARMUP_CALLS)])
        return Runner(lambda: step(xd, yd), P.gpucnn_clock(backend))
    device = P.torch_device(peer)
    tx, ty = P.to_torch(x, device), P.to_torch(y, device)
    if peer.name == "pytorch-cuda-graph":
        net, opt = torch_model(device, model)
        graph_step = P.capturing(lambda: torch_graph_step(net, opt, tx, ty))
        return Runner(lambda: graph_step(tx, ty), P.torch_clock_for(peer))
    step = torch_step(device, model)
    return Runner(P.torch_call(peer, lambda: step(tx, ty)), P.torch_clock_for(peer))


def _gpucnn_epoch(peer: P.Peer, data: Images, batch: int) -> Runner:
    backend = P.gpucnn_backend(peer)
    step = gpucnn_step(backend, P.is_graph(peer))
    loader = DataLoader(
        data.x, data.y, batch, device=backend, shuffle=True, drop_last=True, rng=0,
        mean=data.mean, std=data.std,
    )  # fmt: skip

    def epoch():
        for x, y in loader:
            step(x, y)

    def warmup():
        for x, y in itertools.islice(loader, EPOCH_WARMUP_STEPS):
            step(x, y)

    if P.is_graph(peer):  # the first warm-up captures: now, so that a refused capture is a row
        P.capturing(warmup)
    return Runner(epoch, P.gpucnn_clock(backend), number=1, warmup=warmup)


def _torch_epoch(peer: P.Peer, data: Images, batch: int) -> Runner:
    device = P.torch_device(peer)  # first: it reports a missing PyTorch as an unavailable peer
    import torch

    # Normalised once, as gpucnn's DataLoader does: a batch is then a gather of each.
    images = P.to_torch(data.x, device).float() * (1.0 / data.std) - data.mean / data.std
    labels = P.to_torch(data.y, device)
    steps = len(data.y) // batch
    if peer.name == "pytorch-cuda-graph":
        net, opt = torch_model(device)
        step = P.capturing(lambda: torch_graph_step(net, opt, images[:batch], labels[:batch]))
    else:
        step = torch_step(device)

    def run(count):
        order = torch.randperm(len(labels), device=device)
        for i in range(count):
            index = order[i * batch : (i + 1) * batch]
            step(images[index], labels[index])

    # Never more warm-up steps than the epoch has whole batches, as gpucnn's islice: beyond
    # them a slice of ``order`` is partial or empty (a NaN loss, a failed graph replay).
    warmup_steps = min(steps, EPOCH_WARMUP_STEPS)
    call, warmup = P.torch_call(peer, lambda: run(steps)), lambda: run(warmup_steps)
    return Runner(call, P.torch_clock_for(peer), number=1, warmup=P.torch_call(peer, warmup))


def epoch_runner(peer: P.Peer, batch: int, data: Images) -> Runner:
    """One pass over ``data`` (resident on the device, shuffled, last partial batch dropped)."""
    if peer.name.startswith("gpucnn-"):
        return _gpucnn_epoch(peer, data, batch)
    return _torch_epoch(peer, data, batch)
