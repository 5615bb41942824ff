// ReLU forward/backward and the fused bias + ReLU of a convolution's output, float and double.
// All are elementwise: 1-D grid-stride loops over n elements, block = BLOCK_1D.
#include "common.cuh"

// y = max(x, 0). `x < 0 ? 0 : x` keeps NaN, as NumPy's maximum does. 16-byte accesses where
// aligned (map_elements).
template <typename T> __global__ void relu_forward(const T* x, T* y, i64 n) {
    map_elements(x, x, y, n, [](T v, T) { return v < T(0) ? T(0) : v; });
}

// gx = gy * (y > 0), written as the same product as the NumPy backend (so -0.0 and NaN agree).
template <typename T> __global__ void relu_backward(const T* gy, const T* y, T* gx, i64 n) {
    map_elements(gy, y, gx, n, [](T g, T v) { return g * (v > T(0) ? T(1) : T(0)); });
}

// y = max(x + b[c], 0) for x: (N, C, HW) and b: (C,), one pass instead of two.
template <typename T>
__global__ void bias_relu_forward(const T* x, const T* b, T* y, i64 n, i64 C, i64 HW) {
    for (i64 i = global_thread_index(); i < n; i += grid_stride()) {
        const T v = x[i] + b[i / HW % C];
        y[i] = v < T(0) ? T(0) : v;
    }
}

#define INSTANTIATE_ACTIVATION(T)                                                                  \
    template __global__ void relu_forward<T>(const T*, T*, i64);                                   \
    template __global__ void relu_backward<T>(const T*, const T*, T*, i64);                        \
    template __global__ void bias_relu_forward<T>(const T*, const T*, T*, i64, i64, i64);
INSTANTIATE_FOR_FLOAT_TYPES(INSTANTIATE_ACTIVATION)
