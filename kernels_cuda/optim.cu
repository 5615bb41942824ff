// Optimizer steps, one launch per parameter, in place, float and double, PyTorch's rules (as
// Backend.sgd_update / adam_update in gpucnn/backend/base.py). Every scalar that the NumPy code
// derives in double precision (bias corrections, step sizes) is derived on the host and passed
// in T, so both devices round it the same way. 1-D grid-stride over n, block = BLOCK_1D.
#include "common.cuh"

// d = g + weight_decay * p; with momentum: v = d on the first step, else v = momentum * v + d, and
// d = d + momentum * v (nesterov) or v; then p -= lr * d. velocity is unused when !use_momentum.
template <typename T>
__global__ void sgd_update(T* p, const T* g, T* velocity, i64 n, T lr, T momentum, T weight_decay,
                           int use_momentum, int nesterov, int first_step) {
    for (i64 i = global_thread_index(); i < n; i += grid_stride()) {
        T d = weight_decay != T(0) ? g[i] + weight_decay * p[i] : g[i];
        if (use_momentum) {
            const T v = first_step ? d : velocity[i] * momentum + d;
            velocity[i] = v;
            d = nesterov ? d + momentum * v : v;
        }
        p[i] -= lr * d;
    }
}

// Adam (coupled weight decay: g += weight_decay * p) or AdamW (decoupled: p *= decay, with
// decay = 1 - lr * weight_decay and weight_decay passed as 0). m = beta1 m + (1 - beta1) g,
// v = beta2 v + (1 - beta2) g^2, p -= step_size * m / (sqrt(v) / bias2_sqrt + eps) with
// step_size = lr / (1 - beta1^t) and bias2_sqrt = sqrt(1 - beta2^t).
template <typename T>
__global__ void adam_update(T* p, const T* g, T* m, T* v, i64 n, T beta1, T one_minus_beta1,
                            T beta2, T one_minus_beta2, T eps, T weight_decay, T decay,
                            T step_size, T bias2_sqrt) {
    for (i64 i = global_thread_index(); i < n; i += grid_stride()) {
        const T pi = p[i] * decay;
        const T gi = weight_decay != T(0) ? g[i] + weight_decay * pi : g[i];
        const T mi = m[i] * beta1 + one_minus_beta1 * gi;
        const T vi = v[i] * beta2 + one_minus_beta2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / (dev_sqrt(vi) / bias2_sqrt + eps));
    }
}

#define INSTANTIATE_OPTIM(T)                                                                       \
    template __global__ void sgd_update<T>(T*, const T*, T*, i64, T, T, T, int, int, int);         \
    template __global__ void adam_update<T>(T*, const T*, T*, T*, i64, T, T, T, T, T, T, T, T, T);
INSTANTIATE_OPTIM(float)
INSTANTIATE_OPTIM(double)
