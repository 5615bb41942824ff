// Winograd convolution (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
// 2016) of 3x3 stride-1 windows, NCHW, float and double: F(2x2, 3x3) for the forward and the
// input gradient, its transpose F(3x3, 2x2) for the weight gradient (winograd_backward_weight).
//
// A 3x3 stride-1 convolution's output, in 2 x 2 tiles, is Y = A^T [U . V] A per tile and channel
// pair, summed over the input channels, where U = G g G^T is a 3x3 filter g transformed to 4 x 4
// and V = B^T d B the tile's 4 x 4 input patch d (its 2 x 2 outputs' windows) transformed alike.
// So the convolution becomes 16 independent GEMMs, one per point xi of the 4 x 4 transform:
// M[xi] (rows x tiles) = U[xi] (rows x reduction) * V[xi] (reduction x tiles), at 16 multiply-adds
// per 2 x 2 outputs and channel pair where the direct product does 36: 2.25 times fewer. Two
// kernels: winograd_filter transforms the filters once per call; winograd_conv2d does the rest
// in one pass, each block transforming its input patches into shared memory, multiplying, and
// transforming its products back into y, so neither V nor M (4 values per pixel each) ever goes
// through global memory. The input gradient of a 3x3 stride-1 convolution is such a convolution
// too (gy by the filters rotated 180 degrees, channels swapped: winograd_filter's flip). The
// weight gradient is one kernel of the same shape (winograd_backward_weight, below).
//
// The transforms' coefficients are 0, +-1 and +-1/2 (exact in binary), so the only rounding is
// in their few additions: errors stay at a few float epsilons of the operands' scale.
#include "common.cuh"

#define WINOGRAD_POINTS 16  // xi = a * 4 + b, a 4 x 4 transform

// A block of either kernel: WINOGRAD_ROWS x WINOGRAD_TILES entries of each of the 16 products
// (winograd_conv2d: output channels x tiles; the weight gradient: filters x channels). Thread t
// takes point xi = t / 16 and, of that point's 32 x 32, the 8 x 8 at rows 8 ty, columns 8 tx
// (ty = t / 4 % 4, tx = t % 4): each reduction step reads 8 and 8 values (16-byte shared loads:
// a warp's addresses broadcast or side by side) for 64 multiply-adds.
#define WINOGRAD_ROWS 32
#define WINOGRAD_TILES 32
#define WINOGRAD_SUB 8
#define WINOGRAD_MIN_BLOCKS (sizeof(T) == 4 ? 2 : 1)  // float: at most 128 registers a thread
// The transformed filters u are stored padded with zeros to whole blocks of rows and slabs of
// the reduction (WINOGRAD_CHANNELS: the float slab, twice the double one), so that a block
// stages them as whole 16-byte loads with no bounds to check.
#define WINOGRAD_CHANNELS 8
__device__ inline i64 padded(i64 n, i64 multiple) {
    return (n + multiple - 1) / multiple * multiple;
}

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

// A v for a gradient tile's 2 values along one axis: 4 values (out `step` apart). The weight
// gradient is F(3x3, 2x2), the transpose of the forward's F(2x2, 3x3): gy's 2 x 2 tile takes the
// place of the filter (A gy A^T), x's patch is transformed as in the forward (B^T d B), and the
// 3x3 result comes out through G^T m G.
template <typename T> __device__ inline void gradient_axis(T v0, T v1, T* out, int step) {
    out[0] = v0;
    out[step] = v0 + v1;
    out[2 * step] = v0 - v1;
    out[3 * step] = -v1;
}

// G^T v for 4 transformed values along one axis: a filter gradient's 3 taps (out `step` apart).
template <typename T> __device__ inline void tap_axis(const T* v, T* out, int vstep, int step) {
    const T v0 = v[0], v1 = v[vstep], v2 = v[2 * vstep], v3 = v[3 * vstep];
    out[0] = v0 + T(0.5) * (v1 + v2);
    out[step] = T(0.5) * (v1 - v2);
    out[2 * step] = T(0.5) * (v1 + v2) + v3;
}

// The 4 x 4 input patch at rows h0 .. h0 + 3, columns w0 .. w0 + 3 of an H x W plane (zero
// outside it, and everywhere unless `live`), transformed in place into B^T d B.
template <typename T>
__device__ inline void transformed_patch(const T* plane, i64 H, i64 W, int h0, int w0, bool live,
                                         T (&d)[WINOGRAD_POINTS]) {
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
    const I stride = (I)padded(rows64, WINOGRAD_ROWS);
    const I cols = (I)padded(reduction64, WINOGRAD_CHANNELS);
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

// Shared memory: a slab of the reduction (SLAB steps, 32 bytes' worth of T) of both operands
// staged, step q of point xi at a[xi][q * ROW ...] (ROW 32, or 36 where the stores would
// conflict: see the weight gradient), or, in the epilogue, one row group's products (8 rows x 32
// columns, every point) on their way from the threads that summed them to the threads that
// transform them. Each point's slab ends in 16 unused bytes: a warp's two points then start 16
// bytes apart in the banks, not on the same ones, so the 16-byte loads of multiply_slab (2
// points x 4 row or column groups 32 bytes apart) take one pass, not two.
template <typename T, int ROW> struct __align__(16) WinogradShared {
    static constexpr int SLAB = 32 / sizeof(T);  // divides WINOGRAD_CHANNELS
    static constexpr int POINT = SLAB * ROW + Pack<T>::N;
    union {
        struct {
            T a[WINOGRAD_POINTS][POINT];
            T b[WINOGRAD_POINTS][POINT];
        } stage;
        T exchange[WINOGRAD_POINTS][WINOGRAD_SUB][WINOGRAD_TILES];
    };
    __device__ T* a_at(int point, int q) { return &stage.a[point][q * ROW]; }
    __device__ T* b_at(int point, int q) { return &stage.b[point][q * ROW]; }
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

// acc += this thread's piece of the staged slab's 16 products: for each reduction step, its 8
// rows of a[xi] times its 8 columns of b[xi] (xi = t / 16, rows 8 ty, columns 8 tx).
template <typename T, typename Shared> __device__ inline void multiply_slab(Shared& shared,
                                                                           T (&acc)[8][8]) {
    const int xi = threadIdx.x / 16, ty = threadIdx.x / 4 % 4, tx = threadIdx.x % 4;
#pragma unroll
    for (int q = 0; q < Shared::SLAB; ++q) {
        T a[WINOGRAD_SUB], b[WINOGRAD_SUB];
        load8(shared.a_at(xi, q) + ty * WINOGRAD_SUB, a);
        load8(shared.b_at(xi, q) + tx * WINOGRAD_SUB, b);
#pragma unroll
        for (int i = 0; i < WINOGRAD_SUB; ++i)
#pragma unroll
            for (int j = 0; j < WINOGRAD_SUB; ++j) acc[i][j] += a[i] * b[j];
    }
}

// The epilogue's hand-over: for each group g of 8 rows, the threads that summed them put their
// products, every point, in shared memory, then the thread of (row 8 g + t / 32, column t % 32)
// calls use(m, row, column) with that pair's 16 values m[xi]. Called by every thread.
template <typename T, typename Shared, typename Use>
__device__ inline void hand_over_products(Shared& shared, const T (&acc)[8][8], Use use) {
    const int xi = threadIdx.x / 16, ty = threadIdx.x / 4 % 4, tx = threadIdx.x % 4;
    const int row = threadIdx.x / WINOGRAD_TILES, column = threadIdx.x % WINOGRAD_TILES;
#pragma unroll 1
    for (int group = 0; group < WINOGRAD_ROWS / WINOGRAD_SUB; ++group) {
        if (ty == group)
#pragma unroll
            for (int i = 0; i < WINOGRAD_SUB; ++i)
#pragma unroll
                for (int j = 0; j < WINOGRAD_SUB; ++j)
                    shared.exchange[xi][i][tx * WINOGRAD_SUB + j] = acc[i][j];
        __syncthreads();
        T m[WINOGRAD_POINTS];
#pragma unroll
        for (int point = 0; point < WINOGRAD_POINTS; ++point)
            m[point] = shared.exchange[point][row][column];
        use(m, group * WINOGRAD_SUB + row, column);
        __syncthreads();
    }
}

// y (N, K, Ho, Wo) = x (N, C, H, W) convolved with the 3x3 filters whose transforms u holds
// (16, C, K, padded: winograd_filter), stride 1, padding pad_top and pad_left (negative:
// cropped; the bottom and right follow from Ho, Wo), + bias[k] when has_bias, then max(., 0)
// when relu (as conv2d_forward's epilogue). Tile p = (n * tiles_h + th) * tiles_w + tw covers
// outputs (2 th .. 2 th + 1, 2 tw .. 2 tw + 1), its patch rows 2 th - pad_top .. + 3 (zero
// outside x). grid = (ceil(N * tiles_h * tiles_w / 32) * ceil(K / 32),), block = BLOCK_1D. Per
// slab of the reduction: SLAB x 32 threads each transform one (channel, tile) patch into V,
// every thread stages U entries, then the 16 products step through the slab; the epilogue
// transforms each (filter, tile)'s products into its outputs. Each output is summed in one
// fixed order: no atomics.
template <typename T>
__global__ void __launch_bounds__(BLOCK_1D, WINOGRAD_MIN_BLOCKS)
winograd_conv2d(const T* x, const T* u, const T* bias, T* y, i64 N, i64 C, i64 H, i64 W, i64 K,
                i64 Ho, i64 Wo, i64 tiles_h, i64 tiles_w, i64 pad_top, i64 pad_left,
                int has_bias, int relu) {
    typedef WinogradShared<T, WINOGRAD_TILES> Shared;  // a: U (rows: filters), b: V (tiles)
    constexpr int SLAB = Shared::SLAB;
    __shared__ Shared shared;
    const int tid = threadIdx.x;
    // Blocks of the same tiles are neighbours in launch order (row block fastest), so that
    // their patches of x are read from L2 by all but the first.
    const i64 row_blocks = (K + WINOGRAD_ROWS - 1) / WINOGRAD_ROWS;
    const i64 tiles = tiles_h * tiles_w, k0 = (i64)(blockIdx.x % row_blocks) * WINOGRAD_ROWS;
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
    const i64 p = (i64)(blockIdx.x / row_blocks) * WINOGRAD_TILES + tile;
    const bool tile_in = p < N * tiles;
    const int n = (int)(p / tiles), th = (int)(p % tiles / tiles_w), tw = (int)(p % tiles_w);
    const int h0 = (int)(2 * th - pad_top), w0 = (int)(2 * tw - pad_left);

    T acc[WINOGRAD_SUB][WINOGRAD_SUB] = {};
    for (i64 c0 = 0; c0 < C; c0 += SLAB) {
        // U of the slab (SLAB x 32 rows of each point, 16-byte loads, a warp's consecutive),
        // loaded first so that its loads are in flight with the patch's.
        Pack<T> u_slab[WINOGRAD_POINTS / PASS_POINTS];
#pragma unroll
        for (int pass = 0; pass < WINOGRAD_POINTS / PASS_POINTS; ++pass)
            u_slab[pass] = u_packs[c0 * K_padded / Pack<T>::N + pass * pass_step];
        if (tid < SLAB * WINOGRAD_TILES) {  // V of channel c0 + tid / 32 at this thread's tile
            const int slab_c = tid / WINOGRAD_TILES;
            const T* plane = x + ((i64)n * C + c0 + slab_c) * H * W;
            T d[WINOGRAD_POINTS];
            transformed_patch(plane, H, W, h0, w0, tile_in && c0 + slab_c < C, d);
#pragma unroll
            for (int point = 0; point < WINOGRAD_POINTS; ++point)
                shared.b_at(point, slab_c)[tile] = d[point];
        }
#pragma unroll
        for (int pass = 0; pass < WINOGRAD_POINTS / PASS_POINTS; ++pass)
            reinterpret_cast<Pack<T>*>(shared.a_at(u_point + PASS_POINTS * pass, u_c))[u_pack] =
                u_slab[pass];
        __syncthreads();
        multiply_slab(shared, acc);
        __syncthreads();
    }

    hand_over_products(shared, acc, [&](const T (&m)[WINOGRAD_POINTS], int row, int column) {
        const i64 k = k0 + row;
        if (!tile_in || k >= K) return;  // column is this thread's tile
        T half[8], out[4];
#pragma unroll
        for (int b = 0; b < 4; ++b) output_axis(m + b, half + b, 4, 4);  // 2 x 4
#pragma unroll
        for (int a = 0; a < 2; ++a) output_axis(half + 4 * a, out + 2 * a, 1, 1);  // 2 x 2
        T* y_plane = y + ((i64)n * K + k) * Ho * Wo;
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
            for (int b = 0; b < 2; ++b) {
                const int oh = 2 * th + a, ow = 2 * tw + b;
                T value = out[2 * a + b];
                if (has_bias) value += bias[k];
                if (oh < Ho && ow < Wo)
                    y_plane[(i64)oh * Wo + ow] = relu && value < T(0) ? T(0) : value;
            }
    });
}

// part[split] (K, C, 3, 3) = the weight gradient of a 3x3 stride-1 convolution of x (N, C, H, W)
// with output gradient gy (N, K, Ho, Wo), padding pad_top and pad_left, then with_bias the bias
// gradient's K entries (the sums of gy), each summed over its output
// tiles [split * chunk, + chunk) (tiles as winograd_conv2d's; chunk a multiple of
// WINOGRAD_CHANNELS), as F(3x3, 2x2): gw = G^T [sum over tiles (A gy A^T) . (B^T d B)] G, 16
// GEMMs of K x C reducing over the tiles. grid = (ceil(C / 32), ceil(K / 32), splits), block =
// BLOCK_1D; sum_partials (conv2d.cu) adds the splits in a fixed order. Per slab of SLAB tiles,
// SLAB x 32 threads each transform one filter's gy tile and one channel's x patch, (channel
// t / SLAB, tile t % SLAB), whose stores into rows of 36 (4 x tile + channel mod 32: all banks)
// would otherwise pile 8 deep on 4 banks.
template <typename T>
__global__ void __launch_bounds__(BLOCK_1D, WINOGRAD_MIN_BLOCKS)
winograd_backward_weight(const T* gy, const T* x, T* part, i64 N, i64 C, i64 H, i64 W, i64 K,
                         i64 Ho, i64 Wo, i64 tiles_h, i64 tiles_w, i64 pad_top, i64 pad_left,
                         i64 chunk, int with_bias) {
    typedef WinogradShared<T, WINOGRAD_ROWS + 4> Shared;  // a: gy's (filters), b: x's (channels)
    constexpr int SLAB = Shared::SLAB;
    __shared__ Shared shared;
    const int tid = threadIdx.x, channel = tid / SLAB, slab_t = tid % SLAB;
    const i64 k0 = (i64)blockIdx.y * WINOGRAD_ROWS, c0 = (i64)blockIdx.x * WINOGRAD_TILES;
    const i64 tiles = tiles_h * tiles_w, q_begin = (i64)blockIdx.z * chunk;
    const i64 q_end = q_begin + chunk < N * tiles ? q_begin + chunk : N * tiles;

    // This thread's tile, q_begin + slab_t at the first slab, SLAB further each slab after.
    int n = (int)((q_begin + slab_t) / tiles), th = (int)((q_begin + slab_t) % tiles / tiles_w);
    int tw = (int)((q_begin + slab_t) % tiles_w);
    const i64 k = k0 + channel, c = c0 + channel;

    T acc[WINOGRAD_SUB][WINOGRAD_SUB] = {}, bias_sum = T(0);
    for (i64 q0 = q_begin; q0 < q_end; q0 += SLAB) {
        if (channel < WINOGRAD_ROWS) {
            const bool live = q0 + slab_t < q_end;
            T g[WINOGRAD_POINTS], half[8];  // gy's 2 x 2 tile of filter k, as A gy A^T
            const T* gy_plane = gy + ((i64)n * K + k) * Ho * Wo;
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int oh = 2 * th + i, ow = 2 * tw;
                const bool row_in = live && k < K && oh < Ho;
                const T g0 = row_in ? gy_plane[(i64)oh * Wo + ow] : T(0);
                const T g1 = row_in && ow + 1 < Wo ? gy_plane[(i64)oh * Wo + ow + 1] : T(0);
                bias_sum += g0 + g1;
                gradient_axis(g0, g1, half + 4 * i, 1);  // along the row: 2 x 4
            }
#pragma unroll
            for (int b = 0; b < 4; ++b) gradient_axis(half[b], half[4 + b], g + b, 4);
            T d[WINOGRAD_POINTS];  // x's patch of channel c, as B^T d B
            const T* x_plane = x + ((i64)n * C + c) * H * W;
            transformed_patch(x_plane, H, W, (int)(2 * th - pad_top), (int)(2 * tw - pad_left),
                              live && c < C, d);
#pragma unroll
            for (int point = 0; point < WINOGRAD_POINTS; ++point) {
                shared.a_at(point, slab_t)[channel] = g[point];
                shared.b_at(point, slab_t)[channel] = d[point];
            }
            for (tw += SLAB; tw >= tiles_w; tw -= (int)tiles_w)  // the next slab's tile
                if (++th == tiles_h) th = 0, ++n;
        }
        __syncthreads();
        multiply_slab(shared, acc);
        __syncthreads();
    }

    // The bias gradient (with_bias, the first block of channels): filter k's gy sums, over the
    // SLAB lanes that loaded its tiles, in a fixed butterfly, after the weights' K * C * 9.
    T* out = part + (i64)blockIdx.z * (K * C * 9 + (with_bias ? K : 0));
    if (with_bias && blockIdx.x == 0 && tid < SLAB * WINOGRAD_ROWS) {  // whole warps
        for (int lanes = SLAB / 2; lanes > 0; lanes /= 2)
            bias_sum += __shfl_xor_sync(0xffffffffu, bias_sum, lanes);
        if (slab_t == 0 && k < K) out[K * C * 9 + k] = bias_sum;
    }
    // A warp holds one filter's 32 channels (lane = channel - c0): their 9 taps each are one run
    // of 288 values in part, which the warp stores 32 consecutive values at a time (value e of
    // the run is tap e % 9 of lane e / 9, fetched by shuffles), not 9 apart.
    const int valid = (int)(C - c0 < WINOGRAD_TILES ? C - c0 : WINOGRAD_TILES) * 9;
    hand_over_products(shared, acc, [&](const T (&m)[WINOGRAD_POINTS], int row, int lane) {
        const i64 kk = k0 + row;
        if (kk >= K) return;  // the whole warp
        T half[12], taps[9];  // G^T m G: 3 x 4, then 3 x 3
#pragma unroll
        for (int b = 0; b < 4; ++b) tap_axis(m + b, half + b, 4, 4);
#pragma unroll
        for (int r = 0; r < 3; ++r) tap_axis(half + 4 * r, taps + 3 * r, 1, 1);
        T* run = out + (kk * C + c0) * 9;
#pragma unroll 1
        for (int j = 0; j < 9; ++j) {
            const int e = j * WINOGRAD_TILES + lane, owner = e / 9, tap = e % 9;
            T value = T(0);
#pragma unroll
            for (int t = 0; t < 9; ++t) {
                const T shuffled = __shfl_sync(0xffffffffu, taps[t], owner);
                if (t == tap) value = shuffled;
            }
            if (e < valid) run[e] = value;
        }
    });
}

#define INSTANTIATE_WINOGRAD(T)                                                                    \
    template __global__ void winograd_filter<T>(const T*, T*, i64, i64, int);                      \
    template __global__ void winograd_conv2d<T>(const T*, const T*, const T*, T*, i64, i64, i64,   \
                                                i64, i64, i64, i64, i64, i64, i64, i64, int, int); \
    template __global__ void winograd_backward_weight<T>(const T*, const T*, T*, i64, i64, i64,    \
                                                         i64, i64, i64, i64, i64, i64, i64, i64,   \
                                                         i64, int);
INSTANTIATE_FOR_FLOAT_TYPES(INSTANTIATE_WINOGRAD)
