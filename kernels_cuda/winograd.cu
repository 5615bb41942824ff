// Winograd F(2x2, 3x3) convolution (Lavin and Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2016): the transforms around its GEMMs, NCHW, float and double.
//
// A 3x3 stride-1 convolution's output, in 2 x 2 tiles, is Y = A^T [U . V] A per tile and channel
// pair, summed over the input channels, where U = G g G^T is a 3x3 filter g transformed to 4 x 4
// and V = B^T d B the tile's 4 x 4 input patch d (its 2 x 2 outputs' windows) transformed alike.
// So the convolution becomes 16 independent GEMMs, one per point xi of the 4 x 4 transform:
// M[xi] (rows x tiles) = U[xi] (rows x reduction) * V[xi] (reduction x tiles), at 16 multiply-adds
// per 2 x 2 outputs and channel pair where the direct product does 36: 2.25 times fewer. The
// launcher (gpucnn/backend/launchers/winograd.py) runs these kernels around conv2d.cu's GEMM:
// winograd_filter -> U, winograd_input -> V, the 16 GEMMs as one 1x1 convolution in 16 groups,
// winograd_output -> y. The input gradient of a 3x3 stride-1 convolution is such a convolution
// too (gy by the filters rotated 180 degrees, channels swapped), through winograd_filter's flip.
//
// The transforms' coefficients are 0, +-1 and +-1/2 (exact in binary), so the only rounding is
// in their few additions: errors stay at a few float epsilons of the operands' scale.
// All three kernels are 1-D grid-stride loops (grid_1d), block = BLOCK_1D, each thread one item
// at a time (a filter, an input tile, an output tile of one channel).
#include "common.cuh"

#define WINOGRAD_POINTS 16  // xi = a * 4 + b, a 4 x 4 transform

// G v for a filter's 3 taps along one axis: 4 values.
template <typename T> __device__ inline void filter_axis(T v0, T v1, T v2, T* out, int step) {
    out[0] = v0;
    out[step] = T(0.5) * (v0 + v1 + v2);
    out[2 * step] = T(0.5) * (v0 - v1 + v2);
    out[3 * step] = v2;
}

// B^T v for an input patch's 4 values along one axis (v and out `step` apart).
template <typename T> __device__ inline void input_axis(const T* v, T* out, int step) {
    const T v0 = v[0], v1 = v[step], v2 = v[2 * step], v3 = v[3 * step];
    out[0] = v0 - v2;
    out[step] = v1 + v2;
    out[2 * step] = v2 - v1;
    out[3 * step] = v1 - v3;
}

// A^T v for 4 transformed values along one axis: the tile's 2 outputs (out `step` apart).
template <typename T> __device__ inline void output_axis(const T* v, T* out, int vstep, int step) {
    const T v0 = v[0], v1 = v[vstep], v2 = v[2 * vstep], v3 = v[3 * vstep];
    out[0] = v0 + v1 + v2;
    out[step] = v1 - v2 - v3;
}

// u[xi][row][col] = (G g G^T)[xi] for each of the GEMM's rows x reduction filter pairs. w is
// (K, C, 3, 3). Forward: rows = K, reduction = C, g = w[row, col]. flip (the input gradient):
// rows = C, reduction = K, g = w[col, row] rotated 180 degrees.
template <typename T, typename I>
__device__ void winograd_filter_body(const T* w, T* u, i64 rows64, i64 reduction64, int flip) {
    const I rows = (I)rows64, reduction = (I)reduction64, pairs = rows * reduction;
    for (I i = (I)global_thread_index(); i < pairs; i += (I)grid_stride()) {
        const I row = i / reduction, col = i - row * reduction;
        const T* g = w + (flip ? col * rows + row : i) * 9;
        T taps[9], half[12], out[WINOGRAD_POINTS];  // half = G g: 4 x 3
#pragma unroll
        for (int t = 0; t < 9; ++t) taps[t] = g[flip ? 8 - t : t];
#pragma unroll
        for (int s = 0; s < 3; ++s) filter_axis(taps[s], taps[3 + s], taps[6 + s], half + s, 3);
#pragma unroll
        for (int a = 0; a < 4; ++a) filter_axis(half[3 * a], half[3 * a + 1], half[3 * a + 2],
                                                out + 4 * a, 1);
#pragma unroll
        for (int xi = 0; xi < WINOGRAD_POINTS; ++xi) u[xi * pairs + i] = out[xi];
    }
}

template <typename T>
__global__ void winograd_filter(const T* w, T* u, i64 rows, i64 reduction, int flip) {
    DISPATCH_INDEX_TYPE(fits_index32(WINOGRAD_POINTS * rows * reduction), winograd_filter_body, w,
                        u, rows, reduction, flip);
}

// The tiling: N images of `planes` channels, each H x W, cut into tiles_h x tiles_w tiles; tile
// (th, tw)'s patch or outputs start at row 2 th - pad_top, column 2 tw - pad_left (pads may be
// negative: the input gradient's are 2 - the forward's). Column p of the GEMM is tile
// (n, th, tw): p = (n * tiles_h + th) * tiles_w + tw, of P = N * tiles_h * tiles_w.
struct WinogradTiles {
    i64 N, planes, H, W, tiles_h, tiles_w, pad_top, pad_left;
    __device__ i64 columns() const { return N * tiles_h * tiles_w; }
    __device__ bool fits_index32() const {
        return ::fits_index32(N * planes * H * W) &&
               ::fits_index32(WINOGRAD_POINTS * planes * columns());
    }
};

// Thread item i = (n, plane, th, tw), tw fastest: the image plane n * planes + plane, its GEMM
// column p and its tile's first row and column.
template <typename I> struct TileItem {
    I plane, p;
    int h0, w0;
    __device__ TileItem(const WinogradTiles& g, I i) {
        const I tiles = (I)(g.tiles_h * g.tiles_w), t = i % tiles, th = t / (I)g.tiles_w;
        plane = i / tiles;
        p = plane / (I)g.planes * tiles + t;
        h0 = (int)(2 * (i64)th - g.pad_top);
        w0 = (int)(2 * (i64)(t - th * (I)g.tiles_w) - g.pad_left);
    }
};

// v[xi][c][p] = (B^T d B)[xi], d the 4 x 4 patch of x (N, C, H, W) at tile p, zero outside x.
template <typename T, typename I>
__device__ void winograd_input_body(const T* x, T* v, const WinogradTiles g) {
    const I count = (I)(g.N * g.planes * g.tiles_h * g.tiles_w), P = (I)g.columns();
    const I H = (I)g.H, W = (I)g.W;
    for (I i = (I)global_thread_index(); i < count; i += (I)grid_stride()) {
        const TileItem<I> at(g, i);
        const T* x_plane = x + at.plane * H * W;
        T d[WINOGRAD_POINTS], rows[WINOGRAD_POINTS], out[WINOGRAD_POINTS];
#pragma unroll
        for (int a = 0; a < 4; ++a)
#pragma unroll
            for (int b = 0; b < 4; ++b) {
                const int ih = at.h0 + a, iw = at.w0 + b;
                const bool inside = ih >= 0 && ih < (int)H && iw >= 0 && iw < (int)W;
                d[4 * a + b] = inside ? x_plane[(I)ih * W + (I)iw] : T(0);
            }
#pragma unroll
        for (int b = 0; b < 4; ++b) input_axis(d + b, rows + b, 4);  // down each column
#pragma unroll
        for (int a = 0; a < 4; ++a) input_axis(rows + 4 * a, out + 4 * a, 1);  // along each row
        const I c = at.plane % (I)g.planes, planes = (I)g.planes;
#pragma unroll
        for (int xi = 0; xi < WINOGRAD_POINTS; ++xi) v[(xi * planes + c) * P + at.p] = out[xi];
    }
}

template <typename T>
__global__ void winograd_input(const T* x, T* v, i64 N, i64 C, i64 H, i64 W, i64 tiles_h,
                               i64 tiles_w, i64 pad_top, i64 pad_left) {
    const WinogradTiles g{N, C, H, W, tiles_h, tiles_w, pad_top, pad_left};
    DISPATCH_INDEX_TYPE(g.fits_index32(), winograd_input_body, x, v, g);
}

// y[n, k, 2 th + i, 2 tw + j] = (A^T m A)[i][j] (+ bias[k], then max(., 0) when relu, as
// conv2d_forward's epilogue) for the tile's outputs inside y (N, K, Ho, Wo); m is (16, K, P).
template <typename T, typename I>
__device__ void winograd_output_body(const T* m, const T* bias, T* y, const WinogradTiles g,
                                     int has_bias, int relu) {
    const I count = (I)(g.N * g.planes * g.tiles_h * g.tiles_w), P = (I)g.columns();
    const I Ho = (I)g.H, Wo = (I)g.W, K = (I)g.planes;
    for (I i = (I)global_thread_index(); i < count; i += (I)grid_stride()) {
        const TileItem<I> at(g, i);
        const I k = at.plane % K;
        T mv[WINOGRAD_POINTS], rows[8], out[4];
#pragma unroll
        for (int xi = 0; xi < WINOGRAD_POINTS; ++xi) mv[xi] = m[(xi * K + k) * P + at.p];
#pragma unroll
        for (int b = 0; b < 4; ++b) output_axis(mv + b, rows + b, 4, 4);  // 2 x 4
#pragma unroll
        for (int a = 0; a < 2; ++a) output_axis(rows + 4 * a, out + 2 * a, 1, 1);  // 2 x 2
        const T shift = has_bias ? bias[k] : T(0);
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
            for (int b = 0; b < 2; ++b) {
                const int oh = at.h0 + a, ow = at.w0 + b;
                T value = out[2 * a + b];
                if (has_bias) value += shift;
                if (oh < (int)Ho && ow < (int)Wo)
                    y[(at.plane * Ho + (I)oh) * Wo + (I)ow] = relu && value < T(0) ? T(0) : value;
            }
    }
}

template <typename T>
__global__ void winograd_output(const T* m, const T* bias, T* y, i64 N, i64 K, i64 Ho, i64 Wo,
                                i64 tiles_h, i64 tiles_w, int has_bias, int relu) {
    const WinogradTiles g{N, K, Ho, Wo, tiles_h, tiles_w, 0, 0};
    DISPATCH_INDEX_TYPE(g.fits_index32(), winograd_output_body, m, bias, y, g, has_bias, relu);
}

#define INSTANTIATE_WINOGRAD(T)                                                                    \
    template __global__ void winograd_filter<T>(const T*, T*, i64, i64, int);                      \
    template __global__ void winograd_input<T>(const T*, T*, i64, i64, i64, i64, i64, i64, i64,    \
                                               i64);                                               \
    template __global__ void winograd_output<T>(const T*, const T*, T*, i64, i64, i64, i64, i64,   \
                                                i64, int, int);
INSTANTIATE_FOR_FLOAT_TYPES(INSTANTIATE_WINOGRAD)
