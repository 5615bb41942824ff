"""``gpucnn bench --suite memory``: the meters, the new processes that measure each peer, the
suite's turns and failures, and how bytes print. No size is asserted beyond lower bounds that
any honest measure of a step must reach."""

import numpy as np
import pytest
from test_bench import check_record, run_bench

from gpucnn.bench import command, memory, peers, suites
from gpucnn.bench.peers import PEERS, Unavailable
from gpucnn.bench.report import Result, add_ratios, format_bytes, table
from gpucnn.nn.zoo import build_model

MiB = 2**20
MODEL, BATCH = "fashion-net", 16


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


def test_the_device_meter_reads_the_count_after_over_the_count_before():
    counts = iter([300 * MiB, 420 * MiB])
    meter = memory.DeviceMeter(lambda: next(counts))
    assert (meter.start(), meter.rise()) == (300 * MiB, 120 * MiB)


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
    before, rise = memory.sample(PEERS[peer], MODEL, BATCH)
    assert before > 20 * MiB
    assert rise >= _floor(BATCH)


def _fake_children(monkeypatch, unavailable=(), failing=None):
    """Stand-ins for memory.check and memory.sample: peers in ``unavailable`` cannot run; the
    ``failing`` peer's samples raise from its second on; every other sample is (before, rise) = (10 MiB, the
    peer's position x 100 MiB + the call's number). Returns the samples' log."""
    log = []
    order = list(PEERS)

    def check(peer):
        if peer.name in unavailable:
            raise Unavailable(f"{peer.name} is not here")

    def sample(peer, model, batch):
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
    assert gpucnn_b4.peak_bytes == [base + 1, base + 3] and not gpucnn_b4.times
    assert gpucnn_b4.median == base + 2 and gpucnn_b4.batch_size == 4
    assert (gpucnn_b4.suite, gpucnn_b4.op, gpucnn_b4.status) == ("memory", memory.OPS["cpu"], "ok")
    assert gpucnn_b4.note.endswith(
        f"over the first {memory.CALLS} steps of a new process, 10 MiB before"
    )


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
    assert missing.status == "pytorch-cpu is not here" and not missing.peak_bytes
    assert not peers.own_failure(missing.peer, missing.status)
    assert emu.status == "ok" and len(emu.peak_bytes) == 3
    capsys.readouterr()
    assert command.main(["--suite", "memory", "--batch-size", "4", "--peers", "gpucnn-cpu"]) == 1
    assert "gpucnn-cpu failed" in capsys.readouterr().err


def test_without_proc_the_host_peers_are_unavailable_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "STATUS", tmp_path / "no-status")
    (row,) = suites.run_memory([PEERS["gpucnn-cpu"]], suites.Options([4], repeats=1))
    assert row.status.startswith("host memory is read from Linux's") and "no-status" in row.status
    assert not peers.own_failure(row.peer, row.status)


def test_bytes_print_in_binary_units_and_rise_of_zero_gets_no_ratio():
    assert [format_bytes(v) for v in (None, 512, 1536, 300.5 * MiB, 3 * 2**30)] == [
        "n/a", "512 B", "1.5 KiB", "300.5 MiB", "3 GiB",
    ]  # fmt: skip
    cpu = PEERS["gpucnn-cpu"]
    rows = [
        Result.of(cpu, "memory", "c", "host memory rise", peak_bytes=[100 * MiB, 120 * MiB]),
        Result.of(PEERS["pytorch-cpu"], "memory", "c", "host memory rise", peak_bytes=[330 * MiB]),
        Result.of(PEERS["gpucnn-cuda-emu"], "memory", "c", "host memory rise", peak_bytes=[0, 0]),
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
        assert len(r["peak_bytes"]) == 1 and r["peak_bytes"][0] >= _floor(BATCH), r
    assert "MiB" in out
