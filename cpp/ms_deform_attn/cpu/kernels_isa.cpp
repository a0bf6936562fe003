// The CPU kernels, compiled once per instruction set with DDETR_ISA naming the table
// (baseline, avx2, avx512) and the matching -m flags. The concerns live in small headers
// (isa/), included here inside the per-ISA namespace: an inline function shared with other
// translation units could be merged by the linker with a copy built for another instruction
// set, so every function of this copy stays in its own anonymous namespace, and the kernels
// use no standard container (its members would be such shared functions; isa/array.h).
// .ci/run checks that these objects define no weak functions.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../bilinear.h"
#include "query_plan.h"
#include "kernels.h"

#ifndef DDETR_ISA
#error "DDETR_ISA must name the instruction set this file is compiled for"
#endif
#define DDETR_CAT2(a, b) a##b
#define DDETR_CAT(a, b) DDETR_CAT2(a, b)

namespace ddetr {
namespace cpu {
namespace DDETR_ISA {  // keeps every symbol of this copy apart from the other copies
namespace {

#include "isa/array.h"       // the one container (no std container: see above)
#include "isa/geometry.h"    // where a point's corners lie, one chunk of points at a time
#include "isa/query_walk.h"  // the order queries are walked in
#include "isa/simd.h"        // native vectors, lane sums, a point's per-corner channel loop
#include "isa/forward.h"     // Pass::kForward
#include "isa/backward.h"    // Pass::kBackward

template <typename T, int kD, typename I>
void run_pass(const Job<T>& job, int64_t begin, int64_t end) {
  if (job.pass == Pass::kForward) {
    if (job.forward.shape.discrete) {
      return forward_discrete_range<T, kD, I>(job.forward, job.heads, begin, end);
    }
    return forward_range<T, kD, I>(job.forward, job.heads, begin, end);
  }
  if (job.backward.shape.discrete) return backward_discrete_range<T, kD, I>(job.backward, begin, end);
  return backward_range<T, kD, I>(job.backward, job.heads, begin, end);
}

// The one dispatch: channel counts of the published models (32, 64) get unrolled copies, any
// other D the generic loop; row indices are int32_t where they fit (query_plan.h).
template <typename T, int kD>
void run_width(const Job<T>& job, int64_t begin, int64_t end) {
  if (job.int32) return run_pass<T, kD, int32_t>(job, begin, end);
  return run_pass<T, kD, int64_t>(job, begin, end);
}

template <typename T>
void run(const Job<T>& job, int64_t begin, int64_t end) {
  const int64_t D = job.pass == Pass::kForward ? job.forward.shape.D : job.backward.shape.D;
  if (D == 32) return run_width<T, 32>(job, begin, end);
  if (D == 64) return run_width<T, 64>(job, begin, end);
  return run_width<T, 0>(job, begin, end);  // any other channel count: the generic loop
}

#define DDETR_STR2(x) #x
#define DDETR_STR(x) DDETR_STR2(x)
const KernelTable kTable = {DDETR_STR(DDETR_ISA), run<float>, run<double>};

}  // namespace
}  // namespace DDETR_ISA

const KernelTable& DDETR_CAT(kernel_table_, DDETR_ISA)() { return DDETR_ISA::kTable; }

}  // namespace cpu
}  // namespace ddetr
