// Small kernels that exercise the CUDA emulation's semantics (tests/test_emulation.py).

// Reverses each block's slice through shared memory: wrong without a real barrier.
extern "C" __global__ void block_reverse(const float* __restrict__ x, float* __restrict__ y) {
  __shared__ float tile[256];
  const long long base = (long long)blockIdx.x * blockDim.x;
  tile[threadIdx.x] = x[base + threadIdx.x];
  __syncthreads();
  y[base + threadIdx.x] = tile[blockDim.x - 1 - threadIdx.x];
}

// The same without the barrier: thread 0 reads tile[255] before thread 255 has written it.
extern "C" __global__ void block_reverse_no_barrier(const float* x, float* y) {
  __shared__ float tile[256];
  const long long base = (long long)blockIdx.x * blockDim.x;
  tile[threadIdx.x] = x[base + threadIdx.x];
  y[base + threadIdx.x] = tile[blockDim.x - 1 - threadIdx.x];
}

// Tree reduction of each block's slice in dynamic shared memory; blockDim.x a power of two.
template <typename T>
__global__ void block_sum(const T* x, T* out, int n) {
  extern __shared__ unsigned char smem[];
  T* s = reinterpret_cast<T*>(smem);
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  s[threadIdx.x] = i < n ? x[i] : T(0);
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) s[threadIdx.x] += s[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

// Writes every thread's global coordinates, for 3-D grids and blocks.
extern "C" __global__ void coords(int* out) {
  const int bx = blockIdx.x, by = blockIdx.y, bz = blockIdx.z;
  const int block = (bz * gridDim.y + by) * gridDim.x + bx;
  const int t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const int nt = blockDim.x * blockDim.y * blockDim.z;
  int* o = out + 4 * (block * nt + t);
  o[0] = bx * blockDim.x + threadIdx.x;
  o[1] = by * blockDim.y + threadIdx.y;
  o[2] = bz * blockDim.z + threadIdx.z;
  o[3] = t;
}

// Histogram with integer and float atomics.
extern "C" __global__ void histogram(const int* x, int n, int* counts, float* total, unsigned* maxv) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  atomicAdd(&counts[x[i]], 1);
  atomicAdd(total, 1.0f);
  atomicMax(maxv, (unsigned)x[i]);
}

// Warp sum with __shfl_down_sync, then lane 0 of each warp adds into the block's output.
extern "C" __global__ void warp_sum(const float* x, float* out) {
  float v = x[blockIdx.x * blockDim.x + threadIdx.x];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const unsigned ballot = __ballot_sync(0xffffffffu, v > 0.0f);
  if (threadIdx.x % 32 == 0) {
    out[blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32] = v;
    (void)ballot;
  }
}

// Every lane takes lane (31 - lane)'s value, with __shfl_xor_sync.
extern "C" __global__ void warp_flip(const int* x, int* y) {
  const int v = x[threadIdx.x];
  y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, v, 31);
}

// y = a * x, with an int and a float scalar parameter.
extern "C" __global__ void scale(const float* x, float* y, int n, float a) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i];
}

// Planted bugs: the bound is <= n, so one thread reads / writes one element too far.
extern "C" __global__ void copy_read_past_end(const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i + 1];
}
extern "C" __global__ void copy_write_past_end(const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) y[i] = i < n ? x[i] : 0.0f;
}

// Reads shared memory that nothing wrote: poisoned (NaN), not zero.
extern "C" __global__ void read_uninitialised_shared(float* y) {
  __shared__ float s[32];
  if (threadIdx.x > 0) s[threadIdx.x] = 1.0f;
  __syncthreads();
  y[threadIdx.x] = s[0];
}

// A barrier inside a branch only some threads take.
extern "C" __global__ void divergent_barrier(float* y) {
  if (threadIdx.x < 16) {
    __syncthreads();
  }
  y[threadIdx.x] = 1.0f;
}

// x[i] += 1 in place, for argument aliasing (the same array passed twice).
extern "C" __global__ void add_one(const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i] + 1.0f;
}

// 64 KiB of static shared memory: more than a block may have without opt-in.
extern "C" __global__ void too_much_shared(float* y) {
  __shared__ float big[16384];
  big[threadIdx.x] = 1.0f;
  __syncthreads();
  y[threadIdx.x] = big[threadIdx.x];
}

// A device-side assert that fails in one thread.
extern "C" __global__ void failing_assert(const int* x) { assert(x[threadIdx.x] >= 0); }

// The address of x past a 256-byte boundary, as the kernel sees it.
extern "C" __global__ void address_offset(const float* x, long long* out) {
  out[0] = (long long)((unsigned long long)x % 256);
}

// y[i] = x[i - 1] through shared memory with no barrier: right when the threads happen to run in
// index order (the emulation's usual order), wrong in any other.
extern "C" __global__ void shift_no_barrier(const float* x, float* y) {
  __shared__ float tile[256];
  tile[threadIdx.x] = x[threadIdx.x];
  y[threadIdx.x] = threadIdx.x > 0 ? tile[threadIdx.x - 1] : 0.0f;
}

// Each thread writes tile[threadIdx.x]: with more than 32 threads, past the end of the array.
extern "C" __global__ void shared_overrun(float* y) {
  __shared__ float tile[32];
  tile[threadIdx.x] = 1.0f;
  __syncthreads();
  y[threadIdx.x] = tile[threadIdx.x % 32];
}

// Barriers in both branches of a divergent if: each thread reaches a __syncthreads, but not the
// same one.
extern "C" __global__ void barrier_in_both_branches(float* y) {
  if (threadIdx.x < 16) {
    __syncthreads();
    y[threadIdx.x] = 1.0f;
  } else {
    __syncthreads();
    y[threadIdx.x] = 2.0f;
  }
}

// Only block 0 fills its tile; every block then reads its own tile.
extern "C" __global__ void shared_from_block_zero(float* y) {
  __shared__ float tile[32];
  if (blockIdx.x == 0) tile[threadIdx.x] = 1.0f;
  __syncthreads();
  y[blockIdx.x * blockDim.x + threadIdx.x] = tile[threadIdx.x];
}

// Thread 0 stores one float at tile[at]: past the end of the array for at >= 32.
extern "C" __global__ void shared_store_at(float* y, int at) {
  __shared__ float tile[32];
  tile[threadIdx.x] = 1.0f;
  __syncthreads();
  if (threadIdx.x == 0) tile[at] = 2.0f;
  __syncthreads();
  y[threadIdx.x] = tile[threadIdx.x];
}

// 40 KiB of static shared memory beside the launch's dynamic shared memory.
extern "C" __global__ void static_and_dynamic_shared(float* y) {
  __shared__ float big[10240];
  extern __shared__ float dyn[];
  big[threadIdx.x] = 1.0f;
  dyn[threadIdx.x] = 2.0f;
  __syncthreads();
  y[threadIdx.x] = big[threadIdx.x] + dyn[threadIdx.x];
}

// Two __shared__ arrays of the same type: distinct storage, y = a - b = 2x.
extern "C" __global__ void two_tiles(const float* x, float* y) {
  __shared__ float a[32];
  __shared__ float b[32];
  a[threadIdx.x] = x[threadIdx.x];
  b[threadIdx.x] = -x[threadIdx.x];
  __syncthreads();
  y[threadIdx.x] = a[threadIdx.x] - b[threadIdx.x];
}

// Each thread of the grid takes a ticket: the order in which the emulation ran the threads.
extern "C" __global__ void launch_order(int* ticket, int* next) {
  const int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int nt = blockDim.x * blockDim.y * blockDim.z;
  const int t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  ticket[block * nt + t] = atomicAdd(next, 1);
}

// Warp collectives in a 3-D block: lanes are numbered by the linear thread index, not threadIdx.x.
// out[0..2) x nthreads: the linear index of lane ^ 1, the ballot of (linear index % 3 == 0).
extern "C" __global__ void warps_of_a_3d_block(int* out) {
  const int nt = blockDim.x * blockDim.y * blockDim.z;
  const int t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  out[t] = __shfl_xor_sync(0xffffffffu, t, 1);
  out[nt + t] = (int)__ballot_sync(0xffffffffu, t % 3 == 0);
}

// Planted bug: thread i writes y[i - 1], so thread 0 writes before the start.
extern "C" __global__ void copy_write_before_start(const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i - 1] = x[i];
}

// Planted bug: both bounds are <= n, so y[n] = x[n] copies x's guard into y's.
extern "C" __global__ void copy_both_past_end(const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) y[i] = x[i];
}
