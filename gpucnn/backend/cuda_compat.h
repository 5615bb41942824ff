// gpucnn CUDA emulation: the compatibility header that lets g++ compile gpucnn's .cu kernels.
//
// The Python side (gpucnn/backend/emulation_build.py) prepends `#include "cuda_compat.h"` to a
// kernel source, rewrites `__shared__` declarations into calls of block_shared/dynamic_shared
// (emulation_runtime.h), and appends a table of the requested kernels. This file maps CUDA's
// keywords, intrinsics, math and atomics onto the host; features with no emulation fail to build
// with a message that names them.
#pragma once

#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <math.h>

#include "emulation_runtime.h"

// ------------------------------------------------------------------------ CUDA keywords
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
// A `__shared__` left here was not in a form the source rewriter understands.
#define __shared__ gpucnn_emu_unrecognised___shared___declaration_use_one_declarator_per_line

// ------------------------------------------------------------------------ device functions
#define __syncthreads() ::gpucnn_emu::syncthreads(__LINE__)
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::gpucnn_emu::warp_exchange(mask, 0, true); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const uint64_t* row = ::gpucnn_emu::warp_exchange(mask, ::gpucnn_emu::to_bits(v));
  unsigned lane = ::gpucnn_emu::lane_id();
  unsigned from = (lane & ~unsigned(width - 1)) + (unsigned(src) & unsigned(width - 1));
  return ::gpucnn_emu::lane_value<T>(row, from);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const uint64_t* row = ::gpucnn_emu::warp_exchange(mask, ::gpucnn_emu::to_bits(v));
  unsigned lane = ::gpucnn_emu::lane_id();
  if (lane % unsigned(width) + delta >= unsigned(width)) return v;
  return ::gpucnn_emu::lane_value<T>(row, lane + delta);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const uint64_t* row = ::gpucnn_emu::warp_exchange(mask, ::gpucnn_emu::to_bits(v));
  unsigned lane = ::gpucnn_emu::lane_id();
  if (lane % unsigned(width) < delta) return v;
  return ::gpucnn_emu::lane_value<T>(row, lane - delta);
}
// With width < 32 a lane may read a lane of an earlier segment; reading a later one gives its own
// value (the Programming Guide's __shfl_xor_sync).
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const uint64_t* row = ::gpucnn_emu::warp_exchange(mask, ::gpucnn_emu::to_bits(v));
  unsigned lane = ::gpucnn_emu::lane_id(), from = lane ^ unsigned(lane_mask);
  if (from / unsigned(width) > lane / unsigned(width)) return v;
  return ::gpucnn_emu::lane_value<T>(row, from);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  const uint64_t* row = ::gpucnn_emu::warp_exchange(mask, predicate != 0);
  unsigned base = ::gpucnn_emu::g.current->linear / 32 * 32, bits = 0;
  const unsigned lanes = ::gpucnn_emu::exchange_lanes();  // exited lanes are inactive: bit 0
  for (unsigned l = 0; l < 32; ++l)
    if ((lanes >> l & 1u) && row[base + l]) bits |= 1u << l;
  return bits;
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, predicate) == __ballot_sync(mask, 1);
}

#undef assert
#define assert(cond)                                                                               \
  ((cond) ? (void)0                                                                                \
          : ::gpucnn_emu::fail(std::string("assert(" #cond ") failed at line ") +                  \
                               std::to_string(__LINE__) + " in " + ::gpucnn_emu::where()))

// CUDA's max/min overloads: the usual arithmetic conversions; floats follow fmax/fmin (NaN loses).
template <class A, class B>
std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>) return std::fmax(C(a), C(b));
  else return C(a) < C(b) ? C(b) : C(a);
}
template <class A, class B>
std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>) return std::fmin(C(a), C(b));
  else return C(b) < C(a) ? C(b) : C(a);
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
// PTX div.approx.f32 multiplies by a reciprocal of b that underflows to 0 for 2^126 < |b| < 2^128:
// the quotient is then 0 (NaN for an infinite a); a / b elsewhere is within its 2 ulp.
inline float __fdividef(float a, float b) {
  return std::fabs(b) > 0x1p126f ? a * std::copysign(0.0f, b) : a / b;
}
// Clamps to [+0.0, 1.0]; NaN gives +0, as the hardware's .sat modifier does.
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }
template <class T>
T __ldg(const T* p) {
  return *p;
}

template <class To, class From>
To bit_cast_(From v) {
  static_assert(sizeof(To) == sizeof(From));
  To r;
  std::memcpy(&r, &v, sizeof r);
  return r;
}
inline int __float_as_int(float x) { return bit_cast_<int>(x); }
inline unsigned __float_as_uint(float x) { return bit_cast_<unsigned>(x); }
inline float __int_as_float(int x) { return bit_cast_<float>(x); }
inline float __uint_as_float(unsigned x) { return bit_cast_<float>(x); }
inline long long __double_as_longlong(double x) { return bit_cast_<long long>(x); }
inline double __longlong_as_double(long long x) { return bit_cast_<double>(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz(unsigned(x)) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }

// Atomics: fibers never interleave inside a call, so plain read-modify-write is atomic (and
// the race check is told which bytes an atomic wrote, and what they held: see atomic_written).
#define GPUCNN_EMU_ATOMIC(NAME, T, EXPR)                                                           \
  inline T NAME(T* p, T v) {                                                                       \
    T old = *p;                                                                                    \
    *p = (EXPR);                                                                                   \
    ::gpucnn_emu::atomic_written(p, &old, sizeof(T));                                              \
    return old;                                                                                    \
  }
// The overloads CUDA declares, and no more, so that a kernel using one nvcc refuses (atomicSub on
// unsigned long long, atomicExch on double) fails to build here too.
#define GPUCNN_EMU_INT_ATOMICS_FOR(T)                                                              \
  GPUCNN_EMU_ATOMIC(atomicMax, T, old < v ? v : old)                                               \
  GPUCNN_EMU_ATOMIC(atomicMin, T, v < old ? v : old)                                               \
  GPUCNN_EMU_ATOMIC(atomicAnd, T, old & v)                                                         \
  GPUCNN_EMU_ATOMIC(atomicOr, T, old | v)                                                          \
  GPUCNN_EMU_ATOMIC(atomicXor, T, old ^ v)                                                         \
  GPUCNN_EMU_ATOMIC(atomicExch, T, v)                                                              \
  GPUCNN_EMU_ATOMIC(atomicAdd, T, old + v)                                                         \
  inline T atomicCAS(T* p, T compare, T v) {                                                       \
    T old = *p;                                                                                    \
    if (old == compare) *p = v;                                                                    \
    ::gpucnn_emu::atomic_written(p, &old, sizeof(T));                                              \
    return old;                                                                                    \
  }
GPUCNN_EMU_INT_ATOMICS_FOR(int)
GPUCNN_EMU_INT_ATOMICS_FOR(unsigned)
GPUCNN_EMU_INT_ATOMICS_FOR(unsigned long long)
GPUCNN_EMU_ATOMIC(atomicSub, int, old - v)
GPUCNN_EMU_ATOMIC(atomicSub, unsigned, old - v)
GPUCNN_EMU_ATOMIC(atomicAdd, float, old + v)
GPUCNN_EMU_ATOMIC(atomicExch, float, v)
GPUCNN_EMU_ATOMIC(atomicAdd, double, old + v)
GPUCNN_EMU_ATOMIC(atomicMax, long long, old < v ? v : old)
GPUCNN_EMU_ATOMIC(atomicMin, long long, v < old ? v : old)
GPUCNN_EMU_ATOMIC(atomicInc, unsigned, old >= v ? 0u : old + 1u)
GPUCNN_EMU_ATOMIC(atomicDec, unsigned, (old == 0u || old > v) ? v : old - 1u)
#undef GPUCNN_EMU_ATOMIC
#undef GPUCNN_EMU_INT_ATOMICS_FOR

// ------------------------------------------------------------------------ unsupported features
#define GPUCNN_EMU_UNSUPPORTED(NAME, WHAT)                                                         \
  template <class... A>                                                                            \
  void NAME(A...) {                                                                                \
    static_assert(::gpucnn_emu::unsupported<A...>,                                                 \
                  "the gpucnn CUDA emulation does not support " WHAT);                             \
  }
GPUCNN_EMU_UNSUPPORTED(__nanosleep, "__nanosleep")
GPUCNN_EMU_UNSUPPORTED(clock64, "clock64()")
GPUCNN_EMU_UNSUPPORTED(__syncthreads_count, "__syncthreads_count")
GPUCNN_EMU_UNSUPPORTED(__syncthreads_and, "__syncthreads_and")
GPUCNN_EMU_UNSUPPORTED(__syncthreads_or, "__syncthreads_or")
GPUCNN_EMU_UNSUPPORTED(__activemask, "__activemask")
GPUCNN_EMU_UNSUPPORTED(__match_any_sync, "__match_any_sync")
GPUCNN_EMU_UNSUPPORTED(__match_all_sync, "__match_all_sync")
GPUCNN_EMU_UNSUPPORTED(__reduce_add_sync, "__reduce_add_sync")
GPUCNN_EMU_UNSUPPORTED(tex1Dfetch, "textures (tex1Dfetch)")
GPUCNN_EMU_UNSUPPORTED(tex1D, "textures (tex1D)")
GPUCNN_EMU_UNSUPPORTED(tex2D, "textures (tex2D)")
GPUCNN_EMU_UNSUPPORTED(tex3D, "textures (tex3D)")
GPUCNN_EMU_UNSUPPORTED(surf2Dread, "surfaces (surf2Dread)")
GPUCNN_EMU_UNSUPPORTED(surf2Dwrite, "surfaces (surf2Dwrite)")
#undef GPUCNN_EMU_UNSUPPORTED
