// Helpers shared by every kernel family. The loader (gpucnn/backend/kernels.py) pastes this file in
// place of `#include "common.cuh"`, so CuPy's compile cache key covers it; nvcc finds it with
// `-I kernels_cuda`. Only CUDA C basics are used here (no headers, no intrinsics), so the same text
// builds under NVRTC, nvcc and the CPU emulation runner.
#ifndef GPUCNN_COMMON_CUH
#define GPUCNN_COMMON_CUH

// Every size and index is 64-bit: N*C*H*W passes 2^31 on large batches.
typedef long long i64;

// Block size of every 1-D kernel; block_reduce below relies on it being a power of two.
#define BLOCK_1D 256

// First flat index of this thread and the stride of a grid-stride loop over [0, n).
__device__ inline i64 global_thread_index() {
    return (i64)blockIdx.x * (i64)blockDim.x + (i64)threadIdx.x;
}
__device__ inline i64 grid_stride() { return (i64)blockDim.x * (i64)gridDim.x; }

// True when 0 <= n < 2^31: indices below n may then be computed in 32-bit unsigned ints (a 64-bit
// division is a ~70-instruction subroutine on a GPU, a 32-bit one about 10 instructions).
__device__ inline bool fits_index32(i64 n) { return n >= 0 && n < 2147483648LL; }

// In a kernel templated on T: calls body<T, unsigned>(...) when `fits` (every index of the
// launch passes fits_index32), else body<T, i64>(...). Both paths are compiled; the branch is
// launch-uniform.
#define DISPATCH_INDEX_TYPE(fits, body, ...)                                                       \
    do {                                                                                           \
        if (fits)                                                                                  \
            body<T, unsigned>(__VA_ARGS__);                                                        \
        else                                                                                       \
            body<T, i64>(__VA_ARGS__);                                                             \
    } while (0)

// How many values a thread of the batched loops (pool2d.cu, batchnorm.cu) loads before using any,
// so that those loads are in flight together: 8 on the 32-bit index path (fastest of 1, 2, 4 and
// 8 for pool backward on an H200); 1 on the i64 path (tensors past 2^31 elements), whose extra
// registers would otherwise cut the occupancy of both (a kernel's register count is that of its
// larger path).
template <typename I> __device__ constexpr int loads_at_once() { return sizeof(I) == 4 ? 8 : 1; }

// One batch of a thread's items (pool2d.cu: planes; batchnorm.cu: images), first + u*step for
// u < loads_at_once<I>(), whose loads are issued together; an item at or past `count` is absent
// (neither loaded nor stored). Item i's value of a thread lies at a[i * item_size + at].
template <typename I> struct Batch {
    I first, step, count;
    __device__ bool has(int u) const { return first + u * step < count; }
    // v[u] = a[item u * item_size + at], or `absent` for an absent item.
    template <typename V, int N>
    __device__ void load(const V* a, I item_size, I at, V absent, V (&v)[N]) const {
#pragma unroll
        for (int u = 0; u < N; ++u)
            v[u] = has(u) ? a[(first + u * step) * item_size + at] : absent;
    }
    // a[item u * item_size + at] = v[u] for each item present.
    template <typename T, typename V, int N>
    __device__ void store(T* a, I item_size, I at, const V (&v)[N]) const {
#pragma unroll
        for (int u = 0; u < N; ++u)
            if (has(u)) a[(first + u * step) * item_size + at] = (T)v[u];
    }
};

// Calls batch(b) for each of this thread's batches b of loads_at_once<I>() items `step` apart
// (a grid dimension), from item `first` (the block's index along it) on.
template <typename I, typename Body>
__device__ void for_batches(I count, I first, I step, Body batch) {
    for (; first < count; first += loads_at_once<I>() * step) batch(Batch<I>{first, step, count});
}

// Type-generic math, so templates call one name for float and double (NVRTC has no <cmath>).
__device__ inline float dev_exp(float x) { return expf(x); }
__device__ inline double dev_exp(double x) { return exp(x); }
__device__ inline float dev_log(float x) { return logf(x); }
__device__ inline double dev_log(double x) { return log(x); }
__device__ inline float dev_sqrt(float x) { return sqrtf(x); }
__device__ inline double dev_sqrt(double x) { return sqrt(x); }

// -infinity without the INFINITY macro (absent under NVRTC): an overflowing product is -inf.
__device__ inline float neg_infinity(float) {
    const float big = 3.0e38f;
    return -big * big;
}
__device__ inline double neg_infinity(double) {
    const double big = 1.0e300;
    return -big * big;
}

// A quiet NaN without the NAN macro: -inf minus -inf.
template <typename T> __device__ inline T quiet_nan(T zero) {
    return neg_infinity(zero) - neg_infinity(zero);
}

struct SumOp {
    template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
    template <typename T> __device__ T operator()(T a, T b) const { return b > a ? b : a; }
};

// Reduce v over a block of BLOCK_1D threads with a fixed pairwise tree (deterministic: no atomics,
// the same order on every run). smem holds BLOCK_1D elements. Every thread receives the result; the
// trailing barrier lets the caller reuse smem at once.
template <typename T, typename Op> __device__ T block_reduce(T v, T* smem, Op op) {
    const int tid = threadIdx.x;
    smem[tid] = v;
    __syncthreads();
    for (int half = BLOCK_1D / 2; half > 0; half /= 2) {
        if (tid < half) smem[tid] = op(smem[tid], smem[tid + half]);
        __syncthreads();
    }
    const T result = smem[0];
    __syncthreads();
    return result;
}

// Reduce v over the 32 lanes of a warp with a fixed butterfly (xor shuffles): every lane
// receives the result, the same order on every run.
template <typename T, typename Op> __device__ T warp_all_reduce(T v, Op op) {
    for (int mask = 16; mask > 0; mask /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, mask));
    return v;
}

// Each .cu instantiates its kernels for the float types through this, for nvcc (the compile
// check) and the emulation build. NVRTC needs none: CupyRunner (gpucnn/backend/kernels.py) builds
// each kernel and type as a module of its own with GPUCNN_NAMED_ONLY set, and that module's name
// expression instantiates just its kernel. The modules then compile side by side, and a model
// compiles only the kernels it launches.
#if defined(GPUCNN_NAMED_ONLY)
#define INSTANTIATE_FOR_FLOAT_TYPES(M)
#else
#define INSTANTIATE_FOR_FLOAT_TYPES(M) M(float) M(double)
#endif

// 16 bytes of T (4 floats, 2 doubles), aligned so that one load or store instruction moves them.
template <typename T> struct __align__(16) Pack {
    static constexpr int N = 16 / sizeof(T);
    T v[N];
};

__device__ inline bool aligned16(const void* p) { return ((unsigned long long)p & 15) == 0; }

// out[i] = f(a[i], b[i]) for every i < n, in a 1-D grid-stride loop: a Pack at a time when all
// three arrays are 16-byte aligned (CuPy's allocations are; a view at an offset may not be), then
// the last n % Pack<T>::N elements one by one. Elementwise kernels read and write near the copy's
// bandwidth only with wide accesses: one float at a time, ReLU forward ran at 77% of it.
template <typename T, typename F> __device__ void map_elements(const T* a, const T* b, T* out,
                                                              i64 n, F f) {
    typedef Pack<T> P;
    i64 done = 0;
    if (aligned16(a) && aligned16(b) && aligned16(out)) {
        const i64 packs = n / P::N;
        for (i64 i = global_thread_index(); i < packs; i += grid_stride()) {
            const P pa = reinterpret_cast<const P*>(a)[i], pb = reinterpret_cast<const P*>(b)[i];
            P po;
#pragma unroll
            for (int j = 0; j < P::N; ++j) po.v[j] = f(pa.v[j], pb.v[j]);
            reinterpret_cast<P*>(out)[i] = po;
        }
        done = packs * P::N;
    }
    for (i64 i = done + global_thread_index(); i < n; i += grid_stride()) out[i] = f(a[i], b[i]);
}

#endif  // GPUCNN_COMMON_CUH
