// Winograd F(2x2, 3x3) convolution (Lavin and Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2016), NCHW, float and double.
//
// A 3x3 stride-1 convolution's output, in 2 x 2 tiles, is Y = A^T [U . V] A per tile and channel
// pair, summed over the input channels, where U = G g G^T is a 3x3 filter g transformed to 4 x 4
// and V = B^T d B the tile's 4 x 4 input patch d (its 2 x 2 outputs' windows) transformed alike.
// So the convolution becomes 16 independent GEMMs, one per point xi of the 4 x 4 transform:
// M[xi] (rows x tiles) = U[xi] (rows x reduction) * V[xi] (reduction x tiles), at 16 multiply-adds
// per 2 x 2 outputs and channel pair where the direct product does 36: 2.25 times fewer. Two
// kernels: winograd_filter transforms the filters once per call; winograd_conv2d does the rest in
// one pass, each block transforming its input patches into shared memory, multiplying, and
// transforming its products back into y, so neither V nor M (4 values per pixel each) ever goes
// through global memory. The input gradient of a 3x3 stride-1 convolution is such a convolution
// too (gy by the filters rotated 180 degrees, channels swapped: winograd_filter's flip).
//
// The transforms' coefficients are 0, +-1 and +-1/2 (exact in binary), so the only rounding is
// in their few additions: errors stay at a few float epsilons of the operands' scale.
#include "common.cuh"

#define WINOGRAD_POINTS 16  // xi = a * 4 + b, a 4 x 4 transform

// winograd_conv2d's block: WINOGRAD_ROWS output channels x WINOGRAD_TILES tiles, all 16 points.
// Thread t takes point xi = t / 16 and, of that point's 32 x 32 product, the 8 x 8 at rows
// 8 ty, tiles 8 tx (ty = t / 4 % 4, tx = t % 4): each reduction step reads 8 U and 8 V values
// (16-byte shared loads: a warp's addresses broadcast or side by side) for 64 multiply-adds.
#define WINOGRAD_ROWS 32
#define WINOGRAD_TILES 32
#define WINOGRAD_SUB 8
#define WINOGRAD_MIN_BLOCKS (sizeof(T) == 4 ? 2 : 1)  // float: at most 128 registers a thread
// The transformed filters u are stored padded with zeros to whole blocks of rows and slabs of
// the reduction (WINOGRAD_CHANNELS: the float slab, twice the double one), so that a block
// stages them as whole 16-byte loads with no bounds to check.
#define WINOGRAD_CHANNELS 8
__device__ inline i64 padded(i64 n, i64 multiple) { return (n + multiple - 1) / multiple * multiple; }

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

// u[xi][col][row] = (G g G^T)[xi] for each of the GEMM's rows x reduction filter pairs, rows
// contiguous (as winograd_conv2d stages them), zero in the padding to padded(rows,
// WINOGRAD_ROWS) rows and padded(reduction, WINOGRAD_CHANNELS) columns. w is (K, C, 3, 3).
// Forward: rows = K, reduction = C, g = w[row, col]. flip (the input gradient): rows = C,
// reduction = K, g = w[col, row] rotated 180 degrees. A 1-D grid-stride loop over the padded
// pairs, block = BLOCK_1D.
template <typename T, typename I>
__device__ void winograd_filter_body(const T* w, T* u, i64 rows64, i64 reduction64, int flip) {
    const I rows = (I)rows64, reduction = (I)reduction64;
    const I stride = (I)padded(rows64, WINOGRAD_ROWS), cols = (I)padded(reduction64, WINOGRAD_CHANNELS);
    for (I i = (I)global_thread_index(); i < stride * cols; i += (I)grid_stride()) {
        const I col = i / stride, row = i - col * stride;
        T out[WINOGRAD_POINTS] = {};
        if (row < rows && col < reduction) {
            const T* g = w + (flip ? col * rows + row : row * reduction + col) * 9;
            T taps[9], half[12];  // half = G g: 4 x 3
#pragma unroll
            for (int t = 0; t < 9; ++t) taps[t] = g[flip ? 8 - t : t];
#pragma unroll
            for (int s = 0; s < 3; ++s)
                filter_axis(taps[s], taps[3 + s], taps[6 + s], half + s, 3);
#pragma unroll
            for (int a = 0; a < 4; ++a)
                filter_axis(half[3 * a], half[3 * a + 1], half[3 * a + 2], out + 4 * a, 1);
        }
#pragma unroll
        for (int xi = 0; xi < WINOGRAD_POINTS; ++xi) u[(xi * cols + col) * stride + row] = out[xi];
    }
}

template <typename T>
__global__ void winograd_filter(const T* w, T* u, i64 rows, i64 reduction, int flip) {
    const i64 size = WINOGRAD_POINTS * padded(rows, WINOGRAD_ROWS) *
                     padded(reduction, WINOGRAD_CHANNELS);
    DISPATCH_INDEX_TYPE(fits_index32(size), winograd_filter_body, w, u, rows, reduction, flip);
}

// Shared memory: a slab of the reduction (SLAB channels, 32 bytes' worth of T) of U and V staged,
// or, in the epilogue, one row group's products (8 rows x 32 tiles, every point) on their way
// from the threads that summed them to the threads that transform them: 32 KiB either way.
template <typename T> struct WinogradShared {
    static constexpr int SLAB = 32 / sizeof(T);  // divides WINOGRAD_CHANNELS
    union {
        struct {
            T u[WINOGRAD_POINTS][SLAB][WINOGRAD_ROWS];
            T v[WINOGRAD_POINTS][SLAB][WINOGRAD_TILES];
        } stage;
        T exchange[WINOGRAD_POINTS][WINOGRAD_SUB][WINOGRAD_TILES];
    };
};

// dst[0..8) = src[0..8), src 16-byte aligned in shared memory, as 16-byte loads.
template <typename T> __device__ inline void load8(const T* src, T (&dst)[WINOGRAD_SUB]) {
    typedef Pack<T> P;
#pragma unroll
    for (int i = 0; i < WINOGRAD_SUB / P::N; ++i) {
        const P pack = reinterpret_cast<const P*>(src)[i];
#pragma unroll
        for (int j = 0; j < P::N; ++j) dst[i * P::N + j] = pack.v[j];
    }
}

// y (N, K, Ho, Wo) = x (N, C, H, W) convolved with the 3x3 filters whose transforms u holds
// (16, C, K, padded: winograd_filter), stride 1, padding pad_top and pad_left (negative: cropped; the
// bottom and right follow from Ho, Wo), + bias[k] when has_bias, then max(., 0) when relu (as
// conv2d_forward's epilogue). Tile p = (n * tiles_h + th) * tiles_w + tw covers outputs
// (2 th .. 2 th + 1, 2 tw .. 2 tw + 1), its patch rows 2 th - pad_top .. + 3 (zero outside x).
// grid = (ceil(N * tiles_h * tiles_w / 32), ceil(K / 32)), block = BLOCK_1D. Per slab of the
// reduction: SLAB x 32 threads each transform one (channel, tile) patch into V, every thread
// stages U entries, then the 16 products step through the slab. The epilogue hands each row
// group's products, every point, through shared memory to the thread of its (row, tile), which
// transforms them into the tile's outputs. Each output is summed in one fixed order: no atomics.
template <typename T>
__global__ void __launch_bounds__(BLOCK_1D, WINOGRAD_MIN_BLOCKS)
winograd_conv2d(const T* x, const T* u, const T* bias, T* y, i64 N, i64 C, i64 H, i64 W, i64 K,
                i64 Ho, i64 Wo, i64 tiles_h, i64 tiles_w, i64 pad_top, i64 pad_left,
                int has_bias, int relu) {
    typedef WinogradShared<T> Shared;
    constexpr int SLAB = Shared::SLAB;
    __shared__ Shared shared;
    const int tid = threadIdx.x, xi = tid / 16, ty = tid / 4 % 4, tx = tid % 4;
    const i64 tiles = tiles_h * tiles_w, k0 = (i64)blockIdx.y * WINOGRAD_ROWS;
    const i64 K_padded = padded(K, WINOGRAD_ROWS), C_padded = padded(C, WINOGRAD_CHANNELS);

    // The 16-byte packs of U this thread stages each slab: pack u_pack of the block's 32 rows of
    // channel c0 + u_c, at points u_point + PASS_POINTS * pass.
    constexpr int PACKS = WINOGRAD_ROWS / Pack<T>::N, PASS_POINTS = BLOCK_1D / (PACKS * SLAB);
    const int u_point = tid / (PACKS * SLAB), u_c = tid / PACKS % SLAB, u_pack = tid % PACKS;
    const Pack<T>* u_packs =
        reinterpret_cast<const Pack<T>*>(u + (u_point * C_padded + u_c) * K_padded + k0) + u_pack;
    const i64 pass_step = PASS_POINTS * C_padded * K_padded / Pack<T>::N;

    // This thread's tile: the patch it transforms each slab and the outputs it writes.
    const int tile = tid % WINOGRAD_TILES;
    const i64 p = (i64)blockIdx.x * WINOGRAD_TILES + tile;
    const bool tile_in = p < N * tiles;
    const int n = (int)(p / tiles), th = (int)(p % tiles / tiles_w), tw = (int)(p % tiles_w);
    const int h0 = (int)(2 * th - pad_top), w0 = (int)(2 * tw - pad_left);

    T acc[WINOGRAD_SUB][WINOGRAD_SUB] = {};
    for (i64 c0 = 0; c0 < C; c0 += SLAB) {
        if (tid < SLAB * WINOGRAD_TILES) {  // V of channel c0 + tid / 32 at this thread's tile
            const int slab_c = tid / WINOGRAD_TILES;
            const bool live = tile_in && c0 + slab_c < C;
            const T* plane = x + ((i64)n * C + c0 + slab_c) * H * W;
            T d[WINOGRAD_POINTS];
#pragma unroll
            for (int a = 0; a < 4; ++a)
#pragma unroll
                for (int b = 0; b < 4; ++b) {
                    const int ih = h0 + a, iw = w0 + b;
                    const bool inside = live && ih >= 0 && ih < H && iw >= 0 && iw < W;
                    d[4 * a + b] = inside ? plane[(i64)ih * W + iw] : T(0);
                }
#pragma unroll
            for (int b = 0; b < 4; ++b) input_axis(d + b, d + b, 4);  // down each column
#pragma unroll
            for (int a = 0; a < 4; ++a) input_axis(d + 4 * a, d + 4 * a, 1);  // along each row
#pragma unroll
            for (int point = 0; point < WINOGRAD_POINTS; ++point)
                shared.stage.v[point][slab_c][tile] = d[point];
        }
        // U of the slab: SLAB x 32 rows of each point, 16-byte loads, a warp's consecutive.
        // Not unrolled: the loads' addresses at once would cost the registers of 2 blocks an SM.
#pragma unroll 1
        for (int pass = 0; pass < WINOGRAD_POINTS / PASS_POINTS; ++pass)
            reinterpret_cast<Pack<T>*>(shared.stage.u[u_point + PASS_POINTS * pass][u_c])[u_pack] =
                u_packs[c0 * K_padded / Pack<T>::N + pass * pass_step];
        __syncthreads();
#pragma unroll
        for (int slab_c = 0; slab_c < SLAB; ++slab_c) {
            T a[WINOGRAD_SUB], b[WINOGRAD_SUB];
            load8(&shared.stage.u[xi][slab_c][ty * WINOGRAD_SUB], a);
            load8(&shared.stage.v[xi][slab_c][tx * WINOGRAD_SUB], b);
#pragma unroll
            for (int i = 0; i < WINOGRAD_SUB; ++i)
#pragma unroll
                for (int j = 0; j < WINOGRAD_SUB; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }

    // Row group g (rows 8 g .. 8 g + 7 of the block): its 16 x 8 x 32 products to shared memory,
    // then the thread of (row 8 g + tid / 32, this thread's tile) transforms its 16 values.
    const int out_row = tid / WINOGRAD_TILES;
#pragma unroll 1
    for (int group = 0; group < WINOGRAD_ROWS / WINOGRAD_SUB; ++group) {
        if (ty == group)
#pragma unroll
            for (int i = 0; i < WINOGRAD_SUB; ++i)
#pragma unroll
                for (int j = 0; j < WINOGRAD_SUB; ++j)
                    shared.exchange[xi][i][tx * WINOGRAD_SUB + j] = acc[i][j];
        __syncthreads();
        const i64 k = k0 + group * WINOGRAD_SUB + out_row;
        if (tile_in && k < K) {
            T m[WINOGRAD_POINTS], rows[8], out[4];
#pragma unroll
            for (int point = 0; point < WINOGRAD_POINTS; ++point)
                m[point] = shared.exchange[point][out_row][tile];
#pragma unroll
            for (int b = 0; b < 4; ++b) output_axis(m + b, rows + b, 4, 4);  // 2 x 4
#pragma unroll
            for (int a = 0; a < 2; ++a) output_axis(rows + 4 * a, out + 2 * a, 1, 1);  // 2 x 2
            const T shift = has_bias ? bias[k] : T(0);
            T* y_plane = y + ((i64)n * K + k) * Ho * Wo;
#pragma unroll
            for (int a = 0; a < 2; ++a)
#pragma unroll
                for (int b = 0; b < 2; ++b) {
                    const int oh = 2 * th + a, ow = 2 * tw + b;
                    T value = out[2 * a + b];
                    if (has_bias) value += shift;
                    if (oh < Ho && ow < Wo)
                        y_plane[(i64)oh * Wo + ow] = relu && value < T(0) ? T(0) : value;
                }
        }
        __syncthreads();
    }
}

#define INSTANTIATE_WINOGRAD(T)                                                                    \
    template __global__ void winograd_filter<T>(const T*, T*, i64, i64, int);                      \
    template __global__ void winograd_conv2d<T>(const T*, const T*, const T*, T*, i64, i64, i64,   \
                                                i64, i64, i64, i64, i64, i64, i64, i64, int, int);
INSTANTIATE_FOR_FLOAT_TYPES(INSTANTIATE_WINOGRAD)
