// conv2d forward, backward-input, backward-weight and backward-bias, NCHW, float and double.
//
// All three passes are implicit GEMMs, one per group (blockIdx.z): the GEMM operands are read
// straight from x, w and gy with the window arithmetic done on the fly, so no im2col buffer ever
// exists in global memory. Every output element is summed by one thread in a fixed
// order (plus a fixed-order split reduction for the weight gradient): no atomics, results are
// bitwise identical run to run.
#include "common.cuh"

// A block computes a Tile::M x Tile::P tile of C = A * B, stepping through the reduction dimension
// Q in slabs of Tile::Q staged in shared memory. Two tile shapes, both 256 threads that each own
// 4 x 4 outputs, thread (ty, tx) rows SUB ty + i and columns SUB tx + j, so each step of the
// reduction reads its 4 A and 4 B entries as two 16-byte shared loads (a warp: A addresses
// broadcast, B addresses side by side, no bank conflicts for float):
// - SquareTile, 64 x 64 (16 x 16 threads), slabs of 16;
// - NarrowTile, 16 x 256 (4 x 64 threads), slabs of 8 (so a thread stages 8 B entries a slab, as
//   in the square tile), for GEMMs of at most 16 rows (conv1's 16 filters, the input gradient of
//   a layer with 1 or 16 input channels), where a 64-row tile would spend 3/4 or more of its
//   multiply-adds on rows of zeros.
// The launcher picks the tile with the least padded work. Both sum every output over its reduction
// (or a weight gradient's split of it) in the same order, so they give the same bits.
#define TILE_Q 16
#define GEMM_THREADS 256
#define SUB 4

template <int ROWS, int COLUMNS, int SLAB> struct Tile {
    static constexpr int M = ROWS, P = COLUMNS, Q = SLAB;
    static constexpr int THREADS_P = P / SUB;  // threads across a row of the tile
    // Thread t loads A entries (q = t % Q, m = t / Q + A_STEP i, those with m < M) and B entries
    // (p = t % P, q = t / P + B_STEP i): the B column is fixed per thread, so its pixel is decoded
    // once per tile rather than once per element.
    static constexpr int A_LOADS = (M * Q + GEMM_THREADS - 1) / GEMM_THREADS;
    static constexpr int B_LOADS = P * Q / GEMM_THREADS;
    static constexpr int A_STEP = GEMM_THREADS / Q, B_STEP = GEMM_THREADS / P;
    // A tile rows hold one Quad more than they use: consecutive threads store down a column of A
    // (Q values of q), and the padding spreads those stores over the banks.
    static constexpr int A_ROW = M / SUB + 1;
    static_assert(M / SUB * THREADS_P == GEMM_THREADS, "one thread per SUB x SUB outputs");
    static_assert(B_LOADS >= 1 && P <= GEMM_THREADS, "whole loads per thread");
    __device__ static int ty() { return threadIdx.x / THREADS_P; }
    __device__ static int tx() { return threadIdx.x % THREADS_P; }
};
typedef Tile<64, 64, TILE_Q> SquareTile;
typedef Tile<16, 256, TILE_Q / 2> NarrowTile;

// One reduction index q as a pass needs it, decoded once per slab by the first Tile::Q threads and
// shared by the whole block: the divisions that split q into (channel, tap) or (image, pixel) run
// once per row of the slab instead of once per loaded element. a and b are q's offsets into the
// A and B operands; dh and dw are its window shifts (or output position) in rows and columns.
struct Row {
    i64 a, b;
    int dh, dw;
};

// SUB consecutive entries of a tile row, aligned so that a thread reads them with one 16-byte
// shared load (two for double).
template <typename T> struct __align__(SUB * sizeof(T)) Quad {
    T v[SUB];
};

// A tile's shared memory: the staged A and B slabs and two slabs' Rows (the one staged and the
// one being loaded). GemmStorage overlays both tiles' layouts, so a kernel that can run either
// holds the larger only.
template <typename T, typename Tl> struct GemmShared {
    Quad<T> a[Tl::Q][Tl::A_ROW];
    Quad<T> b[Tl::Q][Tl::P / SUB];
    Row rows[2][Tl::Q];
};
template <typename T> union GemmStorage {
    GemmShared<T, SquareTile> square;
    GemmShared<T, NarrowTile> narrow;
};

// acc += A[q_begin:q_end, tile] * B[q_begin:q_end, tile]. decode(q) returns q's Row;
// load_a(m, row) returns A[m0 + m][q] and load_b(row) B[q][this thread's column] (zero outside).
// Software-pipelined: a slab's global loads go to registers while the block multiplies the slab
// before from shared memory, so their latency hides behind its FMAs (small convolutions walk
// many slabs in few blocks, one after another). The multiply-adds run in the same order as
// without the pipeline.
template <typename T, typename Tl, typename Decode, typename LoadA, typename LoadB>
__device__ void gemm_mainloop(GemmShared<T, Tl>& tiles, i64 q_begin, i64 q_end, Decode decode,
                              LoadA load_a, LoadB load_b, T (&acc)[SUB][SUB]) {
    const int tid = threadIdx.x, ty = Tl::ty(), tx = Tl::tx();
    T a_next[Tl::A_LOADS], b_next[Tl::B_LOADS];  // this thread's entries of the next slab
    auto decode_slab = [&](i64 q0, Row* slab_rows) {
        if (tid < Tl::Q && q0 + tid < q_end) slab_rows[tid] = decode(q0 + tid);
    };
    auto load_slab = [&](i64 q0, const Row* slab_rows) {
#pragma unroll
        for (int i = 0; i < Tl::A_LOADS; ++i) {
            const int m = tid / Tl::Q + Tl::A_STEP * i, q = tid % Tl::Q;
            if (m < Tl::M) a_next[i] = q0 + q < q_end ? load_a(m, slab_rows[q]) : T(0);
        }
#pragma unroll
        for (int i = 0; i < Tl::B_LOADS; ++i) {
            const int q = tid / Tl::P + Tl::B_STEP * i;
            b_next[i] = q0 + q < q_end ? load_b(slab_rows[q]) : T(0);
        }
    };
    if (q_begin >= q_end) return;
    decode_slab(q_begin, tiles.rows[0]);
    __syncthreads();
    load_slab(q_begin, tiles.rows[0]);
    int staged = 0;
    for (i64 q0 = q_begin; q0 < q_end; q0 += Tl::Q, staged ^= 1) {
#pragma unroll
        for (int i = 0; i < Tl::A_LOADS; ++i) {
            const int m = tid / Tl::Q + Tl::A_STEP * i, q = tid % Tl::Q;
            if (m < Tl::M) tiles.a[q][m / SUB].v[m % SUB] = a_next[i];
        }
#pragma unroll
        for (int i = 0; i < Tl::B_LOADS; ++i) {
            const int q = tid / Tl::P + Tl::B_STEP * i, p = tid % Tl::P;
            tiles.b[q][p / SUB].v[p % SUB] = b_next[i];
        }
        const bool more = q0 + Tl::Q < q_end;
        if (more) decode_slab(q0 + Tl::Q, tiles.rows[staged ^ 1]);
        __syncthreads();
        if (more) load_slab(q0 + Tl::Q, tiles.rows[staged ^ 1]);  // in flight during the FMAs
#pragma unroll
        for (int q = 0; q < Tl::Q; ++q) {
            const Quad<T> av = tiles.a[q][ty], bv = tiles.b[q][tx];
#pragma unroll
            for (int i = 0; i < SUB; ++i)
#pragma unroll
                for (int j = 0; j < SUB; ++j) acc[i][j] += av.v[i] * bv.v[j];
        }
        __syncthreads();
    }
}

// store(m, p, value) for every owned output with m0 + m < M and p0 + p < P (m, p absolute).
template <typename Tl, typename T, typename Store>
__device__ void gemm_store(i64 m0, i64 p0, i64 M, i64 P, const T (&acc)[SUB][SUB], Store store) {
    const int ty = Tl::ty(), tx = Tl::tx();
#pragma unroll
    for (int i = 0; i < SUB; ++i)
#pragma unroll
        for (int j = 0; j < SUB; ++j) {
            const i64 m = m0 + ty * SUB + i, p = p0 + tx * SUB + j;
            if (m < M && p < P) store(m, p, acc[i][j]);
        }
}

// A convolution's geometry, as every pass takes it (the launchers' parameter order).
struct Conv {
    i64 N, C, H, W, K, Ho, Wo, R, S, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups;
};
#define CONV_PARAMS                                                                                \
    i64 N, i64 C, i64 H, i64 W, i64 K, i64 Ho, i64 Wo, i64 R, i64 S, i64 stride_h, i64 stride_w,  \
        i64 pad_top, i64 pad_left, i64 dil_h, i64 dil_w, i64 groups
#define CONV_ARGS                                                                                  \
    Conv {                                                                                         \
        N, C, H, W, K, Ho, Wo, R, S, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups   \
    }

// The GEMM kernels' __launch_bounds__: at most 128 registers a thread for float, so that two
// blocks share an SM (without the bound ptxas reports 121-127 today; with it, code that would need
// more spills and fails the compile check instead of silently halving the occupancy). Double
// needs more: one block an SM.
#define GEMM_MIN_BLOCKS (sizeof(T) == 4 ? 2 : 1)

// Runs body<T, NarrowTile>(storage.narrow, ...) when `narrow`, else body<T, SquareTile>; both are
// compiled and the branch is launch-uniform.
#define DISPATCH_TILE(narrow, body, ...)                                                           \
    do {                                                                                           \
        __shared__ GemmStorage<T> storage;                                                         \
        if (narrow)                                                                                \
            body<T, NarrowTile>(storage.narrow, __VA_ARGS__);                                      \
        else                                                                                       \
            body<T, SquareTile>(storage.square, __VA_ARGS__);                                      \
    } while (0)

// y = conv2d(x, w) + bias, then max(y, 0) when `relu` (as relu_forward: `y < 0 ? 0 : y`).
// x: (N, C, H, W), w: (K, C/groups, R, S), bias: (K,) (read only when has_bias),
// y: (N, K, Ho, Wo). GEMM per group g: A = w_g (K/g x Cg*R*S), B = window columns
// (Cg*R*S x N*Ho*Wo). grid = (ceil(N*Ho*Wo / Tile::P), ceil(K/groups / Tile::M), groups),
// block = 256. Spatial sizes and window reaches fit in int (the launcher checks).
template <typename T, typename Tl>
__device__ void conv2d_forward_tiled(GemmShared<T, Tl>& tiles, const T* x, const T* w,
                                     const T* bias, T* y, const Conv cv, int has_bias, int relu) {
    const i64 g = blockIdx.z, Cg = cv.C / cv.groups, Kg = cv.K / cv.groups, RS = cv.R * cv.S;
    const i64 Q = Cg * RS, HWo = cv.Ho * cv.Wo, P = cv.N * HWo, H = cv.H, W = cv.W;
    const i64 m0 = (i64)blockIdx.y * Tl::M, p0 = (i64)blockIdx.x * Tl::P;

    // This thread's B column: output pixel (n, oh, ow) -> top-left input corner (ih0, iw0).
    const i64 p = p0 + threadIdx.x % Tl::P, n = p / HWo;
    const int ih0 = (int)(p % HWo / cv.Wo * cv.stride_h - cv.pad_top);
    const int iw0 = (int)(p % cv.Wo * cv.stride_w - cv.pad_left);
    const T* x_grp = x + (n * cv.C + g * Cg) * H * W;
    const T* w_grp = w + g * Kg * Q;

    auto decode = [&](i64 q) {  // q = (c, r, s): a = q, b = c's plane in x_grp
        const i64 c = q / RS, rs = q % RS;
        return Row{q, c * H * W, (int)(rs / cv.S * cv.dil_h), (int)(rs % cv.S * cv.dil_w)};
    };
    auto load_a = [&](int m, const Row& row) {
        return m0 + m < Kg ? w_grp[(m0 + m) * Q + row.a] : T(0);
    };
    auto load_b = [&](const Row& row) {
        const int ih = ih0 + row.dh, iw = iw0 + row.dw;
        const bool inside = p < P && ih >= 0 && ih < H && iw >= 0 && iw < W;
        return inside ? x_grp[row.b + (i64)ih * W + iw] : T(0);
    };
    T acc[SUB][SUB] = {};
    gemm_mainloop(tiles, 0, Q, decode, load_a, load_b, acc);
    gemm_store<Tl>(m0, p0, Kg, P, acc, [&](i64 m, i64 pp, T v) {
        const i64 k = g * Kg + m;
        if (has_bias) v += bias[k];
        y[(pp / HWo * cv.K + k) * HWo + pp % HWo] = relu && v < T(0) ? T(0) : v;
    });
}

template <typename T>
__global__ void __launch_bounds__(GEMM_THREADS, GEMM_MIN_BLOCKS)
conv2d_forward(const T* x, const T* w, const T* bias, T* y, CONV_PARAMS, int has_bias, int relu,
               int narrow) {
    DISPATCH_TILE(narrow, conv2d_forward_tiled, x, w, bias, y, CONV_ARGS, has_bias, relu);
}

// gx = d(loss)/dx in gather form: each input pixel sums the (output pixel, tap) pairs that read it.
// gy: (N, K, Ho, Wo), w: (K, C/groups, R, S), gx: (N, C, H, W). GEMM per group g: A = w_g^T
// (Cg x K/g*R*S), B[(k, r, s)][(n, ih, iw)] = gy[n, k, oh, ow] where ih = oh*stride - pad + r*dil
// (zero where no such oh/ow exists). grid = (ceil(N*H*W / Tile::P), ceil(C/groups / Tile::M),
// groups).
template <typename T, typename Tl>
__device__ void conv2d_backward_input_tiled(GemmShared<T, Tl>& tiles, const T* gy, const T* w,
                                            T* gx, const Conv cv) {
    const i64 g = blockIdx.z, Cg = cv.C / cv.groups, Kg = cv.K / cv.groups, RS = cv.R * cv.S;
    const i64 Q = Kg * RS, HW = cv.H * cv.W, P = cv.N * HW, Ho = cv.Ho, Wo = cv.Wo;
    const i64 m0 = (i64)blockIdx.y * Tl::M, p0 = (i64)blockIdx.x * Tl::P;

    // This thread's B column: input pixel (n, ih, iw), shifted into padded coordinates.
    const i64 p = p0 + threadIdx.x % Tl::P, n = p / HW;
    const int th0 = (int)(p % HW / cv.W + cv.pad_top), tw0 = (int)(p % cv.W + cv.pad_left);
    const int sh = (int)cv.stride_h, sw = (int)cv.stride_w;
    const T* gy_grp = gy + (n * cv.K + g * Kg) * Ho * Wo;
    const T* w_grp = w + g * Kg * Cg * RS;

    auto decode = [&](i64 q) {  // q = (k, r, s): a = w[g*Kg + k, 0, r, s], b = k's plane in gy
        const i64 k = q / RS, rs = q % RS;
        return Row{k * Cg * RS + rs, k * Ho * Wo, (int)(rs / cv.S * cv.dil_h),
                   (int)(rs % cv.S * cv.dil_w)};
    };
    auto load_a = [&](int m, const Row& row) {  // w[g*Kg + k, m0 + m, r, s]
        return m0 + m < Cg ? w_grp[row.a + (m0 + m) * RS] : T(0);
    };
    auto load_b = [&](const Row& row) {
        // Tap (r, s) meets this pixel from output row oh = (ih + pad - r*dil) / stride when that
        // is a non-negative exact multiple below Ho; likewise for columns.
        const int th = th0 - row.dh, tw = tw0 - row.dw;
        if (p >= P || th < 0 || tw < 0) return T(0);
        if ((sh != 1 && th % sh != 0) || (sw != 1 && tw % sw != 0)) return T(0);
        const int oh = sh == 1 ? th : th / sh, ow = sw == 1 ? tw : tw / sw;
        return oh < Ho && ow < Wo ? gy_grp[row.b + (i64)oh * Wo + ow] : T(0);
    };
    T acc[SUB][SUB] = {};
    gemm_mainloop(tiles, 0, Q, decode, load_a, load_b, acc);
    gemm_store<Tl>(m0, p0, Cg, P, acc, [&](i64 m, i64 pp, T v) {
        gx[(pp / HW * cv.C + g * Cg + m) * HW + pp % HW] = v;
    });
}

template <typename T>
__global__ void __launch_bounds__(GEMM_THREADS, GEMM_MIN_BLOCKS)
conv2d_backward_input(const T* gy, const T* w, T* gx, CONV_PARAMS, int narrow) {
    DISPATCH_TILE(narrow, conv2d_backward_input_tiled, gy, w, gx, CONV_ARGS);
}

// Partial weight gradients: part[split] = sum over this split's (n, oh, ow) of gy * window.
// gy: (N, K, Ho, Wo), x: (N, C, H, W), part: (splits, K*C/groups*R*S (+ K with_bias)): the
// weight gradient's entries, then, with_bias, the bias gradient's. GEMM per group g:
// A = gy_g (K/g x N*Ho*Wo), B[(n, oh, ow)][(c, r, s)] = x[n, c, oh*stride - pad + r*dil, ...],
// and with_bias one more column of B, all ones: its column of the product sums gy, the bias
// gradient, in the same pass. The reduction N*Ho*Wo is cut into `splits` chunks of `chunk` (a
// multiple of TILE_Q) so that enough blocks run; sum_partials adds the chunks in a fixed order.
// grid = (ceil((C/groups*R*S + with_bias) / Tile::P), ceil(K/groups / Tile::M),
// groups * splits), block = 256.
template <typename T, typename Tl>
__device__ void conv2d_backward_weight_tiled(GemmShared<T, Tl>& tiles, const T* gy, const T* x,
                                             T* part, const Conv cv, i64 chunk, int with_bias) {
    const i64 g = blockIdx.z % cv.groups, split = blockIdx.z / cv.groups;
    const i64 Cg = cv.C / cv.groups, Kg = cv.K / cv.groups, RS = cv.R * cv.S, P = Cg * RS;
    const i64 HWo = cv.Ho * cv.Wo, H = cv.H, W = cv.W, Q = cv.N * HWo, q_begin = split * chunk;
    const i64 q_end = q_begin + chunk < Q ? q_begin + chunk : Q;
    const i64 m0 = (i64)blockIdx.y * Tl::M, p0 = (i64)blockIdx.x * Tl::P;

    // This thread's B column: weight tap (c, r, s) -> offset of its input pixel from (oh, ow).
    const i64 p = p0 + threadIdx.x % Tl::P, c = g * Cg + p / RS;
    const int dh = (int)(p % RS / cv.S * cv.dil_h - cv.pad_top);
    const int dw = (int)(p % cv.S * cv.dil_w - cv.pad_left);
    const T* gy_grp = gy + g * Kg * HWo;
    const T* x_plane = x + c * H * W;

    auto decode = [&](i64 q) {  // q = (n, oh, ow): a = gy offset of (n, 0, oh, ow), b = x's image n
        const i64 n = q / HWo, hw = q % HWo;
        return Row{n * cv.K * HWo + hw, n * cv.C * H * W, (int)(hw / cv.Wo * cv.stride_h),
                   (int)(hw % cv.Wo * cv.stride_w)};
    };
    auto load_a = [&](int m, const Row& row) {  // gy[n, g*Kg + m0 + m, oh, ow]
        return m0 + m < Kg ? gy_grp[row.a + (m0 + m) * HWo] : T(0);
    };
    auto load_b = [&](const Row& row) {
        const int ih = row.dh + dh, iw = row.dw + dw;
        const bool inside = p < P && ih >= 0 && ih < H && iw >= 0 && iw < W;
        return inside ? x_plane[row.b + (i64)ih * W + iw] : T(p == P && with_bias);
    };
    T acc[SUB][SUB] = {};
    gemm_mainloop(tiles, q_begin, q_end, decode, load_a, load_b, acc);
    T* out = part + split * (cv.K * P + (with_bias ? cv.K : 0));
    gemm_store<Tl>(m0, p0, Kg, P + with_bias, acc, [&](i64 m, i64 pp, T v) {
        out[pp < P ? (g * Kg + m) * P + pp : cv.K * P + g * Kg + m] = v;
    });
}

template <typename T>
__global__ void __launch_bounds__(GEMM_THREADS, GEMM_MIN_BLOCKS)
conv2d_backward_weight(const T* gy, const T* x, T* part, CONV_PARAMS, i64 chunk, int with_bias,
                       int narrow) {
    DISPATCH_TILE(narrow, conv2d_backward_weight_tiled, gy, x, part, CONV_ARGS, chunk, with_bias);
}

// out[i] = the sum over s of part[s][i], in a fixed order. part: (splits, count), out: (count,).
// A block sums 32 consecutive outputs (a warp's lanes: coalesced loads), its 8 warps taking the
// splits in turn (warp w: w, w + 8, ...); warp 0 then adds the 8 warp sums in order. Hundreds of
// splits (conv1's weight gradient at batch 64 has 338) are then 8 times shorter chains than one
// thread per output would walk. grid = (ceil(count / 32),), block = BLOCK_1D.
template <typename T>
__global__ void sum_partials(const T* part, T* out, i64 splits, i64 count) {
    constexpr int WARPS = BLOCK_1D / 32;
    __shared__ T sums[WARPS][32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const i64 i = (i64)blockIdx.x * 32 + lane;
    T total = T(0);
    if (i < count)
        for (i64 s = warp; s < splits; s += WARPS) total += part[s * count + i];
    sums[warp][lane] = total;
    __syncthreads();
    if (warp == 0 && i < count) {
        T sum = sums[0][lane];
        for (int w = 1; w < WARPS; ++w) sum += sums[w][lane];
        out[i] = sum;
    }
}

// gb[k] = sum over n, pixels of gy[n, k, :, :]. gy: (N, K, HW) -> gb: (K,).
// grid = (K,), block = BLOCK_1D: one block per channel, a fixed-order tree reduction.
template <typename T>
__global__ void conv2d_backward_bias(const T* gy, T* gb, i64 N, i64 K, i64 HW) {
    __shared__ T smem[BLOCK_1D];
    const i64 k = blockIdx.x;
    T sum = T(0);
    for (i64 i = threadIdx.x; i < N * HW; i += BLOCK_1D) sum += gy[(i / HW * K + k) * HW + i % HW];
    sum = block_reduce(sum, smem, SumOp());
    if (threadIdx.x == 0) gb[k] = sum;
}

#define INSTANTIATE_CONV2D(T)                                                                      \
    template __global__ void conv2d_forward<T>(const T*, const T*, const T*, T*, CONV_PARAMS, int, \
                                               int, int);                                          \
    template __global__ void conv2d_backward_input<T>(const T*, const T*, T*, CONV_PARAMS, int);   \
    template __global__ void conv2d_backward_weight<T>(const T*, const T*, T*, CONV_PARAMS, i64,   \
                                                       int, int);                                  \
    template __global__ void sum_partials<T>(const T*, T*, i64, i64);                              \
    template __global__ void conv2d_backward_bias<T>(const T*, T*, i64, i64, i64);
INSTANTIATE_FOR_FLOAT_TYPES(INSTANTIATE_CONV2D)
