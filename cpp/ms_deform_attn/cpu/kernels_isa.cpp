// The CPU kernels, compiled once per instruction set with DDETR_ISA naming the table
// (baseline, avx2, avx512) and the matching -m flags. Only plain C++ lives here: an
// inline function shared with other translation units could be merged by the linker with
// a copy built for another instruction set.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../bilinear.h"
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

// A row of zeros stands in for corners outside the map, so the four corners of a point
// are summed in one branch-free, vectorised loop (multiplying a real row by a zero weight
// would turn an infinite value into NaN where grid_sample gives 0).
template <typename T>
const T* zero_row(int64_t D) {
  static thread_local std::vector<T> zeros;
  if (static_cast<int64_t>(zeros.size()) < D) zeros.assign(D, T(0));
  return zeros.data();
}

// kD > 0 fixes the channel count at compile time (fully unrolled loops); kD == 0 reads it
// from the shape.
template <typename T, int kD>
void forward_range(const ForwardParams<T>& p, int64_t begin, int64_t end) {
  const Shape& s = p.shape;
  const int64_t D = kD > 0 ? kD : s.D;
  const T* zeros = zero_row<T>(D);
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n = item / s.Lq;
    const T* loc = p.loc + item * s.M * s.L * s.P * 2;
    const T* attn = p.attn + item * s.M * s.L * s.P;
    T* __restrict out_row = p.output + item * s.M * D;
    for (int64_t m = 0; m < s.M; ++m) {
      T* __restrict out = out_row + m * D;
      for (int64_t d = 0; d < D; ++d) out[d] = T(0);
      for (int64_t l = 0; l < s.L; ++l) {
        const int64_t H = p.spatial_shapes[2 * l], W = p.spatial_shapes[2 * l + 1];
        // value[n, level_start + offset, m, :] = base + offset * M * D
        const T* base = p.value + ((n * s.S + p.level_start[l]) * s.M + m) * D;
        for (int64_t pt = 0; pt < s.P; ++pt, loc += 2, ++attn) {
          Corners<T> c;
          if (!bilinear_corners<T>(loc[0], loc[1], H, W, c)) continue;
          const T a = *attn;
          const T w0 = a * c.weight[0], w1 = a * c.weight[1];
          const T w2 = a * c.weight[2], w3 = a * c.weight[3];
          const T* __restrict v0 = c.offset[0] >= 0 ? base + c.offset[0] * s.M * D : zeros;
          const T* __restrict v1 = c.offset[1] >= 0 ? base + c.offset[1] * s.M * D : zeros;
          const T* __restrict v2 = c.offset[2] >= 0 ? base + c.offset[2] * s.M * D : zeros;
          const T* __restrict v3 = c.offset[3] >= 0 ? base + c.offset[3] * s.M * D : zeros;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) {
            out[d] += w0 * v0[d] + w1 * v1[d] + w2 * v2[d] + w3 * v3[d];
          }
        }
      }
    }
  }
}

template <typename T, int kD>
void backward_range(const BackwardParams<T>& p, int64_t begin, int64_t end) {
  const Shape& s = p.shape;
  const int64_t D = kD > 0 ? kD : s.D;
  const int64_t LP = s.L * s.P;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n = item / s.M, m = item % s.M;
    for (int64_t q = 0; q < s.Lq; ++q) {
      const int64_t nqm = (n * s.Lq + q) * s.M + m;
      const T* __restrict g = p.grad_output + nqm * D;
      const T* loc = p.loc + nqm * LP * 2;
      const T* attn = p.attn + nqm * LP;
      T* grad_loc = p.grad_loc + nqm * LP * 2;
      T* grad_attn = p.grad_attn + nqm * LP;
      for (int64_t l = 0; l < s.L; ++l) {
        const int64_t H = p.spatial_shapes[2 * l], W = p.spatial_shapes[2 * l + 1];
        const int64_t row0 = ((n * s.S + p.level_start[l]) * s.M + m) * D;
        const T* base = p.value + row0;
        T* gbase = p.grad_value + row0;
        for (int64_t pt = 0; pt < s.P; ++pt, loc += 2, ++attn, grad_loc += 2, ++grad_attn) {
          Corners<T> c;
          if (!bilinear_corners<T>(loc[0], loc[1], H, W, c)) {
            grad_loc[0] = grad_loc[1] = T(0);
            *grad_attn = T(0);
            continue;
          }
          const T a = *attn;
          T dot[4];
          for (int k = 0; k < 4; ++k) {
            dot[k] = T(0);
            if (c.offset[k] < 0) continue;
            const T* __restrict v = base + c.offset[k] * s.M * D;
            T* __restrict gv = gbase + c.offset[k] * s.M * D;
            const T aw = a * c.weight[k];
            T acc = T(0);
#pragma omp simd reduction(+ : acc)
            for (int64_t d = 0; d < D; ++d) {
              acc += g[d] * v[d];
              gv[d] += aw * g[d];
            }
            dot[k] = acc;
          }
          *grad_attn = c.weight[0] * dot[0] + c.weight[1] * dot[1] + c.weight[2] * dot[2] +
                       c.weight[3] * dot[3];
          T gx, gy;
          bilinear_location_grad<T>(c, dot, H, W, gx, gy);
          grad_loc[0] = a * gx;
          grad_loc[1] = a * gy;
        }
      }
    }
  }
}

// Channel counts of the published models get unrolled copies; any other D runs the
// generic loop.
template <typename T>
void forward_any(const ForwardParams<T>& p, int64_t begin, int64_t end) {
  switch (p.shape.D) {
    case 32: return forward_range<T, 32>(p, begin, end);
    case 64: return forward_range<T, 64>(p, begin, end);
    default: return forward_range<T, 0>(p, begin, end);
  }
}

template <typename T>
void backward_any(const BackwardParams<T>& p, int64_t begin, int64_t end) {
  switch (p.shape.D) {
    case 32: return backward_range<T, 32>(p, begin, end);
    case 64: return backward_range<T, 64>(p, begin, end);
    default: return backward_range<T, 0>(p, begin, end);
  }
}

#define DDETR_STR2(x) #x
#define DDETR_STR(x) DDETR_STR2(x)
const KernelTable kTable = {DDETR_STR(DDETR_ISA), forward_any<float>, forward_any<double>,
                            backward_any<float>, backward_any<double>};

}  // namespace
}  // namespace DDETR_ISA

const KernelTable& DDETR_CAT(kernel_table_, DDETR_ISA)() { return DDETR_ISA::kTable; }

}  // namespace cpu
}  // namespace ddetr
