// Optimizer steps, in place, float and double, PyTorch's rules (as Backend.sgd_update /
// adam_update in gpucnn/backend/base.py), for up to 8 parameters a launch: a model's
// whole update is one launch where it used to be one per parameter (each a CUDA-graph node).
//
// Slot i is a parameter's arrays and size, passed as arguments; blockIdx.y picks the slot and a
// 1-D grid-stride loop over blockIdx.x covers its n elements (a slot smaller than the grid leaves
// blocks idle). grid = (blocks for the largest slot, slots in use), block = BLOCK_1D; unused slots
// repeat slot 0 with n = 0 and are never read.
//
// The per-step scalars are read from the optimizer's clock, a device array {step t, lr} in double,
// never passed by value: a captured CUDA graph replays its kernel arguments frozen, while the clock
// advances on the device (gpucnn/optim.py increments t in the step; the schedule writes lr between
// epochs). Scalars derived from the clock are computed in double and rounded to T once, as the
// NumPy code rounds them.
#include "common.cuh"

// The 8 slots (_OPTIM_SLOTS in gpucnn/backend/launchers/optim.py).
#define FOR_SLOTS(M, T) M(T, 0) M(T, 1) M(T, 2) M(T, 3) M(T, 4) M(T, 5) M(T, 6) M(T, 7)
#define SGD_SLOT(T, i) T *p##i, const T *g##i, T *v##i, i64 n##i,
#define SGD_PICK(T, i)                                                                             \
    case i:                                                                                        \
        p = p##i, g = g##i, velocity = v##i, n = n##i;                                             \
        break;
#define ADAM_SLOT(T, i) T *p##i, const T *g##i, T *m##i, T *v##i, i64 n##i,
#define ADAM_PICK(T, i)                                                                            \
    case i:                                                                                        \
        p = p##i, g = g##i, m = m##i, v = v##i, n = n##i;                                          \
        break;

// d = g + weight_decay * p; with momentum: v = d on the first step, else v = momentum * v + d, and
// d = d + momentum * v (nesterov) or v; then p -= lr * d. velocity is unused when !use_momentum.
template <typename T>
__global__ void sgd_update(FOR_SLOTS(SGD_SLOT, T) const double* clock, T momentum, T weight_decay,
                           int use_momentum, int nesterov, int first_step) {
    T *p = nullptr, *velocity = nullptr;
    const T* g = nullptr;
    i64 n = 0;
    switch (blockIdx.y) { FOR_SLOTS(SGD_PICK, T) }
    const T lr = (T)clock[1];
    for (i64 i = global_thread_index(); i < n; i += grid_stride()) {
        T d = weight_decay != T(0) ? g[i] + weight_decay * p[i] : g[i];
        if (use_momentum) {
            const T vi = first_step ? d : velocity[i] * momentum + d;
            velocity[i] = vi;
            d = nesterov ? d + momentum * vi : vi;
        }
        p[i] -= lr * d;
    }
}

// Adam (coupled weight decay: g += weight_decay * p) or AdamW (decoupled: p *= 1 - lr *
// weight_decay). m = beta1 m + (1 - beta1) g, v = beta2 v + (1 - beta2) g^2,
// p -= step_size * m / (sqrt(v) / bias2_sqrt + eps) with step_size = lr / (1 - beta1^t) and
// bias2_sqrt = sqrt(1 - beta2^t), t and lr from the clock.
template <typename T>
__global__ void adam_update(FOR_SLOTS(ADAM_SLOT, T) const double* clock, double beta1, double beta2,
                            T eps, double weight_decay, int decoupled) {
    T *p = nullptr, *m = nullptr, *v = nullptr;
    const T* g = nullptr;
    i64 n = 0;
    switch (blockIdx.y) { FOR_SLOTS(ADAM_PICK, T) }
    const double t = clock[0], lr = clock[1];
    const T step_size = (T)(lr / (1.0 - pow(beta1, t)));
    const T bias2_sqrt = (T)sqrt(1.0 - pow(beta2, t));
    const T decay = decoupled ? (T)(1.0 - lr * weight_decay) : T(1);
    const T coupled = decoupled ? T(0) : (T)weight_decay;
    const T b1 = (T)beta1, one_minus_b1 = (T)(1.0 - beta1);
    const T b2 = (T)beta2, one_minus_b2 = (T)(1.0 - beta2);
    for (i64 i = global_thread_index(); i < n; i += grid_stride()) {
        const T pi = p[i] * decay;
        const T gi = coupled != T(0) ? g[i] + coupled * pi : g[i];
        const T mi = m[i] * b1 + one_minus_b1 * gi;
        const T vi = v[i] * b2 + one_minus_b2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / (dev_sqrt(vi) / bias2_sqrt + eps));
    }
}

#define INSTANTIATE_OPTIM(T)                                                                       \
    template __global__ void sgd_update<T>(FOR_SLOTS(SGD_SLOT, T) const double*, T, T, int, int,   \
                                           int);                                                   \
    template __global__ void adam_update<T>(FOR_SLOTS(ADAM_SLOT, T) const double*, double,         \
                                            double, T, double, int);
INSTANTIATE_FOR_FLOAT_TYPES(INSTANTIATE_OPTIM)
