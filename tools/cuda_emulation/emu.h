// Host emulation of the few CUDA device features the ddetr kernels use, so that their
// logic (indexing, thread groups, shuffles, shared-memory hand-offs, the deterministic
// path) can be tested on a machine without a GPU: one block at a time, one std::thread
// per CUDA thread, __shared__ as function statics (one block at a time shares them),
// __syncwarp and shuffles as barriers among the lanes of the mask, atomics under a lock.
// Force-included (g++ -include) into a copy of the .cu files whose <<<...>>> launches
// run.sh has rewritten into emu::launch calls. Not a performance model; sm_90-only paths
// (vector atomics) are not exercised.
#pragma once
#define __shared__ static
#define __launch_bounds__(...)
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace emu {
inline thread_local dim3 tl_threadIdx, tl_blockIdx, tl_gridDim, tl_blockDim;
struct Barrier {
  int needed = 0, arrived = 0; long gen = 0;
};
struct BlockState {
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::pair<int, unsigned>, Barrier> bars;
  uint64_t xchg[1024];
};
inline BlockState* g_block = nullptr;
inline std::mutex g_atomic;

inline void group_barrier(unsigned mask) {
  BlockState& b = *g_block;
  const int warp = tl_threadIdx.x / 32;
  std::unique_lock<std::mutex> lk(b.mu);
  Barrier& bar = b.bars[{warp, mask}];
  bar.needed = __builtin_popcount(mask);
  const long gen = bar.gen;
  if (++bar.arrived == bar.needed) {
    bar.arrived = 0;
    ++bar.gen;
    b.cv.notify_all();
  } else {
    b.cv.wait(lk, [&] { return bar.gen != gen; });
  }
}

template <typename F>
void launch(unsigned grid, int block, size_t, cudaStream_t, F&& body) {
  for (unsigned bx = 0; bx < grid; ++bx) {
    BlockState st;
    g_block = &st;
    std::vector<std::thread> ts;
    for (int t = 0; t < block; ++t) {
      ts.emplace_back([&, t] {
        tl_threadIdx = dim3(t, 0, 0);
        tl_blockIdx = dim3(bx, 0, 0);
        tl_gridDim = dim3(grid, 1, 1);
        tl_blockDim = dim3(block, 1, 1);
        body();
      });
    }
    for (auto& th : ts) th.join();
    g_block = nullptr;
  }
}
}  // namespace emu

#define threadIdx (::emu::tl_threadIdx)
#define blockIdx (::emu::tl_blockIdx)
#define gridDim (::emu::tl_gridDim)
#define blockDim (::emu::tl_blockDim)

template <typename T>
inline T __ldg(const T* p) { return *p; }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::group_barrier(mask); }
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = 32) {
  static_assert(sizeof(T) <= 8, "");
  const int t = threadIdx.x;
  uint64_t raw = 0;
  std::memcpy(&raw, &v, sizeof(T));
  emu::group_barrier(mask);
  emu::g_block->xchg[t] = raw;
  emu::group_barrier(mask);
  const int lane = t & 31;
  int src = lane ^ laneMask;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  const uint64_t got = emu::g_block->xchg[(t & ~31) | src];
  emu::group_barrier(mask);
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}
inline float atomicAdd(float* p, float v) { std::lock_guard<std::mutex> g(emu::g_atomic); float o = *p; *p = o + v; return o; }
inline double atomicAdd(double* p, double v) { std::lock_guard<std::mutex> g(emu::g_atomic); double o = *p; *p = o + v; return o; }
inline float emu_uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned emu_float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline double emu_hiloint2double(int hi, int lo) { uint64_t u = (uint64_t(uint32_t(hi)) << 32) | uint32_t(lo); double d; std::memcpy(&d, &u, 8); return d; }
inline int emu_double2loint(double d) { uint64_t u; std::memcpy(&u, &d, 8); return int(uint32_t(u)); }
inline int emu_double2hiint(double d) { uint64_t u; std::memcpy(&u, &d, 8); return int(uint32_t(u >> 32)); }
#define __uint_as_float emu_uint_as_float
#define __float_as_uint emu_float_as_uint
#define __hiloint2double emu_hiloint2double
#define __double2loint emu_double2loint
#define __double2hiint emu_double2hiint
inline cudaError_t emu_get_last_error() { return cudaSuccess; }
#define cudaGetLastError emu_get_last_error
