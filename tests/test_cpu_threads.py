"""The CPU backend's batch slices (gpucnn.backend.cpu_threads): any thread count gives one
thread's results bit for bit, and the settings are checked."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from op_cases import CASES, DTYPES

from gpucnn.backend import cpu_threads, im2col, numpy_backend


@pytest.fixture
def thread_count():
    """Set the thread count for one test (slices of any size), restoring it afterwards."""
    before = cpu_threads.threads()
    yield cpu_threads.set_threads
    cpu_threads.set_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_threads_give_the_one_thread_results(case, dtype, cpu, rng, thread_count, monkeypatch):
    """Every op case, with the batch split into as many slices as it has samples (3 threads,
    batches of any size) and convolutions in chunks of one sample, gives the one-thread run's
    outputs bit for bit: a chunk's gradient shares are summed in chunk order, whichever thread
    made them."""
    inputs = case.sample(rng, dtype)
    monkeypatch.setattr(im2col, "CHUNK_BYTES", 1)
    thread_count(1)
    want = case.run(cpu, inputs)
    monkeypatch.setattr(cpu_threads, "MIN_BATCH", 1)
    thread_count(3)
    got = case.run(cpu, inputs)
    for key in want:
        assert np.array_equal(got[key], want[key]), f"{case.name}.{key} differs with 3 threads"


def test_slices_run_under_the_callers_floating_point_error_handling(thread_count, monkeypatch):
    """np.errstate is each thread's own: the caller's must reach the slices on other threads
    (an overflow ignored by the caller was a RuntimeWarning there, raised by it was lost)."""
    monkeypatch.setattr(cpu_threads, "MIN_BATCH", 1)
    thread_count(3)
    seen = []

    def overflow_past_the_first_slice(part: slice) -> None:
        if part.start:  # a slice on another thread
            seen.append(threading.current_thread() is not threading.main_thread())
            np.multiply(np.float32(3e38), np.float32(10))

    with np.errstate(over="raise"), pytest.raises(FloatingPointError, match="overflow"):
        cpu_threads.for_slices(3, 3, overflow_past_the_first_slice)
    with warnings.catch_warnings(), np.errstate(over="ignore"):
        warnings.simplefilter("error")
        cpu_threads.for_slices(3, 3, overflow_past_the_first_slice)
    called = []  # "call" mode: the caller's function, called from the other threads too
    with np.errstate(over="call", call=lambda error, flag: called.append(error)):
        cpu_threads.for_slices(3, 3, overflow_past_the_first_slice)
    assert called == ["overflow", "overflow"]
    assert seen and all(seen)


@pytest.mark.parametrize("count", [10, 3])
def test_slices_cover_the_batch_once(thread_count, monkeypatch, count):
    """Each row in one slice; fewer rows than threads give one slice a row, none empty."""
    monkeypatch.setattr(cpu_threads, "MIN_BATCH", 1)
    thread_count(4)
    seen = np.zeros(count, dtype=int)
    sizes = []

    def body(part: slice) -> None:
        seen[part] += 1
        sizes.append(part.stop - part.start)

    cpu_threads.for_slices(count, count, body)
    assert np.array_equal(seen, np.ones(count, dtype=int))
    assert len(sizes) == min(4, count) and min(sizes) >= 1


@pytest.mark.parametrize("batch", [1, 2, 3, 31, 63, 64, 65, 255, 256])
def test_conv_chunks_are_even_and_cover_the_batch(batch):
    """A convolution's chunks: in order, once over the batch, sizes within one sample of each
    other, none with more columns than CHUNK_BYTES holds (conv2 of tutorial-mnist: 30 samples'
    worth), the fewest that do, and from MIN_BATCH on (where threads take them) an even number,
    one more at the most."""
    shape, w_shape = (batch, 16, 13, 13), (32, 16, 3, 3)
    no_pad = ((0, 0), (0, 0))
    geo = numpy_backend.NumpyBackend._conv_geometry(shape, w_shape, (1, 1), no_pad, (1, 1), 1)
    chunks = geo.chunks(shape, 4)
    most = im2col.CHUNK_BYTES // (4 * 16 * 9 * 11 * 11)
    assert [c.start for c in chunks] == [0] + [c.stop for c in chunks[:-1]]
    assert chunks[-1].stop == batch
    sizes = [c.stop - c.start for c in chunks]
    assert max(sizes) - min(sizes) <= 1 and max(sizes) <= most
    fewest = -(-batch // most)
    if batch < cpu_threads.MIN_BATCH:
        assert len(sizes) == fewest
    else:
        assert len(sizes) % 2 == 0 and len(sizes) <= fewest + 1


def test_conv_chunks_of_one_sample_each_are_never_empty(monkeypatch):
    """Samples too large to share a chunk (CHUNK_BYTES lowered to 1), an odd batch past
    MIN_BATCH: one chunk per sample, an odd count, rather than an empty chunk added to make the
    count even."""
    monkeypatch.setattr(im2col, "CHUNK_BYTES", 1)
    batch, no_pad = cpu_threads.MIN_BATCH + 1, ((0, 0), (0, 0))
    shape, w_shape = (batch, 2, 5, 5), (3, 2, 3, 3)
    geo = numpy_backend.NumpyBackend._conv_geometry(shape, w_shape, (1, 1), no_pad, (1, 1), 1)
    chunks = geo.chunks(shape, 4)
    assert [(c.start, c.stop) for c in chunks] == [(i, i + 1) for i in range(batch)]


def test_small_batches_stay_in_the_calling_thread(thread_count):
    thread_count(4)
    parts = []
    cpu_threads.for_slices(64, cpu_threads.MIN_BATCH - 1, parts.append)
    assert parts == [slice(0, 64)]
    cpu_threads.for_slices(64, cpu_threads.MIN_BATCH, parts.append)
    assert sorted(p.start for p in parts[1:]) == [0, 16, 32, 48]


def test_an_empty_thread_setting_means_unset(monkeypatch):
    """``GPUCNN_CPU_THREADS=`` (as a shell unsets it) is the default count, not an error."""
    monkeypatch.delenv(cpu_threads.THREADS_ENV, raising=False)
    default = cpu_threads._default_threads()
    monkeypatch.setenv(cpu_threads.THREADS_ENV, "")
    assert cpu_threads._default_threads() == default >= 1


def test_a_new_thread_count_ends_the_old_pools_threads(thread_count, monkeypatch):
    """set_threads shuts the pool it replaces down: its idle threads would otherwise live on,
    one set per change of the count."""
    monkeypatch.setattr(cpu_threads, "MIN_BATCH", 1)
    thread_count(3)
    cpu_threads.for_slices(6, 6, lambda part: None)
    assert _pool_threads() >= 1  # the pool makes its threads as slices come
    thread_count(2)
    assert _pool_threads() == 0


def _pool_threads() -> int:
    return sum(t.name.startswith("gpucnn-cpu") for t in threading.enumerate())


def test_blas_runs_on_one_thread_inside_the_backends_calls():
    """blas_held holds NumPy's BLAS to one thread, whatever it had (two here), so its bits do
    not depend on the machine's cores."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not threadpoolctl.threadpool_info():
        pytest.skip("threadpoolctl sees no BLAS library")

    def blas_threads() -> set[int]:
        return {
            i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"
        }

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        with cpu_threads.blas_held():
            assert blas_threads() == {1}


def test_bad_thread_counts_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="must be positive"):
        cpu_threads.set_threads(0)
    for value in ("-2", "0", "abc", "2.5"):
        monkeypatch.setenv(cpu_threads.THREADS_ENV, value)
        with pytest.raises(ValueError, match="GPUCNN_CPU_THREADS must be a positive integer"):
            cpu_threads._default_threads()


def test_without_threadpoolctl_ops_stay_in_one_thread(thread_count, monkeypatch):
    """A --no-deps install (the lent GPU machines have no registry) may lack threadpoolctl: the
    CPU backend then runs unsplit, with BLAS's own threads, rather than failing or slowing down."""
    import sys

    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import threadpoolctl now fails
    monkeypatch.setattr(cpu_threads, "_blas", None)
    thread_count(4)
    assert not cpu_threads.parallel(cpu_threads.MIN_BATCH)
    parts = []
    cpu_threads.for_slices(256, 256, parts.append)
    assert parts == [slice(0, 256)]


def test_training_steps_are_bit_identical_for_any_thread_count(thread_count):
    """What the README promises for --resume on the CPU: three training steps of tutorial-mnist
    (batch 96: split into slices and chunks) give the same weights bit for bit on 1 and 3
    threads."""
    from gpucnn import optim
    from gpucnn.backend import get_backend
    from gpucnn.nn.zoo import build_model
    from gpucnn.train import train_step, training_loss

    rng = np.random.default_rng(7)
    x = rng.standard_normal((96, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 96)
    weights = []
    for threads in (1, 3):
        thread_count(threads)
        model = build_model("tutorial-mnist", rng=0).to(get_backend("cpu"))
        step = train_step(
            model, training_loss(0.1), optim.SGD(model.parameters(), 0.05, momentum=0.9)
        )
        for _ in range(3):
            step(x, y)
        weights.append(model.state_dict())
    for key, value in weights[0].items():
        assert np.array_equal(value, weights[1][key]), f"{key} differs between 1 and 3 threads"
    assert not np.array_equal(
        weights[0]["0.weight"], build_model("tutorial-mnist", rng=0).state_dict()["0.weight"]
    )  # the steps did train
