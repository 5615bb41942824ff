// conv2d forward, backward-input, backward-weight and backward-bias, NCHW, float and double.
//
// All three passes are implicit GEMMs, one per group (blockIdx.z): the GEMM operands are read
// straight from x, w and gy with the window arithmetic done on the fly, so no im2col buffer ever
// exists in global memory. Every output element is summed by one thread in a fixed
// order (plus a fixed-order split reduction for the weight gradient): no atomics, results are
// bitwise identical run to run.
#include "common.cuh"

// A block computes a TILE_M x TILE_P tile of C = A * B, stepping through the reduction dimension Q
// in slabs of TILE_Q staged in shared memory. 256 threads as 16 x 16; thread (ty, tx) owns the
// 4 x 4 outputs at rows 4 ty + i and columns 4 tx + j, so each step of the reduction reads its 4 A
// and 4 B entries as two 16-byte shared loads (a warp: 2 A addresses broadcast, 16 B addresses
// side by side, no bank conflicts).
#define TILE_M 64
#define TILE_P 64
#define TILE_Q 16
#define GEMM_THREADS 256
#define SUB 4  // TILE_M / 16 == TILE_P / 16

// Thread t loads A entries (q = t % TILE_Q, m = t / TILE_Q + A_STEP i) and B entries
// (p = t % TILE_P, q = t / TILE_P + B_STEP i): the B column is fixed per thread, so its pixel is
// decoded once per tile rather than once per element.
#define A_STEP (GEMM_THREADS / TILE_Q)
#define B_STEP (GEMM_THREADS / TILE_P)

// One reduction index q as a pass needs it, decoded once per slab by the first TILE_Q threads and
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

// A tile rows hold one Quad more than they use: consecutive threads store down a column of A
// (16 values of q), and the padding spreads those stores over the banks.
#define A_ROW (TILE_M / SUB + 1)

// acc += A[q_begin:q_end, tile] * B[q_begin:q_end, tile]. decode(q) returns q's Row;
// load_a(m, row) returns A[m0 + m][q] and load_b(row) B[q][this thread's column] (zero outside).
// Software-pipelined: a slab's global loads go to registers while the block multiplies the slab
// before from shared memory, so their latency hides behind its FMAs (small convolutions walk
// many slabs in few blocks, one after another). `rows` holds two slabs' Rows (the one staged and
// the one being loaded). The multiply-adds run in the same order as without the pipeline.
template <typename T, typename Decode, typename LoadA, typename LoadB>
__device__ void gemm_mainloop(i64 q_begin, i64 q_end, Decode decode, LoadA load_a, LoadB load_b,
                              T (&acc)[SUB][SUB]) {
    __shared__ Quad<T> a_tile[TILE_Q][A_ROW];
    __shared__ Quad<T> b_tile[TILE_Q][TILE_P / SUB];
    __shared__ Row rows[2][TILE_Q];
    const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
    T a_next[SUB], b_next[TILE_Q / B_STEP];  // this thread's entries of the next slab
    auto decode_slab = [&](i64 q0, Row* slab_rows) {
        if (tid < TILE_Q && q0 + tid < q_end) slab_rows[tid] = decode(q0 + tid);
    };
    auto load_slab = [&](i64 q0, const Row* slab_rows) {
#pragma unroll
        for (int i = 0; i < SUB; ++i) {
            const int m = tid / TILE_Q + A_STEP * i, q = tid % TILE_Q;
            a_next[i] = q0 + q < q_end ? load_a(m, slab_rows[q]) : T(0);
        }
#pragma unroll
        for (int i = 0; i < TILE_Q / B_STEP; ++i) {
            const int q = tid / TILE_P + B_STEP * i;
            b_next[i] = q0 + q < q_end ? load_b(slab_rows[q]) : T(0);
        }
    };
    if (q_begin >= q_end) return;
    decode_slab(q_begin, rows[0]);
    __syncthreads();
    load_slab(q_begin, rows[0]);
    int staged = 0;
    for (i64 q0 = q_begin; q0 < q_end; q0 += TILE_Q, staged ^= 1) {
#pragma unroll
        for (int i = 0; i < SUB; ++i) {
            const int m = tid / TILE_Q + A_STEP * i, q = tid % TILE_Q;
            a_tile[q][m / SUB].v[m % SUB] = a_next[i];
        }
#pragma unroll
        for (int i = 0; i < TILE_Q / B_STEP; ++i) {
            const int q = tid / TILE_P + B_STEP * i, p = tid % TILE_P;
            b_tile[q][p / SUB].v[p % SUB] = b_next[i];
        }
        const bool more = q0 + TILE_Q < q_end;
        if (more) decode_slab(q0 + TILE_Q, rows[staged ^ 1]);
        __syncthreads();
        if (more) load_slab(q0 + TILE_Q, rows[staged ^ 1]);  // in flight during the FMAs below
#pragma unroll
        for (int q = 0; q < TILE_Q; ++q) {
            const Quad<T> av = a_tile[q][ty], bv = b_tile[q][tx];
#pragma unroll
            for (int i = 0; i < SUB; ++i)
#pragma unroll
                for (int j = 0; j < SUB; ++j) acc[i][j] += av.v[i] * bv.v[j];
        }
        __syncthreads();
    }
}

// store(m, p, value) for every owned output with m0 + m < M and p0 + p < P (m, p absolute).
template <typename T, typename Store>
__device__ void gemm_store(i64 m0, i64 p0, i64 M, i64 P, const T (&acc)[SUB][SUB], Store store) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
    for (int i = 0; i < SUB; ++i)
#pragma unroll
        for (int j = 0; j < SUB; ++j) {
            const i64 m = m0 + ty * SUB + i, p = p0 + tx * SUB + j;
            if (m < M && p < P) store(m, p, acc[i][j]);
        }
}

// y = conv2d(x, w) + bias, then max(y, 0) when `relu` (as relu_forward: `y < 0 ? 0 : y`).
// x: (N, C, H, W), w: (K, C/groups, R, S), bias: (K,) (read only when has_bias),
// y: (N, K, Ho, Wo). GEMM per group g: A = w_g (K/g x Cg*R*S), B = window columns
// (Cg*R*S x N*Ho*Wo). grid = (ceil(N*Ho*Wo / 64), ceil(K/groups / 64), groups), block = 256.
// Spatial sizes and window reaches fit in int (the launcher checks).
template <typename T>
__global__ void conv2d_forward(const T* x, const T* w, const T* bias, T* y, i64 N, i64 C, i64 H,
                               i64 W, i64 K, i64 Ho, i64 Wo, i64 R, i64 S, i64 stride_h,
                               i64 stride_w, i64 pad_top, i64 pad_left, i64 dil_h, i64 dil_w,
                               i64 groups, int has_bias, int relu) {
    const i64 g = blockIdx.z, Cg = C / groups, Kg = K / groups, RS = R * S, Q = Cg * RS;
    const i64 HWo = Ho * Wo, P = N * HWo;
    const i64 m0 = (i64)blockIdx.y * TILE_M, p0 = (i64)blockIdx.x * TILE_P;

    // This thread's B column: output pixel (n, oh, ow) -> top-left input corner (ih0, iw0).
    const i64 p = p0 + threadIdx.x % TILE_P, n = p / HWo;
    const int ih0 = (int)(p % HWo / Wo * stride_h - pad_top);
    const int iw0 = (int)(p % Wo * stride_w - pad_left);
    const T* x_grp = x + (n * C + g * Cg) * H * W;
    const T* w_grp = w + g * Kg * Q;

    auto decode = [&](i64 q) {  // q = (c, r, s): a = q, b = c's plane in x_grp
        const i64 c = q / RS, rs = q % RS;
        return Row{q, c * H * W, (int)(rs / S * dil_h), (int)(rs % S * dil_w)};
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
    gemm_mainloop(0, Q, decode, load_a, load_b, acc);
    gemm_store(m0, p0, Kg, P, acc, [&](i64 m, i64 pp, T v) {
        const i64 k = g * Kg + m;
        if (has_bias) v += bias[k];
        y[(pp / HWo * K + k) * HWo + pp % HWo] = relu && v < T(0) ? T(0) : v;
    });
}

// gx = d(loss)/dx in gather form: each input pixel sums the (output pixel, tap) pairs that read it.
// gy: (N, K, Ho, Wo), w: (K, C/groups, R, S), gx: (N, C, H, W). GEMM per group g: A = w_g^T
// (Cg x K/g*R*S), B[(k, r, s)][(n, ih, iw)] = gy[n, k, oh, ow] where ih = oh*stride - pad + r*dil
// (zero where no such oh/ow exists). grid = (ceil(N*H*W / 64), ceil(C/groups / 64), groups).
template <typename T>
__global__ void conv2d_backward_input(const T* gy, const T* w, T* gx, i64 N, i64 C, i64 H, i64 W,
                                      i64 K, i64 Ho, i64 Wo, i64 R, i64 S, i64 stride_h,
                                      i64 stride_w, i64 pad_top, i64 pad_left, i64 dil_h,
                                      i64 dil_w, i64 groups) {
    const i64 g = blockIdx.z, Cg = C / groups, Kg = K / groups, RS = R * S, Q = Kg * RS;
    const i64 HW = H * W, P = N * HW;
    const i64 m0 = (i64)blockIdx.y * TILE_M, p0 = (i64)blockIdx.x * TILE_P;

    // This thread's B column: input pixel (n, ih, iw), shifted into padded coordinates.
    const i64 p = p0 + threadIdx.x % TILE_P, n = p / HW;
    const int th0 = (int)(p % HW / W + pad_top), tw0 = (int)(p % W + pad_left);
    const int sh = (int)stride_h, sw = (int)stride_w;
    const T* gy_grp = gy + (n * K + g * Kg) * Ho * Wo;
    const T* w_grp = w + g * Kg * Cg * RS;

    auto decode = [&](i64 q) {  // q = (k, r, s): a = w[g*Kg + k, 0, r, s], b = k's plane in gy
        const i64 k = q / RS, rs = q % RS;
        return Row{k * Cg * RS + rs, k * Ho * Wo, (int)(rs / S * dil_h), (int)(rs % S * dil_w)};
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
    gemm_mainloop(0, Q, decode, load_a, load_b, acc);
    gemm_store(m0, p0, Cg, P, acc, [&](i64 m, i64 pp, T v) {
        gx[(pp / HW * C + g * Cg + m) * HW + pp % HW] = v;
    });
}

// Partial weight gradients: part[split] = sum over this split's (n, oh, ow) of gy * window.
// gy: (N, K, Ho, Wo), x: (N, C, H, W), part: (splits, K*C/groups*R*S (+ K with_bias)): the
// weight gradient's entries, then, with_bias, the bias gradient's. GEMM per group g:
// A = gy_g (K/g x N*Ho*Wo), B[(n, oh, ow)][(c, r, s)] = x[n, c, oh*stride - pad + r*dil, ...],
// and with_bias one more column of B, all ones: its column of the product sums gy, the bias
// gradient, in the same pass. The reduction N*Ho*Wo is cut into `splits` chunks of `chunk` (a
// multiple of TILE_Q) so that enough blocks run; sum_partials adds the chunks in a fixed order.
// grid = (ceil((C/groups*R*S + with_bias) / 64), ceil(K/groups / 64), groups * splits),
// block = 256.
template <typename T>
__global__ void conv2d_backward_weight(const T* gy, const T* x, T* part, i64 N, i64 C, i64 H,
                                       i64 W, i64 K, i64 Ho, i64 Wo, i64 R, i64 S, i64 stride_h,
                                       i64 stride_w, i64 pad_top, i64 pad_left, i64 dil_h,
                                       i64 dil_w, i64 groups, i64 chunk, int with_bias) {
    const i64 g = blockIdx.z % groups, split = blockIdx.z / groups;
    const i64 Cg = C / groups, Kg = K / groups, RS = R * S, P = Cg * RS, HWo = Ho * Wo;
    const i64 Q = N * HWo, q_begin = split * chunk;
    const i64 q_end = q_begin + chunk < Q ? q_begin + chunk : Q;
    const i64 m0 = (i64)blockIdx.y * TILE_M, p0 = (i64)blockIdx.x * TILE_P;

    // This thread's B column: weight tap (c, r, s) -> offset of its input pixel from (oh, ow).
    const i64 p = p0 + threadIdx.x % TILE_P, c = g * Cg + p / RS;
    const int dh = (int)(p % RS / S * dil_h - pad_top), dw = (int)(p % S * dil_w - pad_left);
    const T* gy_grp = gy + g * Kg * HWo;
    const T* x_plane = x + c * H * W;

    auto decode = [&](i64 q) {  // q = (n, oh, ow): a = gy offset of (n, 0, oh, ow), b = x's image n
        const i64 n = q / HWo, hw = q % HWo;
        return Row{n * K * HWo + hw, n * C * H * W, (int)(hw / Wo * stride_h),
                   (int)(hw % Wo * stride_w)};
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
    gemm_mainloop(q_begin, q_end, decode, load_a, load_b, acc);
    T* out = part + split * (K * P + (with_bias ? K : 0));
    gemm_store(m0, p0, Kg, P + with_bias, acc, [&](i64 m, i64 pp, T v) {
        out[pp < P ? (g * Kg + m) * P + pp : K * P + g * Kg + m] = v;
    });
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
    template __global__ void conv2d_forward<T>(const T*, const T*, const T*, T*, i64, i64, i64,    \
                                               i64, i64, i64, i64, i64, i64, i64, i64, i64, i64,   \
                                               i64, i64, i64, int, int);                           \
    template __global__ void conv2d_backward_input<T>(const T*, const T*, T*, i64, i64, i64, i64,  \
                                                      i64, i64, i64, i64, i64, i64, i64, i64, i64, \
                                                      i64, i64, i64);                              \
    template __global__ void conv2d_backward_weight<T>(const T*, const T*, T*, i64, i64, i64, i64, \
                                                       i64, i64, i64, i64, i64, i64, i64, i64,     \
                                                       i64, i64, i64, i64, i64, int);              \
    template __global__ void sum_partials<T>(const T*, T*, i64, i64);                              \
    template __global__ void conv2d_backward_bias<T>(const T*, T*, i64, i64, i64);
INSTANTIATE_FOR_FLOAT_TYPES(INSTANTIATE_CONV2D)
