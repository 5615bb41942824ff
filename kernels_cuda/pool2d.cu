// Max, average and global-average pooling, forward and backward, NCHW, float and double.
//
// Every kernel treats the N*C planes alike: x is (planes, H, W), y is (planes, Ho, Wo). Windows may
// overlap (stride < kernel) and reach into the padding (ph rows top and bottom, pw columns left and
// right). Backward passes are gather-form: one thread per input pixel sums the windows that cover
// it in a fixed order, so there are no atomics and results are bitwise reproducible.
#include "common.cuh"

// y = max over each window (padding counts as -inf), argmax = flat index h*W + w in the input
// plane of the window's first maximum in row-major order (strictly greater replaces), exactly as
// the NumPy backend: the search starts from the window's top-left tap, padded or not.
// One thread per output; 1-D grid-stride over planes*Ho*Wo, block = BLOCK_1D.
template <typename T>
__global__ void max_pool2d_forward(const T* x, T* y, int* argmax, i64 planes, i64 H, i64 W, i64 Ho,
                                   i64 Wo, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw) {
    for (i64 i = global_thread_index(); i < planes * Ho * Wo; i += grid_stride()) {
        const T* plane = x + i / (Ho * Wo) * H * W;
        const i64 h0 = i % (Ho * Wo) / Wo * sh - ph, w0 = i % Wo * sw - pw;
        const bool corner = h0 >= 0 && h0 < H && w0 >= 0 && w0 < W;
        T best = corner ? plane[h0 * W + w0] : neg_infinity(T());
        i64 best_index = h0 * W + w0;
        for (i64 r = 0; r < kh; ++r) {
            const i64 h = h0 + r;
            if (h < 0 || h >= H) continue;
            for (i64 s = 0; s < kw; ++s) {
                const i64 w = w0 + s;
                if (w >= 0 && w < W && plane[h * W + w] > best) {
                    best = plane[h * W + w];
                    best_index = h * W + w;
                }
            }
        }
        y[i] = best;
        argmax[i] = (int)best_index;  // the launcher checks H*W < 2^31
    }
}

// gx[p, h, w] = sum of gy[p, oh, ow] over the windows (oh, ow) covering (h, w) whose argmax is
// h*W + w, visited in row-major (oh, ow) order and summed in double, like NumPy's bincount.
// One thread per input pixel; 1-D grid-stride over planes*H*W, block = BLOCK_1D.
template <typename T>
__global__ void max_pool2d_backward(const T* gy, const int* argmax, T* gx, i64 planes, i64 H,
                                    i64 W, i64 Ho, i64 Wo, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph,
                                    i64 pw) {
    for (i64 i = global_thread_index(); i < planes * H * W; i += grid_stride()) {
        const i64 out_plane = i / (H * W) * Ho * Wo, pix = i % (H * W);
        const i64 th = pix / W + ph, tw = pix % W + pw;  // padded coordinates
        // Windows oh cover th when oh*sh <= th <= oh*sh + kh - 1.
        const i64 oh_lo = th >= kh ? (th - kh) / sh + 1 : 0, oh_hi = th / sh;
        const i64 ow_lo = tw >= kw ? (tw - kw) / sw + 1 : 0, ow_hi = tw / sw;
        double total = 0.0;
        for (i64 oh = oh_lo; oh <= oh_hi && oh < Ho; ++oh)
            for (i64 ow = ow_lo; ow <= ow_hi && ow < Wo; ++ow) {
                const i64 o = out_plane + oh * Wo + ow;
                if (argmax[o] == pix) total += (double)gy[o];
            }
        gx[i] = (T)total;
    }
}

// y = sum of each window / divisor (divisor = kh*kw: padded zeros count), summed in row-major
// tap order like the NumPy backend. One thread per output; 1-D grid-stride, block = BLOCK_1D.
template <typename T>
__global__ void avg_pool2d_forward(const T* x, T* y, i64 planes, i64 H, i64 W, i64 Ho, i64 Wo,
                                   i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, T divisor) {
    for (i64 i = global_thread_index(); i < planes * Ho * Wo; i += grid_stride()) {
        const T* plane = x + i / (Ho * Wo) * H * W;
        const i64 h0 = i % (Ho * Wo) / Wo * sh - ph, w0 = i % Wo * sw - pw;
        T total = T(0);
        for (i64 h = h0 > 0 ? h0 : 0; h < h0 + kh && h < H; ++h)
            for (i64 w = w0 > 0 ? w0 : 0; w < w0 + kw && w < W; ++w) total += plane[h * W + w];
        y[i] = total / divisor;
    }
}

// gx[p, h, w] = sum over the taps (r, s) in row-major order whose window exists of
// gy[p, oh, ow] / divisor, where oh*sh + r = h + ph. One thread per input pixel; 1-D grid-stride.
template <typename T>
__global__ void avg_pool2d_backward(const T* gy, T* gx, i64 planes, i64 H, i64 W, i64 Ho, i64 Wo,
                                    i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, T divisor) {
    for (i64 i = global_thread_index(); i < planes * H * W; i += grid_stride()) {
        const T* g = gy + i / (H * W) * Ho * Wo;
        const i64 th = i % (H * W) / W + ph, tw = i % W + pw;
        T total = T(0);
        for (i64 r = 0; r < kh && r <= th; ++r) {
            if ((th - r) % sh != 0 || (th - r) / sh >= Ho) continue;
            for (i64 s = 0; s < kw && s <= tw; ++s) {
                if ((tw - s) % sw != 0 || (tw - s) / sw >= Wo) continue;
                total += g[(th - r) / sh * Wo + (tw - s) / sw] / divisor;
            }
        }
        gx[i] = total;
    }
}

// y[p] = mean of plane p. x: (planes, HW) -> y: (planes,).
// grid = (planes,), block = BLOCK_1D: one block per plane, a fixed-order tree reduction.
template <typename T> __global__ void global_avg_pool2d_forward(const T* x, T* y, i64 HW) {
    __shared__ T smem[BLOCK_1D];
    const T* plane = x + (i64)blockIdx.x * HW;
    T total = T(0);
    for (i64 j = threadIdx.x; j < HW; j += BLOCK_1D) total += plane[j];
    total = block_reduce(total, smem, SumOp());
    if (threadIdx.x == 0) y[blockIdx.x] = total / (T)HW;
}

// gx[p, j] = gy[p] / HW. gy: (planes,) -> gx: (planes, HW). 1-D grid-stride, block = BLOCK_1D.
template <typename T>
__global__ void global_avg_pool2d_backward(const T* gy, T* gx, i64 planes, i64 HW) {
    for (i64 i = global_thread_index(); i < planes * HW; i += grid_stride())
        gx[i] = gy[i / HW] / (T)HW;
}

#define INSTANTIATE_POOL2D(T)                                                                      \
    template __global__ void max_pool2d_forward<T>(const T*, T*, int*, i64, i64, i64, i64, i64,    \
                                                   i64, i64, i64, i64, i64, i64);                  \
    template __global__ void max_pool2d_backward<T>(const T*, const int*, T*, i64, i64, i64, i64,  \
                                                    i64, i64, i64, i64, i64, i64, i64);            \
    template __global__ void avg_pool2d_forward<T>(const T*, T*, i64, i64, i64, i64, i64, i64,     \
                                                   i64, i64, i64, i64, i64, T);                    \
    template __global__ void avg_pool2d_backward<T>(const T*, T*, i64, i64, i64, i64, i64, i64,    \
                                                    i64, i64, i64, i64, i64, T);                   \
    template __global__ void global_avg_pool2d_forward<T>(const T*, T*, i64);                      \
    template __global__ void global_avg_pool2d_backward<T>(const T*, T*, i64, i64);
INSTANTIATE_POOL2D(float)
INSTANTIATE_POOL2D(double)
