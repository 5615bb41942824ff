"""``gpucnn bench --suite memory``: the meters, the new processes that measure each peer, the
suite's turns and failures, and how bytes print. A real step's rise is held only to lower bounds
that any honest measure of it must reach."""

import json
import os

import numpy as np
import pytest
from test_bench import check_record, run_bench

from gpucnn.backend.launchers import winograd
from gpucnn.bench import children, command, memory, peers, suites, training
from gpucnn.bench.peers import PEERS, Unavailable
from gpucnn.bench.report import Result, add_ratios, format_bytes, table
from gpucnn.nn.zoo import build_model

MiB = 2**20
MODEL, BATCH = "fashion-net", 16
MODEL_DEFAULT = training.MODEL


def _host_meter_usable():
    try:
        memory.check_host()
    except Unavailable as err:
        pytest.skip(str(err))


def _touched(megabytes: int) -> np.ndarray:
    """An array of ``megabytes`` MiB, every page written (an untouched one is not resident)."""
    return np.ones(megabytes * MiB // 8)


def test_the_host_meter_keeps_the_peak_and_forgets_what_came_before_its_start():
    """A 96 MiB array made and freed before start is not counted; a 64 MiB one made and freed
    after it is, though it is gone when the rise is read (its high-water mark, not the resident
    size then). Both are single mappings that free hands back to the system at once."""
    _host_meter_usable()
    meter = memory.HostMeter()
    del_before = _touched(96)
    del del_before
    assert meter.start() > 0
    assert meter.rise() < 32 * MiB
    after = _touched(64)
    del after
    assert meter.rise() >= 63 * MiB


def test_the_host_meter_leaves_out_code_read_in(monkeypatch):
    """File-backed pages that came in meanwhile (a library's code on first use) are not the
    process's own memory: the high-water mark's rise less theirs."""
    sizes = {"VmRSS": 100, "RssFile": 30}
    monkeypatch.setattr(memory, "_status_bytes", lambda key: sizes[key] * MiB)
    monkeypatch.setattr(memory, "CLEAR_REFS", type("Sink", (), {"write_text": print})())
    meter = memory.HostMeter()
    assert meter.start() == 100 * MiB
    sizes.update(VmHWM=190, RssFile=50)
    assert meter.rise() == 70 * MiB


def test_the_device_meter_adds_what_the_allocator_gave_back_since_its_peak():
    """The driver's count after over before, plus what the allocator had handed back from its
    peak (PyTorch empties its cache as a capture begins), counted from the start."""
    counts, log = iter([300 * MiB, 420 * MiB]), []
    meter = memory.DeviceMeter(lambda: next(counts), lambda: 50 * MiB, lambda: log.append("reset"))
    assert (meter.start(), log) == (300 * MiB, ["reset"])
    assert meter.rise() == 170 * MiB


def _floor(batch: int) -> int:
    """Bytes that any train step of fashion-net with SGD and momentum holds at its peak: its
    gradients and momentum buffers (one parameter's worth each) and the first convolution's
    output (batch x 64 x 28 x 28 float32)."""
    parameters = sum(v.nbytes for k, v in build_model(MODEL, rng=0).state_dict().items()
                     if "running" not in k and "num_batches" not in k)  # fmt: skip
    return 2 * parameters + batch * 64 * 28 * 28 * 4


@pytest.mark.parametrize("peer", ["gpucnn-cpu", "pytorch-cpu"])
def test_a_sample_is_a_new_process_whose_step_reaches_the_floor(peer):
    """The rise of a real step, in a new process, holds at least its gradients, momentum and
    first activation; what came before it (an interpreter and NumPy at least) is apart."""
    _host_meter_usable()
    if peer.startswith("pytorch"):
        pytest.importorskip("torch")
    before, rise = memory.sample(PEERS[peer], MODEL, BATCH, None, "auto")
    assert before > 20 * MiB
    assert rise >= _floor(BATCH)


def test_a_sample_returns_the_childs_before_and_rise_in_that_order(monkeypatch):
    codes = []
    monkeypatch.setattr(
        memory, "run_child", lambda code, what: codes.append(code) or {"before": 100, "rise": 7}
    )
    assert memory.sample(PEERS["gpucnn-cpu"], MODEL, 4, 1, "direct") == (100, 7)
    (code,) = codes
    assert code.endswith(f"child('gpucnn-cpu', '{MODEL}', 4, 1, 'direct')")


class _LoggingMeter:
    def __init__(self, log):
        self.log = log

    def start(self):
        self.log.append("start")
        return 5

    def rise(self):
        self.log.append("rise")
        return 9


@pytest.mark.parametrize("peer", ["gpucnn-cpu", "pytorch-cpu"])
def test_a_child_starts_its_library_then_the_meter_then_builds_and_runs_the_step(
    monkeypatch, capsys, peer
):
    """The library's start-up before the meter, everything of training after it: the step
    built (model, optimizer, batch, a graph's capture) and called CALLS times, under the
    parent's thread count and convolution algorithm, PyTorch without cuDNN autotuning."""
    log = []
    monkeypatch.setattr(peers, "CUDNN_AUTOTUNE", True)
    monkeypatch.setattr(memory, "HostMeter", lambda: _LoggingMeter(log))
    monkeypatch.setattr(peers, "gpucnn_backend", lambda p: log.append(f"start-up {p.name}"))
    monkeypatch.setattr(peers, "torch_device", lambda p: log.append(f"start-up {p.name}"))
    monkeypatch.setattr(peers, "set_threads", lambda n, torch_too: log.append((n, torch_too)))

    def step_runner(p, batch, tutorial_samples, model):
        log.append(("build", p.name, batch, model, winograd._algorithm, peers.CUDNN_AUTOTUNE))
        return training.Runner(lambda: log.append("step"))

    monkeypatch.setattr(training, "step_runner", step_runner)
    memory.child(peer, MODEL, 8, 3, "direct")
    assert log == [
        (3, peer.startswith("pytorch")), f"start-up {peer}", "start",
        ("build", peer, 8, MODEL, "direct", False), *["step"] * memory.CALLS, "rise",
    ]  # fmt: skip
    assert memory.CALLS == 4
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"before": 5, "rise": 9}


def test_the_threads_and_algorithm_asked_for_reach_every_process(monkeypatch):
    """--threads and --conv-algorithm set the parent's own; the processes are told them too."""
    seen = []
    monkeypatch.setattr(memory, "check", lambda peer: None)
    monkeypatch.setattr(memory, "sample", lambda *args: seen.append(args[1:]) or (1, 2))
    monkeypatch.setattr(peers, "set_threads", lambda n, torch_too: seen.append(("parent", n)))
    argv = ["--suite", "memory", "--peers", "gpucnn-cpu", "--batch-size", "4", "--repeats", "1"]
    assert command.main([*argv, "--threads", "1", "--conv-algorithm", "winograd"]) == 0
    assert command.main(argv) == 0
    assert seen == [
        ("parent", 1), (MODEL_DEFAULT, 4, 1, "winograd"), (MODEL_DEFAULT, 4, None, "auto"),
    ]  # fmt: skip


def test_a_killed_process_says_which_signal():
    with pytest.raises(RuntimeError, match=r"^the test process was killed by SIGKILL \(out of"):
        children.run_child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "test")


def _fake_children(monkeypatch, unavailable=(), failing=None):
    """Stand-ins for memory.check and memory.sample: peers in ``unavailable`` cannot run; the
    ``failing`` peer's samples raise from its second on; every other sample is (before, rise) = (10 MiB, the
    peer's position x 100 MiB + the call's number). Returns the samples' log."""
    log = []
    order = list(PEERS)

    def check(peer):
        if peer.name in unavailable:
            raise Unavailable(f"{peer.name} is not here")

    def sample(peer, model, batch, threads, algorithm):
        log.append((peer.name, model, batch))
        if peer.name == failing and sum(name == failing for name, _, _ in log) >= 2:
            raise RuntimeError("the child died")
        return 10 * MiB, order.index(peer.name) * 100 * MiB + len(log)

    monkeypatch.setattr(memory, "check", check)
    monkeypatch.setattr(memory, "sample", sample)
    return log


def test_the_peers_take_turns_and_each_row_says_what_was_measured(monkeypatch):
    log = _fake_children(monkeypatch)
    chosen = [PEERS["gpucnn-cpu"], PEERS["pytorch-cpu"]]
    rows = suites.run_memory(chosen, suites.Options([4, 8], repeats=2, model=MODEL))
    assert log == [
        ("gpucnn-cpu", MODEL, 4), ("pytorch-cpu", MODEL, 4),
        ("gpucnn-cpu", MODEL, 4), ("pytorch-cpu", MODEL, 4),
        ("gpucnn-cpu", MODEL, 8), ("pytorch-cpu", MODEL, 8),
        ("gpucnn-cpu", MODEL, 8), ("pytorch-cpu", MODEL, 8),
    ]  # fmt: skip
    assert [(r.case, r.peer) for r in rows] == [
        (f"{MODEL} b4", "gpucnn-cpu"), (f"{MODEL} b4", "pytorch-cpu"),
        (f"{MODEL} b8", "gpucnn-cpu"), (f"{MODEL} b8", "pytorch-cpu"),
    ]  # fmt: skip
    gpucnn_b4 = rows[0]
    base = list(PEERS).index("gpucnn-cpu") * 100 * MiB
    assert gpucnn_b4.rise_bytes == [base + 1, base + 3] and not gpucnn_b4.times
    assert gpucnn_b4.median == base + 2 and gpucnn_b4.batch_size == 4
    assert (gpucnn_b4.suite, gpucnn_b4.op, gpucnn_b4.status) == ("memory", memory.OPS["cpu"], "ok")
    assert gpucnn_b4.note == f"{memory.CALLS} step calls in a new process, 10 MiB resident before"


def test_an_unavailable_or_failing_peer_is_a_row_that_says_why(monkeypatch, capsys):
    """A peer that cannot run here is not sampled at all; one whose process fails is sampled no
    more, and its row says why: for a gpucnn peer that is gpucnn's failure (exit status 1)."""
    log = _fake_children(monkeypatch, unavailable=("pytorch-cpu",), failing="gpucnn-cpu")
    chosen = [PEERS["gpucnn-cpu"], PEERS["pytorch-cpu"], PEERS["gpucnn-cuda-emu"]]
    rows = suites.run_memory(chosen, suites.Options([4], repeats=3, model=MODEL))
    assert [name for name, _, _ in log] == ["gpucnn-cpu", "gpucnn-cuda-emu", "gpucnn-cpu"] + [
        "gpucnn-cuda-emu"
    ] * 2
    failed, missing, emu = rows
    assert failed.status.startswith(peers.MEASURING_FAILED) and "the child died" in failed.status
    assert peers.own_failure(failed.peer, failed.status) and failed.median is None
    assert missing.status == "pytorch-cpu is not here" and not missing.rise_bytes
    assert not peers.own_failure(missing.peer, missing.status)
    assert emu.status == "ok" and len(emu.rise_bytes) == 3
    capsys.readouterr()
    assert command.main(["--suite", "memory", "--batch-size", "4", "--peers", "gpucnn-cpu"]) == 1
    assert "gpucnn-cpu failed" in capsys.readouterr().err


def test_a_peer_that_fails_at_one_batch_size_is_still_measured_at_the_next(monkeypatch):
    log = []
    monkeypatch.setattr(memory, "check", lambda peer: None)

    def sample(peer, model, batch, threads, algorithm):
        log.append(batch)
        if batch == 4:
            raise RuntimeError("out of memory at 4")
        return 1, 2

    monkeypatch.setattr(memory, "sample", sample)
    rows = suites.run_memory([PEERS["gpucnn-cpu"]], suites.Options([4, 8], repeats=2))
    assert log == [4, 8, 8] and [r.status == "ok" for r in rows] == [False, True]


@pytest.mark.parametrize("broken", ["STATUS", "CLEAR_REFS"])
def test_without_proc_the_host_peers_cannot_be_measured(monkeypatch, tmp_path, capsys, broken):
    """A row that says why when the suite is called on its own; from the command, one line and
    exit 2 rather than a table of n/a rows (as a missing GPU is for --device cuda)."""
    monkeypatch.setattr(memory, broken, tmp_path / "no-such-folder" / "file")
    (row,) = suites.run_memory([PEERS["gpucnn-cpu"]], suites.Options([4], repeats=1))
    assert row.status.startswith("the memory suite reads host memory from Linux's")
    assert "no-such-folder" in row.status and not peers.own_failure(row.peer, row.status)
    capsys.readouterr()
    assert command.main(["--suite", "memory", "--batch-size", "4", "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpucnn bench: error: the memory suite reads host memory")
    assert "no-such-folder" in err


def test_pytorchs_tf32_peer_is_not_measured_apart():
    """Its memory would be pytorch-cuda's but for a workspace: a process per repeat for little."""
    assert {p.name for p in peers.select("cuda", "memory")} == {
        "gpucnn-cuda", "gpucnn-cuda-graph", "pytorch-cuda", "pytorch-cuda-graph",
    }  # fmt: skip


def test_bytes_print_in_binary_units_and_rise_of_zero_gets_no_ratio():
    assert [format_bytes(v) for v in (None, 512, 1536, 300.5 * MiB, 3 * 2**30)] == [
        "n/a", "512 B", "1.5 KiB", "300.5 MiB", "3 GiB",
    ]  # fmt: skip
    cpu = PEERS["gpucnn-cpu"]
    rows = [
        Result.of(cpu, "memory", "c", "host memory rise", rise_bytes=[100 * MiB, 120 * MiB]),
        Result.of(PEERS["pytorch-cpu"], "memory", "c", "host memory rise", rise_bytes=[330 * MiB]),
        Result.of(PEERS["gpucnn-cuda-emu"], "memory", "c", "host memory rise", rise_bytes=[0, 0]),
    ]
    add_ratios(rows)
    assert rows[0].ratios == {"pytorch-cpu": 3.0}  # it needs a third of PyTorch's memory
    assert rows[1].ratios == {"gpucnn-cpu": pytest.approx(1 / 3)} and rows[2].ratios == {}
    lines = table(rows).splitlines()
    assert "110 MiB" in lines[2] and "9%" in lines[2] and "3x" in lines[2]
    assert " 0 B " in lines[4] and "%" not in lines[4]


def test_memory_suite(backend, tmp_path, capsys):
    """The whole command on each device, every default peer of it: each row a rise at or above
    the floor of the step, bytes in the table, the samples in the JSON."""
    if backend.name != "cuda":
        _host_meter_usable()
    elif os.environ.get("GPUCNN_GPU_SHARED"):
        pytest.skip("scripts/gpu_check.sh trains on this GPU meanwhile: the device-wide memory "
                    "count (cudaMemGetInfo) would take in the trainings' too")  # fmt: skip
    out, record, _ = run_bench(
        tmp_path, capsys, "--suite", "memory", "--device", backend.name, "--model", MODEL,
        "--batch-size", str(BATCH),
    )  # fmt: skip
    check_record(record, backend.name)
    rows = record["results"]
    assert {r["peer"] for r in rows} == {p.name for p in peers.select(backend.name, "memory")}
    ran = [r for r in rows if r["status"] == "ok"]
    assert any(r["peer"].startswith("gpucnn-") for r in ran)
    for r in ran:
        assert r["op"] == memory.OPS[PEERS[r["peer"]].device] and r["times"] == []
        assert len(r["rise_bytes"]) == 1 and r["rise_bytes"][0] >= _floor(BATCH), r
    assert "MiB" in out
