// BatchNorm2d over NCHW (statistics per channel over N, H, W), float and double.
//
// The training kernels but the per-channel combines share one layout: grid = (ceil(HW /
// BLOCK_1D), C, slices), block = BLOCK_1D. Block (bx, c, k) takes channel c, pixels bx*BLOCK_1D +
// [0, BLOCK_1D) of each plane and images n = k, k + slices, ...: a thread keeps one pixel of one
// channel, so it needs no division and its offsets step by a constant. The reductions run in
// three launches: per-block partial sums (slices = ceil(N / BN_ITEMS), so a thread holds at most
// BN_ITEMS values), a one-block-per-channel combine, then an elementwise pass. Every sum uses
// block_reduce's fixed tree or a fixed loop: deterministic, no atomics. Index arithmetic is 32-bit
// when the tensor has fewer than 2^31 elements (DISPATCH_INDEX_TYPE).
#include "common.cuh"

// Images per thread in a partial-sum block; the launcher's _BN_ITEMS equals it.
#define BN_ITEMS 16

// A thread of the training kernels (layout above): its channel, its pixel, and the offset of
// x[n, c, pix] in (N, C, HW).
template <typename I> struct ChannelPixel {
    I c, pix, C, HW;
    bool valid;  // false past the end of the plane
    __device__ ChannelPixel(I channels, I plane_size)
        : c(blockIdx.y), pix((I)blockIdx.x * BLOCK_1D + threadIdx.x), C(channels), HW(plane_size),
          valid(pix < plane_size) {}
    __device__ I offset(I n) const { return n * image() + in_image(); }
    __device__ I image() const { return C * HW; }        // the stride of n
    __device__ I in_image() const { return c * HW + pix; }  // the offset within an image
};

// Partial sums are stored per channel, P = gridDim.x * gridDim.z of them: this block's index.
__device__ inline i64 partial_index() {
    return ((i64)blockIdx.y * gridDim.z + blockIdx.z) * gridDim.x + blockIdx.x;
}

// This block's count, sum and M2 (the sum of squared deviations from the block's own mean: two
// passes over values held in registers) into part[0], part[1], part[2] of shape (3, C, P).
template <typename T, typename I>
__device__ void partial_stats_body(const T* x, T* part, T* smem, I N, I C, I HW) {
    const ChannelPixel<I> at(C, HW);
    T v[BN_ITEMS];
    T sum = T(0);
    int mine = 0;  // values this thread holds
#pragma unroll
    for (int e = 0; e < BN_ITEMS; ++e) {
        const I n = blockIdx.z + (I)e * gridDim.z;
        const bool ok = at.valid && n < N;
        v[e] = ok ? x[at.offset(n)] : T(0);
        sum += v[e];
        mine += ok;
    }
    const T count = block_reduce((T)mine, smem, SumOp());  // >= 1: no empty block is launched
    const T block_sum = block_reduce(sum, smem, SumOp());
    const T mean = block_sum / count;
    T sq = T(0);
#pragma unroll
    for (int e = 0; e < BN_ITEMS; ++e) {
        const T d = e < mine ? v[e] - mean : T(0);
        sq += d * d;
    }
    const T m2 = block_reduce(sq, smem, SumOp());
    if (threadIdx.x == 0) {
        const i64 p = partial_index(), stride = (i64)C * gridDim.x * gridDim.z;
        part[p] = count;
        part[stride + p] = block_sum;
        part[2 * stride + p] = m2;
    }
}

// Training forward, pass 1 of 3. x: (N, C, H, W) -> part: (3, C, P) counts, sums and M2s.
// Grid as in the header with slices = ceil(N / BN_ITEMS), block = BLOCK_1D.
template <typename T>
__global__ void batch_norm2d_partial_stats(const T* x, T* part, i64 N, i64 C, i64 HW) {
    __shared__ T smem[BLOCK_1D];
    DISPATCH_INDEX_TYPE(fits_index32(N * C * HW), partial_stats_body, x, part, smem, N, C, HW);
}

// Training forward, pass 2 of 3: mean = (sum of the sums) / m and the biased variance
// (sum of M2_p + count_p * (mean_p - mean)^2) / m, a sum of non-negative terms (no cancellation),
// m = N*HW; invstd = 1 / sqrt(var + eps). part: (3, C, P) -> mean, invstd: (C,). With
// update_running, also running = keep * running + momentum * batch (keep = 1 - momentum) for the
// mean and for the unbiased variance (var * unbias, unbias = m / (m - 1)), in place: what would
// otherwise be a dozen elementwise launches a layer. grid = (C,), block = BLOCK_1D: one block per
// channel.
template <typename T>
__global__ void batch_norm2d_stats(const T* part, T* mean, T* invstd, i64 C, i64 P, i64 m, T eps,
                                   T* running_mean, T* running_var, T keep, T momentum,
                                   T unbias, int update_running) {
    __shared__ T smem[BLOCK_1D];
    const i64 c = blockIdx.x;
    const T *counts = part + c * P, *sums = part + (C + c) * P, *m2s = part + (2 * C + c) * P;
    T sum = T(0);
    for (i64 p = threadIdx.x; p < P; p += BLOCK_1D) sum += sums[p];
    const T mu = block_reduce(sum, smem, SumOp()) / (T)m;
    T sq = T(0);
    for (i64 p = threadIdx.x; p < P; p += BLOCK_1D) {
        const T d = sums[p] / counts[p] - mu;
        sq += m2s[p] + counts[p] * d * d;
    }
    const T var = block_reduce(sq, smem, SumOp()) / (T)m;
    if (threadIdx.x == 0) {
        mean[c] = mu;
        invstd[c] = T(1) / dev_sqrt(var + eps);
        if (update_running) {  // as the NumPy backend
            running_mean[c] = keep * running_mean[c] + momentum * mu;
            running_var[c] = keep * running_var[c] + momentum * (var * unbias);
        }
    }
}

template <typename T, typename I>
__device__ void normalize_body(const T* x, const T* gamma, const T* beta, const T* mean,
                               const T* invstd, T* y, I N, I C, I HW) {
    const ChannelPixel<I> at(C, HW);
    if (!at.valid) return;
    const T mu = mean[at.c], scale = gamma[at.c] * invstd[at.c], shift = beta[at.c];
    for_batches(N, (I)blockIdx.z, (I)gridDim.z, [&](const Batch<I>& b) {
        T v[loads_at_once<I>()];
        b.load(x, at.image(), at.in_image(), T(0), v);
#pragma unroll
        for (int u = 0; u < loads_at_once<I>(); ++u) v[u] = (v[u] - mu) * scale + shift;
        b.store(y, at.image(), at.in_image(), v);
    });
}

// Training forward, pass 3 of 3: y = (x - mean) * (gamma * invstd) + beta, per channel.
// x, y: (N, C, H, W); gamma, beta, mean, invstd: (C,). Grid as in the header, block = BLOCK_1D.
template <typename T>
__global__ void batch_norm2d_normalize(const T* x, const T* gamma, const T* beta, const T* mean,
                                       const T* invstd, T* y, i64 N, i64 C, i64 HW) {
    DISPATCH_INDEX_TYPE(fits_index32(N * C * HW), normalize_body, x, gamma, beta, mean, invstd, y,
                        N, C, HW);
}

// Eval forward with running statistics: y = x * scale[c] + shift[c] with scale = gamma / sqrt(var
// + eps) and shift = beta - mean * scale (recomputed per element: cheap, no extra launch).
// 1-D grid-stride over n = N*C*HW, block = BLOCK_1D.
template <typename T>
__global__ void batch_norm2d_forward_eval(const T* x, const T* gamma, const T* beta,
                                          const T* running_mean, const T* running_var, T* y, i64 n,
                                          i64 C, i64 HW, T eps) {
    for (i64 i = global_thread_index(); i < n; i += grid_stride()) {
        const i64 c = i / HW % C;
        const T scale = gamma[c] * (T(1) / dev_sqrt(running_var[c] + eps));
        y[i] = x[i] * scale + (beta[c] - running_mean[c] * scale);
    }
}

// This block's sums of gy and of gy * xhat, xhat = (x - mean[c]) * invstd[c], into part[0] and
// part[1] of shape (2, C, P).
template <typename T, typename I>
__device__ void partial_grad_sums_body(const T* gy, const T* x, const T* mean, const T* invstd,
                                       T* part, T* smem, I N, I C, I HW) {
    const ChannelPixel<I> at(C, HW);
    const T mu = mean[at.c], inv = invstd[at.c];
    T sum_gy = T(0), sum_gy_xhat = T(0);
#pragma unroll
    for (int e = 0; e < BN_ITEMS; ++e) {
        const I n = blockIdx.z + (I)e * gridDim.z;
        if (at.valid && n < N) {
            const I o = at.offset(n);
            sum_gy += gy[o];
            sum_gy_xhat += gy[o] * ((x[o] - mu) * inv);
        }
    }
    const T gb = block_reduce(sum_gy, smem, SumOp());
    const T gg = block_reduce(sum_gy_xhat, smem, SumOp());
    if (threadIdx.x == 0) {
        const i64 p = partial_index();
        part[p] = gb;
        part[(i64)C * gridDim.x * gridDim.z + p] = gg;
    }
}

// Training backward, pass 1 of 3. gy, x: (N, C, H, W) -> part: (2, C, P).
// Grid as in the header with slices = ceil(N / BN_ITEMS), block = BLOCK_1D.
template <typename T>
__global__ void batch_norm2d_partial_grad_sums(const T* gy, const T* x, const T* mean,
                                               const T* invstd, T* part, i64 N, i64 C, i64 HW) {
    __shared__ T smem[BLOCK_1D];
    DISPATCH_INDEX_TYPE(fits_index32(N * C * HW), partial_grad_sums_body, gy, x, mean, invstd,
                        part, smem, N, C, HW);
}

// Training backward, pass 2 of 3: gbeta = sum of gy, ggamma = sum of gy * xhat, each the sum of
// the channel's P partial sums. part: (2, C, P) -> ggamma, gbeta: (C,).
// grid = (C,), block = BLOCK_1D: one block per channel.
template <typename T>
__global__ void batch_norm2d_grad_sums(const T* part, T* ggamma, T* gbeta, i64 C, i64 P) {
    __shared__ T smem[BLOCK_1D];
    const i64 c = blockIdx.x;
    T sum_gy = T(0), sum_gy_xhat = T(0);
    for (i64 p = threadIdx.x; p < P; p += BLOCK_1D) {
        sum_gy += part[c * P + p];
        sum_gy_xhat += part[(C + c) * P + p];
    }
    const T gb = block_reduce(sum_gy, smem, SumOp());
    const T gg = block_reduce(sum_gy_xhat, smem, SumOp());
    if (threadIdx.x == 0) {
        ggamma[c] = gg;
        gbeta[c] = gb;
    }
}

template <typename T, typename I>
__device__ void backward_body(const T* gy, const T* x, const T* gamma, const T* mean,
                              const T* invstd, const T* ggamma, const T* gbeta, T* gx, I N, I C,
                              I HW) {
    const ChannelPixel<I> at(C, HW);
    if (!at.valid) return;
    const T m = (T)(N * HW), mu = mean[at.c], inv = invstd[at.c], gb = gbeta[at.c];
    const T k = gamma[at.c] * inv / m, gg = ggamma[at.c];
    for_batches(N, (I)blockIdx.z, (I)gridDim.z, [&](const Batch<I>& b) {
        T g[loads_at_once<I>()], v[loads_at_once<I>()];
        b.load(gy, at.image(), at.in_image(), T(0), g);
        b.load(x, at.image(), at.in_image(), T(0), v);
#pragma unroll
        for (int u = 0; u < loads_at_once<I>(); ++u)
            v[u] = k * (m * g[u] - gb - (v[u] - mu) * inv * gg);
        b.store(gx, at.image(), at.in_image(), v);
    });
}

// Training backward, pass 3 of 3: gx = gamma * invstd / m * (m * gy - gbeta - xhat * ggamma),
// xhat = (x - mean) * invstd, m = N*HW. gy, x, gx: (N, C, H, W); the rest (C,).
// Grid as in the header, block = BLOCK_1D.
template <typename T>
__global__ void batch_norm2d_backward(const T* gy, const T* x, const T* gamma, const T* mean,
                                      const T* invstd, const T* ggamma, const T* gbeta, T* gx,
                                      i64 N, i64 C, i64 HW) {
    DISPATCH_INDEX_TYPE(fits_index32(N * C * HW), backward_body, gy, x, gamma, mean, invstd,
                        ggamma, gbeta, gx, N, C, HW);
}

#define INSTANTIATE_BATCHNORM(T)                                                                   \
    template __global__ void batch_norm2d_partial_stats<T>(const T*, T*, i64, i64, i64);           \
    template __global__ void batch_norm2d_stats<T>(const T*, T*, T*, i64, i64, i64, T, T*, T*, T,  \
                                                   T, T, int);                                     \
    template __global__ void batch_norm2d_normalize<T>(const T*, const T*, const T*, const T*,     \
                                                       const T*, T*, i64, i64, i64);               \
    template __global__ void batch_norm2d_forward_eval<T>(const T*, const T*, const T*, const T*,  \
                                                          const T*, T*, i64, i64, i64, T);         \
    template __global__ void batch_norm2d_partial_grad_sums<T>(const T*, const T*, const T*,       \
                                                               const T*, T*, i64, i64, i64);       \
    template __global__ void batch_norm2d_grad_sums<T>(const T*, T*, T*, i64, i64);                \
    template __global__ void batch_norm2d_backward<T>(const T*, const T*, const T*, const T*,      \
                                                      const T*, const T*, const T*, T*, i64, i64,  \
                                                      i64);
INSTANTIATE_FOR_FLOAT_TYPES(INSTANTIATE_BATCHNORM)
