// BatchNorm2d over NCHW (statistics per channel over N, H, W), float and double.
// The per-channel kernels run one block per channel (grid = (C,), block = BLOCK_1D) and reduce with
// block_reduce's fixed tree: deterministic, no atomics. m = N*H*W elements per channel; element j
// of channel c lives at x[(j / HW * C + c) * HW + j % HW].
#include "common.cuh"

__device__ inline i64 channel_offset(i64 j, i64 c, i64 C, i64 HW) {
    return (j / HW * C + c) * HW + j % HW;
}

// Training forward: mean, biased variance (two passes), invstd = 1 / sqrt(var + eps), then
// y = (x - mean) * (gamma * invstd) + beta. x, y: (N, C, H, W); gamma, beta, mean, invstd: (C,).
template <typename T>
__global__ void batch_norm2d_forward_train(const T* x, const T* gamma, const T* beta, T* y, T* mean,
                                           T* invstd, i64 N, i64 C, i64 HW, T eps) {
    __shared__ T smem[BLOCK_1D];
    const i64 c = blockIdx.x, m = N * HW;
    T sum = T(0);
    for (i64 j = threadIdx.x; j < m; j += BLOCK_1D) sum += x[channel_offset(j, c, C, HW)];
    const T mu = block_reduce(sum, smem, SumOp()) / (T)m;
    T sq = T(0);
    for (i64 j = threadIdx.x; j < m; j += BLOCK_1D) {
        const T d = x[channel_offset(j, c, C, HW)] - mu;
        sq += d * d;
    }
    const T inv = T(1) / dev_sqrt(block_reduce(sq, smem, SumOp()) / (T)m + eps);
    const T scale = gamma[c] * inv;
    for (i64 j = threadIdx.x; j < m; j += BLOCK_1D) {
        const i64 o = channel_offset(j, c, C, HW);
        y[o] = (x[o] - mu) * scale + beta[c];
    }
    if (threadIdx.x == 0) {
        mean[c] = mu;
        invstd[c] = inv;
    }
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

// Training backward: gbeta = sum gy, ggamma = sum gy * xhat, then
// gx = gamma * invstd / m * (m * gy - gbeta - xhat * ggamma), xhat = (x - mean) * invstd.
template <typename T>
__global__ void batch_norm2d_backward(const T* gy, const T* x, const T* gamma, const T* mean,
                                      const T* invstd, T* gx, T* ggamma, T* gbeta, i64 N, i64 C,
                                      i64 HW) {
    __shared__ T smem[BLOCK_1D];
    const i64 c = blockIdx.x, m = N * HW;
    const T mu = mean[c], inv = invstd[c];
    T sum_gy = T(0), sum_gy_xhat = T(0);
    for (i64 j = threadIdx.x; j < m; j += BLOCK_1D) {
        const i64 o = channel_offset(j, c, C, HW);
        sum_gy += gy[o];
        sum_gy_xhat += gy[o] * ((x[o] - mu) * inv);
    }
    const T gb = block_reduce(sum_gy, smem, SumOp());
    const T gg = block_reduce(sum_gy_xhat, smem, SumOp());
    const T k = gamma[c] * inv / (T)m;
    for (i64 j = threadIdx.x; j < m; j += BLOCK_1D) {
        const i64 o = channel_offset(j, c, C, HW);
        gx[o] = k * ((T)m * gy[o] - gb - (x[o] - mu) * inv * gg);
    }
    if (threadIdx.x == 0) {
        ggamma[c] = gg;
        gbeta[c] = gb;
    }
}

#define INSTANTIATE_BATCHNORM(T)                                                                   \
    template __global__ void batch_norm2d_forward_train<T>(const T*, const T*, const T*, T*, T*,   \
                                                           T*, i64, i64, i64, T);                  \
    template __global__ void batch_norm2d_forward_eval<T>(const T*, const T*, const T*, const T*,  \
                                                          const T*, T*, i64, i64, i64, T);         \
    template __global__ void batch_norm2d_backward<T>(const T*, const T*, const T*, const T*,      \
                                                      const T*, T*, T*, T*, i64, i64, i64);
INSTANTIATE_BATCHNORM(float)
INSTANTIATE_BATCHNORM(double)
