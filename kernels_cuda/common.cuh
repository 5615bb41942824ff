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

#endif  // GPUCNN_COMMON_CUH
