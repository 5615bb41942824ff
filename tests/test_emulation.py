"""The CUDA emulation runner and the ``cuda-emu`` device, on small kernels in tests/emu_kernels/."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpucnn.backend.emulation_build import find_compiler

pytestmark = [
    pytest.mark.emu,
    pytest.mark.skipif(
        find_compiler() is None, reason="no C++ compiler (g++ or $CXX) to build kernels"
    ),
]

from conftest import SCRIPTS, load_script  # noqa: E402
from op_cases import CASES, assert_outputs_close  # noqa: E402

from gpucnn.backend import emulation_build, get_backend, kernels  # noqa: E402
from gpucnn.backend.emulation import (  # noqa: E402
    EmuArray,
    EmulatedCudaBackend,
    EmulationBuildError,
    EmulationError,
    EmulationRunner,
    create_emulated_backend,
    xp,
)
from gpucnn.backend.emulation_runner import FLUSHES_SUBNORMALS  # noqa: E402
from gpucnn.backend.launchers import conv2d as conv_launchers  # noqa: E402
from gpucnn.backend.launchers.conv2d import SQUARE_TILE  # noqa: E402
from gpucnn.errors import GpuUnavailableError  # noqa: E402

KERNELS = Path(__file__).with_name("emu_kernels")
BASICS = [
    "block_reverse",
    "block_reverse_no_barrier",
    "block_sum<float>",
    "block_sum<double>",
    "coords",
    "histogram",
    "warp_sum",
    "warp_flip",
    "scale",
    "copy_read_past_end",
    "copy_write_past_end",
    "read_uninitialised_shared",
    "divergent_barrier",
    "add_one",
    "too_much_shared",
    "failing_assert",
    "address_offset",
    "shift_no_barrier",
    "shared_overrun",
    "barrier_in_both_branches",
    "shared_from_block_zero",
    "shared_store_at",
    "static_and_dynamic_shared",
    "two_tiles",
    "launch_order",
    "warps_of_a_3d_block",
    "copy_write_before_start",
    "copy_both_past_end",
]


@pytest.fixture(scope="module")
def emu_cache(tmp_path_factory):
    """A fresh build cache for this module's runners."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("emu-cache")
        mp.setenv("GPUCNN_EMU_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def basics(emu_cache):
    """The module built from tests/emu_kernels/basics.cu."""
    return EmulationRunner().module_from_source(
        (KERNELS / "basics.cu").read_text(), BASICS, "basics.cu"
    )


def test_syncthreads_is_a_real_barrier(basics):
    x = np.arange(512, dtype=np.float32)
    y = np.zeros_like(x)
    basics.get_function("block_reverse")((2,), (256,), (x, y))
    np.testing.assert_array_equal(y, np.concatenate([x[255::-1], x[:255:-1]]))


def test_missing_barrier_reads_poisoned_shared_memory(basics):
    x = np.arange(256, dtype=np.float32)
    y = np.zeros_like(x)
    basics.get_function("block_reverse_no_barrier")(1, 256, (x, y))
    assert np.isnan(y[:128]).all()  # threads read slots later threads had not written yet


def test_reverse_order_shows_a_race_the_usual_order_hides(basics, monkeypatch):
    """Threads run in index order between barriers, so reading a lower thread's shared write
    without a barrier happens to work; GPUCNN_EMU_ORDER=reverse runs them last first, and the
    race shows as poisoned (NaN) reads."""
    x, y = np.arange(1, 257, dtype=np.float32), np.zeros(256, np.float32)
    basics.get_function("shift_no_barrier")(1, 256, (x, y))
    np.testing.assert_array_equal(y, np.concatenate([[0], x[:-1]]))  # the blind spot
    monkeypatch.setenv("GPUCNN_EMU_ORDER", "reverse")
    basics.get_function("shift_no_barrier")(1, 256, (x, y))
    assert np.isnan(y[1:]).all()


def test_reverse_order_runs_blocks_and_threads_last_first(basics, monkeypatch):
    """GPUCNN_EMU_ORDER=reverse reverses both orders a GPU leaves open: the blocks of the grid and
    the threads of a block (a kernel that reads another block's output must show it too)."""
    grid, block = (2, 3, 2), (4, 2, 3)
    n = 12 * 24
    for order, expected in [("usual", np.arange(n)), ("reverse", np.arange(n)[::-1])]:
        monkeypatch.setenv("GPUCNN_EMU_ORDER", order)
        ticket, next_ticket = np.full(n, -1, np.int32), np.zeros(1, np.int32)
        basics.get_function("launch_order")(grid, block, (ticket, next_ticket))
        np.testing.assert_array_equal(ticket, expected, err_msg=order)


@pytest.mark.parametrize(
    "variable",
    ["GPUCNN_EMU_ORDER", "GPUCNN_EMU_POISON", "GPUCNN_EMU_FENCE", "GPUCNN_EMU_RACECHECK"],
)
def test_a_misspelt_perturbation_is_an_error_not_the_usual_run(basics, monkeypatch, variable):
    monkeypatch.setenv(variable, "revers")
    x, y = np.arange(1, 257, dtype=np.float32), np.zeros(256, np.float32)
    with pytest.raises(ValueError, match=f"{variable}='revers': expected"):
        basics.get_function("shift_no_barrier")(1, 256, (x, y))
    with pytest.raises(ValueError, match=f"{variable}='revers': expected"):  # no array arguments
        basics.get_function("add_one")(1, 32, (None, None, np.int32(0)))


PERTURBATIONS = {
    # A result that depends on the order has a race (a missing barrier, a read of another
    # block's output), which a GPU's scheduling could expose at any time.
    "reverse-order": ("GPUCNN_EMU_ORDER", "reverse"),
    # A result that depends on the poison read memory it should not (past an array, unwritten
    # shared or device memory), even where an op absorbed the NaN (a maximum drops it).
    "finite-poison": ("GPUCNN_EMU_POISON", "finite"),
}


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_every_kernel_gives_the_same_bits_when_perturbed(case, rng, monkeypatch):
    """Every op case on cuda-emu, run as usual once and then under each perturbation: the same
    bits."""
    backend = get_backend("cuda-emu")
    inputs = case.sample(rng, np.float32)
    usual = case.run(backend, inputs)
    for perturbation, (variable, value) in PERTURBATIONS.items():
        with monkeypatch.context() as env:
            env.setenv(variable, value)
            perturbed = case.run(backend, inputs)
        for key, expected in usual.items():
            np.testing.assert_array_equal(
                perturbed[key], expected, err_msg=f"{case.name}.{key}, {perturbation}"
            )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dynamic_shared_memory_tree_reduction(basics, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000).astype(dtype)
    out = np.zeros(8, dtype)
    name = f"block_sum<{'float' if dtype == np.float32 else 'double'}>"
    basics.get_function(name)(8, 128, (x, out, np.int32(1000)), shared_mem=128 * x.itemsize)
    expected = np.pad(x, (0, 24)).reshape(8, 128).sum(axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("order", ["usual", "reverse"])
def test_three_dimensional_grid_and_block(basics, monkeypatch, order):
    """Every block and thread runs once with its own coordinates, in either order."""
    monkeypatch.setenv("GPUCNN_EMU_ORDER", order)
    grid, block = (2, 3, 2), (4, 2, 3)
    out = np.full((12 * 24, 4), -1, dtype=np.int32)
    basics.get_function("coords")(grid, block, (out,))
    gx, gy, gz = np.meshgrid(range(8), range(6), range(6), indexing="ij")
    seen = {tuple(r) for r in out[:, :3]}
    assert seen == set(zip(gx.ravel(), gy.ravel(), gz.ravel(), strict=True))
    np.testing.assert_array_equal(out[:24, 3], np.arange(24))


def test_warp_lanes_follow_the_linear_thread_index(basics):
    """Programming Guide, Thread Hierarchy and SIMT Architecture: a block's threads are split
    into warps by their linear index x + y Dx + z Dx Dy, so in a (4, 8, 2) block lane k of warp w
    is thread 32 w + k whatever its threadIdx.x."""
    n = 4 * 8 * 2
    out = np.full(2 * n, -7, np.int32)
    basics.get_function("warps_of_a_3d_block")(1, (4, 8, 2), (out,))
    t = np.arange(n)
    np.testing.assert_array_equal(out[:n], t ^ 1)
    ballots = [sum(1 << k for k in range(32) if (w + k) % 3 == 0) for w in (0, 32)]
    np.testing.assert_array_equal(out[n:].view(np.uint32), np.repeat(ballots, 32))


def test_atomics(basics):
    x = np.random.default_rng(1).integers(0, 10, 700).astype(np.int32)
    counts = np.zeros(10, np.int32)
    total = np.zeros(1, np.float32)
    top = np.zeros(1, np.uint32)
    basics.get_function("histogram")(3, 256, (x, np.int32(700), counts, total, top))
    np.testing.assert_array_equal(counts, np.bincount(x, minlength=10))
    assert total[0] == 700 and top[0] == x.max()


def test_warp_shuffles(basics):
    x = np.random.default_rng(2).standard_normal(2 * 128).astype(np.float32)
    out = np.zeros(8, np.float32)
    basics.get_function("warp_sum")(2, 128, (x, out))
    np.testing.assert_allclose(out, x.reshape(8, 32).sum(axis=1), rtol=1e-5)
    v = np.arange(32, dtype=np.int32)
    flipped = np.zeros_like(v)
    basics.get_function("warp_flip")(1, 32, (v, flipped))
    np.testing.assert_array_equal(flipped, v[::-1])


def test_arguments_alias_as_on_a_gpu(basics):
    x = np.arange(10, dtype=np.float32)
    basics.get_function("add_one")(1, 32, (x, x, np.int32(10)))
    np.testing.assert_array_equal(x, np.arange(1, 11, dtype=np.float32))


@pytest.mark.parametrize("fence", [None, "", "none"])
def test_a_kernel_sees_its_arrays_aligned_as_the_host_has_them(basics, monkeypatch, fence):
    """Views at any offset keep their address modulo 256, so a kernel's test for 16-byte
    alignment (map_elements' packs) answers as on a GPU for a view one element in. So too with
    GPUCNN_EMU_FENCE empty (unset, as check_settings takes it) or none: no fence, whose copy
    keeps the address modulo 16 only."""
    monkeypatch.delenv("GPUCNN_EMU_FENCE", raising=False)
    if fence is not None:
        monkeypatch.setenv("GPUCNN_EMU_FENCE", fence)
    base, out = np.zeros(80, np.float32), np.zeros(1, np.int64)
    for start in range(0, 80, 5):  # offsets across 256 bytes
        x = base[start:]
        basics.get_function("address_offset")(1, 1, (x, out))
        assert out[0] == x.ctypes.data % 256


SUBNORMAL_SCALE = """
template <typename T>
__global__ void halve(const T* x, T* y) { y[threadIdx.x] = x[threadIdx.x] * T(0.5); }
template <typename T>
__global__ void twice(const T* x, T* y) { y[threadIdx.x] = x[threadIdx.x] * T(2); }
"""


@pytest.mark.skipif(
    not FLUSHES_SUBNORMALS, reason="cuda-emu flushes subnormals on x86-64 only (MXCSR)"
)
@pytest.mark.parametrize("flags", [(), ("-DGPUCNN_EMU_UCONTEXT",)], ids=["asm", "ucontext"])
def test_float_kernels_flush_subnormals_as_cupy_compiles_them(emu_cache, flags):
    """CuPy compiles every kernel with -ftz=true, so on a GPU a float kernel flushes subnormal
    operands (2^-127 doubled is 0, not 2^-126) and results (2^-126 halved) to zero; a double
    kernel keeps its own subnormals. The emulation runs float kernels so, with either kind of
    fiber, and leaves the host's arithmetic as it was after the launch."""
    names = [f"{kernel}<{t}>" for kernel in ("halve", "twice") for t in ("float", "double")]
    module = EmulationRunner(extra_flags=flags).module_from_source(SUBNORMAL_SCALE, names)
    for dtype, t, kept in ((np.float32, "float", False), (np.float64, "double", True)):
        tiny = np.finfo(dtype).tiny
        x = np.array([tiny, tiny / 2, -tiny, 4.0], dtype)
        halves = x * dtype(0.5)  # on the host: subnormals kept
        assert (halves[:3] != 0).all()
        y = np.full(4, np.nan, dtype)
        module.get_function(f"halve<{t}>")(1, 4, (x, y))
        np.testing.assert_array_equal(x * dtype(0.5), halves)  # the host's mode restored
        want = halves if kept else np.where(np.abs(halves) < tiny, np.copysign(0, halves), halves)
        np.testing.assert_array_equal(y, want, err_msg=t)
        assert np.signbit(y[2]) and y[3] == 2
        module.get_function(f"twice<{t}>")(1, 4, (x, y))
        assert y[1] == (tiny if kept else 0), t  # the subnormal operand: read as 0 in float


def test_fresh_device_memory_is_poisoned_not_zero():
    """xp.empty on cuda-emu holds NaN (or -1), never zeros or a freed array's values, so a kernel
    that leaves an output unwritten cannot pass on memory that held the answer already."""
    assert np.isnan(xp.empty((3, 4), np.float32)).all()
    assert np.isnan(xp.empty_like(xp.zeros(5))).all()
    assert (xp.empty(4, np.int32) == -1).all() and (xp.empty(2, np.uint8) == 255).all()
    assert isinstance(xp.empty(2), EmuArray)


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.int64(4), np.float32(2)), r"argument 2 \(int\) got numpy.int64 \(8 bytes\)"),
        ((np.int32(4), np.float64(2)), r"argument 3 \(float\) got numpy.float64"),
        ((np.float32(4), np.float32(2)), r"argument 2 \(int\) got numpy.float32"),
        ((4, np.float32(2)), r"argument 2 \(int\) got a Python int.*numpy.int32"),
        ((np.int32(4), 2.0), r"argument 3 \(float\) got a Python float.*numpy.float32"),
    ],
)
def test_scalar_arguments_must_match_the_parameter_type(basics, args, message):
    x = np.ones(4, np.float32)
    with pytest.raises(TypeError, match=message):
        basics.get_function("scale")(1, 32, (x, x.copy(), *args))


def test_array_arguments_are_checked(basics):
    scale = basics.get_function("scale")
    n, a = np.int32(4), np.float32(2)
    with pytest.raises(TypeError, match=r"argument 0 \(float const\*\) got a float64 array"):
        scale(1, 32, (np.ones(4), np.ones(4, np.float32), n, a))
    with pytest.raises(TypeError, match=r"argument 1 \(float\*\) got a int32 array"):
        scale(1, 32, (np.ones(4, np.float32), np.ones(4, np.int32), n, a))
    with pytest.raises(TypeError, match="argument 1 .* non-contiguous"):
        scale(1, 32, (np.ones(4, np.float32), np.ones(8, np.float32)[::2], n, a))
    with pytest.raises(TypeError, match="takes 4 arguments, got 3"):
        scale(1, 32, (np.ones(4, np.float32), np.ones(4, np.float32), n))
    with pytest.raises(ValueError, match="more than 1024 threads"):
        scale(1, (64, 32), (np.ones(4, np.float32), np.ones(4, np.float32), n, a))


def test_launch_configuration_limits(basics):
    """The Programming Guide's limits for every compute capability: a block of at most 1024
    threads, 1024 in x and y and 64 in z; a grid of at most 2**31 - 1 blocks in x and 65535 in y
    and z; at least one of each; at most 48 KiB of shared memory per block without opt-in."""
    scale = basics.get_function("scale")
    x, y = np.arange(1024, dtype=np.float32), np.zeros(1024, np.float32)
    args = (x, y, np.int32(1024), np.float32(2))
    scale(1, 1024, args)  # 1024 threads: the limit itself
    np.testing.assert_array_equal(y, 2 * x)
    for grid, block in [(1, (1, 1, 65)), ((1, 65536), 32), ((1, 1, 65536), 32), (1, 0), (0, 32)]:
        with pytest.raises(ValueError, match="invalid launch configuration"):
            scale(grid, block, args)
    with pytest.raises(ValueError, match="shared_mem=49153 outside"):
        scale(1, 32, args, shared_mem=48 * 1024 + 1)


def test_device_arrays_only(emu_cache):
    module = EmulationRunner(device_array_type=EmuArray).module_from_source(
        (KERNELS / "basics.cu").read_text(), ["add_one"], "basics.cu"
    )
    x = xp.zeros(4, dtype=xp.float32)
    module.get_function("add_one")(1, 32, (x, x, np.int32(4)))
    assert isinstance(x, EmuArray) and x.tolist() == [1, 1, 1, 1]
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        module.get_function("add_one")(1, 32, (np.zeros(4, np.float32), x, np.int32(4)))


@pytest.mark.parametrize(
    "kernel, message",
    [
        (
            "copy_write_past_end",
            "wrote past the end of argument 1 {arg}: first stray write at element 100",
        ),
        (
            "copy_write_before_start",
            "wrote before the start of argument 1 {arg}: stray write at element -1",
        ),
    ],
)
def test_out_of_bounds_write_is_named(basics, kernel, message):
    """A write past either end of an array names the kernel, the argument and the element."""
    x, y = np.ones(100, np.float32), np.zeros(100, np.float32)
    arg = r"\(float32 array, 100 elements\)"
    with pytest.raises(EmulationError, match=f"{kernel} " + message.format(arg=arg)):
        basics.get_function(kernel)(1, 128, (x, y, np.int32(100)))


def test_a_guard_copied_into_another_guard_is_seen(basics):
    """Each array's guards carry its own tag byte: a kernel that reads one element past x and
    writes it one past y (both bounds off by one) changes y's guard, though both hold poison."""
    x, y = np.ones(100, np.float32), np.zeros(100, np.float32)
    with pytest.raises(EmulationError, match="wrote past the end of argument 1"):
        basics.get_function("copy_both_past_end")(1, 128, (x, y, np.int32(100)))


def test_overlapping_views_share_their_memory(basics):
    """Views of one array are one allocation, as on a GPU: y = a[:-1] written from x = a[1:]
    stays written (a copy of x put back after y's would undo it)."""
    a = np.arange(10, dtype=np.float32)
    basics.get_function("add_one")(1, 32, (a[1:], a[:-1], np.int32(9)))
    np.testing.assert_array_equal(a, [*range(2, 11), 9])


def test_a_kernel_writing_a_read_only_array_is_reported(basics):
    """A read-only NumPy array may be a kernel's input; a kernel that writes it fails the launch
    and leaves it unchanged."""
    x = np.arange(10, dtype=np.float32)
    x.setflags(write=False)
    y = np.zeros(10, np.float32)
    basics.get_function("add_one")(1, 32, (x, y, np.int32(10)))
    np.testing.assert_array_equal(y, x + 1)
    with pytest.raises(EmulationError, match="add_one wrote to read-only argument 0, 1"):
        basics.get_function("add_one")(1, 32, (x, x, np.int32(10)))
    np.testing.assert_array_equal(x, np.arange(10))


def test_out_of_bounds_read_poisons_the_output(basics):
    x = np.arange(100, dtype=np.float32)
    y = np.zeros(100, np.float32)
    basics.get_function("copy_read_past_end")(1, 128, (x, y, np.int32(100)))
    np.testing.assert_array_equal(y[:99], x[1:])
    assert np.isnan(y[99])


def test_uninitialised_shared_memory_reads_nan(basics):
    y = np.zeros(32, np.float32)
    basics.get_function("read_uninitialised_shared")(1, 32, (y,))
    assert np.isnan(y).all()


def test_a_write_past_a_shared_array_is_reported(basics):
    y = np.zeros(33, np.float32)
    basics.get_function("shared_overrun")(1, 32, (y,))  # in bounds
    with pytest.raises(EmulationError, match=r"wrote past the end of a __shared__ variable "
                       r"\(128 bytes; byte 0 past it\)"):  # fmt: skip
        basics.get_function("shared_overrun")(1, 33, (y,))


def test_every_block_starts_with_poisoned_shared_memory(basics):
    """Shared memory lives as long as its block (Programming Guide, Memory Hierarchy): a later
    block reads poison where it did not write, never what block 0 left there."""
    y = np.zeros(3 * 32, np.float32)
    basics.get_function("shared_from_block_zero")(3, 32, (y,))
    assert (y[:32] == 1).all() and np.isnan(y[32:]).all()


@pytest.mark.parametrize("at", [32, 33, 35])
def test_a_write_anywhere_in_a_shared_guard_is_reported(basics, at):
    """One store a few elements past a __shared__ array, skipping the bytes right after it."""
    y = np.zeros(32, np.float32)
    with pytest.raises(EmulationError, match=f"a __shared__ variable \\(128 bytes; byte "
                       f"{4 * (at - 32)} past it\\)"):  # fmt: skip
        basics.get_function("shared_store_at")(1, 32, (y, np.int32(at)))


def test_shared_memory_limit_counts_static_and_dynamic_together(basics):
    """48 KiB per block is the sum of static and dynamic shared memory: 40 KiB of __shared__ with
    8 KiB of dynamic fits exactly, 4 bytes more does not."""
    y = np.zeros(32, np.float32)
    kernel = basics.get_function("static_and_dynamic_shared")
    kernel(1, 32, (y,), shared_mem=8 * 1024)
    assert (y == 3).all()
    with pytest.raises(EmulationError, match="more than 49152 bytes of shared memory"):
        kernel(1, 32, (y,), shared_mem=8 * 1024 + 4)


def test_shared_arrays_of_the_same_type_have_their_own_storage(basics):
    x, y = np.arange(32, dtype=np.float32), np.zeros(32, np.float32)
    basics.get_function("two_tiles")(1, 32, (x, y))
    np.testing.assert_array_equal(y, 2 * x)


@pytest.mark.parametrize("threads, shared", [(64, 128), (32, 120)])
def test_a_write_past_the_dynamic_shared_memory_is_reported(basics, threads, shared):
    """Each thread stores one float: past the bytes the launch asked for, even by less than 16."""
    x = np.ones(threads, np.float32)
    out = np.zeros(1, np.float32)
    with pytest.raises(EmulationError, match=f"dynamic shared memory \\({shared} bytes"):
        basics.get_function("block_sum<float>")(
            1, threads, (x, out, np.int32(threads)), shared_mem=shared
        )


def test_finite_poison_fills_guards_shared_and_fresh_memory(basics, monkeypatch):
    """GPUCNN_EMU_POISON=finite: the same places hold 0x3F bytes (0.747 as a float32) instead."""
    monkeypatch.setenv("GPUCNN_EMU_POISON", "finite")
    finite = np.frombuffer(b"\x3f" * 4, np.float32)[0]
    x, y = np.arange(100, dtype=np.float32), np.zeros(100, np.float32)
    basics.get_function("copy_read_past_end")(1, 128, (x, y, np.int32(100)))
    assert y[99] == pytest.approx(finite, rel=1e-4)  # the guard's first byte tags its region
    shared = np.zeros(32, np.float32)
    basics.get_function("read_uninitialised_shared")(1, 32, (shared,))
    assert (shared == finite).all() and (xp.empty(3, np.float32) == finite).all()


def test_divergent_barrier_is_reported(basics):
    with pytest.raises(
        EmulationError,
        match=r"divergent __syncthreads\(\) at line \d+: reached by "
        r"16 of the 32 threads",
    ):
        basics.get_function("divergent_barrier")(1, 32, (np.zeros(32, np.float32),))


def test_barriers_in_different_branches_are_reported(basics):
    """Every thread reaches a __syncthreads(), but half of them another one: the Programming Guide
    allows __syncthreads() in conditional code only where the condition is the same across the
    block (a hang or unintended side effects otherwise)."""
    with pytest.raises(EmulationError, match=r"threads wait at different barriers \(line \d+"):
        basics.get_function("barrier_in_both_branches")(1, 32, (np.zeros(32, np.float32),))


def test_shared_memory_limit_and_device_assert(basics):
    with pytest.raises(EmulationError, match="more than 49152 bytes of shared memory"):
        basics.get_function("too_much_shared")(1, 32, (np.zeros(32, np.float32),))
    x = np.zeros(64, np.int32)
    x[37] = -1
    with pytest.raises(EmulationError, match=r"assert\(.*\) failed .* thread \(37,0,0\) of block"):
        basics.get_function("failing_assert")(1, 64, (x,))


@pytest.mark.parametrize(
    "source, name, message",
    [
        ("uses_asm.cu", "lane_from_ptx", r"uses_asm.cu:4: uses inline PTX assembly \(asm\)"),
        ("uses_nanosleep.cu", "sleepy", "does not support __nanosleep"),
    ],
)
def test_unsupported_features_fail_to_build(emu_cache, source, name, message):
    with pytest.raises(EmulationBuildError, match=message):
        EmulationRunner().module_from_source((KERNELS / source).read_text(), [name], source)


@pytest.mark.parametrize(
    "statement, feature",
    [
        ("t = clock();", r"clock\(\)"),
        ("probe<<<1, 1>>>(out);", r"dynamic parallelism"),
        ("cudaTextureObject_t tex = 0;", r"textures and surfaces"),
        ("__half h;", r"half precision"),
        ("auto block = cooperative_groups::this_thread_block();", r"cooperative groups"),
        ("static __managed__ int m;", r"managed memory"),
    ],
)
def test_each_unsupported_feature_is_named_before_compiling(emu_cache, statement, feature):
    """Features the emulation has no host equivalent for are refused by name, with their line, not
    left to g++ (which would run clock() as the host's process clock, for one)."""
    source = (
        'extern "C" __global__ void probe(long long* out) {\n'
        f"  long long t = 0;\n  {statement}\n  out[0] = t;\n}}\n"
    )
    with pytest.raises(EmulationBuildError, match=f"probe.cu:3: uses {feature}"):
        EmulationRunner().module_from_source(source, ["probe"], "probe.cu")


ATOMIC_OVERLOADS = {
    # (pointer type, call): whether CUDA declares that overload (Programming Guide, Atomic Functions)
    ("unsigned long long", "atomicSub(p, v)"): False,
    ("double", "atomicExch(p, v)"): False,
    ("double", "atomicMax(p, v)"): False,
    ("float", "atomicSub(p, v)"): False,
    ("int", "atomicSub(p, v)"): True,
    ("unsigned long long", "atomicExch(p, v)"): True,
    ("unsigned long long", "atomicCAS(p, v, v)"): True,
    ("float", "atomicExch(p, v)"): True,
    ("double", "atomicAdd(p, v)"): True,
    ("long long", "atomicMax(p, v)"): True,
}


def atomic_probe(pointer: str, call: str) -> str:
    return f'extern "C" __global__ void probe({pointer}* p) {{\n  {pointer} v = 1;\n  {call};\n}}\n'


@pytest.mark.parametrize(
    "pointer, call", ATOMIC_OVERLOADS, ids=[" ".join(k) for k in ATOMIC_OVERLOADS]
)
def test_atomics_have_cudas_overloads_and_no_more(emu_cache, pointer, call):
    """An atomic overload CUDA lacks (atomicSub on unsigned long long, atomicExch on double) fails
    to build on cuda-emu as under nvcc, rather than passing here and failing on the GPU."""
    source = atomic_probe(pointer, call)
    if ATOMIC_OVERLOADS[pointer, call]:
        EmulationRunner().module_from_source(source, ["probe"])
    else:
        with pytest.raises(EmulationBuildError):
            EmulationRunner().module_from_source(source, ["probe"])


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA toolkit) is not installed")
def test_the_atomic_overload_table_is_nvccs(tmp_path):
    """The table above is CUDA's: nvcc builds exactly the overloads marked as declared."""
    for (pointer, call), declared in ATOMIC_OVERLOADS.items():
        source = tmp_path / "probe.cu"
        source.write_text(atomic_probe(pointer, call))
        command = [
            "nvcc",
            "-cubin",
            "-arch=sm_90",
            str(source),
            "-o",
            str(tmp_path / "probe.cubin"),
        ]
        built = subprocess.run(command, capture_output=True, text=True).returncode == 0
        assert built == declared, (pointer, call)


def test_unsupported_features_named_in_comments_and_strings_are_allowed():
    source = (
        "// Uses no asm, clock(), __half or textures: they are only named here.\n"
        'extern "C" __global__ void probe(long long* out) {\n'
        '  const char* what = "asm clock() <<<";  /* cooperative_groups __managed__ */\n'
        "  out[0] = what[0];\n}\n"
    )
    assert '"asm clock() <<<"' in emulation_build.translate(source, ["probe"], "probe.cu")


def test_built_library_is_cached(basics):
    runner = EmulationRunner()
    again = runner.module_from_source((KERNELS / "basics.cu").read_text(), BASICS, "basics.cu")
    assert runner.compiles == 0
    assert again.get_function("scale").params[2].type_name == "int"


def test_a_changed_header_is_built_anew(tmp_path, monkeypatch, emu_cache):
    """The build cache's key covers cuda_compat.h and emulation_runtime.h: after an edit to either
    (an emulation fix), a kernel is built again, not loaded as built with the old headers."""
    for name in emulation_build.HEADERS:
        (tmp_path / name).write_text((emulation_build.HEADER_DIR / name).read_text())
    monkeypatch.setattr(emulation_build, "HEADER_DIR", tmp_path)
    cxx, cpp = find_compiler(), "int gpucnn_probe;\n"
    first, built = emulation_build.build(cpp, cxx)
    assert built and emulation_build.build(cpp, cxx) == (first, False)
    for name in emulation_build.HEADERS:
        header = tmp_path / name
        header.write_text(header.read_text() + "// changed\n")
        path, built = emulation_build.build(cpp, cxx)
        assert built and path != first, f"{name} changed but the cached library was used"
        first = path


def test_ucontext_fibers(emu_cache):
    module = EmulationRunner(extra_flags=("-DGPUCNN_EMU_UCONTEXT",)).module_from_source(
        (KERNELS / "basics.cu").read_text(), ["block_reverse", "warp_flip"], "basics.cu"
    )
    x = np.arange(256, dtype=np.float32)
    y = np.zeros_like(x)
    module.get_function("block_reverse")(1, 256, (x, y))
    np.testing.assert_array_equal(y, x[::-1])
    v = np.arange(32, dtype=np.int32)
    module.get_function("warp_flip")(1, 32, (v, v))
    np.testing.assert_array_equal(v, np.arange(32)[::-1])


def test_device_array_module():
    a = xp.arange(6, dtype=xp.float32).reshape(2, 3)
    assert isinstance(a, EmuArray) and a.dtype == np.float32
    assert isinstance(a + 1, EmuArray) and isinstance(xp.maximum(a, 0), EmuArray)
    assert isinstance(a.sum(), EmuArray) and a.sum().ndim == 0
    assert xp.uint64(3) == np.uint64(3) and xp.float64 is np.float64
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        _ = a + np.ones(3, np.float32)
    with pytest.raises(TypeError, match="host numpy.ndarray"):  # CuPy refuses a host out= too
        xp.add(a, 1, out=np.empty((2, 3), np.float32))
    assert all(isinstance(r, EmuArray) for r in (*xp.divmod(a, 4), *xp.meshgrid(a[0], a[1])))


def test_emulated_backend_arrays(emu_cache):
    backend = EmulatedCudaBackend()
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    dev = backend.asarray(host)
    assert backend.name == "cuda-emu" and backend.owns(dev) and not backend.owns(host)
    dev[0, 0] = 7  # a copy: the host array is untouched
    back = backend.to_numpy(dev)
    assert type(back) is np.ndarray and back[0, 0] == 7 and host[0, 0] == 0
    back[0, 1] = 9  # a host copy, as CuPy's .get(): the device array is untouched
    assert backend.to_numpy(dev)[0, 1] == 1
    assert backend.asarray(dev) is dev and backend.asarray(dev, np.float64).dtype == np.float64
    y = backend.relu_forward(backend.asarray(host - 2))
    assert backend.owns(y) and backend.to_numpy(y).tolist() == [[0, 0, 0], [1, 2, 3]]


def test_no_compiler_is_a_clear_device_error(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(
        GpuUnavailableError, match=r"needs a C\+\+17 compiler.*: install g\+\+ .* or set CXX"
    ):
        create_emulated_backend()


# Bugs planted in a copy of the real kernels: (file, text, replacement, cases that must fail).
PLANTS = [
    pytest.param(
        "pool2d.cu", "h < at.h_hi; ++h", "h <= at.h_hi; ++h", "avg_pool2d", id="changed-bound"
    ),
    pytest.param(
        "conv2d.cu",
        "acc[i][j] += av.v[i] * bv.v[j]",
        "acc[i][j] = av.v[i] * bv.v[j]",
        "conv2d",
        id="dropped-accumulation",
    ),
    pytest.param("activation.cu", "b[i / HW % C]", "b[i % C]", "bias_relu", id="wrong-index"),
    pytest.param(
        "pool2d.cu",
        "j < HW; j += BLOCK_1D",
        "j <= HW; j += BLOCK_1D",
        "global_avg_pool2d",
        id="read-past-end",
    ),
    pytest.param(  # the elementwise tail loop (relu's sizes leave no tail: i == n is written)
        "common.cuh",
        "i < n; i += grid_stride()) out[i] = f(a[i], b[i]);",
        "i <= n; i += grid_stride()) out[i] = f(a[i], b[i]);",
        "relu",
        id="write-past-end",
    ),
]


@pytest.fixture
def kernel_copy(tmp_path, monkeypatch, emu_cache):
    """A copy of kernels_cuda/ in tmp_path, made the kernel folder through GPUCNN_KERNEL_DIR."""
    source = kernels.kernel_dir()
    for path in [*source.glob("*.cu"), *source.glob("*.cuh")]:
        (tmp_path / path.name).write_text(path.read_text())
    monkeypatch.setenv(kernels.KERNEL_DIR_ENV, str(tmp_path))
    return tmp_path


def parity_failures(backend, prefix: str) -> list[str]:
    """Run the parity cases named ``prefix*`` on ``backend`` against the CPU; their failures."""
    cases = [c for c in CASES if c.name.startswith(prefix)]
    assert cases, f"no parity case starts with {prefix!r}"
    failures = []
    for case in cases:
        for dtype in (np.float32, np.float64):
            inputs = case.sample(np.random.default_rng(0), dtype)
            want = case.run(get_backend("cpu"), inputs)
            try:
                assert_outputs_close(case.run(backend, inputs), want, case, dtype, backend.name)
            except (AssertionError, EmulationError) as err:
                failures.append(f"{type(err).__name__}: {err}")
    return failures


@pytest.mark.parametrize("file, text, replacement, prefix", PLANTS)
def test_planted_kernel_bug_fails_parity(kernel_copy, file, text, replacement, prefix):
    assert parity_failures(EmulatedCudaBackend(), prefix) == []  # the unmodified copy passes
    path = kernel_copy / file
    source = path.read_text()
    assert source.count(text) == 1, f"{file} changed: the planted text is not found once"
    path.write_text(source.replace(text, replacement))
    failures = parity_failures(EmulatedCudaBackend(), prefix)
    assert failures, f"the planted bug in {file} went unnoticed"
    if prefix == "relu":
        assert any("wrote past the end of argument 1" in f for f in failures), failures


def test_parity_table_launches_every_kernel(emu_cache):
    backend = EmulatedCudaBackend()
    for case in CASES:
        for dtype in (np.float32, np.float64):
            case.run(backend, case.sample(np.random.default_rng(0), dtype))
    never = []
    for family in kernels.families():
        names = kernels.name_expressions(family)
        module = backend.runner.module(family, names)
        never += [name for name in names if module.get_function(name).launches == 0]
    assert never == [], f"kernels no parity case launches: {never}"


@pytest.fixture(scope="module")
def races(emu_cache):
    names = [
        "shared_sum<false>", "shared_sum<true>", "same_flag", "ordered_writes<0, 40>",
        "ordered_writes<1, 1>", "ordered_writes<1, 40>", "ordered_writes<2, 1>",
        "ordered_writes<3, 2>", "ordered_writes<3, 5>", "atomic_count<4, 0>",
        "atomic_count<0, 0>", "atomic_count<0, 1>", "atomic_count<0, 2>", "atomic_count<1, 1>",
        "ticket_handoff<true>", "ticket_handoff<false>",
    ]  # fmt: skip
    return EmulationRunner().module_from_source(
        (KERNELS / "races.cu").read_text(), names, "races.cu"
    )


@pytest.mark.parametrize(
    "kernel, threads, result, race",
    [
        ("shared_sum<false>", 64, 64, "stores"),
        ("ordered_writes<1, 40>", 64, 2, "stores"),
        ("ordered_writes<2, 1>", 32, 2, "stores"),
        ("ordered_writes<3, 5>", 32, 2, "stores"),
        ("ticket_handoff<true>", 64, 64, "stores"),
        ("atomic_count<4, 0>", 64, 65, "store and atomic"),
        ("atomic_count<0, 2>", 32, 33, "store and atomic"),
        ("atomic_count<0, 1>", 64, 65, "store and atomic"),
        ("shared_sum<true>", 64, 64, None),
        ("same_flag", 64, 1, None),
        ("ordered_writes<0, 40>", 64, 2, None),
        ("ordered_writes<1, 1>", 32, 2, None),
        ("ordered_writes<3, 2>", 32, 2, None),
        ("atomic_count<0, 0>", 64, 65, None),
        ("atomic_count<1, 1>", 32, 33, None),
        ("ticket_handoff<false>", 64, 1, None),
    ],
)
def test_racecheck_reports_two_threads_writing_one_shared_word(
    races, monkeypatch, kernel, threads, result, race
):
    """Fibers run one at a time, so 64 unsynchronised s[0] += 1 all land (64, where a GPU loses
    updates), and so do two writes with only a shuffle between them, which orders no memory in
    CUDA, or a __syncwarp that leaves out the second writer (of another warp, or a lane outside
    its mask), and a plain store and an atomic on one word so left unordered (race: "store and
    atomic"); GPUCNN_EMU_RACECHECK=on fails those launches naming two of the threads, and passes
    atomics among themselves, equal stores, writes a barrier or __syncwarp orders, and a store
    after the atomics its thread's own atomic read (ticket_handoff<false>)."""
    out = np.zeros(32, np.float32)
    races.get_function(kernel)(1, threads, (out,))
    assert out[0] == result
    monkeypatch.setenv("GPUCNN_EMU_RACECHECK", "on")
    if race:
        message = (
            r"race in block \(0,0,0\): threads \(\d+,0,0\) and \(\d+,0,0\) both write byte \d+ "
            r"of shared memory with no barrier between them"
        )
        message += (
            ", one with an atomic and the other with a plain store"
            if race == "store and atomic"
            else r" \(on a GPU one write is lost"
        )
        with pytest.raises(EmulationError, match=message):
            races.get_function(kernel)(1, threads, (out,))
    else:
        races.get_function(kernel)(1, threads, (out,))
        assert out[0] == result


def test_no_kernel_races_on_shared_memory(emu_cache, monkeypatch, fresh_registry):
    """Every op case and the sanitizer driver's launches under GPUCNN_EMU_RACECHECK=on: no two
    threads of ours write one byte of shared memory between the same barriers (a read of another
    thread's write between them: test_every_kernel_gives_the_same_bits_when_perturbed)."""
    monkeypatch.setenv("GPUCNN_EMU_RACECHECK", "on")
    backend = EmulatedCudaBackend()
    for case in CASES:
        for dtype in (np.float32, np.float64):
            case.run(backend, case.sample(np.random.default_rng(0), dtype))
    assert load_script("launch_all_kernels").main(["--device", "cuda-emu"]) == 0


def test_sanitizer_driver_launches_every_kernel(emu_cache):
    """scripts/launch_all_kernels.py (compute-sanitizer's driver in gpu_check.sh) keeps up with
    the launchers' signatures: run here on cuda-emu, it must launch all kernels."""
    script = SCRIPTS / "launch_all_kernels.py"
    result = subprocess.run(
        [sys.executable, str(script), "--device", "cuda-emu"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"launched (\d+) of \1 kernels", result.stdout), result.stdout


ALIGNMENT_CHECK = ("-fsanitize=alignment", "-fno-sanitize-recover=alignment")
MISALIGNED_PACK = """
struct __align__(16) Pack { float v[4]; };
extern "C" __global__ void probe(float* x) { x[0] = reinterpret_cast<Pack*>(x + 1)[0].v[0]; }
"""


def run_alignment_checked(code: str, cache) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a child whose emulated kernels g++ builds with its alignment
    sanitizer: a load or store through a pointer its type's alignment does not hold (a Pack of
    16 bytes at a float's offset) ends the child, naming it, as a GPU faults with a misaligned
    address where the emulation's x86 host would read on."""
    flags = f"emulation_build.CXX_FLAGS += {ALIGNMENT_CHECK!r}\n"
    prelude = "import numpy as np\nfrom gpucnn.backend import emulation_build\n" + flags
    env = {**os.environ, "GPUCNN_EMU_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env
    )


def test_no_kernel_makes_a_misaligned_access(tmp_path):
    """The parity table (every kernel, some on views at odd offsets) runs with the alignment
    sanitizer: no wide load or store of ours is misaligned (the aligned16 checks hold). The probe
    first shows the check is live: a 16-byte Pack read at a float's offset ends the child."""
    probe = (
        "from gpucnn.backend.emulation_runner import EmulationRunner\n"
        f"m = EmulationRunner().module_from_source({MISALIGNED_PACK!r}, ['probe'])\n"
        "m.get_function('probe')((1,), (1,), (np.arange(8, dtype=np.float32),))\n"
    )
    result = run_alignment_checked(probe, tmp_path)
    if "g++ could not build" in result.stderr:
        pytest.skip(f"g++ here cannot build with {ALIGNMENT_CHECK[0]}: {result.stderr[-300:]}")
    assert result.returncode != 0 and "misaligned address" in result.stderr, result.stderr
    cases = (
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from op_cases import CASES\nfrom gpucnn.backend.emulation import EmulatedCudaBackend\n"
        "backend = EmulatedCudaBackend()\n"
        "for case in CASES:\n    for dtype in (np.float32, np.float64):\n"
        "        case.run(backend, case.sample(np.random.default_rng(0), dtype))\n"
        "print(len(CASES), 'cases')\n"
    )
    result = run_alignment_checked(cases, tmp_path)
    assert result.returncode == 0 and "misaligned" not in result.stderr, result.stderr[-2000:]
    assert result.stdout.endswith(f"{len(CASES)} cases\n"), result.stdout


FENCE_PROBE = """
extern "C" __global__ void peek(const float* x, float* y, long long at) {
  const float v = x[at];  // never stored: only a fault shows this read
  if (v == 12345.0f) y[0] = v;
}
"""


def run_fenced(fence: str, *argv: str) -> subprocess.CompletedProcess:
    """Run Python with ``argv`` in a child where GPUCNN_EMU_FENCE=``fence`` sets each array's
    end (after) or start (before) against a page no access may touch: a read or write just
    outside the array ends the child with SIGSEGV and the Python stack of the launch, as
    compute-sanitizer's memcheck stops a GPU run at an access outside every allocation."""
    env = {**os.environ, "GPUCNN_EMU_FENCE": fence}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("fence, at", [("after", 100), ("before", -1)])
def test_a_fence_ends_the_run_at_a_read_just_outside_an_array(emu_cache, fence, at):
    """The probe reads one element past x's end (or before its start) and never stores it, so
    without a fence it passes (the poison it reads goes nowhere); with one it ends the child."""
    code = (
        "import numpy as np\nfrom gpucnn.backend.emulation_runner import EmulationRunner\n"
        f"peek = EmulationRunner().module_from_source({FENCE_PROBE!r}, ['peek']).get_function("
        "'peek')\nroom = np.zeros(104, np.float32)\nskip = -room.ctypes.data % 16 // 4\n"
        "x = room[skip : skip + 100]  # 16-byte aligned: no bytes between x and a fence\n"
        f"peek(1, 1, (x, np.zeros(1, np.float32), np.int64({at})))\nprint('survived')\n"
    )
    unfenced = run_fenced("none", "-c", code)
    assert unfenced.returncode == 0 and unfenced.stdout == "survived\n", unfenced.stderr
    fenced = run_fenced(fence, "-c", code)
    assert fenced.returncode == -signal.SIGSEGV, (fenced.returncode, fenced.stderr)
    assert "Segmentation fault" in fenced.stderr and "in launch" in fenced.stderr
    assert fenced.stdout == ""


@pytest.mark.parametrize("fence", ["after", "before"])
def test_a_fenced_array_keeps_its_offset_from_16_bytes(basics, monkeypatch, fence):
    """A fence moves an array's copy but keeps its address's offset from a 16-byte boundary (the
    widest access, so a view one element in still takes the kernels' unaligned paths)."""
    monkeypatch.setenv("GPUCNN_EMU_FENCE", fence)
    base, out = np.zeros(80, np.float32), np.zeros(1, np.int64)
    for start in range(6):
        x = base[start:]
        basics.get_function("address_offset")(1, 1, (x, out))
        assert out[0] % 16 == x.ctypes.data % 16


def test_a_write_between_an_array_and_its_fence_is_reported(basics, monkeypatch):
    """The under 16 bytes left between an array's end and its fence are a guard: a write there
    is the usual error naming the argument (one further would end the process)."""
    monkeypatch.setenv("GPUCNN_EMU_FENCE", "after")
    room = np.zeros(120, np.float32)
    n = next(n for n in range(96, 100) if (room.ctypes.data + 4 * n) % 16 == 4)  # 12 bytes left
    x, y = np.arange(n, dtype=np.float32), room[:n]
    with pytest.raises(EmulationError, match=f"past the end of argument 1 .*element {n}"):
        basics.get_function("copy_write_past_end")(1, 128, (x, y, np.int32(n)))


RANDOM_FENCED = {"conv": 150, "max_pool": 50, "avg_pool": 50}  # about 4 s each way


@pytest.mark.parametrize("fence", ["after", "before"])
def test_no_kernel_reads_or_writes_outside_its_arrays(emu_cache, fence, rng):
    """Every op case, fresh random conv and pool configurations (test_random_configs.py's) and
    the sanitizer driver's launches (scripts/launch_all_kernels.py), with each array against a
    fence: no kernel touches memory just outside its arrays, even where the value read is never
    used (``sum_partials`` without its ``i < count`` guard, or ``winograd_backward_weight``
    without its ``c < C``, reads past the end and fails here)."""
    seed = int(rng.integers(2**63))
    cases = (
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import numpy as np\nfrom op_cases import CASES\nfrom test_random_configs import FAMILIES\n"
        "from gpucnn.backend.emulation import EmulatedCudaBackend\n"
        "backend = EmulatedCudaBackend()\n"
        "def run(case, rng):\n    print(case.name, flush=True)  # the last one named failed\n"
        "    for dtype in (np.float32, np.float64):\n"
        "        case.run(backend, case.sample(rng, dtype))\n"
        "for case in CASES:\n    run(case, np.random.default_rng(0))\n"
        f"rng = np.random.default_rng({seed})\n"
        f"for family, count in {RANDOM_FENCED!r}.items():\n"
        "    for index in range(count):\n        run(FAMILIES[family](rng, index), rng)\n"
    )
    result = run_fenced(fence, "-c", cases)
    last = result.stdout.split("\n")[-2:-1]
    assert result.returncode == 0, f"in case {last} (seed {seed}): {result.stderr[-2000:]}"
    names = result.stdout.splitlines()
    assert names[: len(CASES)] == [case.name for case in CASES]
    assert len(names) == len(CASES) + sum(RANDOM_FENCED.values())
    driver = run_fenced(fence, str(SCRIPTS / "launch_all_kernels.py"), "--device", "cuda-emu")
    assert driver.returncode == 0, driver.stderr[-2000:]
    assert re.search(r"launched (\d+) of \1 kernels", driver.stdout), driver.stdout


def test_sanitizer_driver_fails_when_a_gemm_tile_never_runs(
    emu_cache, fresh_registry, monkeypatch, capsys
):
    """Each conv2d GEMM kernel has two tiles, and compute-sanitizer must see both: with the
    launchers held to the square tile, the driver fails and names the kernels."""
    script = load_script("launch_all_kernels")
    monkeypatch.setattr(conv_launchers, "gemm_tile", lambda rows, columns: SQUARE_TILE)
    assert script.main(["--device", "cuda-emu"]) == 1
    err = capsys.readouterr().err
    assert "a tile never launched by: conv2d_forward, conv2d_backward_input" in err


def test_sanitizer_driver_fails_when_a_kernel_is_never_launched(
    emu_cache, fresh_registry, monkeypatch, capsys
):
    """A kernel the driver never launches is never sanitized: with relu_backward's launcher made
    a no-op, the driver fails and names both its instantiations (it only checked the tiles)."""
    script = load_script("launch_all_kernels")
    monkeypatch.setattr(EmulatedCudaBackend, "relu_backward", lambda self, gy, y: None)
    assert script.main(["--device", "cuda-emu"]) == 1
    err = capsys.readouterr().err
    assert "never launched: relu_backward<double>, relu_backward<float>\n" in err
