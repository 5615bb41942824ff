"""``gpucnn bench``'s logic with stand-ins, where mutation testing found it unpinned: calibration,
clocks, peer selection and TF32, the ops' cases and padding, the suites' bookkeeping, the epoch and
step runners, goals, table cells, options and the compile suite's children. No GPU, no timing
asserted: stand-in clocks, steps, suites and processes."""

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import write_fake_idx_dataset

from gpucnn.backend import get_backend
from gpucnn.bench import (
    bandwidth,
    children,
    coldstart,
    command,
    goals,
    ops,
    peers,
    report,
    suites,
    timing,
    training,
)
from gpucnn.bench.peers import PEERS, Peer
from gpucnn.bench.report import Result, add_ratios, format_ratio, format_time, table
from gpucnn.nn.zoo import model_names, model_spec


@pytest.fixture(autouse=True)
def _no_pauses(monkeypatch):
    """No settling pause or re-warming: the stand-ins need none."""
    monkeypatch.setattr(timing, "SETTLE_S", 0.0)
    monkeypatch.setattr(timing, "REWARM_S", 0.0)


def _result(peer, seconds=1.0, suite="ops", case="c1", op="conv forward", **fields):
    return Result.of(PEERS[peer], suite, case, op, times=[seconds], **fields)


# ----------------------------------------------------------------------------------- timing
class _RewarmLog:
    """A clock that logs, per sample, the calls asked for and what it would re-warm with."""

    def __init__(self, seconds):
        self.log, self.value = [], seconds

    def seconds(self, fn, number, rewarm=None):
        self.log.append((number, rewarm))
        return self.value


def test_calibration_rounds_the_calls_up_and_takes_a_call_of_no_time():
    """A sample lasts at least MIN_SAMPLE_S: a call of 0.4 of it makes 3 calls a sample, not 2;
    a call the clock measures as 0 s (a coarse clock) makes MAX_CALLS, not a division by 0."""
    for once, calls in ((0.4 * timing.MIN_SAMPLE_S, 3), (0.0, timing.MAX_CALLS)):
        runner = timing.Runner(lambda: None, _RewarmLog(once))
        assert timing.measure({"a": runner}, 1, str, warmups=0)["a"].number == calls


def test_every_timing_re_warms_with_the_runners_warm_up():
    """The calibrating call and every sample re-warm with the runner's short ``warmup`` (an
    epoch's few steps), never with a whole call of ``fn`` (a whole epoch)."""
    clock = _RewarmLog(1.0)
    warmup = lambda: None  # noqa: E731
    runner = timing.Runner(lambda: None, clock, warmup=warmup)
    timing.measure({"a": runner}, 2, str, warmups=0)
    assert clock.log == [(1, warmup), (1, warmup), (1, warmup)]


def _stand_in_module(monkeypatch, name, **attributes):
    """``sys.modules[name]``: a namespace of ``attributes`` (no CuPy or CUDA here)."""
    monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attributes))


def test_torch_clock_reads_timing_events_start_to_end(monkeypatch):
    """PyTorch's events are made with timing on (else elapsed_time raises), and the elapsed time
    is read from the start event to the end one (the other way round it is negative)."""
    made = []

    class Event:
        def __init__(self, enable_timing=False):
            self.timing = enable_timing
            made.append(self)

        def elapsed_time(self, end):
            assert self.timing and end.timing, "an event without timing"
            return 4.0 if (self, end) == tuple(made) else -4.0

    cuda = types.SimpleNamespace(Event=Event, synchronize=lambda: None)
    _stand_in_module(monkeypatch, "torch", cuda=cuda)
    clock = timing.torch_clock()
    start, end = clock.make_event(), clock.make_event()
    assert clock.elapsed_ms(start, end) == 4.0 and clock.sync is cuda.synchronize


def test_cupy_clock_drains_cupys_device(monkeypatch):
    """gpucnn's GPU samples use CuPy's events, after draining CuPy's current device."""
    drained = []
    device = types.SimpleNamespace(synchronize=lambda: drained.append(1))
    cuda = types.SimpleNamespace(Event=object, get_elapsed_time=min, Device=lambda: device)
    _stand_in_module(monkeypatch, "cupy", cuda=cuda)
    clock = timing.cupy_clock()
    assert (clock.make_event, clock.elapsed_ms) == (object, min)
    clock.sync()
    assert drained == [1]


# ------------------------------------------------------------------------------------ peers
def test_a_peer_named_twice_runs_once():
    """``--peers gpucnn-cpu,gpucnn-cpu`` (or a wrapper's default repeated) measures the peer once:
    two rows of one peer would pair wrongly in the ratios."""
    chosen = peers.select("cpu", "step", ["gpucnn-cpu", "pytorch-cpu", "gpucnn-cpu"])
    assert [p.name for p in chosen] == ["gpucnn-cpu", "pytorch-cpu"]


def test_the_cuda_device_runs_every_cuda_peer_of_a_suite_by_default():
    """Every CUDA peer that runs in a suite runs there by default (the TF32 peer, the baseline
    graph peer included): leaving one out loses its same-run comparison."""
    for suite in peers.SUITES:
        cuda = [p.name for p in PEERS.values() if p.device == "cuda" and suite in p.suites]
        assert [p.name for p in peers.select("cuda", suite)] == cuda


def test_a_failure_names_the_error_it_was_raised_while_handling(capsys):
    """PyTorch's end of a capture raises its own error while handling the one that broke the
    capture: the reason names both, with their types."""
    assert peers.failure_reason("x", RuntimeError("alone")) == "x: RuntimeError: alone"
    try:
        try:
            raise KeyError("the first")
        except KeyError:
            raise RuntimeError("the second")  # noqa: B904 - the context is the point
    except RuntimeError as err:
        reason = peers.failure_reason(peers.CAPTURE_FAILED, err)
    assert reason == (
        f"{peers.CAPTURE_FAILED}: RuntimeError: the second (while handling KeyError: 'the first')"
    )
    assert "the first" in capsys.readouterr().err  # the traceback, for the user


def test_a_failure_raised_from_none_names_only_itself_and_one_raised_from_another_both():
    """``raise ... from None`` says the error it replaced is no part of the story (Python's own
    traceback leaves it out): the reason leaves it out too. ``raise ... from err`` names its
    cause, which the reason keeps (Python marks both with __suppress_context__)."""
    for cause, want in ((None, ""), (KeyError("the cause"), " (from KeyError: 'the cause')")):
        try:
            try:
                raise KeyError("an internal lookup")
            except KeyError:
                raise RuntimeError("what went wrong") from cause
        except RuntimeError as err:
            assert peers.failure_reason("x", err) == "x: RuntimeError: what went wrong" + want


def test_a_cuda_peers_call_returns_what_its_function_returns(monkeypatch):
    """The TF32 wrapper of a CUDA peer's call passes its result on (the ops suite checks each
    peer's output against the first's). A stand-in torch: no GPU here."""
    cudnn = types.SimpleNamespace(allow_tf32=True)
    matmul = types.SimpleNamespace(allow_tf32=True)
    backends = types.SimpleNamespace(cuda=types.SimpleNamespace(matmul=matmul), cudnn=cudnn)
    _stand_in_module(monkeypatch, "torch", backends=backends)
    assert peers.torch_call(PEERS["pytorch-cuda"], lambda: "output")() == "output"


def test_to_torch_copies_the_host_array():
    """A peer's tensor is its own copy: writing the host array later (another peer's in-place op,
    a reused buffer) does not change it."""
    torch = pytest.importorskip("torch")
    host = np.arange(4, dtype=np.float32)
    tensor = peers.to_torch(host, torch.device("cpu"))
    host[:] = -1
    assert tensor.tolist() == [0.0, 1.0, 2.0, 3.0]


def _as_cpu(monkeypatch, request):
    """The CUDA PyTorch peers, run on the CPU: their device is the CPU and their clock the host's,
    and their TF32 modes set on the real (CPU) torch, put back after the test."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(peers, "torch_device", lambda peer: torch.device("cpu"))
    monkeypatch.setattr(peers, "torch_clock_for", lambda peer: timing.HostClock())
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32

    def restore():
        matmul.allow_tf32, cudnn.allow_tf32 = saved

    request.addfinalizer(restore)
    return torch


def _eager_capture(captured):
    """A stand-in for peers.torch_capture that appends each captured step to ``captured``; its
    graph's replay runs the step again after its reset, as the captured graph does on a GPU."""

    def capture(fn, reset=lambda: None):
        captured.append(fn)
        return types.SimpleNamespace(replay=lambda: (reset(), fn())), None

    return capture


def test_pytorch_cuda_peers_run_every_call_under_their_tf32_mode(monkeypatch, request):
    """TF32 is global and the CUDA peers alternate, so each CUDA peer's timed calls and warm-ups
    set its own mode, in the ops, step and epoch suites alike (on the CPU here, so the mode is
    only read back, never used)."""
    torch = _as_cpu(monkeypatch, request)
    seen = []

    def mode():
        seen.append(torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32)

    def logging_step(device, model=training.MODEL):
        return lambda x, y: mode()

    monkeypatch.setattr(training, "torch_step", logging_step)
    tf32 = PEERS["pytorch-cuda-tf32"]
    runners = [
        training.step_runner(tf32, 2, 1),
        training.epoch_runner(tf32, 2, training.random_images(4)),
    ]
    monkeypatch.setattr(ops, "torch_ops", lambda *args: {"op": mode})
    ops_of_tf32, _, _ = ops._peer_ops(tf32, ops.cases([2])[4], {})
    calls = [runners[0].fn, runners[1].fn, runners[1].warmup, ops_of_tf32["op"]]
    for call in calls:
        seen.clear()
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        call()
        assert seen and all(seen), call


def test_pytorchs_graph_peer_captures_its_step_once_and_replays_it(monkeypatch, request):
    """pytorch-cuda-graph's step and epoch runners capture the step when made, on a batch of the
    run's size (the epoch's first batch, not its whole set), and their calls replay it on each
    batch, never an eager step. On the CPU, with a stand-in capture whose replay runs the step."""
    _as_cpu(monkeypatch, request)
    captured = []
    monkeypatch.setattr(peers, "torch_capture", _eager_capture(captured))
    monkeypatch.setattr(training, "torch_step", lambda *args: pytest.fail("an eager step"))
    graph = PEERS["pytorch-cuda-graph"]
    step = training.step_runner(graph, 4, 1)
    epoch = training.epoch_runner(graph, 4, training.random_images(12))
    step.fn(), epoch.warmup(), epoch.fn()
    assert len(captured) == 2


# -------------------------------------------------------------------------------------- ops
def test_the_ops_cases_are_the_tutorial_nets_layers():
    """conv1 and conv2 are the zoo model's convolutions (channels in and out, 3x3), each pool
    takes the conv's output (28 -> 26 -> 13 -> 11) and the loss its 10 classes; the large layer is
    padded, and the case's label says so."""
    conv1, pool1, conv2, pool2, xent, large = ops.cases([8])
    convs = [args for kind, args in model_spec(training.MODEL)["layers"] if kind == "Conv2d"]
    for case, spec in zip((conv1, conv2), convs, strict=True):
        assert (case.c, case.k) == (spec["in_channels"], spec["out_channels"])
        assert spec["kernel_size"] == 3
    assert (pool1.c, pool1.h, pool1.w) == (conv1.k, conv1.h - 2, conv1.w - 2)
    assert (conv2.h, conv2.w) == (pool1.h // 2, pool1.w // 2)
    assert (pool2.c, pool2.h, pool2.w) == (conv2.k, conv2.h - 2, conv2.w - 2)
    assert (xent.n, xent.c) == (8, model_spec(training.MODEL)["num_classes"])
    assert [conv1.shape, pool1.shape, xent.shape] == [
        "8x1x28x28 -> 16 3x3 pad 0", "8x16x26x26", "8x10 logits",
    ]  # fmt: skip
    assert large.shape == "64x64x56x56 -> 64 3x3 pad 1"


def test_a_padded_convs_ops_agree_with_pytorchs():
    """gpucnn's and PyTorch's ops of a padded convolution (the large case's kind, small here)
    compute the same thing, in float64 for the check; unit-variance inputs give outputs of unit
    scale."""
    pytest.importorskip("torch")
    case = ops.Case("padded", "conv", 2, 16, 7, 7, k=8, pad=1)
    per_op = ops.runners([PEERS["gpucnn-cpu"], PEERS["pytorch-cpu"]], case, seed=3)
    for op, (_, missing, outputs) in per_op.items():
        assert not missing, missing
        ours, theirs = outputs["gpucnn-cpu"], outputs["pytorch-cpu"]
        assert ours.dtype == theirs.dtype == np.float64
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4, err_msg=op)
    forward = per_op["conv forward"][2]["gpucnn-cpu"]
    assert forward.shape == (2, 8, 7, 7) and 0.5 < forward.std() < 2.0


def test_pytorchs_conv_backward_ops_compute_only_their_own_gradient(monkeypatch):
    """Each of PyTorch's conv backward ops asks aten for the one gradient it stands for (input or
    weight), as autograd does for that pass: asking for both would time more work than gpucnn's
    op does. A stand-in aten that logs the output mask."""
    torch = pytest.importorskip("torch")
    masks = []

    def convolution_backward(*args):
        masks.append(args[-1])
        return "input", "weight", None

    monkeypatch.setattr(
        torch.ops, "aten", types.SimpleNamespace(convolution_backward=convolution_backward)
    )
    case = ops.Case("c", "conv", 1, 1, 4, 4, k=1)
    calls = ops.torch_ops(torch.device("cpu"), case, ops.inputs(case, np.random.default_rng(0)))
    assert calls["conv backward-input"]() == "input" and masks == [[True, False, False]]
    assert calls["conv backward-weight"]() == "weight" and masks[1] == [False, True, False]


def test_an_unavailable_peer_leaves_the_next_ones_measured(monkeypatch):
    """In the ops suite, a peer that cannot run (first here) is a reason in every op; the peers
    after it still get their runners."""
    real = peers.gpucnn_backend

    def no_emulation(peer):
        if peer.name == "gpucnn-cuda-emu":
            raise peers.Unavailable("no emulation here")
        return real(peer)

    monkeypatch.setattr(peers, "gpucnn_backend", no_emulation)
    chosen = [PEERS["gpucnn-cuda-emu"], PEERS["gpucnn-cpu"]]
    for runners, missing, outputs in ops.runners(chosen, ops.cases([2])[4]).values():
        assert list(runners) == list(outputs) == ["gpucnn-cpu"]
        assert missing == {"gpucnn-cuda-emu": "no emulation here"}


def test_a_graph_peer_runs_twice_eagerly_then_captures_and_replays():
    """gpucnn_graph: two eager runs of GRAPH_CALLS calls in the session (the first compiles, the
    second fills the memory pool), then the capture; a call replays it and returns the last
    call's output. A stand-in session: no GPU here."""
    log = []

    class Session:
        def run(self, fn, inputs):
            log.append(("run", len(fn())))

        def capture(self, fn, inputs):
            log.append(("capture", len(fn())))

        def replay(self):
            log.append("replay")
            return ["first", "last"]

    backend = types.SimpleNamespace(graph_session=Session)
    replay = ops.gpucnn_graph(backend, lambda: None)
    calls = ops.GRAPH_CALLS
    assert log == [("run", calls), ("run", calls), ("capture", calls)]
    assert replay() == "last" and log[-1] == "replay"


# ----------------------------------------------------------------------------------- suites
def _instant(peer_names, outputs):
    """A stand-in for ops.runners: one op whose runners return at once, with ``outputs``."""
    runners = {name: timing.Runner(lambda: None, number=1) for name in peer_names}
    return lambda peers_, case: {"conv forward": (runners, {}, dict(outputs))}


def test_ops_rows_compare_each_output_with_the_first_peers(monkeypatch):
    """rel_diff is |output - first| / |first| for every peer after the first, and none for the
    first; a graph peer's row counts the GRAPH_CALLS calls of each replay and says so."""
    graph = Peer("gpucnn-cpu-graph", "cpu")
    chosen = [PEERS["gpucnn-cpu"], graph, PEERS["pytorch-cpu"]]
    first, third = np.array([3.0, 4.0]), np.array([3.0, 4.5])
    outputs = {"gpucnn-cpu": first, graph.name: first.copy(), "pytorch-cpu": third}
    monkeypatch.setattr(ops, "runners", _instant(outputs, outputs))
    monkeypatch.setattr(ops, "cases", lambda sizes: [ops.Case("c1", "conv", 2, 1)])
    rows = suites.run_ops(chosen, suites.Options([2], repeats=2))
    assert [r.rel_diff for r in rows] == [None, 0.0, 0.1]  # |(0, 0.5)| / |(3, 4)|
    assert [r.calls_per_sample for r in rows] == [1, ops.GRAPH_CALLS, 1]
    assert rows[1].note == f"replays of {ops.GRAPH_CALLS} calls, timed per call"
    assert [len(r.times) for r in rows] == [2, 2, 2]


def test_a_graph_peer_that_did_not_run_has_no_replay_note(monkeypatch):
    """The replay note and count are for a graph peer that was measured; one that could not run
    says only why."""
    graph = Peer("gpucnn-cpu-graph", "cpu")
    outputs = {"gpucnn-cpu": np.ones(2)}

    def runners(peers_, case):
        run = {"gpucnn-cpu": timing.Runner(lambda: None, number=1)}
        return {"conv forward": (run, {graph.name: "no graphs here"}, dict(outputs))}

    monkeypatch.setattr(ops, "runners", runners)
    monkeypatch.setattr(ops, "cases", lambda sizes: [ops.Case("c1", "conv", 2, 1)])
    _, row = suites.run_ops([PEERS["gpucnn-cpu"], graph], suites.Options([2], repeats=1))
    assert (row.status, row.note, row.calls_per_sample) == ("no graphs here", "", 0)


def test_the_tutorial_rows_say_how_many_samples_they_were_timed_on(monkeypatch):
    """The tutorial's step row notes its sample count (it times a few single samples, scaled to
    the batch); a tutorial peer that failed notes nothing of the kind. Every peer takes
    ``repeats`` samples (the tutorial's capped by its max_samples)."""

    def step_runner(peer, batch, tutorial_samples, model):
        if peer.name == "tutorial-loops":
            return timing.Runner(lambda: None, number=1, max_samples=tutorial_samples)
        return timing.Runner(lambda: None, number=1)

    monkeypatch.setattr(training, "step_runner", step_runner)
    chosen = [PEERS["tutorial-loops"], PEERS["gpucnn-cpu"]]
    rows = suites.run_step(chosen, suites.Options([2], repeats=3, tutorial_samples=2))
    assert rows[0].note.endswith("loops, timed on 2 samples, scaled to the batch")
    assert [len(r.times) for r in rows] == [2, 3]
    monkeypatch.setattr(training, "step_runner", lambda peer, *args: 1 / 0)
    (row,) = suites.run_step(chosen[:1], suites.Options([2], repeats=1))
    assert row.note == "the tutorial's per-sample loops"


def test_an_epoch_of_exactly_one_batch_runs(monkeypatch):
    """--epoch-samples equal to the largest batch size is one whole batch: it runs (only fewer
    samples than a batch are refused)."""
    monkeypatch.setattr(
        training, "epoch_runner", lambda peer, batch, data: timing.Runner(lambda: None, number=1)
    )
    rows = suites.run_epoch([PEERS["gpucnn-cpu"]], suites.Options([8, 16], 1, epoch_samples=16))
    assert [(r.case, r.status) for r in rows] == [
        ("random 16 samples b8", "ok"), ("random 16 samples b16", "ok"),
    ]  # fmt: skip


def test_an_epoch_reads_the_samples_asked_for_from_the_data_dir(tmp_path, monkeypatch):
    """--data-dir with --epoch-samples N trains on the first N Fashion-MNIST images, normalised
    with the dataset's own mean and std (not the random images' or none)."""
    write_fake_idx_dataset(tmp_path, n_train=40)
    seen = []

    def epoch_runner(peer, batch, data):
        seen.append(data)
        return timing.Runner(lambda: None, number=1)

    monkeypatch.setattr(training, "epoch_runner", epoch_runner)
    opts = suites.Options([8], 1, epoch_samples=24, data_dir=str(tmp_path))
    (row,) = suites.run_epoch([PEERS["gpucnn-cpu"]], opts)
    (data,) = seen
    assert len(data.y) == 24 and row.samples_per_unit == 24
    x = data.x.astype(np.float64)
    assert (data.mean, data.std) != (0.0, 1.0)
    assert data.mean == pytest.approx(x.mean(), rel=0.05) and data.std > 1.0


def test_compile_rows_without_a_goal_say_why_and_count_one_call(monkeypatch):
    """The compile suite's row without a goal (cuBLAS ready) carries its explanation; each sample
    of every row is one process's one call. Stand-in backend and children: no GPU here."""
    monkeypatch.setattr(peers, "get_backend", lambda device: types.SimpleNamespace(name=device))
    times = {op: [1.0] for op in coldstart.GOALS}
    monkeypatch.setattr(suites.coldstart, "samples", lambda repeats: times)
    rows = suites.run_compile([PEERS["gpucnn-cuda"]], suites.Options([2], repeats=1))
    ready = coldstart.GOALS["warm first train step, cuBLAS ready"]
    assert rows[-1].note == f"eager, {ready.note}"
    assert {r.calls_per_sample for r in rows} == {1}


# --------------------------------------------------------------------------------- training
def test_gpucnn_and_pytorch_train_the_same_steps():
    """Every peer starts from the same weights and trains with the same SGD (lr, momentum) and
    plain mean cross-entropy: three steps of gpucnn's and PyTorch's give the same losses (the
    third is where momentum and stale gradients would show)."""
    torch = pytest.importorskip("torch")
    backend = get_backend("cpu")
    ours, theirs = training.gpucnn_step(backend), training.torch_step(torch.device("cpu"))
    rng = np.random.default_rng(5)
    for _ in range(3):
        x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, 4)
        loss = float(np.asarray(ours(backend.asarray(x), backend.asarray(y))))
        expected = theirs(torch.from_numpy(x), torch.from_numpy(y)).item()
        assert loss == pytest.approx(expected, rel=1e-4)


def test_the_step_suite_trains_the_zoo_model_asked_for(monkeypatch):
    """--model fashion-net: gpucnn's and PyTorch's steps train fashion-net (the case is named
    so), and the tutorial's loops, which implement tutorial-mnist alone, are a row that says
    so."""
    trained = []
    for name in ("gpucnn_step", "torch_model"):
        real = getattr(training, name)
        monkeypatch.setattr(
            training, name, lambda *args, real=real: trained.append(args[-1]) or real(*args)
        )
    chosen = [PEERS["tutorial-loops"], PEERS["gpucnn-cpu"]]
    if importlib.util.find_spec("torch"):
        chosen.append(PEERS["pytorch-cpu"])
    rows = suites.run_step(chosen, suites.Options([2], repeats=1, model="fashion-net"))
    assert [(r.peer, r.case) for r in rows] == [(p.name, "fashion-net b2") for p in chosen]
    assert rows[0].status == "the tutorial's loops train tutorial-mnist only"
    assert [r.status for r in rows[1:]] == ["ok"] * (len(chosen) - 1)
    assert trained == ["fashion-net"] * (len(chosen) - 1)


def test_every_model_the_step_suite_offers_trains():
    """Each --model choice trains on gpucnn's CPU peer, on a batch of its own input shape and
    classes (tutorial-lines, 1x8x8 and 2 classes, was given 28x28 images; found in review)."""
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    (action,) = [a for a in parser._actions if "--model" in a.option_strings]
    assert set(action.choices) == set(model_names())
    for model in action.choices:
        rows = suites.run_step([PEERS["gpucnn-cpu"]], suites.Options([2], repeats=1, model=model))
        assert [r.status for r in rows] == ["ok"], (model, rows[0].status)
    x, y = training.random_batch(4, model="tutorial-lines")
    assert x.shape == (4, 1, 8, 8) and set(y) <= {0, 1}


@pytest.mark.parametrize("suite", ["ops", "epoch", "bandwidth"])
def test_another_model_outside_the_step_suite_is_refused(monkeypatch, capsys, suite):
    """--model fashion-net with a suite that times tutorial-mnist (or no model) is an error
    naming the option, not a table that looks like fashion-net's."""
    seen = _fake_suite(monkeypatch, suite)
    assert command.main(["--suite", suite, "--model", "fashion-net"]) == 2
    assert (
        "--model fashion-net: only the step and memory suites train another model"
        in capsys.readouterr().err
    )
    assert not seen
    assert command.main(["--suite", suite, "--model", "tutorial-mnist"]) == 0 and seen


def test_pytorchs_twin_of_a_zoo_model_has_gpucnns_layers_and_weights():
    """fashion-net's twin (convolutions without bias, batch norm, dropout) holds gpucnn's
    weights, running statistics and batch counters, and computes what gpucnn's model does in
    eval mode."""
    torch = pytest.importorskip("torch")
    net, _ = training.torch_model(torch.device("cpu"), "fashion-net")
    ours = training.build_model("fashion-net", rng=0)
    theirs = {k: v.numpy() for k, v in net.state_dict().items()}
    assert theirs.keys() == ours.state_dict().keys()
    for key, value in ours.state_dict().items():
        assert np.array_equal(theirs[key], value), key
    x = np.random.default_rng().standard_normal((3, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(x)).numpy()
    got = ours.eval()(x)
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))


def test_pytorchs_graph_step_copies_each_batch_into_its_own_and_trains_on_it(monkeypatch):
    """TorchGraphStep, with a stand-in capture whose replay reruns the step eagerly after its
    reset (what the graph's replay does on the GPU): each call trains on its batch, images and
    labels, as the eager step does; the batch the graph was made from is left as it was."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(peers, "torch_capture", _eager_capture([]))
    rng = np.random.default_rng(6)
    batches = [
        (torch.from_numpy(rng.standard_normal((4, 1, 28, 28)).astype(np.float32)),
         torch.from_numpy(rng.integers(0, 10, 4)))
        for _ in range(2)
    ]  # fmt: skip
    made_from = [t.clone() for t in batches[0]]
    graph = training.torch_graph_step(*training.torch_model(torch.device("cpu")), *batches[0])
    net, opt = training.torch_model(torch.device("cpu"))
    for x, y in batches[1:] + batches[:1]:
        graph(x, y)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for theirs, eager in zip(graph.net.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(theirs, eager)
    for original, now in zip(made_from, batches[0], strict=True):
        assert torch.equal(original, now)


class _LoggingNet:
    """A stand-in tutorial net: logs the label of each sample it trains on."""

    log: list = []

    def __init__(self, seed):
        pass

    def train_step(self, image, label, lr):
        self.log.append(int(label))


def test_the_tutorials_runner_cycles_its_samples_and_warms_up_on_the_first(monkeypatch):
    """The tutorial peer's timed calls take the batch's samples in turn, round and round (more
    calls than samples do not run out); its warm-up trains on the first sample without moving
    the timed calls on."""
    monkeypatch.setattr(training, "TutorialMnistNet", _LoggingNet)
    monkeypatch.setattr(_LoggingNet, "log", [])
    _, labels = training.random_batch(2)
    runner = training.step_runner(PEERS["tutorial-loops"], 2, 4)
    runner.warmup()
    for _ in range(3):
        runner.fn()
    assert _LoggingNet.log == [labels[0], labels[0], labels[1], labels[0]]


def test_a_gpucnn_graph_peer_captures_when_its_runner_is_made(monkeypatch):
    """A graph peer's step runner calls the step GRAPH_WARMUP_CALLS times when made (the last of
    them captures), so its timed calls replay; its epoch runner's warm-up captures when made
    too, and a refused capture makes the peer unavailable there, not an error mid-run."""
    calls = []

    def gpucnn_step(backend, captured=False, model=training.MODEL):
        def step(x, y):
            calls.append(captured)
            if captured and len(calls) >= training.GRAPH_WARMUP_CALLS:
                raise RuntimeError("capture refused")

        return step

    monkeypatch.setattr(training, "gpucnn_step", gpucnn_step)
    graph = Peer("gpucnn-cpu-graph", "cpu")
    with pytest.raises(peers.Unavailable, match="capture failed: RuntimeError: capture refused"):
        training.step_runner(graph, 2, 1)
    assert calls == [True] * training.GRAPH_WARMUP_CALLS
    calls.clear()
    with pytest.raises(peers.Unavailable, match="capture failed: RuntimeError: capture refused"):
        training.epoch_runner(graph, 2, training.random_images(16))
    assert calls == [True] * training.GRAPH_WARMUP_CALLS


def test_gpucnn_runners_use_their_backends_clock():
    """gpucnn's step and epoch runners are timed by the backend's clock (on the CPU the host
    clock, synchronising the backend: the emulated GPU's queue)."""
    backend = get_backend("cpu")
    for runner in (
        training.step_runner(PEERS["gpucnn-cpu"], 2, 1),
        training.epoch_runner(PEERS["gpucnn-cpu"], 2, training.random_images(4)),
    ):
        assert isinstance(runner.clock, timing.HostClock)
        assert runner.clock.sync == backend.synchronize


def _recording_step(seen):
    """A stand-in step maker whose step appends its batch (x, y), on the host, to ``seen``."""
    return lambda *args, **kwargs: lambda x, y: seen.append((np.asarray(x), np.asarray(y)))


def test_an_epoch_shuffles_and_normalises_every_batch(monkeypatch):
    """Both peers' epochs take every sample once in a shuffled order (seeded here), normalised as
    (x - mean) / std; the random images span the whole uint8 range."""
    torch = pytest.importorskip("torch")
    data = training.random_images(64)
    assert (data.x.min(), data.x.max()) == (0, 255)
    data.y = np.arange(64)  # each label names its image
    for peer, name in (("gpucnn-cpu", "gpucnn_step"), ("pytorch-cpu", "torch_step")):
        seen = []
        monkeypatch.setattr(training, name, _recording_step(seen))
        with torch.random.fork_rng():  # PyTorch's shuffle draws from its global generator
            torch.manual_seed(0)
            training.epoch_runner(PEERS[peer], 16, data).fn()
        order = np.concatenate([y for _, y in seen])
        assert sorted(order) == list(range(64)), peer
        assert not np.array_equal(order, np.arange(64)), peer
        for x, y in seen:
            expected = (data.x[y].astype(np.float32) - data.mean) / data.std
            np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5, err_msg=peer)


# ------------------------------------------------------------------------------------ goals
def test_a_row_that_ran_but_took_no_samples_leaves_its_goal_unchecked():
    """A peer that ran without a single sample has no median: its goal says so, not a blank
    status."""
    results = [_result("gpucnn-cuda"), _result("pytorch-cuda")]
    results[1].times = []
    faster = goals.FasterOnAverage("ops", "conv", "gpucnn-cuda", "pytorch-cuda", 1.0, 0.8)
    (verdict,) = faster.check(results)
    assert verdict.text.endswith("pytorch-cuda not available (no samples were taken)")
    assert verdict.met is None


def test_a_ratio_just_under_its_goal_does_not_print_as_the_goal():
    """A ratio of 0.7996 misses a 0.8x goal, and prints with four digits, not as 0.8x."""
    results = [_result("gpucnn-cpu", 1.0, "step"), _result("pytorch-cpu", 0.7996, "step")]
    add_ratios(results)
    (verdict,) = goals.Faster("step", "c1", "gpucnn-cpu", "pytorch-cpu", 0.8).check(results)
    assert verdict.line() == "step: c1, gpucnn-cpu vs pytorch-cpu 0.7996x (goal >= 0.8x): missed"


def test_a_bandwidth_row_that_failed_says_why_in_its_goal():
    """A bandwidth op that failed is reported with its failure (gpucnn's own: missed), not as
    "no copy measured"; one measured without a copy to compare with is not checked."""
    failed = f"{peers.TIMING_FAILED}: MemoryError: out of memory"
    rows = [
        Result.of(PEERS["gpucnn-cuda"], "bandwidth", "x", "relu forward", status=failed),
        _result("gpucnn-cuda", suite="bandwidth", case="x", op="max-pool forward"),
    ]
    first, second = goals.CopyFraction(0.85).check(rows)
    assert first.text == f"relu forward, gpucnn-cuda: gpucnn-cuda not available ({failed})"
    assert first.met is False
    assert (second.text, second.met) == (
        "max-pool forward, gpucnn-cuda: no copy measured to compare with", None,
    )  # fmt: skip


def test_the_conv_goals_average_only_conv_rows_and_need_a_pair():
    """The conv average reads only the ops named conv (a pooling row both peers ran is not in
    it), and a run where the two peers share no conv row checks nothing."""
    results = [
        _result("gpucnn-cuda", 1.0), _result("pytorch-cuda", 2.0),
        _result("gpucnn-cuda", 1.0, op="max-pool forward"),
        _result("pytorch-cuda", 0.1, op="max-pool forward"),
    ]  # fmt: skip
    add_ratios(results)
    faster = goals.FasterOnAverage("ops", "conv", "gpucnn-cuda", "pytorch-cuda", 1.0, 0.8)
    assert [v.met for v in faster.check(results)] == [True, True]
    assert "1 conv rows" in faster.check(results)[0].text
    apart = [_result("gpucnn-cuda", 1.0, case="c1"), _result("pytorch-cuda", 1.0, case="c2")]
    add_ratios(apart)
    assert faster.check(apart) == []


def test_the_graph_peers_goals_compare_graph_with_graph():
    """The captured step's and the captured ops' goals are against PyTorch's captured peer (1.2x
    the step, on average 1x the convs), not its eager one."""
    step = goals.STEP_GPU
    results = [
        _result("gpucnn-cuda-graph", 1.0, "step", step, "train step"),
        _result("pytorch-cuda-graph", 1.25, "step", step, "train step"),
        _result("gpucnn-cuda-graph", 1.0), _result("pytorch-cuda-graph", 1.0),
    ]  # fmt: skip
    add_ratios(results)
    lines = [v.line() for v in goals.check(results)]
    assert lines == [
        f"step: {step}, gpucnn-cuda-graph 1 s (goal <= 60 us): missed",
        f"step: {step}, gpucnn-cuda-graph vs pytorch-cuda-graph 1.25x (goal >= 1.2x): met",
        "ops: 1 conv rows, gpucnn-cuda-graph vs pytorch-cuda-graph: geometric mean 1x "
        "(goal >= 1x): met",
        "ops: 1 conv rows, gpucnn-cuda-graph vs pytorch-cuda-graph: slowest 1x, c1 conv forward "
        "(goal: none under 0.8x): met",
    ]


# ----------------------------------------------------------------------------------- report
def test_times_and_ratios_print_in_their_units_and_digits():
    """A time is in the largest unit it reaches (1 s, not 1000 ms), to four digits, n/a where
    there is none; a ratio that rounds to 1000 prints as a whole number."""
    assert [format_time(s) for s in (1.0, 1e-3, 1e-6, 5e-7, 1.2346e-3, None)] == [
        "1 s", "1 ms", "1 us", "500 ns", "1.235 ms", "n/a",
    ]  # fmt: skip
    assert [format_ratio(r) for r in (1000.0, 999.96, 999.4)] == ["1,000x", "1,000x", "999x"]


def test_a_note_starts_with_the_first_text_annotated():
    """annotate() appends to a note; to no note it is the note, without a leading comma."""
    r = Result("step", "b2", "train step", "a", "cpu", "float32")
    r.annotate("first")
    r.annotate("second")
    assert r.note == "first, second"


def test_table_cells_of_bandwidth_and_checked_rows():
    """GB/s to three digits, the fraction of the copy in percent, rel diff in e-notation, n/a for
    the median of a peer that did not run."""
    r = Result("bandwidth", "x", "relu forward", "a", "cpu", "float32", times=[1.0],
               bytes=1_234_567_890, copy_fraction=0.9, rel_diff=1.234e-5, note="n")  # fmt: skip
    failed = Result("bandwidth", "x", "relu forward", "b", "cpu", "float32", status="no GPU")
    header, _, row, other = table([r, failed]).splitlines()
    cells = dict(zip(re.split(r"\s{2,}", header), re.split(r"\s{2,}", row), strict=True))
    assert [cells[k] for k in ("median", "GB/s", "of copy", "IQR", "rel diff")] == [
        "1 s", "1.23", "90%", "-", "1.2e-05",
    ]  # fmt: skip
    assert re.split(r"\s{2,}", other)[4:] == ["n/a", "-", "not available: no GPU"]


def test_commit_is_the_checkouts_and_none_for_an_installed_copy(tmp_path, monkeypatch):
    """In a checkout: its commit, "-dirty" with local changes; installed (site-packages inside
    another project's repository): None, not that repository's commit; git failing or too slow:
    None."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for folder in ("checkout", "project"):
        subprocess.run([*git, "init", "-q", str(tmp_path / folder)], check=True)
    checkout = tmp_path / "checkout" / "gpucnn" / "bench" / "report.py"
    installed = tmp_path / "project" / "site-packages" / "gpucnn" / "bench" / "report.py"
    for path in (checkout, installed):
        path.parent.mkdir(parents=True)
        path.write_text("")
    for folder in ("checkout", "project"):
        run = [*git, "-C", str(tmp_path / folder)]
        subprocess.run([*run, "add", "-A"], check=True)
        subprocess.run([*run, "commit", "-qm", "x"], check=True)
    monkeypatch.setattr(report, "__file__", str(checkout))
    commit = report._commit()
    assert commit and len(commit) == 7
    checkout.write_text("changed")
    assert report._commit() == f"{commit}-dirty"
    monkeypatch.setattr(report, "__file__", str(installed))
    assert report._commit() is None

    def too_slow(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 10)

    monkeypatch.setattr(report.subprocess, "run", too_slow)
    assert report._commit() is None


def test_the_gpu_is_named_in_text(monkeypatch):
    """CuPy gives the device's name as bytes: the environment records it as text. A stand-in
    CuPy: no GPU here."""
    properties = {"name": b"NVIDIA H200"}
    runtime = types.SimpleNamespace(getDevice=lambda: 0, getDeviceProperties=lambda i: properties)
    _stand_in_module(monkeypatch, "cupy", cuda=types.SimpleNamespace(runtime=runtime))
    assert report._gpu_name() == "NVIDIA H200"


def test_environment_names_the_gpu_and_versions_only_where_they_apply(monkeypatch):
    """A CPU run has no GPU entry; PyTorch's version and threads are the installed one's; the
    MALLOC_* settings come sorted by name; the header leaves out what has no value."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    env = report.environment("cpu")
    assert "gpu" not in env
    assert env["torch"] == torch.__version__.split("+")[0] or env["torch"] == torch.__version__
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["malloc"].startswith("MALLOC_ARENA_MAX=2 MALLOC_TRIM_THRESHOLD_=1")
    assert "None" not in report.header({**env, "cupy": None}, "step")


# ---------------------------------------------------------------------------------- command
def _fake_suite(monkeypatch, suite="step"):
    """Replace ``suite`` by a stand-in that records (peer names, options, SETTLE_S) and returns a
    row per peer (peer i's median i + 1 s); returns the record."""
    seen = []

    def fake(chosen, opts):
        seen.append(([p.name for p in chosen], opts, timing.SETTLE_S))
        return [Result.of(p, suite, "c", "op", times=[i + 1.0]) for i, p in enumerate(chosen)]

    monkeypatch.setitem(command.SUITES, suite, fake)
    return seen


def test_unset_options_run_with_the_defaults_the_help_names(monkeypatch, capsys):
    """Without options: the suite's default repeats, 3 tutorial samples, a 60,000-sample epoch,
    256 MiB, no data dir, no case filter, and the settling pause the module's (0.2 s unless
    changed; a stand-in value here)."""
    monkeypatch.setattr(timing, "SETTLE_S", 0.375)
    seen = _fake_suite(monkeypatch, "epoch")
    assert command.main(["--suite", "epoch"]) == 0
    ((_, opts, settle),) = seen
    assert opts == suites.Options(
        [64, 256], suites.DEFAULT_REPEATS["epoch"], None, 3, 60_000, None, 256
    )
    assert settle == 0.375
    assert "goals:" not in capsys.readouterr().out  # no goal reads these rows


def test_a_runs_settling_pause_holds_for_that_run_only(monkeypatch):
    """--settle set SETTLE_S for good: the next run in the process (a notebook, the tests) took it
    as its own default, and its --help said so. Now each run puts it back as it found it."""
    monkeypatch.setattr(timing, "SETTLE_S", 0.375)
    seen = _fake_suite(monkeypatch)
    assert command.main(["--settle", "0.125"]) == 0
    assert command.main([]) == 0
    assert [settle for _, _, settle in seen] == [0.125, 0.375]
    assert timing.SETTLE_S == 0.375


def test_options_reach_the_suite(tmp_path, monkeypatch):
    """Every option the user gives is the one the suite runs with."""
    seen = _fake_suite(monkeypatch, "step")
    argv = ["--suite", "step", "--repeats", "4", "--cases", "b2", "--tutorial-samples", "2",
            "--epoch-samples", "99", "--data-dir", str(tmp_path), "--megabytes", "1.5",
            "--settle", "0.125", "--batch-size", "2,", "--model", "fashion-net"]  # fmt: skip
    assert command.main(argv) == 0
    ((_, opts, settle),) = seen
    assert opts == suites.Options([2], 4, "b2", 2, 99, str(tmp_path), 1.5, "fashion-net")
    assert settle == 0.125


def test_a_wrappers_defaults_are_used_and_overridden(monkeypatch):
    """scripts/bench_*.py pass batch sizes and peers: used when the user gives none, replaced
    (not extended) by the user's own."""
    seen = _fake_suite(monkeypatch)
    defaults = {"batch_size": [256], "peers": ["gpucnn-cpu"]}
    assert command.main([], **defaults) == 0
    assert command.main(["--batch-size", "8", "--peers", "pytorch-cpu"], **defaults) == 0
    assert [(names, opts.batch_sizes) for names, opts, _ in seen] == [
        (["gpucnn-cpu"], [256]), (["pytorch-cpu"], [8]),
    ]  # fmt: skip


def test_threads_are_set_for_gpucnn_and_pytorch(monkeypatch):
    """--threads sets gpucnn's CPU threads and PyTorch's intra-op threads alike."""
    torch = pytest.importorskip("torch")
    _fake_suite(monkeypatch)
    set_to = []
    monkeypatch.setattr(peers.cpu_threads, "set_threads", lambda n: set_to.append(("gpucnn", n)))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: set_to.append(("torch", n)))
    assert command.main(["--threads", "3"]) == 0
    assert set_to == [("gpucnn", 3), ("torch", 3)]


def test_pytorchs_modes_are_put_back_when_a_suite_fails(monkeypatch, capsys):
    """A suite that raises still restores PyTorch's TF32 and autotuning modes."""
    restored = []
    monkeypatch.setattr(peers, "restore_torch_modes", lambda: restored.append(1))

    def fails(chosen, opts):
        raise ValueError("a stand-in failure")

    monkeypatch.setitem(command.SUITES, "step", fails)
    assert command.main([]) == 2
    assert restored == [1] and "a stand-in failure" in capsys.readouterr().err


def test_the_json_of_the_gpucnn_command_has_the_ratios(tmp_path, monkeypatch):
    """``gpucnn bench --json`` (whose options hold the command's function) writes every option
    but that, and the ratios between the peers of a device."""
    from gpucnn.cli import main as gpucnn_main

    _fake_suite(monkeypatch)
    path = tmp_path / "bench.json"
    argv = ["bench", "--peers", "gpucnn-cpu,pytorch-cpu,", "--json", str(path)]
    assert gpucnn_main(argv) == 0
    record = json.loads(path.read_text())
    assert record["arguments"]["peers"] == ["gpucnn-cpu", "pytorch-cpu"]
    assert [r["ratios"] for r in record["results"]] == [{"pytorch-cpu": 2.0}, {"gpucnn-cpu": 0.5}]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", ","], "--batch-size: expected positive integers, got ','"),
        (["--megabytes", "0"], "--megabytes: expected a positive number, got '0'"),
    ],
)
def test_options_that_would_measure_nothing_are_refused(argv, message, capsys):
    """An empty batch-size list and a tensor of 0 MiB are usage errors (exit 2)."""
    with pytest.raises(SystemExit) as exit_:
        command.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_positive_int_accepts_a_trailing_comma_only():
    """A trailing comma is forgiven (``--batch-size 64,``); zero or none is refused."""
    assert command._ints("64,256,") == [64, 256]
    for text in ("0", ",", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            command._ints(text)


# -------------------------------------------------------------------------------- bandwidth
def test_the_bandwidth_tensor_is_about_the_size_asked_for():
    """(N, C, 128, 128) of the nearest whole number of 1/16-MiB planes, at least one, up to 64
    channels and then more images (256 MiB -> 64x64x128x128, the issue's 268 MB)."""
    assert bandwidth.shape(256) == (64, 64, 128, 128)
    assert bandwidth.shape(0.1) == (1, 2, 128, 128)  # 1.6 planes -> 2
    assert bandwidth.shape(0.01) == (1, 1, 128, 128)


def test_the_copy_is_a_new_array_holding_x():
    """The reference op copies: a new array equal to x."""
    backend = get_backend("cpu")
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    out = bandwidth.device_copy(backend, x)
    assert out is not x and np.array_equal(out, x)


def test_the_device_copy_moves_every_byte_of_x():
    """Under CuPy the copy is the driver's device-to-device copy of x's bytes (not its element
    count) into a new array. Stand-ins: no GPU here."""
    copies = []
    pointer = types.SimpleNamespace(copy_from_device_async=lambda src, size: copies.append(size))
    out = types.SimpleNamespace(data=pointer)
    backend = types.SimpleNamespace(xp=types.SimpleNamespace(empty_like=lambda x: out))
    x = types.SimpleNamespace(data="x's memory", nbytes=64, size=16)
    assert bandwidth.device_copy(backend, x) is out and copies == [64]


def test_copy_fractions_skip_rows_that_did_not_run():
    """A failed op, or a failed copy, leaves fractions unset rather than stopping the suite; the
    copy itself is noted as the reference; a fraction equal to the goal meets it."""
    failed = Result("bandwidth", "x", "relu forward", "a", "cpu", "float32", status="failed")
    copy = Result("bandwidth", "x", "copy", "a", "cpu", "float32", times=[1.0], bytes=10**9)
    at_goal = Result("bandwidth", "x", "relu backward", "a", "cpu", "float32", times=[1.0],
                     bytes=850_000_000)  # fmt: skip
    bandwidth.add_copy_fractions([copy, failed, at_goal])
    assert (copy.copy_fraction, copy.note) == (1.0, "the reference")
    assert failed.copy_fraction is None
    assert at_goal.copy_fraction == bandwidth.GOAL and at_goal.note.endswith(": met")
    copy.status, at_goal.note = "failed", ""
    bandwidth.add_copy_fractions([copy, at_goal])
    assert at_goal.note == ""


# -------------------------------------------------------------------------------- coldstart
def test_a_compile_child_runs_this_gpucnn_with_its_own_cache(monkeypatch, tmp_path):
    """Each child: CuPy's cache pointed at the sample's folder, never the in-memory cache, this
    gpucnn first on the path; its last line read; a failing child an error with its stderr."""
    monkeypatch.setenv("CUPY_CACHE_IN_MEMORY", "1")
    monkeypatch.setenv("PYTHONPATH", "elsewhere")
    runs = []

    def run(command, env, **kwargs):
        runs.append(env)
        return subprocess.CompletedProcess(command, 0, 'a warning\n{"seconds": 1.5}\n', "")

    monkeypatch.setattr(children.subprocess, "run", run)
    assert coldstart._run_child("warm", str(tmp_path)) == 1.5
    (env,) = runs
    assert env[coldstart.CACHE_ENV] == str(tmp_path) and "CUPY_CACHE_IN_MEMORY" not in env
    root = str(children.Path(children.__file__).resolve().parents[2])
    assert env["PYTHONPATH"].split(children.os.pathsep) == [root, "elsewhere"]
    failed = subprocess.CompletedProcess([], 1, "", "Traceback ...\nCUDARuntimeError: x")
    monkeypatch.setattr(children.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(RuntimeError, match="warm compile-suite process failed .exit 1.: Trace"):
        coldstart._run_child("warm", str(tmp_path))


def test_the_compile_samples_share_one_new_cache_per_repeat(monkeypatch):
    """Per repeat, one new empty cache: the cold child fills it, then the warm ones read it."""
    children = []
    monkeypatch.setattr(
        coldstart, "_run_child", lambda phase, cache: children.append((phase, cache)) or 1.0
    )
    times = coldstart.samples(2)
    assert times == {op: [1.0, 1.0] for op in coldstart.GOALS}
    phases = [phase for phase, _ in children]
    assert phases == ["cold", "warm", "warm-cublas"] * 2
    caches = [cache for _, cache in children]
    assert len(set(caches[:3])) == len(set(caches[3:])) == 1 and caches[0] != caches[3]


def test_a_compile_child_times_only_its_phase(monkeypatch, capsys):
    """cold: the warm-up, then an untimed step (so the cache holds a step's kernels too); warm:
    the first step; warm-cublas: the same after a matmul before the clock. Stand-in backend:
    no GPU here."""
    log = []

    class Ones:
        def __matmul__(self, other):
            log.append("matmul")

    backend = types.SimpleNamespace(
        asarray=lambda a: Ones(),
        synchronize=lambda: log.append("sync"),
        warmup=lambda: log.append("warmup"),
    )
    monkeypatch.setattr(coldstart, "get_backend", lambda device: backend)
    monkeypatch.setattr(coldstart, "_first_step", lambda *args: log.append("step"))
    expected = {
        "cold": ["sync", "warmup", "step"],
        "warm": ["sync", "step"],
        "warm-cublas": ["matmul", "sync", "step"],
    }
    for phase, calls in expected.items():
        log.clear()
        coldstart.child(phase)
        assert log == calls, phase
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["seconds"] >= 0
