// Kernels that call the CUDA intrinsics the emulation offers but gpucnn's kernels do not use
// (tests/test_emulation_intrinsics.py checks them against CUDA's documented semantics).

// ------------------------------------------------------------------------ atomics
// Every thread of the grid: tickets, contended sums, signed and unsigned extremes, bit ops.
// icnt: [ticket, sum, sub, max, min, and, or, xor]; ucnt: [max, min, and, or, xor, sub]
extern "C" __global__ void atomics_int(const int* v, int* ticket, int* icnt, unsigned* ucnt) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int x = v[i];
  const unsigned u = (unsigned)x;
  ticket[i] = atomicAdd(&icnt[0], 1);
  atomicAdd(&icnt[1], x);
  atomicSub(&icnt[2], x);
  atomicMax(&icnt[3], x);
  atomicMin(&icnt[4], x);
  atomicAnd(&icnt[5], ~(1 << (i % 31)));
  atomicOr(&icnt[6], (int)(1u << (i % 32)));
  atomicXor(&icnt[7], x);
  atomicMax(&ucnt[0], u);
  atomicMin(&ucnt[1], u);
  atomicAnd(&ucnt[2], u | 0x80000000u);
  atomicOr(&ucnt[3], u & 0x00ff00ffu);
  atomicXor(&ucnt[4], u);
  atomicSub(&ucnt[5], 3u);
  atomicAdd(&ucnt[6], u);
}

// atomicInc and atomicDec as the grid's threads take turns: old values and final counters.
extern "C" __global__ void atomics_wrap(unsigned* inc_old, unsigned* dec_old, unsigned* counters,
                                        unsigned inc_limit, unsigned dec_limit) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  inc_old[i] = atomicInc(&counters[0], inc_limit);
  dec_old[i] = atomicDec(&counters[1], dec_limit);
}

// One atomicInc / atomicDec per (old, limit) pair: counters[i] starts at old, limit[i] is `val`.
extern "C" __global__ void atomics_wrap_table(unsigned* inc, unsigned* dec, const unsigned* limit,
                                              unsigned* inc_old, unsigned* dec_old, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  inc_old[i] = atomicInc(&inc[i], limit[i]);
  dec_old[i] = atomicDec(&dec[i], limit[i]);
}

// Compare-and-swap: every thread tries once to claim word[0] (0 -> i + 1) and uword[0]
// (0xffffffff -> i); word[1] is compared with a value it never holds; CAS loops build a float
// maximum (on the bits, as __float_as_int gives them) and the Programming Guide's double
// atomicAdd on unsigned long long.
extern "C" __global__ void atomics_cas(const float* f, const double* d, int* claim_old,
                                       unsigned* uclaim_old, int* word, unsigned* uword,
                                       int* fmax_bits, unsigned long long* dsum_bits) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  claim_old[i] = atomicCAS(&word[0], 0, i + 1);
  atomicCAS(&word[1], -12345, i);  // never equal: word[1] keeps its value
  uclaim_old[i] = atomicCAS(&uword[0], 0xffffffffu, (unsigned)i);
  int old = fmax_bits[0], assumed;
  do {
    assumed = old;
    if (!(f[i] > __int_as_float(assumed))) break;
    old = atomicCAS(fmax_bits, assumed, __float_as_int(f[i]));
  } while (old != assumed);
  unsigned long long dold = *dsum_bits, dassumed;
  do {
    dassumed = dold;
    const double sum = d[i] + __longlong_as_double((long long)dassumed);
    dold = atomicCAS(dsum_bits, dassumed, (unsigned long long)__double_as_longlong(sum));
  } while (dold != dassumed);
}

// 64-bit and floating-point atomics, and atomicExch's returned values.
extern "C" __global__ void atomics_wide(const long long* v, long long* llcnt,
                                        unsigned long long* ullcnt, float* fsum, double* dsum,
                                        int* exch_old, float* fexch_old, int* exch_word,
                                        float* fexch_word) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const long long x = v[i];
  atomicMax(&llcnt[0], x);
  atomicMin(&llcnt[1], x);
  atomicMax(&ullcnt[0], (unsigned long long)x);
  atomicMin(&ullcnt[1], (unsigned long long)x);
  atomicAdd(&ullcnt[2], (unsigned long long)x);
  atomicAnd(&ullcnt[3], ~(1ull << (i % 64)));
  atomicOr(&ullcnt[4], 1ull << (i % 64));
  atomicXor(&ullcnt[5], (unsigned long long)x);
  atomicAdd(&fsum[0], 1.0f);
  atomicAdd(&fsum[1], 0.25f);
  atomicAdd(&dsum[0], 0.5);
  atomicAdd(&dsum[1], (double)x);
  exch_old[i] = atomicExch(exch_word, i);
  fexch_old[i] = atomicExch(fexch_word, (float)i + 0.5f);
}

// ------------------------------------------------------------------------ integer intrinsics
extern "C" __global__ void int_intrinsics(const unsigned* x, const unsigned long long* y, int n,
                                          int* popc, int* clz, int* ffs, int* popcll) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  popc[i] = __popc(x[i]);
  clz[i] = __clz((int)x[i]);
  ffs[i] = __ffs((int)x[i]);
  popcll[i] = __popcll(y[i]);
}

// ------------------------------------------------------------------------ type casts
extern "C" __global__ void bit_casts(const float* f, const int* k, const unsigned* u,
                                     const double* d, const long long* l, int n, int* f_as_int,
                                     unsigned* f_as_uint, float* int_as_f, float* uint_as_f,
                                     long long* d_as_ll, double* ll_as_d) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  f_as_int[i] = __float_as_int(f[i]);
  f_as_uint[i] = __float_as_uint(__ldg(&f[i]));
  int_as_f[i] = __int_as_float(k[i]);
  uint_as_f[i] = __uint_as_float(u[i]);
  d_as_ll[i] = __double_as_longlong(d[i]);
  ll_as_d[i] = __longlong_as_double(__ldg(&l[i]));
}

// ------------------------------------------------------------------------ math
extern "C" __global__ void float_math(const float* a, const float* b, int n, float* mx, float* mn,
                                      float* sat, float* rsq) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  mx[i] = max(a[i], b[i]);
  mn[i] = min(a[i], b[i]);
  sat[i] = __saturatef(a[i]);
  rsq[i] = rsqrtf(a[i]);
}

extern "C" __global__ void double_math(const double* a, const float* b, int n, double* mx,
                                       double* mn, double* mx_fd, double* mn_df, double* rsq) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  mx[i] = max(a[i], (double)b[i]);
  mn[i] = min(a[i], (double)b[i]);
  mx_fd[i] = max(b[i], a[i]);  // float, double: the float widened to double
  mn_df[i] = min(a[i], b[i]);  // double, float
  rsq[i] = rsqrt(a[i]);
}

// max/min of mixed integer types (usual arithmetic conversions) and of an int with a float.
extern "C" __global__ void mixed_minmax(const int* a, const unsigned* b, const long long* c,
                                        const float* f, int n, unsigned* max_iu, unsigned* min_ui,
                                        int* max_ii, long long* min_ll, float* max_if,
                                        float* min_fi) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  max_iu[i] = max(a[i], b[i]);
  min_ui[i] = min(b[i], a[i]);
  max_ii[i] = max(a[i], (int)b[i]);
  min_ll[i] = min(c[i], (long long)a[i]);
  max_if[i] = max(a[i], f[i]);
  min_fi[i] = min(f[i], a[i]);
}

// A device-side assert whose condition holds: the launch succeeds.
extern "C" __global__ void passing_assert(const int* x, int* y) {
  assert(x[threadIdx.x] >= 0);
  y[threadIdx.x] = x[threadIdx.x];
}

// ------------------------------------------------------------------------ warp functions
// out[0..4) x nthreads: __shfl_up_sync, __shfl_down_sync (by delta), __shfl_xor_sync (lane_mask),
// __shfl_sync (src), each over segments of `width` lanes, full mask.
template <typename T>
__global__ void shfl_modes(const T* x, T* out, unsigned delta, int lane_mask, int src,
                           int width) {
  const int n = blockDim.x, t = threadIdx.x;
  const T v = x[t];
  out[t] = __shfl_up_sync(0xffffffffu, v, delta, width);
  out[n + t] = __shfl_down_sync(0xffffffffu, v, delta, width);
  out[2 * n + t] = __shfl_xor_sync(0xffffffffu, v, lane_mask, width);
  out[3 * n + t] = __shfl_sync(0xffffffffu, v, src, width);
}

// Lanes in `mask` vote with that mask, the other lanes with its complement (a second, disjoint
// group): out[0..3) x nthreads = ballot, any, all of pred.
extern "C" __global__ void votes(const int* pred, unsigned mask, unsigned* ballot, int* any,
                                 int* all) {
  const int t = threadIdx.x;
  const unsigned m = (mask >> (t % 32) & 1u) ? mask : ~mask;
  ballot[t] = __ballot_sync(m, pred[t]);
  any[t] = __any_sync(m, pred[t]);
  all[t] = __all_sync(m, pred[t]);
}

// Lanes 0-15 first shuffle among themselves (mask 0xffff), then the whole warp swaps halves:
// out[t] = the value lane t ^ 16 holds after the first step.
extern "C" __global__ void mask_then_full(const int* x, int* out) {
  const int t = threadIdx.x;
  int v = x[t];
  if (t % 32 < 16) v += __shfl_xor_sync(0x0000ffffu, v, 1);
  out[t] = __shfl_xor_sync(0xffffffffu, v, 16);
}

// Threads at or past n exit first; the others vote and shuffle with the full mask, which names
// the exited lanes (CUDA: only non-exited threads named in the mask must take part).
// out[0..3) x n: ballot of pred, __all_sync(pred), broadcast of lane 0's x.
extern "C" __global__ void after_exit(const int* pred, const int* x, int n, unsigned* ballot,
                                      int* all, int* bcast) {
  const int t = threadIdx.x;
  if (t >= n) return;
  ballot[t] = __ballot_sync(0xffffffffu, pred[t]);
  all[t] = __all_sync(0xffffffffu, pred[t]);
  bcast[t] = __shfl_sync(0xffffffffu, x[t], 0);
}

// The two halves of the warp call __shfl_sync with masks that overlap (lanes 15 and 16 are in
// both) but differ: undefined in CUDA (a hang on a GPU); the emulation reports a deadlock.
extern "C" __global__ void mismatched_masks(int* out) {
  const int t = threadIdx.x;
  const unsigned mask = t < 16 ? 0x0001ffffu : 0xffff8000u;
  out[t] = __shfl_sync(mask, t, 0);
}

// Each lane stores its value in shared memory, __syncwarp(), then reads lane (31 - lane)'s store.
extern "C" __global__ void syncwarp_exchange(const int* x, int* y) {
  __shared__ int s[64];
  const int t = threadIdx.x;
  s[t] = x[t];
  __syncwarp();
  y[t] = s[t ^ 31];
}

// Lane 0 calls __shfl_sync with a mask that leaves out lane 0 itself.
extern "C" __global__ void mask_without_caller(int* out) {
  const int t = threadIdx.x;
  out[t] = __shfl_sync(t == 0 ? 0xfffffffeu : 0xffffffffu, t, 1);
}

// Every lane first takes part in a shuffle; lanes at or past n then exit, and the others read
// lane n (exited) and, through a 16-lane mask, lane 20 (outside the collective): undefined values.
// out[0..2) x 32.
extern "C" __global__ void read_absent_lanes(const int* x, int n, int* out) {
  const int t = threadIdx.x;
  const int v = __shfl_sync(0xffffffffu, x[t], t);
  if (t >= n) return;
  out[t] = __shfl_sync(0xffffffffu, v, n);
  if (t < 16) out[32 + t] = __shfl_sync(0x0000ffffu, v, 20);
}

// The fast-math intrinsics: out[0..4) x n = __fdividef(a, b), __expf(a), __logf(a), __powf(a, b).
extern "C" __global__ void fast_math(const float* a, const float* b, int n, float* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = __fdividef(a[i], b[i]);
  out[n + i] = __expf(a[i]);
  out[2 * n + i] = __logf(a[i]);
  out[3 * n + i] = __powf(a[i], b[i]);
}
