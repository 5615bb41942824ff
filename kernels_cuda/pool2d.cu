// Max, average and global-average pooling, forward and backward, NCHW, float and double.
//
// Every kernel treats the N*C planes alike: x is (planes, H, W), y is (planes, Ho, Wo). Windows may
// overlap (stride < kernel) and reach into the padding (ph rows top and bottom, pw columns left and
// right). Backward passes are gather-form: one thread per input pixel sums the windows that cover
// it in a fixed order, so there are no atomics and results are bitwise reproducible. The max and
// avg kernels keep one pixel position per thread (an output pixel forward, an input pixel
// backward) and loop over the planes: grid (ceil(pixels per plane / BLOCK_1D), planes') with
// planes' <= planes, block BLOCK_1D. So a thread's divisions (where its window lies, or which
// windows cover its pixel) run once, not per element, and it loads a tap's values in
// loads_at_once<I>() planes before using any, so that those loads are in flight together (one
// plane at a time leaves a thread waiting on each load in turn).
#include "common.cuh"

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

// The in-bounds taps [lo, hi) (input coordinates; lo == hi when none) along one axis of n pixels
// padded by p of a window whose taps are t0 .. t0 + k - 1 in padded coordinates.
template <typename I> __device__ inline void taps_in_bounds(I t0, I k, I p, I n, I& lo, I& hi) {
    const I first = t0 > p ? t0 : p, end = t0 + k < n + p ? t0 + k : n + p;
    lo = first - p;
    hi = end > first ? end - p : lo;
}

// A forward thread's output pixel, fixed over its loop: out = oh*Wo + ow in every plane, and its
// window's in-bounds taps [h_lo, h_hi) x [w_lo, w_hi), its top-left tap being (oh*sh - ph,
// ow*sw - pw). `valid` is false past the end of the plane.
template <typename I> struct WindowPixel {
    I out, h_lo, h_hi, w_lo, w_hi;
    bool valid;
    __device__ explicit WindowPixel(const Pool2d<I>& g)
        : out((I)blockIdx.x * BLOCK_1D + threadIdx.x), valid(out < g.Ho * g.Wo) {
        const I oh = out / g.Wo, hp = oh * g.sh, wp = (out - oh * g.Wo) * g.sw;  // padded (h0, w0)
        taps_in_bounds(hp, g.kh, g.ph, g.H, h_lo, h_hi);
        taps_in_bounds(wp, g.kw, g.pw, g.W, w_lo, w_hi);
    }
};

// Calls use(tap, v) for each in-bounds tap of at's window in row-major order, tap = h*W + w, with
// v[u] = x at that tap in plane u of batch b (0 if absent): a tap's loads are issued together.
template <typename T, typename I, typename Use>
__device__ void for_window_taps(const Pool2d<I>& g, const WindowPixel<I>& at,
                                const Batch<I>& b, const T* x, Use use) {
#pragma unroll 1  // a few taps: unrolling only adds overhead
    for (I h = at.h_lo; h < at.h_hi; ++h)
#pragma unroll 1
        for (I w = at.w_lo; w < at.w_hi; ++w) {
            T v[loads_at_once<I>()];
            b.load(x, g.H * g.W, h * g.W + w, T(0), v);
            use(h * g.W + w, v);
        }
}

// y = max over each window's in-bounds taps, argmax = flat index h*W + w in the input plane of
// the first maximum in row-major order (strictly greater replaces), exactly as the NumPy backend
// and the reference: the search starts from the first in-bounds tap, whatever its value, so a
// padded tap is never chosen (a window whose values are all -inf has its argmax on a pixel of it,
// where its gradient goes, as in PyTorch; padding at most half the kernel leaves every window an
// in-bounds tap). A NaN beats any number and stays (v != v is NaN): a window with a NaN gives
// NaN, at its first NaN, as PyTorch's max pool gives NaN and on every backend.
template <typename T, typename I>
__device__ void max_pool2d_forward_body(const T* x, T* y, int* argmax,
                                        const Pool2d<i64>& geometry) {
    const Pool2d<I> g = geometry.as<I>();
    const WindowPixel<I> at(g);
    if (!at.valid) return;
    for_batches(g.planes, (I)blockIdx.y, (I)gridDim.y, [&](const Batch<I>& b) {
        constexpr int PLANES_AT_ONCE = loads_at_once<I>();
        T best[PLANES_AT_ONCE];
        int best_index[PLANES_AT_ONCE];
#pragma unroll
        for (int u = 0; u < PLANES_AT_ONCE; ++u)
            best[u] = neg_infinity(T()), best_index[u] = 0;  // both set at the first tap
        bool take = true;  // the first in-bounds tap, whatever its value
        for_window_taps(g, at, b, x, [&](I tap, const T* v) {
#pragma unroll
            for (int u = 0; u < PLANES_AT_ONCE; ++u)
                if (take || v[u] > best[u] || (v[u] != v[u] && best[u] == best[u]))
                    best[u] = v[u], best_index[u] = (int)tap;
            take = false;
        });
        b.store(y, g.Ho * g.Wo, at.out, best);
        b.store(argmax, g.Ho * g.Wo, at.out, best_index);  // the launcher checks H*W < 2^31
    });
}

// One thread per output pixel position, looping over planes; grid as in the header.
template <typename T>
__global__ void max_pool2d_forward(const T* x, T* y, int* argmax, i64 planes, i64 H, i64 W, i64 Ho,
                                   i64 Wo, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw) {
    const Pool2d<i64> g = {planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw};
    DISPATCH_INDEX_TYPE(g.fits_index32(), max_pool2d_forward_body, x, y, argmax, g);
}

// y = sum of each window's in-bounds taps in row-major order, like the NumPy backend, / divisor
// (divisor = kh*kw: padded zeros count).
template <typename T, typename I>
__device__ void avg_pool2d_forward_body(const T* x, T* y, T divisor, const Pool2d<i64>& geometry) {
    const Pool2d<I> g = geometry.as<I>();
    const WindowPixel<I> at(g);
    if (!at.valid) return;
    for_batches(g.planes, (I)blockIdx.y, (I)gridDim.y, [&](const Batch<I>& b) {
        constexpr int PLANES_AT_ONCE = loads_at_once<I>();
        T total[PLANES_AT_ONCE] = {};
        for_window_taps(g, at, b, x, [&](I, const T* v) {
#pragma unroll
            for (int u = 0; u < PLANES_AT_ONCE; ++u) total[u] += v[u];
        });
#pragma unroll
        for (int u = 0; u < PLANES_AT_ONCE; ++u) total[u] /= divisor;
        b.store(y, g.Ho * g.Wo, at.out, total);
    });
}

// One thread per output pixel position, looping over planes; grid as in the header.
template <typename T>
__global__ void avg_pool2d_forward(const T* x, T* y, i64 planes, i64 H, i64 W, i64 Ho, i64 Wo,
                                   i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, T divisor) {
    const Pool2d<i64> g = {planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw};
    DISPATCH_INDEX_TYPE(g.fits_index32(), avg_pool2d_forward_body, x, y, divisor, g);
}

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

// A backward thread's work: its pixel (GatherPixel) and its batches of planes (for_batches);
// sum(g, at, b, total) fills one sum (of type Acc) per plane of batch b, and each is stored at
// the pixel's place in gx.
template <typename T, typename Acc, typename I, typename Sum>
__device__ void gather_plane_batches(const Pool2d<i64>& geometry, T* gx, Sum sum) {
    const Pool2d<I> g = geometry.as<I>();
    const GatherPixel<I> at(g);
    if (!at.valid) return;
    for_batches(g.planes, (I)blockIdx.y, (I)gridDim.y, [&](const Batch<I>& b) {
        Acc total[loads_at_once<I>()] = {};
        sum(g, at, b, total);
        b.store(gx, g.H * g.W, at.pix, total);
    });
}

// gx[p, h, w] = sum of gy[p, oh, ow] over the windows (oh, ow) covering (h, w) whose argmax is
// h*W + w, visited in row-major (oh, ow) order and summed in double, like NumPy's bincount. With
// `masked`, each gy is first multiplied by (relu_y > 0) at its window: the backward of a ReLU right
// before the pool (relu_y is the pool's output, the ReLU's output at the argmax), as NumPy's
// gy * (relu_y > 0).
template <typename T, typename I>
__device__ void max_pool2d_backward_body(const T* gy, const int* argmax, const T* relu_y, T* gx,
                                         const Pool2d<i64>& geometry, bool masked) {
    gather_plane_batches<T, double, I>(geometry, gx, [&](const Pool2d<I>& g,
                                                         const GatherPixel<I>& at,
                                                         const Batch<I>& b, double* total) {
        constexpr int PLANES_AT_ONCE = loads_at_once<I>();
#pragma unroll 1  // a window or a few: unrolling only adds overhead
        for (I oh = at.oh_lo; oh < at.oh_hi; ++oh)
#pragma unroll 1
            for (I ow = at.ow_lo; ow < at.ow_hi; ++ow) {
                int a[PLANES_AT_ONCE];  // -1 (no pixel) past the last plane
                T v[PLANES_AT_ONCE];
                b.load(argmax, g.Ho * g.Wo, oh * g.Wo + ow, -1, a);
                b.load(gy, g.Ho * g.Wo, oh * g.Wo + ow, T(0), v);
                if (masked) {
                    T y[PLANES_AT_ONCE];
                    b.load(relu_y, g.Ho * g.Wo, oh * g.Wo + ow, T(0), y);
#pragma unroll
                    for (int u = 0; u < PLANES_AT_ONCE; ++u) v[u] *= y[u] > T(0) ? T(1) : T(0);
                }
#pragma unroll
                for (int u = 0; u < PLANES_AT_ONCE; ++u)
                    if (a[u] == (int)at.pix) total[u] += (double)v[u];
            }
    });
}

// One thread per pixel position, looping over planes; grid as in the header, block = BLOCK_1D.
// relu_y is read only when `masked`.
template <typename T>
__global__ void max_pool2d_backward(const T* gy, const int* argmax, const T* relu_y, T* gx,
                                    i64 planes, i64 H, i64 W, i64 Ho, i64 Wo, i64 kh, i64 kw,
                                    i64 sh, i64 sw, i64 ph, i64 pw, int masked) {
    const Pool2d<i64> g = {planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw};
    DISPATCH_INDEX_TYPE(g.fits_index32(), max_pool2d_backward_body, gy, argmax, relu_y, gx, g,
                        masked != 0);
}

// gx[p, h, w] = sum over the taps (r, s) in row-major order whose window exists of
// gy[p, oh, ow] / divisor, where oh*sh + r = h + ph: r ascending is oh descending, so the
// covering windows are visited bottom-right first.
template <typename T, typename I>
__device__ void avg_pool2d_backward_body(const T* gy, T* gx, T divisor,
                                         const Pool2d<i64>& geometry) {
    gather_plane_batches<T, T, I>(geometry, gx, [&](const Pool2d<I>& g, const GatherPixel<I>& at,
                                                    const Batch<I>& b, T* total) {
        constexpr int PLANES_AT_ONCE = loads_at_once<I>();
#pragma unroll 1  // a window or a few: unrolling only adds overhead
        for (I oh = at.oh_hi; oh-- > at.oh_lo;)
#pragma unroll 1
            for (I ow = at.ow_hi; ow-- > at.ow_lo;) {
                T v[PLANES_AT_ONCE];  // 0 past the last plane
                b.load(gy, g.Ho * g.Wo, oh * g.Wo + ow, T(0), v);
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
    template __global__ void max_pool2d_backward<T>(const T*, const int*, const T*, T*, i64, i64,  \
                                                    i64, i64, i64, i64, i64, i64, i64, i64, i64,   \
                                                    int);                                          \
    template __global__ void avg_pool2d_forward<T>(const T*, T*, i64, i64, i64, i64, i64, i64,     \
                                                   i64, i64, i64, i64, i64, T);                    \
    template __global__ void avg_pool2d_backward<T>(const T*, T*, i64, i64, i64, i64, i64, i64,    \
                                                    i64, i64, i64, i64, i64, T);                   \
    template __global__ void global_avg_pool2d_forward<T>(const T*, T*, i64);                      \
    template __global__ void global_avg_pool2d_backward<T>(const T*, T*, i64, i64);
INSTANTIATE_FOR_FLOAT_TYPES(INSTANTIATE_POOL2D)
