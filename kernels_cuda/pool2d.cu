// Max, average and global-average pooling, forward and backward, NCHW, float and double.
//
// Every kernel treats the N*C planes alike: x is (planes, H, W), y is (planes, Ho, Wo). Windows may
// overlap (stride < kernel) and reach into the padding (ph rows top and bottom, pw columns left and
// right). Backward passes are gather-form: one thread per input pixel sums the windows that cover
// it in a fixed order, so there are no atomics and results are bitwise reproducible. Their grid is
// (ceil(H*W / BLOCK_1D), planes') with planes' <= planes: a thread keeps one pixel position and
// loops over the planes, so its divisions (which windows cover the pixel) run once, not per pixel,
// and it loads a window's values in loads_at_once<I>() planes before using any, so that those
// loads are in flight together (one plane at a time leaves a thread waiting on each load in turn).
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

// The pooling geometry as the kernels take it (i64), and in the index type I of a body.
template <typename I> struct Pool2d {
    I planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw;
    // Every input, output and padded index fits in 31 bits.
    __device__ bool fits_index32() const {
        return ::fits_index32(planes * H * W) && ::fits_index32(planes * Ho * Wo) &&
               ::fits_index32(H + 2 * ph + kh) && ::fits_index32(W + 2 * pw + kw);
    }
    template <typename J> __device__ Pool2d<J> as() const {
        return {(J)planes, (J)H, (J)W, (J)Ho, (J)Wo, (J)kh, (J)kw, (J)sh, (J)sw, (J)ph, (J)pw};
    }
};

// The windows o (0 <= o < n_out) that cover padded coordinate t along one axis, o*s <= t <=
// o*s + k - 1, as the half-open range [lo, hi) (empty when lo >= hi).
template <typename I>
__device__ inline void covering_windows(I t, I k, I s, I n_out, I& lo, I& hi) {
    hi = t / s + 1 < n_out ? t / s + 1 : n_out;
    lo = t >= k ? (t - k) / s + 1 : 0;
}

// A backward thread's pixel, fixed over its loop: pix = h*W + w in every plane, and the windows
// [oh_lo, oh_hi) x [ow_lo, ow_hi) that cover it. `valid` is false past the end of the plane.
template <typename I> struct GatherPixel {
    I pix, oh_lo, oh_hi, ow_lo, ow_hi;
    bool valid;
    __device__ explicit GatherPixel(const Pool2d<I>& g)
        : pix((I)blockIdx.x * BLOCK_1D + threadIdx.x), valid(pix < g.H * g.W) {
        const I h = pix / g.W;
        covering_windows(h + g.ph, g.kh, g.sh, g.Ho, oh_lo, oh_hi);
        covering_windows(pix - h * g.W + g.pw, g.kw, g.sw, g.Wo, ow_lo, ow_hi);
    }
};

// This thread's batches of loads_at_once<I>() planes, gridDim.y apart: sum(first, step, total)
// fills one sum (of type Acc) per plane of the batch starting at plane `first`, and each is stored
// at this thread's pixel of gx.
template <typename T, typename Acc, typename I, typename Sum>
__device__ void gather_plane_batches(const Pool2d<I>& g, const GatherPixel<I>& at, T* gx, Sum sum) {
    constexpr int PLANES_AT_ONCE = loads_at_once<I>();
    const I step = gridDim.y;
    for (I first = blockIdx.y; first < g.planes; first += PLANES_AT_ONCE * step) {
        Acc total[PLANES_AT_ONCE] = {};
        sum(first, step, total);
#pragma unroll
        for (int u = 0; u < PLANES_AT_ONCE; ++u) {
            const I plane = first + u * step;
            if (plane < g.planes) gx[plane * g.H * g.W + at.pix] = (T)total[u];
        }
    }
}

// gx[p, h, w] = sum of gy[p, oh, ow] over the windows (oh, ow) covering (h, w) whose argmax is
// h*W + w, visited in row-major (oh, ow) order and summed in double, like NumPy's bincount.
template <typename T, typename I>
__device__ void max_pool2d_backward_body(const T* gy, const int* argmax, T* gx,
                                         const Pool2d<i64>& geometry) {
    const Pool2d<I> g = geometry.as<I>();
    const GatherPixel<I> at(g);
    if (!at.valid) return;
    gather_plane_batches<T, double>(g, at, gx, [&](I first, I step, double* total) {
        constexpr int PLANES_AT_ONCE = loads_at_once<I>();
#pragma unroll 1  // a window or a few: unrolling only adds overhead
        for (I oh = at.oh_lo; oh < at.oh_hi; ++oh)
#pragma unroll 1
            for (I ow = at.ow_lo; ow < at.ow_hi; ++ow) {
                int a[PLANES_AT_ONCE];  // -1 (no pixel) past the last plane
                T v[PLANES_AT_ONCE];
#pragma unroll
                for (int u = 0; u < PLANES_AT_ONCE; ++u) {
                    const I plane = first + u * step, o = (plane * g.Ho + oh) * g.Wo + ow;
                    a[u] = plane < g.planes ? argmax[o] : -1;
                    v[u] = plane < g.planes ? gy[o] : T(0);
                }
#pragma unroll
                for (int u = 0; u < PLANES_AT_ONCE; ++u)
                    if (a[u] == (int)at.pix) total[u] += (double)v[u];
            }
    });
}

// One thread per pixel position, looping over planes; grid as in the header, block = BLOCK_1D.
template <typename T>
__global__ void max_pool2d_backward(const T* gy, const int* argmax, T* gx, i64 planes, i64 H,
                                    i64 W, i64 Ho, i64 Wo, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph,
                                    i64 pw) {
    const Pool2d<i64> g = {planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw};
    DISPATCH_INDEX_TYPE(g.fits_index32(), max_pool2d_backward_body, gy, argmax, gx, g);
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
// gy[p, oh, ow] / divisor, where oh*sh + r = h + ph: r ascending is oh descending, so the
// covering windows are visited bottom-right first.
template <typename T, typename I>
__device__ void avg_pool2d_backward_body(const T* gy, T* gx, T divisor,
                                         const Pool2d<i64>& geometry) {
    const Pool2d<I> g = geometry.as<I>();
    const GatherPixel<I> at(g);
    if (!at.valid) return;
    gather_plane_batches<T, T>(g, at, gx, [&](I first, I step, T* total) {
        constexpr int PLANES_AT_ONCE = loads_at_once<I>();
#pragma unroll 1  // a window or a few: unrolling only adds overhead
        for (I oh = at.oh_hi; oh-- > at.oh_lo;)
#pragma unroll 1
            for (I ow = at.ow_hi; ow-- > at.ow_lo;) {
                T v[PLANES_AT_ONCE];  // 0 past the last plane
#pragma unroll
                for (int u = 0; u < PLANES_AT_ONCE; ++u) {
                    const I plane = first + u * step, o = (plane * g.Ho + oh) * g.Wo + ow;
                    v[u] = plane < g.planes ? gy[o] : T(0);
                }
#pragma unroll
                for (int u = 0; u < PLANES_AT_ONCE; ++u) total[u] += v[u] / divisor;
            }
    });
}

// One thread per pixel position, looping over planes; grid as in the header, block = BLOCK_1D.
template <typename T>
__global__ void avg_pool2d_backward(const T* gy, T* gx, i64 planes, i64 H, i64 W, i64 Ho, i64 Wo,
                                    i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, T divisor) {
    const Pool2d<i64> g = {planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw};
    DISPATCH_INDEX_TYPE(g.fits_index32(), avg_pool2d_backward_body, gy, gx, divisor, g);
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
