"""``gpucnn bench``: table and JSON structure, ratios only between peers of one device, the
bandwidth suite's fractions of the copy, the compile suite (GPU only), the tutorial peer's
algorithm. Smoke tests with tiny sizes: no timing is asserted."""

import errno
import json
import os
import re
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from conftest import SCRIPTS, load_script, make_backend

import gpucnn.atomic
from gpucnn.backend.launchers.winograd import convolution_algorithm
from gpucnn.bench import goals, main, ops, peers, suites, timing, training
from gpucnn.bench.bandwidth import TRAFFIC
from gpucnn.bench.coldstart import GOALS
from gpucnn.bench.peers import CAPTURE_FAILED, PEERS, Peer, select
from gpucnn.bench.report import Result, add_ratios, table
from gpucnn.bench.training import step_runner
from gpucnn.bench.tutorial import TutorialMnistNet

ENV_KEYS = {
    "date", "device", "commit", "gpucnn", "cpu_threads", "numpy", "torch", "cupy", "python",
    "platform",
}  # fmt: skip
ROW_KEYS = {"suite", "case", "op", "peer", "device", "precision", "times", "median", "status"}


def run_bench(tmp_path, capsys, *argv, status=0):
    """Run ``gpucnn bench`` with ``argv``, expecting exit ``status``; returns (printed table,
    JSON record, stderr)."""
    path = tmp_path / "bench.json"
    assert main([*argv, "--repeats", "1", "--settle", "0", "--json", str(path)]) == status
    printed = capsys.readouterr()
    return printed.out, json.loads(path.read_text()), printed.err


def check_record(record, device):
    """Keys present; every ratio is between two measured peers of one device, and is right."""
    assert ENV_KEYS <= set(record["environment"])
    resolved = record["arguments"]["resolved"]  # the options as run, defaults filled in
    assert resolved["repeats"] >= 1 and resolved["batch_sizes"]
    assert all(set(v) == {"suite", "text", "met"} for v in record["goals"])
    assert record["environment"]["device"] == device
    rows = record["results"]
    assert rows
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["device"] == PEERS[row["peer"]].device
        if row["status"] != "ok":
            assert row["median"] is None and not row["ratios"]
            continue
        samples = row["rise_bytes"] if row["suite"] == "memory" else row["times"]  # bytes there
        assert row["median"] == pytest.approx(float(np.median(samples)))
        for other, ratio in row["ratios"].items():
            (peer,) = [
                r for r in rows
                if (r["case"], r["op"], r["peer"]) == (row["case"], row["op"], other)
            ]  # fmt: skip
            assert peer["device"] == row["device"]
            assert ratio == pytest.approx(peer["median"] / row["median"])


def test_ops_suite(backend, tmp_path, capsys):
    out, record, _ = run_bench(
        tmp_path, capsys, "--suite", "ops", "--device", backend.name, "--batch-size", "2",
        "--cases", "b2",
    )  # fmt: skip
    check_record(record, backend.name)
    ops = {r["op"] for r in record["results"]}
    assert {"conv backward-weight", "max-pool backward", "softmax-xent forward"} <= ops
    for row in record["results"]:
        if row["rel_diff"] is not None:  # PyTorch computed the same thing
            # float32 sums agree far under 1e-4; TF32 rounds the products' inputs to 10 mantissa
            # bits (unit roundoff 2**-11, ~5e-4), measured 2e-4 on an H200.
            limit = 5e-3 if row["precision"] == "tf32" else 1e-4
            assert row["rel_diff"] < limit, row
    assert "median" in out and "conv backward-input" in out


def test_step_suite(backend, tmp_path, capsys, monkeypatch):
    peer = f"gpucnn-{backend.name}"
    goal = goals.Within("step", "tutorial-mnist b3", peer, 1e9)  # the goals' lines, at any speed
    monkeypatch.setattr(goals, "GOALS", (goal,))
    out, record, _ = run_bench(
        tmp_path, capsys, "--suite", "step", "--device", backend.name, "--batch-size", "2,3",
        "--tutorial-samples", "1",
    )  # fmt: skip
    check_record(record, backend.name)
    (verdict,) = record["goals"]
    assert verdict["met"] and verdict["text"].startswith(f"tutorial-mnist b3, {peer} ")
    assert f"goals:\n  step: tutorial-mnist b3, {peer} " in out
    rows = record["results"]
    assert {r["case"] for r in rows} == {"tutorial-mnist b2", "tutorial-mnist b3"}
    assert all(r["samples_per_unit"] in (2, 3) for r in rows)
    assert all(r["batch_size"] == r["samples_per_unit"] for r in rows)  # a step is one batch
    tutorial = [r for r in rows if r["peer"] == "tutorial-loops"]
    if backend.name != "cuda":
        assert tutorial and all(len(r["times"]) == 1 for r in tutorial)


def test_epoch_suite(tmp_path, capsys):
    _, record, _ = run_bench(
        tmp_path, capsys, "--suite", "epoch", "--batch-size", "16", "--epoch-samples", "40",
    )  # fmt: skip
    check_record(record, "cpu")
    (case,) = {r["case"] for r in record["results"]}
    assert case == "random 32 samples b16"  # the last partial batch is dropped
    assert {(r["samples_per_unit"], r["batch_size"]) for r in record["results"]} == {(32, 16)}
    assert "tutorial-loops" not in {r["peer"] for r in record["results"]}


def test_a_batch_size_named_twice_is_run_once(tmp_path, capsys):
    """Run twice, a batch size's rows came twice, and the ratios (and the goals that read them)
    paired a peer's row with the other run's."""
    _, record, _ = run_bench(
        tmp_path, capsys, "--suite", "epoch", "--batch-size", "16,8", "--batch-size", "16",
        "--epoch-samples", "32",
    )  # fmt: skip
    assert record["arguments"]["resolved"]["batch_sizes"] == [16, 8]
    rows = [(r["case"], r["peer"]) for r in record["results"]]
    assert len(rows) == len(set(rows))
    assert list(dict.fromkeys(case for case, _ in rows)) == [
        "random 32 samples b16", "random 32 samples b8",
    ]  # fmt: skip


def test_bandwidth_suite(backend, tmp_path, capsys):
    out, record, _ = run_bench(
        tmp_path, capsys, "--suite", "bandwidth", "--device", backend.name, "--megabytes", "0.25",
    )  # fmt: skip
    check_record(record, backend.name)
    rows = {r["op"]: r for r in record["results"]}
    assert list(rows) == list(TRAFFIC)
    assert {r["case"] for r in rows.values()} == {"1x4x128x128 float32 (0.25 MiB)"}
    copy = rows["copy"]
    for op, row in rows.items():
        assert row["status"] == "ok", row
        assert row["bytes"] == TRAFFIC[op] * 4 * 4 * 128 * 128
        assert row["gb_per_s"] == pytest.approx(row["bytes"] / row["median"] / 1e9)
        assert row["gb_per_s"] > 0
        assert row["copy_fraction"] == pytest.approx(row["gb_per_s"] / copy["gb_per_s"])
        assert "goal >= 85% of copy" in row["note"] or op == "copy"
    assert copy["copy_fraction"] == 1
    assert "GB/s" in out and "of copy" in out


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda"], indirect=True)  # skipped, with why, without a GPU
def test_compile_suite(backend, tmp_path, capsys):
    _, record, _ = run_bench(tmp_path, capsys, "--suite", "compile", "--device", "cuda")
    check_record(record, "cuda")
    rows = record["results"]
    assert [r["op"] for r in rows] == list(GOALS)
    for row in rows:
        assert row["status"] == "ok" and row["peer"] == "gpucnn-cuda"
        assert len(row["times"]) == 1 and row["median"] > 0
        has_goal = GOALS[row["op"]][1] is not None
        assert ("goal <= " in row["note"]) == has_goal, row["note"]


def test_cuda_without_a_usable_gpu_is_an_error_not_a_table_of_unmeasured_rows(
    capsys, monkeypatch, fresh_registry
):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert main(["--suite", "step", "--device", "cuda", "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert "CuPy is not installed" in err


@pytest.mark.parametrize("device", ["cpu", "cuda-emu"])
def test_compile_suite_is_for_cuda_only(device, capsys):
    assert main(["--suite", "compile", "--device", device]) == 2
    assert "runs in the compile suite (it runs on --device cuda)" in capsys.readouterr().err


def test_unavailable_peer_is_a_row_with_its_reason(tmp_path, capsys, monkeypatch):
    real = peers.gpucnn_backend

    def no_graphs(peer):
        if peers.is_graph(peer):
            raise peers.Unavailable("a reason given by the peer")
        return real(peer)

    monkeypatch.setattr(peers, "gpucnn_backend", no_graphs)
    out, record, _ = run_bench(
        tmp_path, capsys, "--suite", "step", "--batch-size", "2",
        "--peers", "gpucnn-cpu,gpucnn-cuda-graph",
    )  # fmt: skip
    (graph,) = [r for r in record["results"] if r["peer"] == "gpucnn-cuda-graph"]
    assert "a reason given by the peer" in graph["status"]
    assert "not available" in out
    (cpu,) = [r for r in record["results"] if r["peer"] == "gpucnn-cpu"]
    assert cpu["ratios"] == {}  # never divided by a figure of another device


@pytest.mark.emu
def test_a_peer_that_fails_is_a_row_and_the_exit_status_says_so(tmp_path, capsys, monkeypatch):
    """An error while a gpucnn peer is set up (not a missing GPU or PyTorch: a bug, or a
    cuDNN error on a PyTorch peer) costs that peer's rows only: the others are measured, the
    JSON is written, the traceback goes to stderr, and, gpucnn's own failure, the exit is 1."""
    make_backend("cuda-emu")  # skipped with the reason where the emulation cannot run
    real = training.gpucnn_step

    def broken(backend, captured=False, model=training.MODEL):
        if backend.name == "cuda-emu":
            raise RuntimeError("a stand-in bug")
        return real(backend, captured, model)

    monkeypatch.setattr(training, "gpucnn_step", broken)
    argv = ["--suite", "step", "--batch-size", "2", "--peers", "gpucnn-cpu,gpucnn-cuda-emu"]
    _, record, err = run_bench(tmp_path, capsys, *argv, status=1)
    assert "a stand-in bug" in err and "gpucnn-cuda-emu failed" in err
    rows = {r["peer"]: r for r in record["results"]}
    assert rows["gpucnn-cpu"]["status"] == "ok" and rows["gpucnn-cpu"]["median"] > 0
    assert rows["gpucnn-cuda-emu"]["status"] == (
        f"{peers.SETUP_FAILED}: RuntimeError: a stand-in bug"
    )


def test_a_peer_that_fails_while_timed_is_a_row_and_the_others_are_kept(
    tmp_path, capsys, monkeypatch
):
    """An error in a peer's warm-up or samples (a CUDA error, out of memory; here gpucnn's step
    raising on its second call) stopped the whole run: one line, exit 2, no table, no JSON. Now,
    as for a setup that fails, that peer's row says why, its goals count as missed, the exit is
    1, and the other peers are measured."""
    real = training.gpucnn_step

    def breaks_on_its_second_call(backend, captured=False, model=training.MODEL):
        step, calls = real(backend, captured, model), []

        def call(x, y):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("a stand-in CUDA error")
            return step(x, y)

        return call

    monkeypatch.setattr(training, "gpucnn_step", breaks_on_its_second_call)
    goal = goals.Within("step", "tutorial-mnist b2", "gpucnn-cpu", 1e9)
    monkeypatch.setattr(goals, "GOALS", (goal,))
    argv = ["--suite", "step", "--batch-size", "2", "--peers", "tutorial-loops,gpucnn-cpu"]
    out, record, err = run_bench(tmp_path, capsys, *argv, "--tutorial-samples", "1", status=1)
    assert "a stand-in CUDA error" in err and "gpucnn-cpu failed" in err
    rows = {r["peer"]: r for r in record["results"]}
    assert rows["tutorial-loops"]["status"] == "ok" and rows["tutorial-loops"]["median"] > 0
    assert rows["gpucnn-cpu"]["status"] == (
        f"{peers.TIMING_FAILED}: RuntimeError: a stand-in CUDA error"
    )
    assert [v["met"] for v in record["goals"]] == [False]
    assert "not available: timing the peer failed" in out


def test_measure_drops_a_runner_that_fails_in_a_sample(monkeypatch):
    """A runner that raises while sampled is dropped from the rounds, its error its failure;
    the other runners take every sample."""
    monkeypatch.setattr(timing, "SETTLE_S", 0.0)
    monkeypatch.setattr(timing, "REWARM_S", 0.0)
    calls = []

    def fails_on_its_fourth_call():  # 2 warm-up calls; the first sample: 1 untimed, 1 timed
        calls.append(1)
        if len(calls) == 4:
            raise MemoryError("out of memory")

    runners = {
        "ok": timing.Runner(lambda: None, number=1),
        "broken": timing.Runner(fails_on_its_fourth_call, number=1),
    }
    samples = timing.measure(runners, 3, lambda err: f"failed: {err}")
    assert len(samples["ok"].times) == 3 and samples["ok"].failure is None
    assert samples["broken"].times == [] and samples["broken"].failure == "failed: out of memory"
    assert len(calls) == 4  # not called again once it failed


def test_a_backend_that_fails_to_set_up_is_a_row_in_every_suite(monkeypatch):
    """The bandwidth and compile suites made the backend (its warm-up compiles the kernels)
    outside the soft setup, so an error there stopped the run; now, as in the other suites, the
    peer's rows say "setting the peer up failed" and the other peers are measured."""
    real = peers.get_backend

    def fails_to_compile():
        raise RuntimeError("a stand-in compile error")

    def get_backend(device):  # the CPU's backend; the others' warm-up fails
        return real(device) if device == "cpu" else types.SimpleNamespace(warmup=fails_to_compile)

    monkeypatch.setattr(peers, "get_backend", get_backend)
    monkeypatch.setattr(timing, "SETTLE_S", 0.0)
    failed = f"{peers.SETUP_FAILED}: RuntimeError: a stand-in compile error"
    opts = suites.Options([2], repeats=1, megabytes=0.25)
    rows = suites.run_bandwidth([PEERS["gpucnn-cpu"], PEERS["gpucnn-cuda-emu"]], opts)
    assert {r.status for r in rows if r.peer == "gpucnn-cpu"} == {"ok"}
    assert {r.status for r in rows if r.peer == "gpucnn-cuda-emu"} == {failed}
    assert [r.op for r in rows if r.peer == "gpucnn-cuda-emu"] == list(TRAFFIC)  # a row per op
    rows = suites.run_compile([PEERS["gpucnn-cuda"]], opts)
    assert [r.op for r in rows] == list(GOALS) and {r.status for r in rows} == {failed}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--suite", "ops", "--cases", "zzz"], "no ops case matches --cases 'zzz'"),
        (["--json", "/"], "--json /: is a folder; name a file in it"),
        (["--repeats", "0"], "argument --repeats: expected positive integers"),
        (["--settle", "-1"], "argument --settle: expected a number >= 0, got '-1'"),
        (
            ["--suite", "epoch", "--batch-size", "8,32", "--epoch-samples", "16"],
            "--epoch-samples 16 is under --batch-size 32: an epoch of no whole batch",
        ),
        (["--suite", "bandwidth", "--megabytes", "inf"], "--megabytes: expected a positive number"),
    ],
)
def test_bench_refuses_what_would_run_nothing_or_lose_the_results(argv, message, capsys):
    """Checked before any timing (a --json path that cannot be written, found after a long run,
    lost it), in one line with exit code 2, from the scripts' main as from ``gpucnn bench``."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2 and message in capsys.readouterr().err


def test_bench_refuses_a_json_path_in_a_folder_it_cannot_write(tmp_path, capsys, monkeypatch):
    """Found only after the run (the check asked only whether the folder exists), it lost it.
    The folder's refusal is simulated: the tests may run as root, who may write anywhere."""

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(gpucnn.atomic.tempfile, "TemporaryFile", refused)
    assert main(["--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert f"--json {tmp_path}: cannot write files in that folder (Permission denied)" in err


def test_bench_refuses_a_json_path_whose_folder_is_missing(tmp_path, capsys):
    """Checked before the run, like the cases above; the missing folder lies under tmp_path, so
    that a run that wrote the JSON anyway (a bug) cannot leave it behind for the next run."""
    path = tmp_path / "missing" / "folder" / "x.json"
    assert main(["--json", str(path)]) == 2
    assert "its folder does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bench_names_a_file_where_the_json_folder_should_be(tmp_path, capsys):
    """It said "its folder does not exist" of a file."""
    (tmp_path / "file").write_text("")
    assert main(["--json", str(tmp_path / "file" / "x.json")]) == 2
    assert f"--json {tmp_path}/file: is a file, not a folder" in capsys.readouterr().err


STEP_ARGV = ["--suite", "step", "--batch-size", "2", "--peers", "gpucnn-cpu", "--repeats", "1"]


def test_the_json_is_written_before_a_reader_that_left_stops_the_table(tmp_path, monkeypatch):
    """``gpucnn bench ... | head -1``: printing the table fails once the reader has gone (a broken
    pipe, which ends the command quietly, exit 1); the JSON, written first, is kept."""
    fd = os.open(tmp_path / "stdout", os.O_WRONLY | os.O_CREAT)  # the broken pipe's stand-in

    class LeftReader:
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return fd

    monkeypatch.setattr(sys, "stdout", LeftReader())
    path = tmp_path / "bench.json"
    try:
        assert main([*STEP_ARGV, "--settle", "0", "--json", str(path)]) == 1
    finally:
        os.close(fd)
    assert [r["peer"] for r in json.loads(path.read_text())["results"]] == ["gpucnn-cpu"]


def test_the_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A write that fails (here its fsync: a full disk) leaves the previous results whole, and no
    temporary file."""
    path = tmp_path / "bench.json"
    path.write_text('{"results": "before"}\n')

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    assert main([*STEP_ARGV, "--settle", "0", "--json", str(path)]) == 2
    assert path.read_text() == '{"results": "before"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]


def test_ratios_never_cross_devices():
    def result(peer, device, seconds):
        return Result("step", "b64", "train step", peer, device, "float32", times=[seconds])

    results = [result("a", "cpu", 2.0), result("b", "cpu", 1.0), result("c", "cuda", 0.5)]
    results.append(Result("step", "b64", "train step", "d", "cuda", "float32", status="no GPU"))
    add_ratios(results)
    assert results[0].ratios == {"b": 0.5}
    assert results[1].ratios == {"a": 2.0}
    assert results[2].ratios == {} and results[3].ratios == {}
    lines = table(results).splitlines()
    assert "x vs a" in lines[0] and "x vs d" not in lines[0]
    assert "GB/s" not in lines[0]  # empty in every row: left out


def test_peer_selection():
    assert [p.name for p in select("cpu", "ops")] == ["gpucnn-cpu", "pytorch-cpu"]
    assert "tutorial-loops" in [p.name for p in select("cpu", "step")]
    cuda_ops = [p.name for p in select("cuda", "ops")]
    assert {"gpucnn-cuda-graph", "pytorch-cuda-graph", "pytorch-cuda-tf32"} <= set(cuda_ops)
    with pytest.raises(ValueError, match="unknown peers"):
        select("cpu", "step", ["numpy-magic"])
    with pytest.raises(ValueError, match="runs in the ops suite"):
        select("cpu", "ops", ["tutorial-loops"])
    assert main(["--peers", "numpy-magic"]) == 2
    assert all(isinstance(p, Peer) for p in PEERS.values())


@pytest.mark.torch
def test_tutorial_peer_is_plain_per_sample_sgd():
    """One tutorial train_step equals PyTorch's SGD step on the same sample and weights."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    net = TutorialMnistNet(0)
    conv1, conv2, dense1, dense2 = (net.layers[i] for i in (0, 3, 7, 9))
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(0), torch.nn.Linear(800, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10),
    ).double()  # fmt: skip
    pairs = [
        (twin[0], conv1.filters, conv1.biases),
        (twin[3], conv2.filters, conv2.biases),
        (twin[7], dense1.weights.T, dense1.biases),  # the tutorial's dense weights are (in, out)
        (twin[9], dense2.weights.T, dense2.biases),
    ]
    with torch.no_grad():
        for layer, w, b in pairs:
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            layer.bias.copy_(torch.from_numpy(b))
    image = np.random.default_rng(1).standard_normal((1, 28, 28))
    loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(image))[None], torch.tensor([3]))
    loss.backward()
    # the tutorial's loss is -log(p + 1e-10): a relative difference of ~1e-8 here
    assert net.train_step(image, 3, lr=0.01) == pytest.approx(loss.item(), rel=1e-6)
    for layer, w, b in pairs:
        expected = layer.weight.detach().numpy() - 0.01 * layer.weight.grad.numpy()
        np.testing.assert_allclose(w, expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, layer.bias.detach().numpy() - 0.01 * layer.bias.grad.numpy())


@pytest.mark.emu
def test_graph_peer_runs_a_captured_step(monkeypatch):
    """The gpucnn-cuda-graph peer's runner, on the emulated device: made, it has captured the
    step; a call replays it. A capture the device refuses makes the peer unavailable instead,
    with the error as its reason."""
    backend = make_backend("cuda-emu")
    peer = Peer("gpucnn-cuda-emu-graph", "cpu", ("step",))
    runner = step_runner(peer, 4, 1)
    losses = [float(runner.fn()) for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]  # one batch, learnt again and again

    def refuse():
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(backend, "graph_session", refuse)
    with pytest.raises(peers.Unavailable, match="capture failed: RuntimeError: operation not"):
        step_runner(peer, 4, 1)


@pytest.mark.emu
def test_graph_peer_replays_an_ops_calls(monkeypatch):
    """An ops graph peer, on the emulated device: a replay launches GRAPH_CALLS calls' kernels
    (the emulated session also checks that each replay launches what the capture did), its
    time is reported per call, and its output is the eager peer's."""
    eager, graph = Peer("gpucnn-cuda-emu", "cpu"), Peer("gpucnn-cuda-emu-graph", "cpu")
    backend = make_backend("cuda-emu")
    launches = []
    launch = backend._launch
    monkeypatch.setattr(backend, "_launch", lambda *a: launches.append(a[1]) or launch(*a))
    for case in ops.cases([2])[:5]:
        for op, (runners, missing, outputs) in ops.runners([eager, graph], case).items():
            assert not missing, missing
            replay = runners[graph.name]
            assert replay.scale == 1 / ops.GRAPH_CALLS and runners[eager.name].scale == 1
            np.testing.assert_array_equal(outputs[graph.name], outputs[eager.name], err_msg=op)
            launches.clear()
            runners[eager.name].fn()
            once = list(launches)
            launches.clear()
            again = backend.to_numpy(replay.fn())
            assert once and launches == once * ops.GRAPH_CALLS, op
            np.testing.assert_array_equal(again, outputs[eager.name], err_msg=op)


GEMM_KERNELS = ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight")
GRAPH, BASELINE = (
    Peer("gpucnn-cuda-emu-graph", "cpu"),
    Peer("gpucnn-cuda-emu-baseline-graph", "cpu"),
)


def record_conv_launches(monkeypatch, backend) -> list[tuple[str, int]]:
    """(kernel, last argument) of each conv2d.cu GEMM and winograd.cu launch from now on (a GEMM's
    last argument is its narrow flag)."""
    launches = []
    launch = backend._launch

    def record(family, kernel, grid, *args):
        if family == "winograd" or kernel in GEMM_KERNELS:
            launches.append((kernel, int(args[-1])))
        return launch(family, kernel, grid, *args)

    monkeypatch.setattr(backend, "_launch", record)
    return launches


@pytest.mark.emu
def test_baseline_graph_peer_runs_the_conv_gemms_on_the_square_tile(monkeypatch):
    """The narrow tile's same-run comparison: the -baseline graph peer captures and replays every
    conv GEMM with the narrow flag off, where the plain graph peer runs conv1's forward and
    input gradient narrow; both give the same bits."""
    backend = make_backend("cuda-emu")
    launches = record_conv_launches(monkeypatch, backend)
    conv1 = ops.cases([2])[0]
    for op, (runners, missing, outputs) in ops.runners([GRAPH, BASELINE], conv1).items():
        assert not missing, missing
        np.testing.assert_array_equal(outputs[BASELINE.name], outputs[GRAPH.name], err_msg=op)
        narrow = int(op != "conv backward-weight")  # 9 weight columns: a tie, square
        for peer, expected in ((BASELINE.name, 0), (GRAPH.name, narrow)):
            launches.clear()
            runners[peer].fn()
            assert launches and {flag for _, flag in launches} == {expected}, (op, peer)


@pytest.mark.emu
def test_baseline_graph_peer_runs_no_winograd(monkeypatch):
    """Winograd's same-run comparison: where the plain graph peer runs a convolution's passes as
    Winograd (forced here on conv1's 3x3 stride-1 window, too small to be chosen by itself), the
    -baseline peer runs the direct GEMMs; the results agree to float32 rounding."""
    backend = make_backend("cuda-emu")
    launches = record_conv_launches(monkeypatch, backend)
    conv1 = ops.cases([2])[0]
    with convolution_algorithm("winograd"):
        results = ops.runners([GRAPH, BASELINE], conv1)
        for op in ("conv forward", "conv backward-input", "conv backward-weight"):
            runners, missing, outputs = results[op]
            assert not missing, missing
            expected = outputs[BASELINE.name]
            scale = np.abs(expected).max()
            np.testing.assert_allclose(outputs[GRAPH.name], expected, rtol=1e-4, atol=1e-5 * scale)
            for peer, winograd in ((BASELINE.name, False), (GRAPH.name, True)):
                launches.clear()
                runners[peer].fn()
                kernels = {kernel for kernel, _ in launches}
                assert any(k.startswith("winograd_") for k in kernels) == winograd, (op, peer)


@pytest.mark.emu
def test_a_refused_graph_capture_is_a_row_with_its_reason(monkeypatch):
    """A graph peer whose capture fails (here: a stand-in error) is reported unavailable with the
    error; the other peers of the case are still measured."""
    eager, graph = Peer("gpucnn-cuda-emu", "cpu"), Peer("gpucnn-cuda-emu-graph", "cpu")
    make_backend("cuda-emu")

    def refuse(*args):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(ops, "gpucnn_graph", refuse)
    for runners, missing, outputs in ops.runners([eager, graph], ops.cases([2])[4]).values():
        assert list(runners) == list(outputs) == [eager.name]
        assert "capture failed: RuntimeError: operation not permitted" in missing[graph.name]


def _timed(suite, case, op, peer, device, seconds):
    return Result(suite, case, op, peer, device, "float32", times=[seconds])


def test_goals_read_the_rows_they_name():
    step_cpu, step_gpu = goals.STEP_CPU, goals.STEP_GPU
    results = [
        _timed("step", step_cpu, "train step", "gpucnn-cpu", "cpu", 0.020),
        _timed("step", step_cpu, "train step", "pytorch-cpu", "cpu", 0.015),  # 0.75x: missed
        _timed("step", step_cpu, "train step", "tutorial-loops", "cpu", 30.0),  # 1,500x: met
        _timed("step", step_gpu, "train step", "gpucnn-cuda-graph", "cuda", 50e-6),
        _timed("step", step_gpu, "train step", "pytorch-cuda", "cuda", 290e-6),  # 5.8x: missed
        _timed("step", step_gpu, "train step", "gpucnn-cuda", "cuda", 1.0),
        _timed("epoch", "random 58880 samples b1280", "epoch", "gpucnn-cuda", "cuda", 0.09),
        _timed("epoch", "random 59968 samples b64", "epoch", "gpucnn-cuda-graph", "cuda", 0.05),
        _timed("epoch", "random 32 samples b16", "epoch", "gpucnn-cuda-graph", "cuda", 0.001),
        _timed("bandwidth", "x", "copy", "gpucnn-cuda", "cuda", 1e-3),
        _timed("bandwidth", "x", "relu forward", "gpucnn-cuda", "cuda", 1e-3),
        _timed("compile", "every kernel family, empty cache", "cold compile", "gpucnn-cuda",
               "cuda", 2.5),
    ]  # fmt: skip
    for r, samples, batch in zip(results[6:9], (58880, 59968, 32), (1280, 64, 16), strict=True):
        r.samples_per_unit, r.batch_size = samples, batch  # a whole epoch at b1280 and b64
    results[9].copy_fraction, results[10].copy_fraction = 1.0, 0.9
    conv = [
        ("c1", "conv forward", 2.0),
        ("c1", "conv backward-input", 0.7),
        ("c2", "conv forward", 1.0),
    ]
    for case, op, ratio in conv:  # PyTorch's time over ours
        results += [
            _timed("ops", case, op, "gpucnn-cuda", "cuda", 1e-5),
            _timed("ops", case, op, "pytorch-cuda", "cuda", ratio * 1e-5),
        ]
    results.append(_timed("ops", "p1", "max-pool forward", "gpucnn-cuda", "cuda", 1e-5))
    add_ratios(results)
    lines = [v.line() for v in goals.check(results)]
    assert lines == [
        f"step: {step_cpu}, gpucnn-cpu vs pytorch-cpu 0.75x (goal >= 0.8x): missed",
        f"step: {step_cpu}, gpucnn-cpu vs tutorial-loops 1,500x (goal >= 1,000x): met",
        f"step: {step_gpu}, gpucnn-cuda-graph 50 us (goal <= 60 us): met",
        f"step: {step_gpu}, gpucnn-cuda-graph vs pytorch-cuda 5.8x (goal >= 6x): missed",
        "epoch: random 58880 samples b1280, gpucnn-cuda 90 ms (goal <= 100 ms): met",
        "epoch: random 59968 samples b64, gpucnn-cuda-graph 50 ms (goal <= 100 ms): met",
        "epoch: random 32 samples b16, gpucnn-cuda-graph: 32 samples, the goal is for a whole "
        "epoch's 60,000: not checked",  # a shortened epoch says nothing of a whole one
        "ops: 3 conv rows, gpucnn-cuda vs pytorch-cuda: geometric mean 1.119x (goal >= 1x): met",
        "ops: 3 conv rows, gpucnn-cuda vs pytorch-cuda: slowest 0.7x, c1 conv backward-input "
        "(goal: none under 0.8x): missed",
        "bandwidth: relu forward, gpucnn-cuda 90% of the copy (goal >= 85%): met",
        "compile: every kernel family, empty cache, cold compile, gpucnn-cuda 2.5 s "
        "(goal <= 2 s): missed",
    ]


def _unavailable(suite, case, op, peer, device, why):
    return Result(suite, case, op, peer, device, "float32", status=why)


def test_goals_whose_peer_could_not_run_are_not_checked():
    """A goal whose peer has a row but could not run here says so, with the peer's reason,
    rather than vanishing (a run without PyTorch, or without a GPU); a gpucnn graph peer whose
    capture failed misses its goals."""
    step, conv = goals.STEP_CPU, "conv forward"
    results = [
        _timed("step", step, "train step", "gpucnn-cpu", "cpu", 0.02),
        _unavailable("step", step, "train step", "pytorch-cpu", "cpu", "PyTorch is not installed"),
        _unavailable("epoch", "b64", "epoch", "gpucnn-cuda", "cuda", "no GPU"),
        _unavailable("epoch", "b64", "epoch", "gpucnn-cuda-graph", "cuda", f"{CAPTURE_FAILED}: x"),
        _timed("ops", "c1", conv, "gpucnn-cuda", "cuda", 1e-5),
        _unavailable("ops", "c1", conv, "pytorch-cuda", "cuda", "PyTorch sees no CUDA device"),
    ]
    add_ratios(results)
    verdicts = goals.check(results)
    assert [v.line() for v in verdicts] == [
        f"step: {step}, gpucnn-cpu vs pytorch-cpu: pytorch-cpu not available (PyTorch is not "
        "installed): not checked",
        "epoch: b64, gpucnn-cuda: gpucnn-cuda not available (no GPU): not checked",
        f"epoch: b64, gpucnn-cuda-graph: gpucnn-cuda-graph not available ({CAPTURE_FAILED}: x): "
        "missed",
        "ops: conv rows, gpucnn-cuda vs pytorch-cuda: pytorch-cuda not available (PyTorch sees no "
        "CUDA device): not checked",
    ]
    assert [v.met for v in verdicts] == [None, None, False, None]


def test_host_clock_settles_and_warms_before_timing(monkeypatch):
    """A CPU sample first waits for other peers' threads to idle, then makes untimed calls of its
    own for REWARM_S (at least one); only the calls after them are timed."""
    slept, calls = [], []
    monkeypatch.setattr(timing.time, "sleep", slept.append)
    monkeypatch.setattr(timing, "REWARM_S", 0.0)
    monkeypatch.setattr(timing, "SETTLE_S", 0.5)
    clock = timing.HostClock()
    assert clock.seconds(lambda: calls.append(1), 3) >= 0
    assert slept == [0.5] and len(calls) == 4  # one untimed call at the least
    monkeypatch.setattr(timing, "REWARM_S", 0.05)
    calls.clear()

    real_clock, now = time.perf_counter, [0.0]
    # A fake clock that only the calls move (by 2^-7 s: exact sums), so the count of untimed
    # calls cannot depend on the machine's load.
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(timing, "REWARM_S", 5 * 2**-7)

    def call() -> None:
        calls.append(now[0])
        now[0] += 2**-7

    assert clock.seconds(call, 2) == 2**-7
    assert calls == [i * 2**-7 for i in range(7)]  # 5 untimed calls fill REWARM_S, then 2 timed
    monkeypatch.setattr(timing.time, "perf_counter", real_clock)
    monkeypatch.setattr(timing, "SETTLE_S", 0.25)
    timing.HostClock().seconds(lambda: None, 1)
    assert slept == [0.5, 0.5, 0.25]  # the module's SETTLE_S, read at each sample
    monkeypatch.setattr(timing, "REWARM_S", 0.0)
    timed, rewarms = [], []
    clock.seconds(lambda: timed.append(1), 2, rewarm=lambda: rewarms.append(1))
    assert (len(timed), len(rewarms)) == (2, 1)  # a long call (an epoch) re-warms with a short one


def test_environment_records_the_allocator_settings(monkeypatch):
    """glibc's MALLOC_* settings change a CPU step's time (page faults on fresh buffers), so a
    run that sets them says so in its header and JSON; a run without them shows none."""
    from gpucnn.bench.report import environment, header

    for key in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(key)
    assert "malloc" not in environment("cpu")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "67108864")
    env = environment("cpu")
    assert env["malloc"] == "MALLOC_MMAP_THRESHOLD_=67108864"
    assert "malloc MALLOC_MMAP_THRESHOLD_=67108864" in header(env, "step")


def test_profile_script_times_every_op_of_a_step():
    """scripts/profile_step.py (the per-op profile behind benchmarks/NOTES.md) runs, and its
    rows cover the step: the convolutions' and pools' calls, each with its wall time."""
    script = SCRIPTS / "profile_step.py"
    result = subprocess.run(
        [sys.executable, str(script), "--batch-size", "8", "--steps", "2", "--top", "20"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    rows = {tuple(line.split()[:2]) for line in result.stdout.splitlines()[2:]}
    for op in ("conv2d_forward_saving", "conv2d_backward_saved", "max_pool2d_forward"):
        assert {(op, "0"), (op, "1")} <= rows, result.stdout


def test_profile_script_profiles_the_zoo_model_asked_for():
    """--model fashion-net profiles that model's step: its batch norms are rows, and the header
    names the model."""
    script = SCRIPTS / "profile_step.py"
    argv = ["--model", "fashion-net", "--batch-size", "4", "--steps", "1", "--top", "40"]
    result = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("fashion-net cpu b4: step "), result.stdout
    rows = {tuple(line.split()[:2]) for line in result.stdout.splitlines()[2:]}
    assert {("batch_norm2d_forward_train", "1"), ("batch_norm2d_backward", "1")} <= rows


def test_profile_script_names_an_unusable_device(monkeypatch, capsys):
    """scripts/profile_step.py on a device that cannot run says why in one line (exit 2)."""

    from gpucnn.errors import GpuUnavailableError

    module = load_script("profile_step")

    def no_gpu(device):
        raise GpuUnavailableError("no NVIDIA driver found")

    monkeypatch.setattr(module, "get_backend", no_gpu)
    run = lambda: module.main(["--device", "cuda"])  # noqa: E731 - as the script's __main__ does
    assert module.run_reporting_errors("profile_step.py", run) == 2
    assert capsys.readouterr().err == "profile_step.py: error: no NVIDIA driver found\n"


def test_torch_capture_follows_the_capture_recipe(monkeypatch):
    """peers.torch_capture, against a stand-in torch that logs what it is asked (no GPU here):
    three warm-up calls on a side stream, each after reset; reset again outside the capture;
    then the one captured call, whose output comes back with the graph."""
    import contextlib

    log = []
    stream = types.SimpleNamespace(wait_stream=lambda other: log.append("wait"))

    @contextlib.contextmanager
    def on(name):
        log.append(f"enter {name}")
        yield
        log.append(f"exit {name}")

    cuda = types.SimpleNamespace(
        Stream=lambda: stream,
        current_stream=lambda: stream,
        stream=lambda s: on("side stream"),
        graph=lambda g: on("capture"),
        CUDAGraph=lambda: "graph",
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    calls = iter(range(10))
    graph, output = peers.torch_capture(
        lambda: log.append(f"fn {next(calls)}") or "out", reset=lambda: log.append("reset")
    )
    assert (graph, output) == ("graph", "out")
    warm = ["reset", "fn 0", "reset", "fn 1", "reset", "fn 2"]
    assert log == [
        "wait", "enter side stream", *warm, "exit side stream", "wait",
        "reset", "enter capture", "fn 3", "exit capture",
    ]  # fmt: skip


def test_cuda_peers_leave_pytorchs_modes_as_they_found_them(monkeypatch):
    """The CUDA peers switch TF32 and cuDNN autotuning (global modes); after the run they are
    back as before, so a bench inside a bigger process (the tests) changes nothing for the rest.
    A stand-in torch that says it has a GPU: no GPU here."""

    backends = types.SimpleNamespace(
        cuda=types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=False)),
        cudnn=types.SimpleNamespace(allow_tf32=True, benchmark=False),  # PyTorch's defaults
    )
    torch = types.SimpleNamespace(
        backends=backends,
        cuda=types.SimpleNamespace(is_available=lambda: True),
        device=lambda name: name,
    )
    monkeypatch.setitem(sys.modules, "torch", torch)
    for name in ("pytorch-cuda-tf32", "pytorch-cuda"):
        assert peers.torch_device(PEERS[name]) == "cuda"
    modes = (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.benchmark)
    assert modes == (False, False, True)  # the last peer's: TF32 off, autotuning on
    peers.restore_torch_modes()
    modes = (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.benchmark)
    assert modes == (False, True, False)
    peers.restore_torch_modes()  # nothing saved any more: nothing to do


@pytest.mark.emu
@pytest.mark.parametrize(("algorithm", "winograd"), [("winograd", True), ("direct", False)])
def test_conv_algorithm_option_sets_the_convolutions(tmp_path, capsys, monkeypatch, algorithm,
                                                     winograd):  # fmt: skip
    """``--conv-algorithm`` holds for the whole run (here on conv2's 3x3 stride-1 window, which
    "auto" leaves direct) and is recorded with the other options."""
    backend = make_backend("cuda-emu")
    launches = record_conv_launches(monkeypatch, backend)
    argv = ["--suite", "ops", "--device", "cuda-emu", "--peers", "gpucnn-cuda-emu"]
    _, record, _ = run_bench(
        tmp_path, capsys, *argv, "--batch-size", "2", "--cases", "conv2",
        "--conv-algorithm", algorithm,
    )  # fmt: skip
    assert any(kernel.startswith("winograd_") for kernel, _ in launches) is winograd
    assert record["arguments"]["conv_algorithm"] == algorithm
    assert {row["op"] for row in record["results"] if row["status"] == "ok"} >= {"conv forward"}


# ------------------------------------------------------------------ the figures' arithmetic
def _table_cells(results):
    """The table's rows as {column: cell} (columns are two or more spaces apart)."""
    header, _, *rows = table(results).splitlines()
    names = re.split(r"\s{2,}", header)
    return [dict(zip(names, re.split(r"\s{2,}", row), strict=True)) for row in rows]


def test_median_and_iqr_are_of_the_samples_middle_and_quartiles():
    """The median column is the middle sample (not the mean: one slow sample must not move it),
    and IQR is (q3 - q1) / median over the linear-interpolated quartiles; one sample: no IQR."""
    r = Result("step", "b2", "train step", "a", "cpu", "float32", times=[4.0, 1.0, 10.0, 2.0])
    assert r.median == 3.0
    (cells,) = _table_cells([r])
    assert (cells["median"], cells["IQR"]) == ("3 s", "125%")  # q1 = 1.75, q3 = 5.5
    one = Result("step", "b2", "train step", "a", "cpu", "float32", times=[1.0, 1.0])
    assert _table_cells([one])[0]["IQR"] == "0%"
    one.times = [1.0]
    assert _table_cells([one])[0]["IQR"] == "-"
    failed = Result("step", "b2", "train step", "a", "cpu", "float32", times=[1.0], status="x")
    assert failed.median is None  # a peer that did not run to the end has no figure


def test_samples_per_second_count_the_samples_one_time_covers():
    """An epoch row's samples/s is its samples (every whole batch) over its median, not its
    batch size over it."""
    r = Result("epoch", "random 32 samples b16", "epoch", "a", "cpu", "float32",
               samples_per_unit=32, batch_size=16, times=[2.0])  # fmt: skip
    assert _table_cells([r])[0]["samples/s"] == "16"


# ----------------------------------------------------------------------------------- timing
class _LogClock:
    """A clock that calls ``fn`` ``number`` times and reports ``seconds``; logs each sample."""

    def __init__(self, name, log, seconds=1.0):
        self.name, self.log, self.value = name, log, seconds

    def seconds(self, fn, number, rewarm=None):
        self.log.append((self.name, number))
        for _ in range(number):
            fn()
        return self.value


def test_measure_warms_up_then_rotates_the_peers_every_round():
    """Each runner's warm-up calls (its ``warmup`` where it has one) come before any sample and
    are not samples; the rounds rotate the order (a b c, b c a, c a b); ``max_samples`` caps a
    slow runner's samples; ``scale`` turns seconds per call into seconds per unit."""
    log, calls = [], []
    runners = {
        name: timing.Runner(
            lambda name=name: calls.append(name),
            _LogClock(name, log, 0.5),
            number=1,
            warmup=lambda name=name: calls.append(f"warm {name}"),
        )
        for name in "abc"
    }
    runners["c"].max_samples, runners["b"].scale = 2, 4.0
    samples = timing.measure(runners, 3, str, warmups=2)
    assert calls[:6] == ["warm a", "warm a", "warm b", "warm b", "warm c", "warm c"]
    assert [name for name, _ in log] == ["a", "b", "c", "b", "c", "a", "a", "b"]
    assert samples["a"].times == [0.5] * 3 and samples["b"].times == [2.0] * 3
    assert samples["c"].times == [0.5] * 2


def test_calls_per_sample_fill_the_minimum_sample_time():
    """``number`` fixes the calls per sample; without it, one timed call calibrates: enough
    calls that a sample lasts MIN_SAMPLE_S, between 1 and MAX_CALLS."""
    for once, calls in ((timing.MIN_SAMPLE_S / 4, 4), (1.0, 1), (1e-12, timing.MAX_CALLS)):
        log = []
        runner = timing.Runner(lambda: None, _LogClock("a", log, once))
        samples = timing.measure({"a": runner}, 1, str, warmups=0)
        assert samples["a"].number == calls and log == [("a", 1), ("a", calls)]
    log = []
    runner = timing.Runner(lambda: None, _LogClock("a", log), number=7)
    samples = timing.measure({"a": runner}, 1, str)
    assert samples["a"].number == 7 and log == [("a", 7)]


def test_event_clock_times_the_calls_between_its_events_after_draining_the_device():
    """A GPU sample: the device drained first (no earlier work in the figure), the start event
    recorded before the calls and the end event after them, the end waited for, and the
    elapsed milliseconds turned into seconds per call. Stand-in events: no GPU here."""
    log = []

    class Event:
        def __init__(self, name):
            self.name = name

        def record(self):
            log.append(f"record {self.name}")

        def synchronize(self):
            log.append(f"wait {self.name}")

    names = iter(("start", "end"))
    clock = timing.EventClock(
        lambda: Event(next(names)),
        lambda start, end: log.append(f"elapsed {start.name} {end.name}") or 8.0,
        lambda: log.append("drain"),
    )
    assert clock.seconds(lambda: log.append("call"), 4) == 8.0 / 1e3 / 4
    assert log == [
        "drain", "record start", *["call"] * 4, "record end", "wait end", "elapsed start end",
    ]  # fmt: skip


def test_host_clock_reads_the_clock_only_with_the_device_synchronised(monkeypatch):
    """On the CPU clock the device (the emulated GPU's queue) is synchronised after the untimed
    calls and after the timed ones, before each reading that bounds the timed calls."""
    log = []
    monkeypatch.setattr(timing.time, "sleep", lambda s: None)
    monkeypatch.setattr(timing, "REWARM_S", 0.0)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: log.append("clock") or len(log))
    clock = timing.HostClock(lambda: log.append("sync"))
    clock.seconds(lambda: log.append("call"), 2, rewarm=lambda: log.append("rewarm"))
    assert log == ["clock", "rewarm", "sync", "clock", "clock", "call", "call", "sync", "clock"]


# ------------------------------------------------------------------------------------ goals
def test_a_goal_reached_exactly_is_met():
    """Every goal is "at least" or "at most": a figure equal to it meets it (ratios of exact
    binary fractions here, so the equality is exact)."""
    step = "tutorial-mnist b8"
    results = [
        _timed("step", step, "train step", "gpucnn-cpu", "cpu", 1.0),
        _timed("step", step, "train step", "pytorch-cpu", "cpu", 0.75),
        _timed("ops", "c1", "conv forward", "gpucnn-cuda", "cuda", 0.5),
        _timed("ops", "c1", "conv forward", "pytorch-cuda", "cuda", 0.5),
        _timed("bandwidth", "x", "relu forward", "gpucnn-cuda", "cuda", 1e-3),
    ]
    results[-1].copy_fraction = 0.75
    add_ratios(results)
    checks = (
        goals.Faster("step", step, "gpucnn-cpu", "pytorch-cpu", 0.75),
        goals.Within("step", step, "gpucnn-cpu", 1.0),
        goals.FasterOnAverage("ops", "conv", "gpucnn-cuda", "pytorch-cuda", 1.0, 1.0),
        goals.CopyFraction(0.75),
    )
    verdicts = [v for goal in checks for v in goal.check(results)]
    assert [v.met for v in verdicts] == [True] * 5, [v.line() for v in verdicts]


def test_goals_read_only_their_case_op_and_whole_epochs():
    """A goal reads its own case (another batch size's row of the same peer is not it), its own
    op (the compile suite's cuBLAS-ready row shares the case of the warm step's goal but has
    none), whole epochs only (a longer random epoch is not a Fashion-MNIST epoch), and averages
    only the conv rows both peers ran."""
    step_cpu, step_gpu = "tutorial-mnist b256", "tutorial-mnist b64"  # the batches
    warm, ready = "warm first train step", "warm first train step, cuBLAS ready"
    results = [
        _timed("step", step_cpu, "train step", "gpucnn-cuda-graph", "cuda", 1.0),  # other case
        _timed("step", step_gpu, "train step", "gpucnn-cuda-graph", "cuda", 50e-6),
        _timed("step", step_gpu, "train step", "pytorch-cuda", "cuda", 600e-6),
        _timed("epoch", "random 120000 samples b64", "epoch", "gpucnn-cuda", "cuda", 0.09),
        _timed("compile", GOALS[warm].case, warm, "gpucnn-cuda", "cuda", 0.05),
        _timed("compile", GOALS[ready].case, ready, "gpucnn-cuda", "cuda", 0.5),
        _timed("ops", "c1", "conv forward", "gpucnn-cuda", "cuda", 1e-5),
        _timed("ops", "c1", "conv forward", "pytorch-cuda", "cuda", 2e-5),
        _timed("ops", "c2", "conv forward", "gpucnn-cuda", "cuda", 1e-5),  # PyTorch has no c2
    ]
    results[3].samples_per_unit, results[3].batch_size = 120000, 64
    add_ratios(results)
    assert [v.line() for v in goals.check(results)] == [
        f"step: {step_gpu}, gpucnn-cuda-graph 50 us (goal <= 60 us): met",
        f"step: {step_gpu}, gpucnn-cuda-graph vs pytorch-cuda 12x (goal >= 6x): met",
        "epoch: random 120000 samples b64, gpucnn-cuda: 120,000 samples, the goal is for a "
        "whole epoch's 59,968: not checked",
        "ops: 1 conv rows, gpucnn-cuda vs pytorch-cuda: geometric mean 2x (goal >= 1x): met",
        "ops: 1 conv rows, gpucnn-cuda vs pytorch-cuda: slowest 2x, c1 conv forward "
        "(goal: none under 0.8x): met",
        f"compile: {GOALS[warm].case}, {warm}, gpucnn-cuda 50 ms (goal <= 100 ms): met",
    ]


def test_only_a_gpucnn_peers_own_failure_misses_a_goal():
    """A PyTorch graph peer whose capture failed leaves the goal against it not checked (no
    fault of gpucnn's), and the run's exit status does not count it; gpucnn's own capture
    failing misses the goal."""
    step = goals.STEP_GPU
    failed = f"{CAPTURE_FAILED}: RuntimeError: x"
    results = [
        _timed("step", step, "train step", "gpucnn-cuda-graph", "cuda", 50e-6),
        _unavailable("step", step, "train step", "pytorch-cuda-graph", "cuda", failed),
    ]
    add_ratios(results)
    faster = goals.Faster("step", step, "gpucnn-cuda-graph", "pytorch-cuda-graph", 1.2)
    assert [v.met for v in faster.check(results)] == [None]
    assert not peers.own_failure("pytorch-cuda-graph", failed)
    assert peers.own_failure("gpucnn-cuda-graph", failed)
    results[0] = _unavailable("step", step, "train step", "gpucnn-cuda-graph", "cuda", failed)
    assert [v.met for v in faster.check(results)] == [False]


# ------------------------------------------------------------------------------------ peers
def test_peers_figures_come_from_the_device_they_run_on():
    """gpucnn's emulated CUDA kernels run on the CPU: their ratios are to the CPU's peers, never
    to the GPU's; PyTorch's TF32 peer is the one recorded as tf32, the others as float32."""
    devices = {name: peer.device for name, peer in PEERS.items()}
    assert devices == {
        "tutorial-loops": "cpu", "gpucnn-cpu": "cpu", "gpucnn-cuda-emu": "cpu",
        "pytorch-cpu": "cpu", "gpucnn-cuda": "cuda", "gpucnn-cuda-graph": "cuda",
        "gpucnn-cuda-baseline-graph": "cuda", "pytorch-cuda": "cuda",
        "pytorch-cuda-graph": "cuda", "pytorch-cuda-tf32": "cuda",
    }  # fmt: skip
    assert {n for n, p in PEERS.items() if p.precision != "float32"} == {
        "tutorial-loops", "pytorch-cuda-tf32",
    }  # fmt: skip
    assert PEERS["pytorch-cuda-tf32"].precision == "tf32"
    results = [
        Result.of(PEERS[name], "ops", "c1", "conv forward", times=[seconds])
        for name, seconds in (("gpucnn-cuda-emu", 2.0), ("pytorch-cpu", 1.0), ("gpucnn-cuda", 0.5))
    ]
    add_ratios(results)
    assert [r.ratios for r in results] == [{"pytorch-cpu": 0.5}, {"gpucnn-cuda-emu": 2.0}, {}]


def test_the_tf32_peer_runs_its_calls_with_tf32_on_and_the_others_with_it_off(monkeypatch):
    """TF32 is a global PyTorch mode and CUDA peers alternate: each CUDA peer's call sets the
    mode it measures (on for pytorch-cuda-tf32 only). A stand-in torch: no GPU here."""
    matmul = types.SimpleNamespace(allow_tf32=False)
    cudnn = types.SimpleNamespace(allow_tf32=False, benchmark=False)
    torch = types.SimpleNamespace(backends=types.SimpleNamespace(
        cuda=types.SimpleNamespace(matmul=matmul), cudnn=cudnn,
    ))  # fmt: skip
    monkeypatch.setitem(sys.modules, "torch", torch)
    seen = []

    def call():
        seen.append((matmul.allow_tf32, cudnn.allow_tf32))

    tf32, plain = (peers.torch_call(PEERS[n], call) for n in ("pytorch-cuda-tf32", "pytorch-cuda"))
    tf32(), plain(), tf32()
    assert seen == [(True, True), (False, False), (True, True)]


def test_each_peer_is_timed_by_its_own_devices_clock(monkeypatch):
    """CUDA events for the CUDA peers (CuPy's for gpucnn, PyTorch's for PyTorch), the host clock
    elsewhere; gpucnn's host clock synchronises its backend (the emulated GPU's queue)."""
    monkeypatch.setattr(peers, "cupy_clock", lambda: "cupy events")
    monkeypatch.setattr(peers, "torch_clock", lambda: "torch events")
    sync = lambda: None  # noqa: E731
    assert peers.gpucnn_clock(types.SimpleNamespace(name="cuda", synchronize=sync)) == "cupy events"
    emu = peers.gpucnn_clock(types.SimpleNamespace(name="cuda-emu", synchronize=sync))
    assert isinstance(emu, timing.HostClock) and emu.sync is sync
    assert peers.torch_clock_for(PEERS["pytorch-cuda"]) == "torch events"
    assert peers.torch_clock_for(PEERS["pytorch-cuda-tf32"]) == "torch events"
    assert isinstance(peers.torch_clock_for(PEERS["pytorch-cpu"]), timing.HostClock)


# --------------------------------------------------------------------------------- training
def _logging_step(log, what):
    """A stand-in for a step maker: its step appends ``what(x, y)`` to ``log``."""
    return lambda *args, **kwargs: lambda x, y: log.append(what(x, y))


def test_an_epoch_runs_every_whole_batch_once_for_every_peer(monkeypatch):
    """gpucnn's epoch and PyTorch's both train each whole batch of the set once (the last
    partial one dropped, as the row's sample count says) and warm up on EPOCH_WARMUP_STEPS
    steps; the tutorial's step runner times one sample per call, scaled to the batch."""
    data = training.random_images(88)  # 5 whole batches of 16, 8 samples dropped
    for peer, name in (("gpucnn-cpu", "gpucnn_step"), ("pytorch-cpu", "torch_step")):
        if peer == "pytorch-cpu":
            pytest.importorskip("torch")
        batches = []
        monkeypatch.setattr(training, name, _logging_step(batches, lambda x, y: len(y)))
        runner = training.epoch_runner(PEERS[peer], 16, data)
        assert runner.number == 1
        runner.fn()
        assert batches == [16] * 5, peer
        batches.clear()
        runner.warmup()
        assert batches == [16] * training.EPOCH_WARMUP_STEPS, peer
    runner = step_runner(PEERS["tutorial-loops"], 4, 1)
    assert (runner.scale, runner.number, runner.max_samples) == (4, 1, 1)


def test_an_epoch_shorter_than_its_warm_up_warms_up_on_the_batches_it_has(monkeypatch):
    """An epoch of fewer whole batches than EPOCH_WARMUP_STEPS warms up on those batches only,
    for gpucnn and PyTorch alike: never on a partial or empty batch (PyTorch's mean loss of an
    empty batch is NaN, and a captured graph cannot replay on another shape)."""
    data = training.random_images(40)  # 2 whole batches of 16, 8 samples dropped
    assert 40 // 16 < training.EPOCH_WARMUP_STEPS
    for peer, name in (("gpucnn-cpu", "gpucnn_step"), ("pytorch-cpu", "torch_step")):
        if peer == "pytorch-cpu":
            pytest.importorskip("torch")
        batches = []
        monkeypatch.setattr(training, name, _logging_step(batches, lambda x, y: len(y)))
        training.epoch_runner(PEERS[peer], 16, data).warmup()
        assert batches == [16, 16], peer


def test_compile_rows_note_a_goal_reached_exactly_as_met(monkeypatch):
    """The compile suite notes each row's goal on the row: a median equal to it is met. Stand-in
    backend and children: no GPU here."""
    monkeypatch.setattr(peers, "get_backend", lambda device: types.SimpleNamespace(name=device))
    times = {op: [row.goal or 1.0] for op, row in GOALS.items()}
    monkeypatch.setattr(suites.coldstart, "samples", lambda repeats: times)
    rows = suites.run_compile([PEERS["gpucnn-cuda"]], suites.Options([2], repeats=1))
    notes = {r.op: r.note for r in rows}
    assert notes["cold compile"].endswith("goal <= 2 s: met")
    assert notes["warm first train step"].endswith("goal <= 0.1 s: met")


@pytest.mark.parametrize(
    ("defaults", "wanted"),
    [
        ({}, ["--suite {ops,step,epoch,bandwidth,compile,memory} default: step", "(default 64,256)",
              "(default: the device's)"]),
        ({"suite": "ops"}, ["--suite {ops,step,epoch,bandwidth,compile,memory} default: ops"]),
        (
            {"suite": "step", "device": "cpu", "batch_size": [256],
             "peers": ["gpucnn-cpu", "pytorch-cpu"]},
            ["default: step", "default: cpu", "(default 256)",
             "(default: gpucnn-cpu,pytorch-cpu)"],
        ),
    ],
)  # fmt: skip
def test_a_wrappers_help_gives_the_defaults_it_runs_with(defaults, wanted, capsys, monkeypatch):
    """scripts/bench_ops.py and bench_cpu.py pass their own defaults to main(): their --help
    says those, not the gpucnn command's (bench_ops.py's had said "default: step")."""
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    with pytest.raises(SystemExit):
        main(["--help"], **defaults)
    text = " ".join(capsys.readouterr().out.split())
    for part in wanted:
        assert part in text
