"""The CPU backend's passes in threads and cache-sized blocks (gpucnn.backend.cpu_elementwise,
gpucnn.backend.cpu_batch_norm): many blocks, threads and ragged ends give the base backend's
expressions bit for bit (ReLU, dropout, SGD, Adam, eval-mode batch norm) or the one-thread
results bit for bit and the reference's within NORM (training-mode batch norm). The op cases'
batches are too small to be split into blocks, so these tests shrink the blocks."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import NORM

from gpucnn import reference as ref
from gpucnn.backend import cpu_batch_norm, cpu_elementwise, cpu_threads, numpy_backend
from gpucnn.backend.base import Backend


@pytest.fixture
def split(monkeypatch):
    """``split(threads, block)``: that many threads for any batch, blocks of ``block`` elements
    (or bytes, for batch norm's); the thread count is put back afterwards."""
    before = cpu_threads.threads()
    monkeypatch.setattr(cpu_threads, "MIN_BATCH", 1)

    def set_split(threads: int, block: int) -> None:
        cpu_threads.set_threads(threads)
        monkeypatch.setattr(cpu_elementwise, "BLOCK_ELEMENTS", block)
        monkeypatch.setattr(cpu_batch_norm, "BLOCK_BYTES", block)

    yield set_split
    cpu_threads.set_threads(before)


SPLITS = [(1, 10**9), (1, 7), (3, 7), (2, 64)]  # one pass; many blocks; threads and ragged ends


@pytest.mark.parametrize("threads, block", SPLITS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_and_dropout_are_the_base_expressions_bit_for_bit(
    cpu, rng, split, threads, block, dtype
):
    split(threads, block)
    x = rng.standard_normal((5, 23)).astype(dtype)  # 115 elements: 17 blocks of 7, and 3
    assert np.array_equal(cpu.relu_forward(x), Backend.relu_forward(cpu, x))
    calls = np.array([rng.integers(2**63)], np.uint64)
    for p, seed, at in [(0.5, int(rng.integers(2**62)), None), (0.3, 2**64 - 1, calls)]:
        got, want = (
            cpu.dropout_forward(x, p, seed, at),
            Backend.dropout_forward(cpu, x, p, seed, at),
        )
        for ours, base in zip(got, want, strict=True):
            assert ours.dtype == base.dtype and np.array_equal(ours, base)
        assert 0 < np.count_nonzero(got[1]) < x.size  # some kept, some dropped


@pytest.mark.parametrize("threads, block", SPLITS)
@pytest.mark.parametrize("weight_decay, decoupled", [(0.0, False), (0.05, False), (0.05, True)])
def test_adam_is_the_base_expressions_bit_for_bit(
    cpu, rng, split, threads, block, weight_decay, decoupled
):
    split(threads, block)
    p, g, m = (rng.standard_normal((5, 23)).astype(np.float32) for _ in range(3))
    v = np.abs(rng.standard_normal(p.shape)).astype(np.float32)
    ours, base = [a.copy() for a in (p, g, m, v)], [a.copy() for a in (p, g, m, v)]
    clock = np.array([float(rng.integers(1, 9)), 1e-3])
    hyper = (0.9, 0.999, 1e-8, weight_decay, decoupled)
    cpu.adam_update(*ours, clock, *hyper)
    Backend.adam_update(cpu, *base, clock, *hyper)
    for name, a, b, before in zip("pgmv", ours, base, (p, g, m, v), strict=True):
        assert np.array_equal(a, b), name
        assert name == "g" or not np.array_equal(a, before), f"{name} was not updated"


@pytest.mark.parametrize("threads, block", SPLITS)
@pytest.mark.parametrize(
    "momentum, nesterov, weight_decay, first_step",
    [(0.0, False, 0.0, False), (0.9, False, 0.0, True), (0.9, False, 0.01, False),
     (0.9, True, 0.01, False)],
)  # fmt: skip
def test_sgd_is_the_base_expressions_bit_for_bit(
    cpu, rng, split, threads, block, momentum, nesterov, weight_decay, first_step
):
    split(threads, block)
    p, g, velocity = (rng.standard_normal((5, 23)).astype(np.float32) for _ in range(3))
    ours = [p.copy(), g.copy(), velocity.copy() if momentum else None]
    base = [p.copy(), g.copy(), velocity.copy() if momentum else None]
    clock = np.array([1.0, 0.05])
    hyper = (momentum, nesterov, weight_decay, first_step)
    cpu.sgd_update(*ours, clock, *hyper)
    Backend.sgd_update(cpu, *base, clock, *hyper)
    for name, a, b in zip(("p", "g", "velocity"), ours, base, strict=True):
        assert (a is None and b is None) or np.array_equal(a, b), name
    assert not np.array_equal(ours[0], p) and np.array_equal(ours[1], g)


def test_optimizers_update_a_strided_parameter_where_it_lies(cpu, rng):
    """A parameter that is a strided view (a slice of a larger array) is updated in place, as
    the base backend does, not in a flattened copy that is thrown away."""
    storage = [rng.standard_normal((4, 10)).astype(np.float32) for _ in range(4)]
    storage[3] = np.abs(storage[3])
    base, before = [a.copy() for a in storage], storage[0].copy()
    hyper = (np.array([2.0, 1e-2]), 0.9, 0.999, 1e-8, 0.0, False)
    cpu.adam_update(*(a[:, ::2] for a in storage), *hyper)
    Backend.adam_update(cpu, *(a[:, ::2] for a in base), *hyper)
    sgd = (np.array([1.0, 0.1]), 0.9, False, 0.0, False)
    cpu.sgd_update(*(a[:, ::2] for a in storage[:3]), *sgd)
    Backend.sgd_update(cpu, *(a[:, ::2] for a in base[:3]), *sgd)
    for ours, theirs in zip(storage, base, strict=True):
        assert np.array_equal(ours, theirs)
    assert not np.array_equal(storage[0][:, ::2], before[:, ::2])
    assert np.array_equal(storage[0][:, 1::2], before[:, 1::2])


def _batch_norm(cpu, inputs):
    x, gamma, beta, gy = inputs[:4]  # as given: a strided x stays strided
    running_mean, running_var = (a.copy() for a in inputs[4:])
    y, mean, invstd = cpu.batch_norm2d_forward_train(
        x, gamma, beta, 1e-5, running_mean, running_var
    )
    grads = cpu.batch_norm2d_backward(gy, x, gamma, mean, invstd)
    return [y, mean, invstd, running_mean, running_var, *grads]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_in_blocks_and_threads_gives_the_one_pass_bits(cpu, rng, split, dtype):
    """40 images of 5 channels of 6x7, off-centre: one thread in one pass, one thread in blocks
    of a sample, 2 and 3 threads in blocks of 3 samples (a ragged last one) give the same bits,
    within NORM of the float64 reference loops."""
    shape = (40, 5, 6, 7)
    inputs = [
        (rng.standard_normal(shape) * 3 + 2).astype(dtype),
        rng.uniform(0.5, 1.5, shape[1]).astype(dtype),
        rng.standard_normal(shape[1]).astype(dtype),
        rng.standard_normal(shape).astype(dtype),
        rng.standard_normal(shape[1]).astype(dtype),
        rng.uniform(0.5, 2, shape[1]).astype(dtype),
    ]
    plane = 6 * 7 * np.dtype(dtype).itemsize
    results = []
    for threads, block in [(1, 10**9), (1, 1), (2, 3 * plane * 3), (3, 3 * plane * 2)]:
        split(threads, block)
        results.append(_batch_norm(cpu, inputs))
    for other in results[1:]:
        for ours, first in zip(other, results[0], strict=True):
            assert np.array_equal(ours, first)
    y, mean, invstd = ref.batch_norm2d_forward_train(*inputs[:3], 1e-5)
    want = [y, mean, invstd, *ref.batch_norm2d_backward(inputs[3], inputs[0], inputs[1], 1e-5)]
    got = results[0][:3] + results[0][5:]
    for ours, expected in zip(got, want, strict=True):
        assert np.max(np.abs(ours - expected)) <= NORM(dtype) * np.max(np.abs(expected))


@pytest.mark.parametrize("strided", ["x", "gy"])
def test_batch_norm_of_a_channels_last_view_gives_the_same_bits_for_any_threads(
    cpu, rng, split, strided
):
    """x or gy an (N, C, H, W) view of channels-last memory: a plane's pixels are not contiguous,
    and NumPy summed them pixel by pixel in a thread with several channels, pairwise in one
    with a single channel (found in review). One thread and six (a channel each) now agree."""
    shape = (12, 10, 9, 6)  # N, H, W, C
    x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32).transpose(0, 3, 1, 2)
    gy = rng.standard_normal(shape).astype(np.float32).transpose(0, 3, 1, 2)
    x, gy = (
        a if name == strided else np.ascontiguousarray(a) for name, a in (("x", x), ("gy", gy))
    )
    ones, zeros = np.ones(6, np.float32), np.zeros(6, np.float32)
    results = []
    for threads in (1, 6):
        split(threads, 10**9)
        results.append(_batch_norm(cpu, [x, ones, zeros, gy, zeros, ones]))
    for ours, first in zip(*results, strict=True):
        assert np.array_equal(ours, first)


@pytest.mark.parametrize("threads, block", [(1, 10**9), (1, 1), (3, 700)])
@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
def test_batch_norm_eval_is_the_base_expression_bit_for_bit(
    cpu, rng, split, threads, block, layout
):
    """Eval mode (running statistics) in channel ranges and blocks: x * scale + shift per
    channel, the base backend's bits, for a C-ordered input and a channels-last view."""
    split(threads, block)
    x = (rng.standard_normal((33, 7, 5, 6)) * 3 + 2).astype(np.float32)
    if layout == "channels-last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    gamma, beta, mean = (rng.standard_normal(7).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.5, 2, 7).astype(np.float32)
    got = cpu.batch_norm2d_forward_eval(x, gamma, beta, mean, var, 1e-5)
    want = Backend.batch_norm2d_forward_eval(cpu, x, gamma, beta, mean, var, 1e-5)
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_batch_norm_of_no_channels_in_a_split_batch(cpu, split):
    """A batch that is split among threads but has no channels: one empty slice, empty outputs
    (for_slices made no slice at all, and the op failed on an IndexError)."""
    split(2, 10**9)
    x, none = np.ones((40, 0, 3, 3), np.float32), np.ones(0, np.float32)
    y, mean, invstd, *_, gx, ggamma, gbeta = _batch_norm(cpu, [x, none, none, x, none, none])
    assert y.shape == gx.shape == x.shape and mean.shape == ggamma.shape == (0,)


@pytest.mark.parametrize("threads", [1, 2])
def test_linear_backward_side_by_side_is_the_base_products(cpu, rng, split, monkeypatch, threads):
    """The input and weight gradients' products, run side by side on two threads from
    SIDE_BY_SIDE_MACS multiply-adds (lowered here to any size), are the base backend's bit for
    bit, each in its place."""
    split(threads, 10**9)
    monkeypatch.setattr(numpy_backend, "SIDE_BY_SIDE_MACS", 1)
    gy, x, w = (rng.standard_normal(s).astype(np.float32) for s in ((6, 5), (6, 9), (5, 9)))
    with cpu_threads.blas_held():
        want = Backend.linear_backward(cpu, gy, x, w)
    for ours, base in zip(cpu.linear_backward(gy, x, w), want, strict=True):
        assert ours.shape == base.shape and np.array_equal(ours, base)


@pytest.mark.parametrize("padding", [(0, 0), (1, 1)])
def test_max_pool_forward_in_pieces_gives_the_one_piece_bits(cpu, rng, split, monkeypatch, padding):
    """max_pool2d_forward gathers a thread's samples in pieces of POOL_CHUNK_BYTES (here one
    sample, then three): the maxima and their flat indices are the one-piece ones, NaNs and
    padded windows included."""
    x = rng.standard_normal((7, 3, 9, 8)).astype(np.float32)
    x[2, 1, 4, 4] = np.nan
    split(1, 10**9)
    want = cpu.max_pool2d_forward(x, (3, 2), (2, 2), padding)
    for threads, piece in [(1, 1), (2, x[0].nbytes * 3)]:
        split(threads, 10**9)
        monkeypatch.setattr(numpy_backend, "POOL_CHUNK_BYTES", piece)
        for ours, first in zip(
            cpu.max_pool2d_forward(x, (3, 2), (2, 2), padding), want, strict=True
        ):
            assert np.array_equal(ours, first, equal_nan=True)


@pytest.mark.parametrize(
    "count, sample, most", [(13, 100, 350), (13, 100, 10**9), (5, 100, 1), (0, 100, 50)]
)
def test_pieces_are_equal_cover_the_slice_and_stay_under_the_bound(
    monkeypatch, count, sample, most
):
    """in_chunks: consecutive pieces, in order, once over the slice, each within one sample of
    the others and at most ``most`` bytes (or a single sample)."""
    monkeypatch.setattr(numpy_backend, "POOL_CHUNK_BYTES", most)
    pieces = []
    numpy_backend.in_chunks(sample, pieces.append)(slice(4, 4 + count))
    assert [i for p in pieces for i in range(p.start, p.stop)] == list(range(4, 4 + count))
    sizes = [p.stop - p.start for p in pieces]
    assert all(size * sample <= most or size == 1 for size in sizes)
    assert not sizes or max(sizes) - min(sizes) <= 1 or len(sizes) == 1
