// CPU kernels of ms_deform_attn over a range of work items. This header is compiled once
// per instruction set (see kernels_isa.cpp and CMakeLists.txt), so it includes no torch
// header: threading stays in the torch glue (cpu/ms_deform_attn_cpu.cpp).
#pragma once
#include <cstdint>

#include "../params.h"
#include "bands.h"

namespace ddetr {
namespace cpu {

// One entry per instruction set; the glue picks the best one the CPU supports.
struct KernelTable {
  const char* isa;
  // Forward over work items [begin, end) of N * Lq: each item is one (batch, query).
  void (*forward_f32)(const ForwardParams<float>&, int64_t begin, int64_t end);
  void (*forward_f64)(const ForwardParams<double>&, int64_t begin, int64_t end);
  // Backward, first pass over work items [begin, end) of N * K * M, K from plan_bands: each
  // item is one (batch, band, head), whose grad_value writes no other item makes (bands.h),
  // so no atomics are needed and the result does not depend on the number of threads.
  void (*backward_f32)(const BackwardParams<float>&, const BandScratch<float>&, int64_t begin,
                       int64_t end);
  void (*backward_f64)(const BackwardParams<double>&, const BandScratch<double>&,
                       int64_t begin, int64_t end);
  // Backward, second pass when K > 1, over work items [begin, end) of N * M, (batch, head):
  // the halo buffers and the deferred points.
  void (*deferred_f32)(const BackwardParams<float>&, const BandScratch<float>&, int64_t begin,
                       int64_t end);
  void (*deferred_f64)(const BackwardParams<double>&, const BandScratch<double>&,
                       int64_t begin, int64_t end);
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
