// CPU kernels of ms_deform_attn over a range of work items. This header is compiled once
// per instruction set (see kernels_isa.cpp and CMakeLists.txt), so it includes no torch
// header: threading stays in the torch glue (cpu/ms_deform_attn_cpu.cpp).
#pragma once
#include <cstdint>

#include "../params.h"
#include "query_plan.h"

namespace ddetr {
namespace cpu {

// The kernels, each over work items [begin, end) that the glue splits among threads. No two
// items write the same memory and every sum runs in an order fixed by the inputs alone, so
// no atomics are needed and the result does not depend on the number of threads.
enum class Pass : int32_t {
  kForward,   // items: N * (M / heads) * Lq, (batch, sweep, query's position in the walk)
  kBackward,  // items: N * M, (batch, head): the three gradients of that head
};

template <typename T>
struct Job {
  Pass pass;
  bool int32;                  // int32_indices(shape): row indices fit int32_t
  int64_t heads;               // heads_per_sweep (query_plan.h): 1 or M
  ForwardParams<T> forward;    // kForward
  BackwardParams<T> backward;  // kBackward
};

// One entry per instruction set; the glue picks the best one the CPU supports.
struct KernelTable {
  const char* isa;
  void (*run_f32)(const Job<float>&, int64_t begin, int64_t end);
  void (*run_f64)(const Job<double>&, int64_t begin, int64_t end);
};

const KernelTable& kernel_table_baseline();
#if defined(DDETR_HAVE_AVX2)
const KernelTable& kernel_table_avx2();
#endif
#if defined(DDETR_HAVE_AVX512)
const KernelTable& kernel_table_avx512();
#endif

}  // namespace cpu
}  // namespace ddetr
