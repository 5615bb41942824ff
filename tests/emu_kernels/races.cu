// Kernels for the shared-memory race check, GPUCNN_EMU_RACECHECK=on (tests/test_emulation.py).

// Every thread adds 1 to one shared word between the same barriers: with a plain s[0] += 1,
// updates lost on a GPU; with ATOMIC, by atomicAdd.
template <bool ATOMIC>
__global__ void shared_sum(float* out) {
  __shared__ float s[1];
  if (threadIdx.x == 0) s[0] = 0.0f;
  __syncthreads();
  if constexpr (ATOMIC) {
    atomicAdd(&s[0], 1.0f);
  } else {
    s[0] += 1.0f;
  }
  __syncthreads();
  if (threadIdx.x == 0) out[0] = s[0];
}
// Every thread stores the same flag: a benign race, as CUDA's racecheck would call it.
extern "C" __global__ void same_flag(float* out) {
  __shared__ int flag[1];
  if (threadIdx.x == 0) flag[0] = 0;
  __syncthreads();
  flag[0] = 1;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = float(flag[0]);
}
// What stands between two steps of a probe: 0 __syncthreads(), 1 a __syncwarp() (orders the lanes
// of one warp only), 2 a shuffle (orders no memory in CUDA), 3 __syncwarp(0x3) by lanes 0 and 1,
// then __syncwarp(0x6) by lanes 1 and 2 (orders lanes 0-2), 4 nothing. Returns 0, the shuffle's
// value, for the caller to store.
template <int ORDER>
__device__ float step() {
  float v = 0.0f;
  if constexpr (ORDER == 0) __syncthreads();
  if constexpr (ORDER == 1) __syncwarp();
  if constexpr (ORDER == 2) v = __shfl_sync(0xffffffffu, 0.0f, 0);
  if constexpr (ORDER == 3) {
    if (threadIdx.x < 2) __syncwarp(0x3u);
    if (threadIdx.x == 1 || threadIdx.x == 2) __syncwarp(0x6u);
    if (threadIdx.x > 2) __syncwarp(~0x7u);
  }
  return v;
}
// Threads 0 and SECOND write one word in turn, with step<ORDER> between.
template <int ORDER, int SECOND>
__global__ void ordered_writes(float* out) {
  __shared__ float s[1];
  if (threadIdx.x == 0) s[0] = 1.0f;
  const float v = step<ORDER>();
  if (threadIdx.x == SECOND) s[0] = 2.0f + v;
  __syncthreads();
  out[threadIdx.x % 32] = s[0];
}
// Thread 0 zeroes one word, step<BEFORE>, every thread adds 1 to it with atomicAdd, step<AFTER>,
// then thread 0 adds 1 more with a plain s[0] += 1. A plain store and an atomic on one word race
// unless ordered; two atomics never race.
template <int BEFORE, int AFTER>
__global__ void atomic_count(float* out) {
  __shared__ float s[1];
  if (threadIdx.x == 0) s[0] = 0.0f;
  float v = step<BEFORE>();
  atomicAdd(&s[0], 1.0f);
  v += step<AFTER>();
  if (threadIdx.x == 0) s[0] += 1.0f + v;
  __syncthreads();
  out[threadIdx.x % 32] = s[0];
}
// CUDA's threadFenceReduction within one block: each thread stores 1 in its own slot, then
// __threadfence_block(), then takes a ticket; the thread that takes the last one puts the ticket
// back to 0 (ordered after every atomicAdd on it, which its own atomicAdd read) and, with SUM,
// adds up the slots into slot 0, which thread 0 stored: a race under the PTX memory model, as no
// fence follows its atomicAdd (no acquire pattern), so thread 0's store is not ordered before it.
template <bool SUM>
__global__ void ticket_handoff(float* out) {
  __shared__ float part[64];
  __shared__ unsigned ticket[1];
  if (threadIdx.x == 0) ticket[0] = 0u;
  __syncthreads();
  part[threadIdx.x] = 1.0f;
  __threadfence_block();
  if (atomicAdd(&ticket[0], 1u) == blockDim.x - 1) {
    if constexpr (SUM) {
      float total = 0.0f;
      for (unsigned i = 0; i < blockDim.x; ++i) total += part[i];
      part[0] = total;
    }
    ticket[0] = 0u;
  }
  __syncthreads();
  out[threadIdx.x % 32] = part[0] + float(ticket[0]);
}
