// Inline PTX: the emulation refuses to build it.
extern "C" __global__ void lane_from_ptx(unsigned* y) {
  unsigned lane;
  asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
  y[threadIdx.x] = lane;
}
