// gpucnn CUDA emulation: the runtime behind cuda_compat.h (fibers, block scheduler, shared memory,
// warp exchange, the kernel table). Each thread of a block runs as a cooperative fiber on its own
// small stack, so __syncthreads() is a real barrier and warp intrinsics exchange data among the 32
// fibers of a warp. Blocks run one after another; Python serialises launches.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cxxabi.h>
#include <string>
#include <sys/mman.h>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <unistd.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif
#if !defined(__x86_64__) || !defined(__ELF__) || defined(GPUCNN_EMU_UCONTEXT)
#define GPUCNN_EMU_USE_UCONTEXT 1
#include <ucontext.h>
#endif

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
inline uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;
constexpr int warpSize = 32;

namespace gpucnn_emu {

template <class... T>
inline constexpr bool unsupported = false;

enum class State : unsigned char { Runnable, Barrier, Warp, Done };

struct Fiber {
  void* sp;
#ifdef GPUCNN_EMU_USE_UCONTEXT
  ucontext_t ctx;
#endif
  uint3 tid;
  unsigned linear;
  State state;
  int site;              // source line of the barrier this fiber waits at
  unsigned mask;         // lane mask of the warp collective this fiber waits at
  bool fence;            // that collective is a __syncwarp (the only one that orders memory)
};

constexpr unsigned kMaxThreads = 1024;
constexpr size_t kSharedLimit = 48 * 1024;  // static + dynamic, per block, without opt-in
// Each shared allocation (and the dynamic area) is followed by a guard of kSharedGuard bytes of
// kGuardByte, checked when the block ends: a write past a __shared__ array is then reported.
// Guards are not counted against kSharedLimit; past kMaxSharedGuards allocations none is added.
constexpr size_t kSharedGuard = 16;
constexpr int kMaxSharedGuards = 64;
constexpr unsigned char kGuardByte = 0xA5;
constexpr size_t kStackSize = 64 * 1024;     // per fiber; the lowest page is a guard page

// Everything one launch needs; a .so runs one launch at a time (Python holds a lock).
struct Launch {
  void (*run)(void*) = nullptr;
  void* bound = nullptr;
  Fiber fibers[kMaxThreads];
  unsigned nthreads = 0;
  Fiber* current = nullptr;
  void* sched_sp = nullptr;
#ifdef GPUCNN_EMU_USE_UCONTEXT
  ucontext_t sched_ctx;
#endif
  char* stacks = nullptr;
  size_t stacks_capacity = 0;
  alignas(64) char shared[kSharedLimit + kMaxSharedGuards * 2 * kSharedGuard];
  size_t shared_asked = 0, shared_used = 0, shared_dirty = 0;
  size_t guard_at[kMaxSharedGuards], guard_of[kMaxSharedGuards], guard_bytes = 0;
  int guards = 0;
  unsigned long long block_gen = 0;
  // Warp collectives: each lane publishes its value in warp_pub; when a collective is released,
  // its lanes' values are copied to warp_val, which they read (a fast lane's next publish cannot
  // overwrite a value a slower lane of the same collective has still to read).
  // warp_from: per lane, the lanes that took part in its last collective (the mask's lanes less
  // those that had exited, which CUDA leaves out: they are inactive).
  uint64_t warp_pub[kMaxThreads];
  uint64_t warp_val[kMaxThreads];
  unsigned warp_from[kMaxThreads];
  bool reverse = false;  // GPUCNN_EMU_ORDER=reverse (see run_grid)
  // GPUCNN_EMU_RACECHECK=on (see race_check): per byte of shared memory, the thread whose plain
  // store last changed it since the last __syncthreads and the lanes of its warp that a __syncwarp
  // ordered after that store (bit l: lane l); the same for the thread whose atomic last touched
  // it; and the bytes as they were before a fiber ran.
  bool racecheck = false;
  unsigned short writer[sizeof shared];
  unsigned ordered[sizeof shared];
  unsigned short atomic_writer[sizeof shared];
  unsigned atomic_ordered[sizeof shared];
  unsigned char before[sizeof shared];
  unsigned char poison = 0xFF;  // fills fresh shared memory; 0x3F with GPUCNN_EMU_POISON=finite
  bool failed = false;
  std::string error;
};
inline Launch g;

// ------------------------------------------------------------------------ context switching
#ifndef GPUCNN_EMU_USE_UCONTEXT
extern "C" void gpucnn_emu_switch(void** save_sp, void* load_sp);
// Saves the System V callee-saved registers on the current stack, swaps stacks, restores.
asm(R"(
  .text
  .p2align 4
  .hidden gpucnn_emu_switch
  .type gpucnn_emu_switch, @function
gpucnn_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size gpucnn_emu_switch, .-gpucnn_emu_switch
)");
#endif

[[noreturn]] inline void fiber_main();

inline void to_scheduler() {
#ifdef GPUCNN_EMU_USE_UCONTEXT
  swapcontext(&g.current->ctx, &g.sched_ctx);
#else
  gpucnn_emu_switch(&g.current->sp, g.sched_sp);
#endif
}

inline void resume(Fiber& f) {
  g.current = &f;
  threadIdx = f.tid;
#ifdef GPUCNN_EMU_USE_UCONTEXT
  swapcontext(&g.sched_ctx, &f.ctx);
#else
  gpucnn_emu_switch(&g.sched_sp, f.sp);
#endif
}

inline void start_fiber(Fiber& f, char* stack_lo) {
  f.state = State::Runnable;
#ifdef GPUCNN_EMU_USE_UCONTEXT
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = stack_lo;
  f.ctx.uc_stack.ss_size = kStackSize;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_main), 0);
#else
  // Top of stack: a zero "return address" for fiber_main, then fiber_main itself for `ret`, then
  // six zeroed callee-saved registers; fiber_main starts with rsp = 8 (mod 16), as after a call.
  auto top = reinterpret_cast<uintptr_t>(stack_lo + kStackSize) & ~uintptr_t(15);
  auto* sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;
  *--sp = reinterpret_cast<void*>(&fiber_main);
  for (int i = 0; i < 6; ++i) *--sp = nullptr;
  f.sp = sp;
#endif
}

// Stops the launch with `msg`; the calling fiber is abandoned and never resumed.
[[noreturn]] inline void fail(const std::string& msg) {
  if (!g.failed) {
    g.failed = true;
    g.error = msg;
  }
  g.current->state = State::Done;
  to_scheduler();
  __builtin_unreachable();
}

inline std::string where() {
  char buf[160];
  std::snprintf(buf, sizeof buf, "thread (%u,%u,%u) of block (%u,%u,%u)", threadIdx.x, threadIdx.y,
                threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z);
  return buf;
}

[[noreturn]] inline void fiber_main() {
  g.run(g.bound);
  g.current->state = State::Done;
  to_scheduler();
  __builtin_unreachable();
}

// ------------------------------------------------------------------------ shared memory
constexpr unsigned short kNoWriter = 0xFFFF;

// GPUCNN_EMU_RACECHECK: bytes [from, to) of shared memory were written by no thread since the
// last __syncthreads (see race_check).
inline void clear_writers(size_t from, size_t to) {
  std::fill(g.writer + from, g.writer + to, kNoWriter);
  std::fill(g.atomic_writer + from, g.atomic_writer + to, kNoWriter);
}

// Puts a guard at `at`, after `size` bytes of shared memory (see kSharedGuard).
inline void guard_shared(size_t at, size_t size) {
  if (g.guards == kMaxSharedGuards) return;
  std::memset(g.shared + at, kGuardByte, kSharedGuard);
  g.guard_at[g.guards] = at;
  g.guard_of[g.guards++] = size;
  g.guard_bytes += kSharedGuard;
  g.shared_used = at + kSharedGuard;
}

inline void* shared_alloc(size_t size, size_t align) {
  size_t at = (g.shared_used + align - 1) & ~(align - 1);
  if (at + size - g.guard_bytes > kSharedLimit) {
    fail("the block needs more than " + std::to_string(kSharedLimit) +
         " bytes of shared memory (static + dynamic), the CUDA limit without opt-in");
  }
  g.shared_used = at + size;
  guard_shared(at + size, size);
  // As allocated (poison, then the guard): what the race check compares this fiber's run with;
  // no thread has written it (clear_writers covers only the bytes allocated when it runs).
  if (g.racecheck) {
    std::memcpy(g.before + at, g.shared + at, g.shared_used - at);
    clear_writers(at, g.shared_used);
  }
  if (g.shared_used > g.shared_dirty) g.shared_dirty = g.shared_used;
  return g.shared + at;
}

// Fails the launch if a guard changed: a thread wrote past a shared allocation.
inline void check_shared_guards() {
  for (int i = 0; i < g.guards; ++i)
    for (size_t b = 0; b < kSharedGuard; ++b)
      if (static_cast<unsigned char>(g.shared[g.guard_at[i] + b]) != kGuardByte) {
        char buf[240];
        const char* what = i == 0 && g.shared_asked ? "the dynamic shared memory"
                                                      : "a __shared__ variable";
        std::snprintf(buf, sizeof buf, "wrote past the end of %s (%zu bytes; byte %zu past "
                      "it) in block (%u,%u,%u)", what, g.guard_of[i], b, blockIdx.x, blockIdx.y,
                      blockIdx.z);
        g.failed = true;
        g.error = buf;
        return;
      }
}

// The block's instance of one `__shared__` declaration (ID tells declarations apart).
template <class T, int ID>
T* block_shared() {
  static unsigned long long gen = 0;
  static T* ptr = nullptr;
  if (gen != g.block_gen) {
    ptr = static_cast<T*>(shared_alloc(sizeof(T), alignof(T) < 16 ? 16 : alignof(T)));
    gen = g.block_gen;
  }
  return ptr;
}

inline void* dynamic_shared() { return g.shared; }

// ------------------------------------------------------------------------ barriers and warps
inline void syncthreads(int line) {
  g.current->state = State::Barrier;
  g.current->site = line;
  to_scheduler();
}

inline unsigned lane_id() { return g.current->linear % 32; }

// Waits until every lane named in `mask` that has not exited has reached a warp collective with
// the same mask, after publishing `value`; returns the buffer row (indexed by linear thread id)
// that holds the values of the collective's lanes. `fence`: __syncwarp, which orders the lanes'
// memory accesses (CUDA: shuffles and votes imply no memory ordering).
inline const uint64_t* warp_exchange(unsigned mask, uint64_t value, bool fence = false) {
  Fiber& f = *g.current;
  if (!(mask >> lane_id() & 1u))
    fail("a warp collective whose mask leaves out the calling lane, in " + where());
  g.warp_pub[f.linear] = value;
  f.state = State::Warp;
  f.mask = mask;
  f.fence = fence;
  to_scheduler();
  return g.warp_val;
}

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>,
                "warp shuffles move up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}

// The lanes that took part in the calling lane's last warp collective (bit l: lane l).
inline unsigned exchange_lanes() { return g.warp_from[g.current->linear]; }

// Reads `src`'s value; a lane that is absent, exited or outside the exchange yields all-ones
// (NaN/-1), where CUDA's value is undefined.
template <class T>
T lane_value(const uint64_t* row, unsigned src) {
  unsigned warp_base = g.current->linear / 32 * 32;
  uint64_t bits = ~uint64_t(0);
  if (src < 32 && (exchange_lanes() >> src & 1u)) bits = row[warp_base + src];
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

// ------------------------------------------------------------------------ shared-memory races
// Two threads that write one byte of shared memory with no barrier between them race on a GPU:
// a read-modify-write (s[0] += x) loses updates, two stores leave either value. Fibers run one
// at a time, so here both land; with GPUCNN_EMU_RACECHECK=on each fiber's run is compared with
// the shared memory before it, and a byte changed by two threads since the barrier that orders
// them fails the launch. A byte written with the value it holds goes unseen (a benign race, such
// as every thread storing the same flag).
// Atomics (atomic_written) never race with each other, but a plain store and an atomic on one
// byte do, unless ordered (PTX ISA, memory consistency model: a plain st is weak, so it is never
// morally strong with another thread's access, and two conflicting accesses that are neither
// morally strong nor ordered by causality order are a data race). An atomic is a
// read-modify-write: it reads what the atomic before it on the byte left, which read the one
// before, so a thread's later accesses to that byte are ordered after every earlier atomic
// there (PTX: observation order, then program order): a thread whose atomicAdd takes the last
// ticket may reset the counter with a plain store. Each byte keeps two writers, the last plain
// store's and the last atomic's, each with the lanes of its warp ordered after it (order_lanes).
// __threadfence_block() is not modelled: the checker orders no plain store of one thread before
// another thread's through a fence and an atomic flag. Where the reader has no fence after its
// atomic (CUDA's threadFenceReduction pattern: fence, then the ticket), that is right: PTX needs
// an acquire pattern (a strong read, then a fence) on the reading side to synchronize, and a
// fence before the ticket only makes the writing side's release pattern; with a fence after the
// ticket as well the hand-off is race-free, and this check reports it all the same.

// A __syncwarp of `lanes` of the warp at thread `base` (a shuffle or vote orders no memory in
// CUDA) orders a write before it with all of them if one of them is ordered after the write (its
// writer, or a lane of an earlier __syncwarp): only with them, not with the other lanes or warps.
inline void order_lanes(unsigned base, unsigned lanes) {
  for (size_t b = 0; b < g.shared_used; ++b) {
    if (g.writer[b] != kNoWriter && g.writer[b] / 32 * 32 == base && (g.ordered[b] & lanes))
      g.ordered[b] |= lanes;
    if (g.atomic_writer[b] != kNoWriter && g.atomic_writer[b] / 32 * 32 == base &&
        (g.atomic_ordered[b] & lanes))
      g.atomic_ordered[b] |= lanes;
  }
}

// Whether thread `t` is ordered after the write of `writer` (kNoWriter: none since the barrier),
// whose warp's lanes `lanes` are (the writer's own lane is always one of them).
inline bool ordered_after(unsigned short writer, unsigned lanes, unsigned t) {
  return writer == kNoWriter || (writer / 32 == t / 32 && (lanes >> t % 32 & 1u));
}

inline std::string thread_name(unsigned linear) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "(%u,%u,%u)", linear % blockDim.x,
                linear / blockDim.x % blockDim.y, linear / (blockDim.x * blockDim.y));
  return buf;
}

// Fails the launch: `first` and then `second` wrote byte `b` with no barrier between them;
// `mixed`: one of them with an atomic, the other with a plain store.
inline void report_race(unsigned first, unsigned second, size_t b, bool mixed) {
  g.failed = true;
  g.error = "shared-memory race in block (" + std::to_string(blockIdx.x) + "," +
            std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) + "): threads " +
            thread_name(first) + " and " + thread_name(second) + " both write byte " +
            std::to_string(b) + " of shared memory with no barrier between them" +
            (mixed ? ", one with an atomic and the other with a plain store (on a GPU the store "
                     "may land before or after the atomic, or be lost: a __syncthreads() "
                     "between them, or atomics for both)"
                   : " (on a GPU one write is lost or either may land: a __syncthreads(), an "
                     "atomic, or one writer)");
}

// A plain store by thread `t` changed byte `b`: it must be ordered after the last plain store and
// the last atomic there; then it is the last plain store, and every atomic is ordered before it.
inline bool plain_write(size_t b, unsigned t) {
  if (!ordered_after(g.writer[b], g.ordered[b], t)) {
    report_race(g.writer[b], t, b, false);
    return false;
  }
  if (!ordered_after(g.atomic_writer[b], g.atomic_ordered[b], t)) {
    report_race(g.atomic_writer[b], t, b, true);
    return false;
  }
  g.writer[b] = static_cast<unsigned short>(t);
  g.ordered[b] = 1u << t % 32;
  g.atomic_writer[b] = kNoWriter;
  return true;
}

// An atomic of the current fiber on `p` (`size` bytes, which held `old` before it): checks any
// plain store this fiber made there since it last yielded (race_check would see it only with the
// atomic's change), then the atomic, which must be ordered after the last plain store there and
// becomes the last atomic; the atomic's own change is then no plain store of this run.
inline void atomic_written(const void* p, const void* old, size_t size) {
  if (!g.racecheck) return;
  const char* c = static_cast<const char*>(p);
  if (c < g.shared || c + size > g.shared + g.shared_used) return;  // global memory
  const unsigned t = g.current->linear;
  const size_t at = static_cast<size_t>(c - g.shared);
  for (size_t i = 0; i < size; ++i) {
    const size_t b = at + i;
    if (static_cast<const unsigned char*>(old)[i] != g.before[b] && !plain_write(b, t)) break;
    if (!ordered_after(g.writer[b], g.ordered[b], t)) {
      report_race(g.writer[b], t, b, true);
      break;
    }
    g.atomic_writer[b] = static_cast<unsigned short>(t);
    g.atomic_ordered[b] = 1u << t % 32;
    g.before[b] = static_cast<unsigned char>(g.shared[b]);
  }
  if (g.failed) fail(g.error);
}

// After fiber `f` ran: each byte it changed is a plain store of its own (plain_write).
inline void race_check(const Fiber& f) {
  const size_t n = g.shared_used;
  for (size_t at = 0; at < n; at += 64) {
    const size_t len = n - at < 64 ? n - at : 64;
    if (std::memcmp(g.shared + at, g.before + at, len) == 0) continue;
    for (size_t b = at; b < at + len; ++b)
      if (g.shared[b] != static_cast<char>(g.before[b]) && !plain_write(b, f.linear)) return;
  }
}

inline void run_block() {
  const unsigned n = g.nthreads;
  ++g.block_gen;
  std::memset(g.shared, g.poison, g.shared_dirty);  // uninitialised shared memory: NaN, -1
  g.shared_used = 0;
  g.guards = 0;
  g.guard_bytes = 0;
  if (g.shared_asked) guard_shared(g.shared_asked, g.shared_asked);  // right at its end
  g.shared_dirty = g.shared_used;
  for (unsigned i = 0; i < n; ++i) start_fiber(g.fibers[i], g.stacks + size_t(i) * kStackSize);
  if (g.racecheck) clear_writers(0, g.shared_used);
  for (;;) {
    for (unsigned k = 0; k < n; ++k) {
      const unsigned i = g.reverse ? n - 1 - k : k;
      if (g.fibers[i].state != State::Runnable) continue;
      if (g.racecheck) std::memcpy(g.before, g.shared, g.shared_used);
      resume(g.fibers[i]);
      if (!g.failed && g.racecheck) race_check(g.fibers[i]);
      if (g.failed) return;
    }
    bool released = false;
    for (unsigned i = 0; i < n; ++i) {
      Fiber& f = g.fibers[i];
      if (f.state != State::Warp) continue;
      unsigned base = i / 32 * 32, ready = 0, need = 0, from = 0;
      bool fence = true;
      for (unsigned l = 0; l < 32 && base + l < n; ++l) {
        const Fiber& o = g.fibers[base + l];
        if (!(f.mask >> l & 1u) || o.state == State::Done) continue;  // exited: inactive
        ++need;
        if (o.state == State::Warp && o.mask == f.mask) {
          ++ready;
          from |= 1u << l;
          fence = fence && o.fence;
        }
      }
      if (ready == need) {
        for (unsigned l = 0; l < 32; ++l)
          if (from >> l & 1u) {
            g.warp_val[base + l] = g.warp_pub[base + l];
            g.warp_from[base + l] = from;
            g.fibers[base + l].state = State::Runnable;
          }
        if (g.racecheck && fence) order_lanes(base, from);
        released = true;
      }
    }
    if (released) continue;
    unsigned at_barrier = 0, done = 0, first = n;
    bool same_site = true;
    for (unsigned i = 0; i < n; ++i) {
      const Fiber& f = g.fibers[i];
      done += f.state == State::Done;
      if (f.state != State::Barrier) continue;
      if (first == n) first = i;
      same_site = same_site && f.site == g.fibers[first].site;
      ++at_barrier;
    }
    if (done == n) {
      check_shared_guards();
      return;
    }
    if (at_barrier == n && same_site) {
      for (unsigned i = 0; i < n; ++i) g.fibers[i].state = State::Runnable;
      if (g.racecheck) clear_writers(0, g.shared_used);
      continue;
    }
    char buf[400];
    if (at_barrier == n) {
      std::snprintf(buf, sizeof buf, "divergent __syncthreads(): in block (%u,%u,%u) the threads "
                    "wait at different barriers (line %d and others)", blockIdx.x, blockIdx.y,
                    blockIdx.z, g.fibers[first].site);
    } else if (at_barrier > 0) {
      std::snprintf(buf, sizeof buf, "divergent __syncthreads() at line %d: reached by %u of the "
                    "%u threads of block (%u,%u,%u); %u had exited and %u wait at warp collectives "
                    "(a hang or undefined behaviour on a GPU)", g.fibers[first].site, at_barrier, n,
                    blockIdx.x, blockIdx.y, blockIdx.z, done, n - done - at_barrier);
    } else {
      std::snprintf(buf, sizeof buf, "warp collective deadlock in block (%u,%u,%u): lanes named in "
                    "a mask wait elsewhere", blockIdx.x, blockIdx.y, blockIdx.z);
    }
    g.failed = true;
    g.error = buf;
    return;
  }
}

inline bool reserve_stacks(unsigned n) {
  size_t need = size_t(n) * kStackSize;
  if (need <= g.stacks_capacity) return true;
  if (g.stacks) munmap(g.stacks, g.stacks_capacity);
  void* p = mmap(nullptr, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) {
    g.stacks = nullptr;
    g.stacks_capacity = 0;
    return false;
  }
  g.stacks = static_cast<char*>(p);
  g.stacks_capacity = need;
  size_t page = size_t(sysconf(_SC_PAGESIZE));
  for (unsigned i = 0; i < n; ++i) mprotect(g.stacks + size_t(i) * kStackSize, page, PROT_NONE);
  return true;
}

// CuPy compiles every kernel with -ftz=true (it appends the flag to the caller's options), so a
// GPU's single-precision operations flush subnormal operands and results to zero. A launch with
// `flush` (the runner sets it for a kernel with a float parameter) runs so here too, on x86-64:
// MXCSR's FTZ and DAZ bits, restored after the launch. They apply to double operations as well,
// which these kernels never feed subnormals; elsewhere subnormals are kept.
class FlushSubnormals {
 public:
  explicit FlushSubnormals(bool flush) {
#if defined(__x86_64__)
    if (flush) _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) and DAZ (bit 6)
#else
    (void)flush;
#endif
  }
  ~FlushSubnormals() {
#if defined(__x86_64__)
    _mm_setcsr(saved_);
#endif
  }
  FlushSubnormals(const FlushSubnormals&) = delete;
  FlushSubnormals& operator=(const FlushSubnormals&) = delete;

 private:
#if defined(__x86_64__)
  unsigned saved_ = _mm_getcsr();
#endif
};

// Runs the whole grid; returns false with g.error set when the launch failed.
// GPUCNN_EMU_ORDER=reverse runs the blocks, and each block's threads between barriers, last
// first. A kernel whose result depends on that order (a missing barrier, a thread reading what
// another writes in the same interval, a block reading another block's output) then gives other
// bits than the usual run; a GPU promises neither order.
inline bool run_grid(const unsigned* grid, const unsigned* block, size_t shmem) {
  g.failed = false;
  g.error.clear();
  const char* order = std::getenv("GPUCNN_EMU_ORDER");
  g.reverse = order != nullptr && std::strcmp(order, "reverse") == 0;
  const char* racecheck = std::getenv("GPUCNN_EMU_RACECHECK");
  g.racecheck = racecheck != nullptr && std::strcmp(racecheck, "on") == 0;
  const char* poison = std::getenv("GPUCNN_EMU_POISON");  // as emulation_runner.poison_byte
  g.poison = poison != nullptr && std::strcmp(poison, "finite") == 0 ? 0x3F : 0xFF;
  g.nthreads = block[0] * block[1] * block[2];
  if (shmem > kSharedLimit) {
    g.error = "the launch asks for " + std::to_string(shmem) + " bytes of dynamic shared memory, " +
              "more than the " + std::to_string(kSharedLimit) + " a block may use without opt-in";
    return false;
  }
  g.shared_asked = shmem;
  g.shared_dirty = sizeof g.shared;  // poison all of it for the first block
  if (!reserve_stacks(g.nthreads)) {
    g.error = "could not map the fiber stacks";
    return false;
  }
  blockDim = dim3(block[0], block[1], block[2]);
  gridDim = dim3(grid[0], grid[1], grid[2]);
  for (unsigned i = 0; i < g.nthreads; ++i) {
    Fiber& f = g.fibers[i];
    f.linear = i;
    f.tid = uint3{i % block[0], i / block[0] % block[1], i / (block[0] * block[1])};
  }
  const unsigned long long blocks = 1ull * grid[0] * grid[1] * grid[2];
  for (unsigned long long k = 0; k < blocks; ++k) {
    const unsigned long long b = g.reverse ? blocks - 1 - k : k;  // x fastest, then y, then z
    blockIdx = uint3{unsigned(b % grid[0]), unsigned(b / grid[0] % grid[1]),
                     unsigned(b / (1ull * grid[0] * grid[1]))};
    run_block();
    if (g.failed) return false;
  }
  return true;
}

// ------------------------------------------------------------------------ kernel table
struct ParamInfo {
  int is_pointer;
  int size;      // bytes of the scalar, or of the pointee (0 for void*)
  char category; // 'f' floating point, 'i' integer or bool, 'v' void pointee, 'o' other
  const char* type_name;
};

struct KernelEntry {
  const char* name;
  int nparams;
  const ParamInfo* params;
  void (*fn)();
  void (*launch)(void (*fn)(), void** args);
};

template <class T>
constexpr char category() {
  if constexpr (std::is_void_v<T>) return 'v';
  else if constexpr (std::is_floating_point_v<T>) return 'f';
  else if constexpr (std::is_integral_v<T>) return 'i';
  else return 'o';
}

template <class P>
ParamInfo param_info() {
  using T = std::remove_cv_t<P>;
  const char* name = abi::__cxa_demangle(typeid(T).name(), nullptr, nullptr, nullptr);
  if constexpr (std::is_pointer_v<T>) {
    using E = std::remove_cv_t<std::remove_pointer_t<T>>;
    int size = 0;
    if constexpr (!std::is_void_v<E>) size = int(sizeof(E));
    return ParamInfo{1, size, category<E>(), name};
  } else {
    static_assert(std::is_trivially_copyable_v<T>, "kernel parameters must be trivially copyable");
    return ParamInfo{0, int(sizeof(T)), category<T>(), name};
  }
}

template <class... P>
struct Bound {
  void (*fn)(P...);
  std::tuple<std::remove_cv_t<P>...> args;
  static void run(void* self) {
    auto* b = static_cast<Bound*>(self);
    std::apply(b->fn, b->args);  // each thread gets its own copy of the parameters
  }
};

template <class T>
T read_arg(void* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <class... P, size_t... I>
void launch_impl(void (*fn)(P...), void** args, std::index_sequence<I...>) {
  static Bound<P...> bound;  // static: run_grid reads it through g.bound
  bound.fn = fn;
  bound.args = std::make_tuple(read_arg<std::remove_cv_t<P>>(args[I])...);
  g.run = &Bound<P...>::run;
  g.bound = &bound;
}

template <class... P>
void launch_as(void (*fn)(), void** args) {
  launch_impl(reinterpret_cast<void (*)(P...)>(fn), args, std::index_sequence_for<P...>{});
}

template <class... P>
KernelEntry entry(const char* name, void (*fn)(P...)) {
  static const ParamInfo params[sizeof...(P) + 1] = {param_info<P>()..., ParamInfo{}};
  return KernelEntry{name, int(sizeof...(P)), params, reinterpret_cast<void (*)()>(fn),
                     &launch_as<P...>};
}

template <class R, class... P>
KernelEntry entry(const char*, R (*)(P...)) {
  static_assert(unsupported<R>, "a __global__ kernel must return void");
  return {};
}

}  // namespace gpucnn_emu

#define GPUCNN_EMU_EXPORT extern "C" __attribute__((visibility("default")))

// The generated table ends the source with `GPUCNN_EMU_KERNELS(entry(...), ...)`.
#define GPUCNN_EMU_KERNELS(...)                                                                    \
  static const ::gpucnn_emu::KernelEntry gpucnn_emu_table[] = {__VA_ARGS__};                       \
  GPUCNN_EMU_EXPORT int gpucnn_emu_kernel_count() {                                                \
    return int(sizeof gpucnn_emu_table / sizeof gpucnn_emu_table[0]);                              \
  }                                                                                                \
  GPUCNN_EMU_EXPORT const ::gpucnn_emu::KernelEntry* gpucnn_emu_kernel(int i) {                    \
    return &gpucnn_emu_table[i];                                                                   \
  }                                                                                                \
  GPUCNN_EMU_EXPORT int gpucnn_emu_launch(int k, const unsigned* grid, const unsigned* block,      \
                                          unsigned long long shmem, void** args, int flush,        \
                                          char* err, int errlen) {                                 \
    const ::gpucnn_emu::KernelEntry& e = gpucnn_emu_table[k];                                      \
    e.launch(e.fn, args);                                                                          \
    const ::gpucnn_emu::FlushSubnormals mode(flush != 0);                                          \
    if (::gpucnn_emu::run_grid(grid, block, shmem)) return 0;                                      \
    std::snprintf(err, size_t(errlen), "%s", ::gpucnn_emu::g.error.c_str());                       \
    return 1;                                                                                      \
  }
