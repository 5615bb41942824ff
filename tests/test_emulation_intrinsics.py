"""The CUDA emulation's intrinsics that no gpucnn kernel uses, against CUDA's documented semantics.

Every intrinsic cuda_compat.h offers is API (GPUCNN_KERNEL_DIR may hold a user's kernels), so each
is checked here on the kernels of tests/emu_kernels/intrinsics.cu, built once for the module. The
expected values follow the CUDA C++ Programming Guide (Atomic Functions, Warp Shuffle Functions,
Warp Vote Functions) and the CUDA Math API (Integer and Type Casting Intrinsics, Single and Double
Precision Mathematical Functions), written out in Python rather than by the emulator's formulas.
"""

from __future__ import annotations

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

from gpucnn.backend.emulation import EmulationError, EmulationRunner  # noqa: E402
from gpucnn.backend.emulation_runner import FLUSHES_SUBNORMALS  # noqa: E402

SOURCE = Path(__file__).with_name("emu_kernels") / "intrinsics.cu"
NAMES = [
    "atomics_int",
    "atomics_wrap",
    "atomics_wrap_table",
    "atomics_cas",
    "atomics_wide",
    "int_intrinsics",
    "bit_casts",
    "float_math",
    "double_math",
    "mixed_minmax",
    "passing_assert",
    "shfl_modes<int>",
    "shfl_modes<double>",
    "shfl_modes<long long>",
    "votes",
    "mask_then_full",
    "after_exit",
    "mismatched_masks",
    "syncwarp_exchange",
    "mask_without_caller",
    "read_absent_lanes",
    "fast_math",
]
U32 = 2**32
U64 = 2**64


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """The module built from tests/emu_kernels/intrinsics.cu, in a fresh build cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUCNN_EMU_CACHE", str(tmp_path_factory.mktemp("emu-cache")))
        yield EmulationRunner().module_from_source(SOURCE.read_text(), NAMES, SOURCE.name)


def bits32(values) -> np.ndarray:
    return np.array([v % U32 for v in values], np.uint32)


# ------------------------------------------------------------------------ atomics


def test_integer_atomics_from_many_threads(emu):
    """192 threads in 3 blocks: atomicAdd hands out each ticket once, contended sums are exact,
    atomicMax/Min compare signed ints as signed and unsigned ints as unsigned, atomicAnd/Or/Xor
    combine every thread's bits, and unsigned atomicAdd/Sub wrap modulo 2**32."""
    n = 192
    rng = np.random.default_rng(10)
    v = rng.integers(-1000, 1000, n).astype(np.int32)
    v[:3] = [-1, 1500, -1500]  # -1 is the largest value as unsigned
    ticket = np.full(n, -7, np.int32)
    icnt = np.array([0, 0, 0, -(2**31), 2**31 - 1, -1, 0, 0], np.int32)
    ucnt = bits32([0, U32 - 1, U32 - 1, 0, 0, 100, 9])
    emu.get_function("atomics_int")(3, 64, (v, ticket, icnt, ucnt))

    assert sorted(ticket.tolist()) == list(range(n))
    ints = [int(x) for x in v]
    words = [x % U32 for x in ints]
    xor = 0
    for x in words:
        xor ^= x
    and_u, or_u = U32 - 1, 0
    for x in words:
        and_u &= x | 0x80000000
        or_u |= x & 0x00FF00FF
    assert icnt.tolist() == [
        n,
        sum(ints),
        -sum(ints),
        1500,
        -1500,
        -(2**31),  # every bit but the sign bit was cleared by some thread (i % 31)
        -1,  # every bit was set by some thread (i % 32)
        xor - U32 if xor >= 2**31 else xor,
    ]
    assert ucnt.tolist() == [
        U32 - 1,  # -1 is the largest unsigned value
        min(words),
        and_u,
        or_u,
        xor,
        (100 - 3 * n) % U32,  # unsigned atomicSub wraps below zero
        (9 + sum(words)) % U32,
    ]


def test_atomic_inc_and_dec_wrap_around_from_many_threads(emu):
    """atomicInc(p, 9) counts 0..9 and wraps to 0; atomicDec(p, 5) from 100 (above val) first
    stores val, then counts 5..0, and at 0 stores val again. The threads take turns, so the old
    values are the sequence's first 97 terms in some order; the final value is its 98th."""
    n = 97
    inc_seq = [k % 10 for k in range(n + 1)]
    dec_seq = [100] + [5 - k % 6 for k in range(n)]
    inc_old, dec_old = np.zeros(n, np.uint32), np.zeros(n, np.uint32)
    counters = bits32([0, 100])
    emu.get_function("atomics_wrap")(1, n, (inc_old, dec_old, counters, np.uint32(9), np.uint32(5)))
    assert sorted(inc_old.tolist()) == sorted(inc_seq[:n])
    assert sorted(dec_old.tolist()) == sorted(dec_seq[:n])
    assert counters.tolist() == [inc_seq[n], dec_seq[n]]


# (old, val, what atomicInc stores, what atomicDec stores), from the Programming Guide: atomicInc
# stores ((old >= val) ? 0 : (old + 1)), atomicDec ((old == 0) || (old > val)) ? val : (old - 1).
WRAP_TABLE = [
    (0, 9, 1, 9),
    (8, 9, 9, 7),
    (9, 9, 0, 8),
    (10, 9, 0, 9),
    (0, 0, 0, 0),
    (1, 0, 0, 0),
    (0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFD),
    (0xFFFFFFFF, 0xFFFFFFFF, 0, 0xFFFFFFFE),
    (0, 0xFFFFFFFF, 1, 0xFFFFFFFF),
    (0xFFFFFFFF, 5, 0, 5),
    (1, 1, 0, 0),
    (3, 7, 4, 2),
]


def test_atomic_inc_and_dec_edge_cases(emu):
    old, val, inc_new, dec_new = (bits32(c) for c in zip(*WRAP_TABLE, strict=True))
    inc, dec = old.copy(), old.copy()
    inc_old, dec_old = np.zeros_like(old), np.zeros_like(old)
    n = np.int32(len(WRAP_TABLE))
    emu.get_function("atomics_wrap_table")(1, 32, (inc, dec, val, inc_old, dec_old, n))
    np.testing.assert_array_equal(inc_old, old)
    np.testing.assert_array_equal(dec_old, old)
    np.testing.assert_array_equal(inc, inc_new)
    np.testing.assert_array_equal(dec, dec_new)


def test_atomic_cas_succeeds_once_and_fails_without_writing(emu):
    """atomicCAS returns the old word and stores only when it equals compare: of 128 threads
    claiming a free word one wins (sees the initial value), the rest see the winner's value; a
    compare that never matches leaves the word alone; CAS loops (a float maximum on the bits, the
    Programming Guide's double atomicAdd on unsigned long long) give the exact answer."""
    n = 128
    rng = np.random.default_rng(11)
    f = rng.standard_normal(n).astype(np.float32)
    d = rng.integers(-(2**40), 2**40, n).astype(np.float64)  # integers: any order sums exactly
    claim_old = np.full(n, -7, np.int32)
    uclaim_old = np.zeros(n, np.uint32)
    word = np.array([0, 7], np.int32)
    uword = np.array([U32 - 1], np.uint32)
    fmax_bits = np.array([-np.inf], np.float32).view(np.int32)
    dsum_bits = np.array([0.25]).view(np.uint64)
    emu.get_function("atomics_cas")(
        2, 64, (f, d, claim_old, uclaim_old, word, uword, fmax_bits, dsum_bits)
    )

    (winner,) = np.flatnonzero(claim_old == 0)
    assert word.tolist() == [winner + 1, 7]
    assert (np.delete(claim_old, winner) == winner + 1).all()
    (uwinner,) = np.flatnonzero(uclaim_old == U32 - 1)
    assert uword[0] == uwinner and (np.delete(uclaim_old, uwinner) == uwinner).all()
    assert fmax_bits.view(np.float32)[0] == f.max()
    assert dsum_bits.view(np.float64)[0] == sum(int(x) for x in d) + 0.25


def test_wide_and_floating_point_atomics_and_exchange(emu):
    """long long / unsigned long long atomicMax, atomicMin (signed vs unsigned order), 64-bit
    atomicAdd wrapping modulo 2**64, And/Or/Xor; float and double atomicAdd from 128 threads
    (exactly representable sums); atomicExch returns each value exactly once."""
    n = 128
    rng = np.random.default_rng(12)
    v = rng.integers(-(2**40), 2**40, n).astype(np.int64)
    v[:2] = [-1, 2**45]  # every partial sum stays below 2**53: exact as a double
    llcnt = np.array([-(2**63), 2**63 - 1], np.int64)
    ullcnt = np.array([0, U64 - 1, 5, U64 - 1, 0, 0], np.uint64)
    fsum, dsum = np.zeros(2, np.float32), np.zeros(2, np.float64)
    exch_old, fexch_old = np.zeros(n, np.int32), np.zeros(n, np.float32)
    exch_word, fexch_word = np.array([-1], np.int32), np.array([0.125], np.float32)
    emu.get_function("atomics_wide")(
        2,
        64,
        (v, llcnt, ullcnt, fsum, dsum, exch_old, fexch_old, exch_word, fexch_word),
    )

    ints = [int(x) for x in v]
    words = [x % U64 for x in ints]
    xor = 0
    for x in words:
        xor ^= x
    assert llcnt.tolist() == [2**45, min(ints)]
    assert ullcnt.tolist() == [U64 - 1, min(words), (5 + sum(words)) % U64, 0, U64 - 1, xor]
    assert fsum.tolist() == [n, n / 4] and dsum.tolist() == [n / 2, float(sum(ints))]
    assert sorted([*exch_old.tolist(), exch_word[0]]) == list(range(-1, n))
    seen = sorted([*fexch_old.tolist(), fexch_word[0]])
    assert seen == [0.125] + [i + 0.5 for i in range(n)]


# ------------------------------------------------------------------------ integer intrinsics


def test_popc_clz_ffs(emu):
    """__popc counts set bits; __clz counts leading zeros of the 32-bit word (32 for 0); __ffs is
    the 1-based position of the least significant set bit (0 for 0); __popcll on 64 bits."""
    special = [0, 1, 2, 3, 0x80000000, 0xFFFFFFFF, 0x7FFFFFFF, 0x00010000, 0x40000000, 0xFFFFFFFE]
    rng = np.random.default_rng(13)
    x = np.concatenate([bits32(special), rng.integers(0, U32, 22, dtype=np.uint64)]).astype(
        np.uint32
    )
    y = np.concatenate(
        [
            np.array([0, U64 - 1, 2**63, 1, 2**32], np.uint64),
            rng.integers(0, U64 - 1, 27, np.uint64),
        ]
    )
    n = len(x)
    popc, clz, ffs, popcll = (np.full(n, -9, np.int32) for _ in range(4))
    emu.get_function("int_intrinsics")(1, 32, (x, y, np.int32(n), popc, clz, ffs, popcll))
    words = [int(w) for w in x]
    assert popc.tolist() == [bin(w).count("1") for w in words]
    assert clz.tolist() == [32 - w.bit_length() for w in words]
    assert ffs.tolist() == [(w & -w).bit_length() for w in words]
    assert popcll.tolist() == [bin(int(w)).count("1") for w in y]
    assert clz[0] == 32 and ffs[0] == 0 and ffs[4] == 32 and clz[5] == 0


# ------------------------------------------------------------------------ type casts


def test_bit_casts_keep_every_bit(emu):
    """__float_as_int/__float_as_uint/__int_as_float/__uint_as_float/__double_as_longlong/
    __longlong_as_double reinterpret the bits (NaN payloads, -0, subnormals included); __ldg
    reads through the pointer."""
    f32_bits = bits32(
        [0, 0x80000000, 0x3F800000, 0x7F800000, 0xFF800000, 0x7FC12345, 0x7FA00001, 1, 0xFFFFFFFF]
        + [0x00800000, 0x7F7FFFFF, 0xC0200000, 0x807FFFFF, 0x12345678, 0xDEADBEEF, 0x40490FDB]
    )
    n = len(f32_bits)
    f = f32_bits.view(np.float32)
    k = f32_bits.view(np.int32)[::-1].copy()
    u = f32_bits[::-1].copy()
    f64_bits = np.array(
        [0, 2**63, 0x7FF0000000000000, 0x7FF8000000000123, 0x7FF4000000000001, 1, U64 - 1]
        + [0x3FF0000000000000, 0x0010000000000000, 0xC00921FB54442D18]
        + [0x0123456789ABCDEF, 0xFEDCBA9876543210, 2**52 - 1, 2**62, 0x8000000000000001, 17],
        np.uint64,
    )
    d = f64_bits.view(np.float64)
    ll = f64_bits.view(np.int64)[::-1].copy()
    outs = [
        np.zeros(n, np.int32),
        np.zeros(n, np.uint32),
        np.zeros(n, np.float32),
        np.zeros(n, np.float32),
        np.zeros(n, np.int64),
        np.zeros(n, np.float64),
    ]
    emu.get_function("bit_casts")(1, 32, (f, k, u, d, ll, np.int32(n), *outs))
    f_as_int, f_as_uint, int_as_f, uint_as_f, d_as_ll, ll_as_d = outs
    np.testing.assert_array_equal(f_as_int, f32_bits.view(np.int32))
    np.testing.assert_array_equal(f_as_uint, f32_bits)
    np.testing.assert_array_equal(int_as_f.view(np.int32), k)
    np.testing.assert_array_equal(uint_as_f.view(np.uint32), u)
    np.testing.assert_array_equal(d_as_ll, f64_bits.view(np.int64))
    np.testing.assert_array_equal(ll_as_d.view(np.int64), ll)
    assert f_as_int[1] == -(2**31) and np.signbit(int_as_f[-2]) and np.isnan(ll_as_d[-4])


# ------------------------------------------------------------------------ math

NAN, INF = float("nan"), float("inf")
# (a, b) pairs for max/min: NaN is missing data (fmax/fmin), both NaN gives NaN.
PAIRS = [
    (NAN, 1.0),
    (1.0, NAN),
    (NAN, NAN),
    (-INF, 3.0),
    (INF, -INF),
    (NAN, -INF),
    (2.0, 3.0),
    (-1.0, -2.0),
    (0.5, 0.5),
    (1e-45, 0.0),
    (-3.5, NAN),
    (3e38, -3e38),
]
# Inputs of __saturatef and rsqrtf beyond the pairs' a column.
SATURATE = [-1.0, 0.0, 0.25, 1.0, 1.0000001, 2.0, INF, -INF, NAN, -1e-30, 1e-30, 0.99999994]


def float_cases():
    a = np.array([p[0] for p in PAIRS] + SATURATE, np.float32)
    b = np.array([p[1] for p in PAIRS] + [0.5] * len(SATURATE), np.float32)
    return a, b


def flushed(x: np.ndarray) -> np.ndarray:
    """x with its subnormal floats as zeros of their sign: CuPy compiles every kernel with
    -ftz=true, so a GPU's single-precision operations (.ftz) flush subnormal operands and
    results, and the emulation does the same in a kernel with a float parameter (on x86-64;
    elsewhere it keeps them, and so does this)."""
    if not FLUSHES_SUBNORMALS:
        return x
    return np.where(np.abs(x) < np.finfo(x.dtype).tiny, np.copysign(0, x), x).astype(x.dtype)


def test_float_max_min_treat_nan_as_missing(emu):
    """max.ftz.f32 / min.ftz.f32: NaN is missing data; a subnormal (1e-45 against 0) is 0."""
    a, b = float_cases()
    n = len(a)
    mx, mn, sat, rsq = (np.zeros(n, np.float32) for _ in range(4))
    emu.get_function("float_math")(1, 64, (a, b, np.int32(n), mx, mn, sat, rsq))
    np.testing.assert_array_equal(mx, np.fmax(flushed(a), flushed(b)))
    np.testing.assert_array_equal(mn, np.fmin(flushed(a), flushed(b)))
    assert mx[0] == 1 and mn[1] == 1 and np.isnan(mx[2]) and np.isnan(mn[2]) and mn[5] == -INF
    assert mx[9] == flushed(a)[9]  # max(1e-45, 0): 0, the subnormal flushed


def test_saturatef_clamps_to_unit_interval_and_maps_nan_to_zero(emu):
    """CUDA Math API: __saturatef(x) is 0 for x < 0, 1 for x > 1, x in between, and 0 for NaN
    (the hardware's .sat modifier flushes NaN to +0); a subnormal x is flushed first (.ftz)."""
    a, b = float_cases()
    n = len(a)
    mx, mn, sat, rsq = (np.zeros(n, np.float32) for _ in range(4))
    emu.get_function("float_math")(1, 64, (a, b, np.int32(n), mx, mn, sat, rsq))
    for x, s in zip(flushed(a).tolist(), sat.tolist(), strict=True):
        want = 0.0 if x != x or x < 0 else 1.0 if x > 1 else x
        assert s == want, f"__saturatef({x}) = {s}, CUDA gives {want}"
    assert sat[9] == flushed(a)[9]  # __saturatef(1e-45): 0, flushed


def test_rsqrtf_special_values_and_accuracy(emu):
    """rsqrtf(+0) = +inf, rsqrtf(-0) = -inf, rsqrtf(+inf) = +0, NaN for x < 0 and for NaN, +inf
    for a subnormal x (rsqrt.approx.ftz flushes it to +0); elsewhere within CUDA's 2 ulp of
    1/sqrt(x)."""
    rng = np.random.default_rng(14)
    a = np.concatenate(
        [
            np.array([0.0, -0.0, INF, -1.0, -INF, NAN, 1.0, 4.0, 1e-45, 3e38], np.float32),
            np.exp(rng.uniform(-80, 80, 40)).astype(np.float32),
        ]
    )
    n = len(a)
    mx, mn, sat, rsq = (np.zeros(n, np.float32) for _ in range(4))
    emu.get_function("float_math")(1, 64, (a, a, np.int32(n), mx, mn, sat, rsq))
    assert rsq[0] == INF and rsq[1] == -INF and rsq[2] == 0 and not np.signbit(rsq[2])
    assert np.isnan(rsq[3:6]).all() and rsq[6] == 1 and rsq[7] == 0.5
    assert rsq[8] == INF or not FLUSHES_SUBNORMALS  # rsqrtf(1e-45): the input flushed to +0
    kept = 8 if not FLUSHES_SUBNORMALS else 9
    exact = 1 / np.sqrt(a[kept:].astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert (np.abs(rsq[kept:] - exact) <= 2 * ulp).all()


def test_double_max_min_with_float_and_rsqrt(emu):
    """max/min on double, and CUDA's max(float, double) / min(double, float) overloads: the float
    is widened to double, then fmax/fmin. rsqrt(x) within 1 ulp; rsqrt(-0) = -inf."""
    pairs = [*PAIRS, (1.0000000000000002, 1.0), (0.1, 0.1), (-0.0, 2.0), (1e300, 3e38)]
    a = np.array([p[0] for p in pairs], np.float64)
    b = np.array([p[1] for p in pairs], np.float32)
    n = len(a)
    mx, mn, mx_fd, mn_df, rsq = (np.zeros(n, np.float64) for _ in range(5))
    emu.get_function("double_math")(1, 32, (a, b, np.int32(n), mx, mn, mx_fd, mn_df, rsq))
    wide = b.astype(np.float64)
    np.testing.assert_array_equal(mx, np.fmax(a, wide))
    np.testing.assert_array_equal(mn, np.fmin(a, wide))
    np.testing.assert_array_equal(mx_fd, np.fmax(wide, a))
    np.testing.assert_array_equal(mn_df, np.fmin(a, wide))
    assert mx_fd[-4] == 1.0000000000000002 and mn_df[-3] == 0.1  # 0.1f widened is above 0.1
    positive = a > 0
    exact = 1 / np.sqrt(a[positive])
    assert (np.abs(rsq[positive] - exact) <= np.spacing(exact)).all()
    assert np.isneginf(rsq[np.flatnonzero(np.signbit(a) & (a == 0))]).all()


def test_max_min_of_mixed_integer_types_and_int_with_float(emu):
    """CUDA's integer overloads convert as C++ does: max(int, unsigned) compares as unsigned (so
    -1 is the largest), max(int, int) as signed, min(long long, int) as long long; an int with a
    float compares as float (a NaN float loses)."""
    a = np.array([-1, 5, -7, 0, 2**31 - 1, -(2**31), 3, -2, 100, 7], np.int32)
    b = bits32([1, 4, 6, 0, 2**31, 0, U32 - 1, 3, 99, 2**31 - 1])
    c = np.array([-(2**40), 6, 2**40, -1, 0, -(2**31) - 1, 2, -3, 1000, 7], np.int64)
    f = np.array([2.5, 5.5, NAN, -0.5, 1.0, -3.0, 3.0, -1.5, NAN, 6.75], np.float32)
    n = len(a)
    max_iu, min_ui = np.zeros(n, np.uint32), np.zeros(n, np.uint32)
    max_ii, min_ll = np.zeros(n, np.int32), np.zeros(n, np.int64)
    max_if, min_fi = np.zeros(n, np.float32), np.zeros(n, np.float32)
    args = (a, b, c, f, np.int32(n), max_iu, min_ui, max_ii, min_ll, max_if, min_fi)
    emu.get_function("mixed_minmax")(1, 32, args)
    ia, ib, ic = (x.tolist() for x in (a, b, c))
    assert max_iu.tolist() == [max(x % U32, y) for x, y in zip(ia, ib, strict=True)]
    assert min_ui.tolist() == [min(x % U32, y) for x, y in zip(ia, ib, strict=True)]
    signed_b = [y - U32 if y >= 2**31 else y for y in ib]
    assert max_ii.tolist() == [max(x, y) for x, y in zip(ia, signed_b, strict=True)]
    assert min_ll.tolist() == [min(x, y) for x, y in zip(ic, ia, strict=True)]
    assert max_iu[0] == U32 - 1 and min_ui[0] == 1  # -1 converts to 0xffffffff
    small = np.abs(a) < 2**24  # exactly representable as float
    af = a.astype(np.float32)
    np.testing.assert_array_equal(max_if[small], np.fmax(af, f)[small])
    np.testing.assert_array_equal(min_fi[small], np.fmin(f, af)[small])
    assert max_if[0] == 2.5 and max_if[2] == -7 and min_fi[8] == 100 and min_fi[3] == -0.5


def test_assert_that_holds_does_not_stop_the_kernel(emu):
    x, y = np.arange(32, dtype=np.int32), np.full(32, -1, np.int32)
    emu.get_function("passing_assert")(1, 32, (x, y))
    np.testing.assert_array_equal(y, x)


def test_fast_math_intrinsics(emu):
    """The CUDA Math API's fast intrinsics, within their documented error: __fdividef(x, y) within
    2 ulp of x / y for 2**-126 <= |y| <= 2**126, and for 2**126 < |y| < 2**128 it gives 0 (NaN
    for an infinite x: PTX's div.approx.f32 multiplies by a reciprocal that underflows there);
    __expf(x) within 2 + floor(|1.173 x|) ulp; __logf(x) within 2**-21.41 absolutely on
    [0.5, 2] and 3 ulp elsewhere, -inf at 0 and NaN below; __powf(x, y), computed as
    exp2(y * log2(x)) from those approximations, within 2**-16 relatively here."""
    rng = np.random.default_rng(16)
    a = np.concatenate(
        [
            rng.uniform(-10, 10, 24),
            rng.uniform(0.5, 2, 8),
            np.exp(rng.uniform(-40, 40, 16)),
            [1.0, 3.0, -2.0, INF, 0.0, -1.0, 5.0, -INF, 2.5, 1e30],
        ]
    ).astype(np.float32)
    b = np.concatenate(
        [
            rng.uniform(-3, 3, 48),
            [2.0**126, 2.0**127, -(2.0**127), 3e38, 2.0**127, 2.0**-126, 2.0**-125, -3.0, 1.0, 1.0],
        ]
    ).astype(np.float32)
    n = len(a)
    out = np.zeros(4 * n, np.float32)
    emu.get_function("fast_math")(1, 64, (a, b, np.int32(n), out))
    div, ex, lg, pw = out.reshape(4, n)
    x, y = a.astype(np.float64), b.astype(np.float64)

    def ulps(got, want):
        return np.abs(got - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)

    huge = (np.abs(y) > 2.0**126) & ~np.isinf(y)
    finite = np.isfinite(x) & ~huge
    assert (ulps(div[finite], x[finite] / y[finite]) <= 2).all()
    assert (div[huge & np.isfinite(x)] == 0).all() and np.isnan(div[huge & np.isinf(x)]).all()
    moderate = np.abs(x) <= 10
    exact = np.exp(x[moderate])
    assert (ulps(ex[moderate], exact) <= 2 + np.floor(np.abs(1.173 * x[moderate]))).all()
    assert (ex[np.isposinf(a)] == INF).all() and (ex[np.isneginf(a)] == 0).all()
    positive = (x > 0) & np.isfinite(x)
    near_one = positive & (x >= 0.5) & (x <= 2)
    assert (np.abs(lg[near_one] - np.log(x[near_one])) <= 2.0**-21.41).all()
    far = positive & ~near_one
    assert (ulps(lg[far], np.log(x[far])) <= 3).all()
    assert (lg[a == 0] == -INF).all() and (lg[np.isposinf(a)] == INF).all()
    assert np.isnan(lg[a < 0]).all()
    small = (x > 1e-2) & (x < 1e3) & (np.abs(y) <= 3)
    assert small.sum() > 20
    np.testing.assert_allclose(pw[small], x[small] ** y[small], rtol=2.0**-16)


# ------------------------------------------------------------------------ warp functions


def shuffle_sources(n, width, delta, lane_mask, src):
    """For thread t of a block of n: the thread each shuffle mode reads (the Programming Guide's
    Warp Shuffle Functions; `width` splits each warp into segments of width lanes)."""
    up, down, xor, idx = [], [], [], []
    for t in range(n):
        lane = t % 32
        start = lane - lane % width  # the first lane of t's segment
        end = start + width  # one past its last
        warp = t - lane
        # __shfl_up_sync: lane - delta, but lanes below delta in their segment keep their own.
        up.append(t - delta if lane - delta >= start else t)
        # __shfl_down_sync: lane + delta, but the top delta lanes of a segment keep their own.
        down.append(t + delta if lane + delta < end else t)
        # __shfl_xor_sync: lane ^ lane_mask; a lane may read earlier segments, but reading a
        # later one returns its own value.
        other = lane ^ lane_mask
        xor.append(warp + other if other < end else t)
        # __shfl_sync: lane src of the segment, src taken modulo width.
        idx.append(warp + start + src % width)
    return np.array([up, down, xor, idx])


SHUFFLES = [  # (width, delta, lane_mask, src)
    (32, 1, 1, 0),
    (32, 5, 31, 37),
    (32, 16, 16, 31),
    (16, 3, 8, 5),
    (16, 15, 16, 16),
    (8, 2, 8, 13),
    (8, 7, 24, 7),
    (4, 1, 2, 6),
    (2, 1, 1, 1),
    (1, 1, 1, 3),
]
SHUFFLE_TYPES = {"int": np.int32, "double": np.float64, "long long": np.int64}


@pytest.mark.parametrize("threads", [64, 40], ids=["two-warps", "partial-warp"])
@pytest.mark.parametrize("ctype", list(SHUFFLE_TYPES))
def test_shuffles_stay_in_their_segment(emu, ctype, threads):
    """__shfl_up/down/xor/_sync for widths 32 to 1 in one launch each, on 4- and 8-byte types.
    With 40 threads the second warp has 8 lanes: the lanes past the block are inactive, and a
    lane that reads one gets an undefined value, so only reads of existing lanes are checked."""
    dtype = SHUFFLE_TYPES[ctype]
    rng = np.random.default_rng(15)
    if dtype is np.int64:  # values that need all 8 bytes
        x = rng.integers(-(2**50), 2**50, threads)
    elif dtype is np.float64:
        x = rng.standard_normal(threads)
    else:
        x = np.arange(100, 100 + threads)
    x = x.astype(dtype)
    kernel = emu.get_function(f"shfl_modes<{ctype}>")
    for width, delta, lane_mask, src in SHUFFLES:
        out = np.zeros(4 * threads, dtype)
        args = (x, out, np.uint32(delta), np.int32(lane_mask), np.int32(src), np.int32(width))
        kernel(1, threads, args)
        sources = shuffle_sources(threads, width, delta, lane_mask, src)
        defined = sources < threads
        got = out.reshape(4, threads)
        for mode, name in enumerate(["up", "down", "xor", "idx"]):
            ok = defined[mode]
            np.testing.assert_array_equal(
                got[mode][ok],
                x[sources[mode][ok]],
                err_msg=f"__shfl_{name}: width {width}, delta {delta}, lane_mask {lane_mask}, "
                f"src {src}, {threads} threads",
            )


def vote_expectation(pred, mask, n, alive=None):
    """Per thread: (ballot, any, all) over the lanes of its group: the lanes of its warp that are
    in its mask (`mask` or, for the lanes outside it, the complement) and exist (t < n) and have
    not exited (t < alive)."""
    alive = n if alive is None else alive
    out = []
    for t in range(alive):
        lane, warp = t % 32, t - t % 32
        group_mask = mask if mask >> lane & 1 else ~mask % U32
        lanes = [k for k in range(32) if group_mask >> k & 1 and warp + k < alive]
        ballot = sum(1 << k for k in lanes if pred[warp + k] != 0)
        out.append((ballot, int(ballot != 0), int(all(pred[warp + k] != 0 for k in lanes))))
    return [list(col) for col in zip(*out, strict=True)]


@pytest.mark.parametrize("threads", [64, 40], ids=["two-warps", "partial-warp"])
@pytest.mark.parametrize("mask", [0xFFFFFFFF, 0x0000FFFF, 0x55555555, 0x80000001, 0x00000001])
def test_votes_with_partial_masks(emu, mask, threads):
    """__ballot_sync sets bit k when lane k is in the mask and its predicate is non-zero (any
    non-zero int counts); __any_sync / __all_sync over the mask's lanes. Lanes outside `mask`
    vote with its complement at the same time (a second, disjoint group)."""
    rng = np.random.default_rng(mask % 1000)
    pred = rng.choice([0, 1, -3, 7], threads).astype(np.int32)
    pred[[k for k in range(min(threads, 32)) if mask >> k & 1]] = 5  # all true in warp 0's mask
    ballot = np.zeros(threads, np.uint32)
    any_, all_ = np.full(threads, -1, np.int32), np.full(threads, -1, np.int32)
    emu.get_function("votes")(1, threads, (pred, np.uint32(mask), ballot, any_, all_))
    want_ballot, want_any, want_all = vote_expectation(pred.tolist(), mask, threads)
    assert ballot.tolist() == want_ballot
    assert any_.tolist() == want_any
    assert all_.tolist() == want_all
    assert all_[0] == 1


def test_a_partial_mask_collective_then_a_full_one(emu):
    """Lanes 0-15 shuffle among themselves (mask 0xffff), then all 32 lanes swap halves with
    __shfl_xor_sync(0xffffffff, v, 16): each lane reads what the other half holds now."""
    x = np.arange(1, 65, dtype=np.int32) * 3
    out = np.zeros(64, np.int32)
    emu.get_function("mask_then_full")(1, 64, (x, out))
    t = np.arange(64)
    v = np.where(t % 32 < 16, x + x[t ^ 1], x)
    np.testing.assert_array_equal(out, v[t ^ 16])


@pytest.mark.parametrize("alive", [40, 20, 63, 1])
def test_collectives_with_exited_lanes_in_the_mask(emu, alive):
    """Threads past `alive` return first; the rest vote and broadcast with the full mask. CUDA
    asks only the non-exited threads named in the mask to take part: the exited lanes are
    inactive, so their ballot bits are 0 and __all_sync looks at the others only."""
    threads = 64
    rng = np.random.default_rng(alive)
    pred = rng.choice([0, 1], threads).astype(np.int32)
    pred[32:] = 1  # warp 1's live lanes all vote true
    x = np.arange(threads, dtype=np.int32) + 1000
    ballot = np.zeros(threads, np.uint32)
    all_, bcast = np.full(threads, -1, np.int32), np.full(threads, -1, np.int32)
    emu.get_function("after_exit")(1, threads, (pred, x, np.int32(alive), ballot, all_, bcast))
    want_ballot, _, want_all = vote_expectation(pred.tolist(), 0xFFFFFFFF, threads, alive)
    assert ballot[:alive].tolist() == want_ballot
    assert all_[:alive].tolist() == want_all
    assert bcast[:alive].tolist() == [1000 + t - t % 32 for t in range(alive)]
    assert (ballot[alive:] == 0).all() and (bcast[alive:] == -1).all()  # exited: untouched


def test_lanes_waiting_at_a_different_collective_are_a_deadlock(emu):
    """Lanes 0-15 call with mask 0x0001ffff, lanes 16-31 with 0xffff8000: each mask names a lane
    that waits with the other and none has exited, so neither collective can complete (undefined
    in CUDA); the emulation says so instead of hanging."""
    with pytest.raises(EmulationError, match="warp collective deadlock"):
        emu.get_function("mismatched_masks")(1, 32, (np.zeros(32, np.int32),))


def test_syncwarp_orders_shared_memory_within_the_warp(emu):
    """Programming Guide, __syncwarp(): threads of a warp that store to memory, execute
    __syncwarp() and then read, see each other's stores; here each lane reads lane (31 - lane)'s,
    which in the emulation's lane order is stored after lane 0 would read it without the barrier."""
    x = np.arange(64, dtype=np.int32) * 7 + 3
    y = np.zeros(64, np.int32)
    emu.get_function("syncwarp_exchange")(1, 64, (x, y))
    np.testing.assert_array_equal(y, x[np.arange(64) ^ 31])


def test_a_mask_that_leaves_out_the_calling_lane_is_an_error(emu):
    """Programming Guide, Warp Shuffle Functions: each calling thread must have its own bit set in
    the mask, or the result is undefined; the emulation stops the launch and says so."""
    with pytest.raises(EmulationError, match="mask leaves out the calling lane"):
        emu.get_function("mask_without_caller")(1, 32, (np.zeros(32, np.int32),))


def test_reading_an_exited_or_absent_lane_gives_all_ones(emu):
    """A shuffle from a lane that has exited, or that is not in the collective's mask, is undefined
    in CUDA (threads may only read from threads actively taking part); the emulation gives all-ones
    bits (-1), never the value that lane held in an earlier collective."""
    x = np.arange(32, dtype=np.int32) + 500
    out = np.zeros(64, np.int32)
    emu.get_function("read_absent_lanes")(1, 32, (x, np.int32(24), out))
    assert (out[:24] == -1).all() and (out[24:32] == 0).all()  # lane 24 exited
    assert (out[32:48] == -1).all()  # lane 20 is outside mask 0xffff
