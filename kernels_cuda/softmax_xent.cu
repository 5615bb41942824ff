// Fused, numerically stable softmax cross-entropy over a batch, float and double, with optional
// label smoothing e: the target is (1 - e) * onehot(label) + e / K, as in PyTorch.
// logits, probs, grad: (N, K); labels: (N,) int64, checked to lie in [0, K) by the launcher.
#include "common.cuh"

// A row's loss from its maximum `top`, sum of exp(logit - top) and sum of (logit - top):
// log(sum) - (1 - e) * shifted[label] - e * mean(shifted) (the last term only when e != 0, so a
// -inf logit does not turn an unsmoothed loss into NaN); NaN for a label outside [0, K) (possible
// only when the caller skipped the launcher's range check) instead of a stray read.
template <typename T>
__device__ T row_loss_of(const T* row, i64 label, i64 K, T top, T sum, T shifted_sum, T smoothing) {
    if (label < 0 || label >= K) return quiet_nan(T());
    T loss = dev_log(sum) - (T(1) - smoothing) * (row[label] - top);
    if (smoothing != T(0)) loss -= smoothing * shifted_sum / (T)K;
    return loss;
}

// d(mean loss)/d(logit) of class j: (prob - target) / N, target = (1 - e) * onehot + e / K.
template <typename T> __device__ T logit_gradient(T prob, bool hit, T smoothing, i64 K, i64 N) {
    return (prob - (hit ? T(1) - smoothing : T(0)) - smoothing / (T)K) / (T)N;
}

// Per row i: shifted = logits - max, probs = exp(shifted) / sum, row_loss[i] = row_loss_of(...).
// grid = (N,), block = BLOCK_1D: one block per row, fixed-order tree reductions.
template <typename T>
__global__ void softmax_cross_entropy_forward(const T* logits, const i64* labels, T* probs,
                                              T* row_loss, i64 K, T smoothing) {
    __shared__ T smem[BLOCK_1D];
    const T* row = logits + (i64)blockIdx.x * K;
    T* out = probs + (i64)blockIdx.x * K;
    T top = neg_infinity(T());
    for (i64 j = threadIdx.x; j < K; j += BLOCK_1D) top = MaxOp()(top, row[j]);
    top = block_reduce(top, smem, MaxOp());
    T total = T(0), shifted_sum = T(0);
    for (i64 j = threadIdx.x; j < K; j += BLOCK_1D) {
        total += dev_exp(row[j] - top);
        shifted_sum += row[j] - top;
    }
    total = block_reduce(total, smem, SumOp());
    if (smoothing != T(0)) shifted_sum = block_reduce(shifted_sum, smem, SumOp());
    for (i64 j = threadIdx.x; j < K; j += BLOCK_1D) out[j] = dev_exp(row[j] - top) / total;
    if (threadIdx.x == 0)
        row_loss[blockIdx.x] =
            row_loss_of(row, labels[blockIdx.x], K, top, total, shifted_sum, smoothing);
}

// loss[0] = mean of row_loss (N,). grid = (1,), block = BLOCK_1D.
template <typename T> __global__ void mean_of_rows(const T* row_loss, T* loss, i64 N) {
    __shared__ T smem[BLOCK_1D];
    T total = T(0);
    for (i64 i = threadIdx.x; i < N; i += BLOCK_1D) total += row_loss[i];
    total = block_reduce(total, smem, SumOp());
    if (threadIdx.x == 0) loss[0] = total / (T)N;
}

// grad = (probs - target) / N with target = (1 - e) * onehot(labels) + e / K, elementwise.
// 1-D grid-stride over N*K, block = BLOCK_1D.
template <typename T>
__global__ void softmax_cross_entropy_backward(const T* probs, const i64* labels, T* grad, i64 N,
                                               i64 K, T smoothing) {
    for (i64 i = global_thread_index(); i < N * K; i += grid_stride())
        grad[i] = logit_gradient(probs[i], labels[i / K] == i % K, smoothing, K, N);
}

// A training step's loss in one launch: loss[0] = the mean row loss and grad = (probs - target)
// / N, what softmax_cross_entropy_forward, mean_of_rows and softmax_cross_entropy_backward give in
// three. One block: warp w takes rows w, w + 8, ...; a row's maximum and sums are xor-shuffle
// trees over its lanes (lane j holds columns j, j + 32, ...), and lane 0 adds its rows' losses in
// row order, then thread 0 the warps' in warp order: a fixed order, no atomics. One block is
// quick only for a few rows (the launcher uses it up to 128; each warp then walks 16).
// grid = (1,), block = BLOCK_1D.
template <typename T>
__global__ void softmax_cross_entropy_train(const T* logits, const i64* labels, T* grad, T* loss,
                                            i64 N, i64 K, T smoothing) {
    constexpr int WARPS = BLOCK_1D / 32;
    __shared__ T warp_loss[WARPS];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    T total = T(0);
    for (i64 r = warp; r < N; r += WARPS) {
        const T* row = logits + r * K;
        T top = neg_infinity(T());
        for (i64 j = lane; j < K; j += 32) top = MaxOp()(top, row[j]);
        top = warp_all_reduce(top, MaxOp());
        T sum = T(0), shifted_sum = T(0);
        for (i64 j = lane; j < K; j += 32) {
            sum += dev_exp(row[j] - top);
            shifted_sum += row[j] - top;
        }
        sum = warp_all_reduce(sum, SumOp());
        if (smoothing != T(0)) shifted_sum = warp_all_reduce(shifted_sum, SumOp());
        const i64 label = labels[r];
        for (i64 j = lane; j < K; j += 32) {
            const T prob = dev_exp(row[j] - top) / sum;
            grad[r * K + j] = logit_gradient(prob, label == j, smoothing, K, N);
        }
        if (lane == 0) total += row_loss_of(row, label, K, top, sum, shifted_sum, smoothing);
    }
    if (lane == 0) warp_loss[warp] = total;
    __syncthreads();
    if (threadIdx.x == 0) {
        T sum = T(0);
        for (int w = 0; w < WARPS; ++w) sum += warp_loss[w];
        loss[0] = sum / (T)N;
    }
}

#define INSTANTIATE_SOFTMAX_XENT(T)                                                                \
    template __global__ void softmax_cross_entropy_forward<T>(const T*, const i64*, T*, T*, i64,   \
                                                              T);                                  \
    template __global__ void mean_of_rows<T>(const T*, T*, i64);                                   \
    template __global__ void softmax_cross_entropy_backward<T>(const T*, const i64*, T*, i64, i64, \
                                                               T);                                 \
    template __global__ void softmax_cross_entropy_train<T>(const T*, const i64*, T*, T*, i64,     \
                                                            i64, T);
INSTANTIATE_FOR_FLOAT_TYPES(INSTANTIATE_SOFTMAX_XENT)
