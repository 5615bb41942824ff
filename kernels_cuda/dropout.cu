// Inverted dropout with a counter-based RNG, float and double. The hash is the splitmix64
// finaliser of (flat index + 1) * golden + seed, exactly Backend.dropout_mask in
// gpucnn/backend/base.py, so the CPU and the GPU draw the same mask from the same seed.
//
// A layer's mask changes every training step: the seed of call c is seed + c * golden (mod 2^64),
// with c read from the device counter `calls` rather than passed by value, so a captured CUDA graph
// draws a fresh mask on each replay (nn.Dropout increments the counter on the device).
#include "common.cuh"

typedef unsigned long long u64;

#define GOLDEN 0x9E3779B97F4A7C15ull

// The seed of the current call: seed + calls[0] * golden, wrapping as unsigned 64-bit arithmetic.
__device__ inline u64 call_seed(u64 seed, const u64* calls) { return seed + calls[0] * GOLDEN; }

// Uniform in [0, 1) with 24 bits for element i (0-based) under `seed`; exact in double.
__device__ inline double dropout_uniform(u64 seed, i64 i) {
    u64 z = (u64)(i + 1) * GOLDEN + seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    return (double)(z >> 40) * (1.0 / 16777216.0);
}

// mask[i] = scale if u(seed, i) >= p else 0, with scale = (T)(1 / (1 - p)) computed on the host.
// 1-D grid-stride over n, block = BLOCK_1D.
template <typename T>
__global__ void dropout_mask(T* mask, i64 n, u64 seed, const u64* calls, double p, T scale) {
    seed = call_seed(seed, calls);
    for (i64 i = global_thread_index(); i < n; i += grid_stride())
        mask[i] = dropout_uniform(seed, i) >= p ? scale : T(0);
}

// y = x * mask and the mask itself, in one pass. 1-D grid-stride over n, block = BLOCK_1D.
template <typename T>
__global__ void dropout_forward(const T* x, T* y, T* mask, i64 n, u64 seed, const u64* calls,
                                double p, T scale) {
    seed = call_seed(seed, calls);
    for (i64 i = global_thread_index(); i < n; i += grid_stride()) {
        const T m = dropout_uniform(seed, i) >= p ? scale : T(0);
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

#define INSTANTIATE_DROPOUT(T)                                                                     \
    template __global__ void dropout_mask<T>(T*, i64, u64, const u64*, double, T);                 \
    template __global__ void dropout_forward<T>(const T*, T*, T*, i64, u64, const u64*, double, T);
INSTANTIATE_FOR_FLOAT_TYPES(INSTANTIATE_DROPOUT)
