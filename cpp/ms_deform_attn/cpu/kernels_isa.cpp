// The CPU kernels, compiled once per instruction set with DDETR_ISA naming the table
// (baseline, avx2, avx512) and the matching -m flags. Only plain C++ lives here: an
// inline function shared with other translation units could be merged by the linker with
// a copy built for another instruction set (.ci/run checks that these objects define no
// weak functions).
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

// Per-point copies of the level sizes (point j of a head lies on level j / P), so the
// geometry of a chunk of points reads them like the locations, one SIMD lane per point.
// I is the index type: int32_t where every row index fits, which vectorises better.
template <typename I>
struct PointLevels {
  std::vector<I> H, W, start;
  PointLevels(const int64_t* shapes, const int64_t* level_start, int64_t L, int64_t P)
      : H(L * P), W(L * P), start(L * P) {
    for (int64_t j = 0; j < L * P; ++j) {
      H[j] = static_cast<I>(shapes[2 * (j / P)]);
      W[j] = static_cast<I>(shapes[2 * (j / P) + 1]);
      start[j] = static_cast<I>(level_start[j / P]);
    }
  }
};

// The value rows and weights of a point's four corners, -1 for a row off the map.
template <typename T>
struct PointCorners {
  int64_t row[4];
  T weight[4];
};

// The general case of one point, some corner possibly off the map (rows are -1 there).
template <typename T>
inline void border_corners(T x, T y, int64_t H, int64_t W, int64_t start, PointCorners<T>& pc) {
  Corners<T> c;
  bilinear_corners<T>(x, y, H, W, c);
  for (int k = 0; k < 4; ++k) {
    pc.row[k] = c.offset[k] >= 0 ? start + c.offset[k] : int64_t(-1);
    pc.weight[k] = c.weight[k];
  }
}

// How a point's corners lie: none on the map, all four on it (the common case, which
// needs no per-corner checks), or some on it (handled by border_corners).
enum PointKind : int32_t { kOff = 0, kInterior = 1, kBorder = 2 };

// The geometry of up to kChunk consecutive points of one (query, head), computed with the
// points across SIMD lanes: per-point scalar code would spend most of a point's
// instructions here rather than on the D channels.
constexpr int64_t kChunk = 16;

template <typename T, typename I>
struct ChunkCorners {
  int32_t kind[kChunk];
  I row[kChunk];  // level start + y0 * W + x0, the top-left corner of an interior point
  T w0[kChunk], w1[kChunk], w2[kChunk], w3[kChunk];  // bilinear weights of the corners
  T lx[kChunk], ly[kChunk];
};

template <typename T, typename I>
inline void chunk_corners(const T* loc, const PointLevels<I>& lv, int64_t j0, int64_t nj,
                          ChunkCorners<T, I>& g) {
  const I* H = lv.H.data() + j0;
  const I* W = lv.W.data() + j0;
  const I* start = lv.start.data() + j0;
#pragma omp simd
  for (int64_t j = 0; j < nj; ++j) {
    const Cell<T, I> c = bilinear_cell<T, I>(loc[2 * j], loc[2 * j + 1], H[j], W[j]);
    g.kind[j] = c.interior(H[j], W[j]) ? kInterior : c.inside ? kBorder : kOff;
    g.row[j] = start[j] + c.y0 * W[j] + c.x0;
    bilinear_weights<T>(c.lx, c.ly, g.w0[j], g.w1[j], g.w2[j], g.w3[j]);
    g.lx[j] = c.lx;
    g.ly[j] = c.ly;
  }
}

// The corner rows and weights of point j of a chunk; false when it has no corner on the map.
template <typename T, typename I>
inline bool chunk_point(const ChunkCorners<T, I>& g, int64_t j, const T* loc,
                        const PointLevels<I>& lv, int64_t lj, PointCorners<T>& pc) {
  if (g.kind[j] == kInterior) {
    const int64_t r = g.row[j], W = lv.W[lj];
    pc.row[0] = r;
    pc.row[1] = r + 1;
    pc.row[2] = r + W;
    pc.row[3] = r + W + 1;
    pc.weight[0] = g.w0[j];
    pc.weight[1] = g.w1[j];
    pc.weight[2] = g.w2[j];
    pc.weight[3] = g.w3[j];
    return true;
  }
  if (g.kind[j] == kOff) return false;
  border_corners<T>(loc[2 * j], loc[2 * j + 1], lv.H[lj], lv.W[lj], lv.start[lj], pc);
  return true;
}

// A row of zeros stands in for corners outside the map (and a scratch row takes their
// gradient), so the four corners of a point are summed in one branch-free, vectorised
// loop. Multiplying a real row by a zero weight instead would turn an infinite value into
// NaN where grid_sample gives 0.
template <typename T>
struct SpareRows {
  std::vector<T> zeros, scratch;
  explicit SpareRows(int64_t D) : zeros(D, T(0)), scratch(D, T(0)) {}
};

// kD > 0 fixes the channel count at compile time (unrolled loops, sums in registers);
// kD == 0 reads it from the shape.
template <typename T, int kD, typename I>
void forward_range(const ForwardParams<T>& p, int64_t begin, int64_t end) {
  const Shape& s = p.shape;
  const int64_t D = kD > 0 ? kD : s.D, MD = s.M * D, LP = s.L * s.P;
  const PointLevels<I> lv(p.spatial_shapes, p.level_start, s.L, s.P);
  const SpareRows<T> spare(D);
  ChunkCorners<T, I> g;
  for (int64_t item = begin; item < end; ++item) {  // item = n * Lq + q
    const int64_t n = item / s.Lq;
    for (int64_t m = 0; m < s.M; ++m) {
      const int64_t nqm = item * s.M + m;
      const T* loc = p.loc + nqm * LP * 2;
      const T* attn = p.attn + nqm * LP;
      const T* base = p.value + n * s.S * MD + m * D;  // value[n, row, m, :] = base + row * MD
      T local[kD > 0 ? kD : 1];
      T* __restrict acc = kD > 0 ? local : p.output + nqm * D;
      for (int64_t d = 0; d < D; ++d) acc[d] = T(0);
      for (int64_t j0 = 0; j0 < LP; j0 += kChunk) {
        const int64_t nj = std::min(kChunk, LP - j0);
        chunk_corners<T, I>(loc + 2 * j0, lv, j0, nj, g);
        for (int64_t j = 0; j < nj; ++j) {
          PointCorners<T> c;
          if (!chunk_point<T, I>(g, j, loc + 2 * j0, lv, j0 + j, c)) continue;
          const T a = attn[j0 + j];
          const T w0 = a * c.weight[0], w1 = a * c.weight[1];
          const T w2 = a * c.weight[2], w3 = a * c.weight[3];
          const T* __restrict v[4];
          for (int k = 0; k < 4; ++k) v[k] = c.row[k] >= 0 ? base + c.row[k] * MD : spare.zeros.data();
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) {
            acc[d] += w0 * v[0][d] + w1 * v[1][d] + w2 * v[2][d] + w3 * v[3][d];
          }
        }
      }
      if (kD > 0) {
        T* __restrict out = p.output + nqm * D;
        for (int64_t d = 0; d < D; ++d) out[d] = acc[d];
      }
    }
  }
}

template <typename T, int kD, typename I>
void backward_range(const BackwardParams<T>& p, int64_t begin, int64_t end) {
  const Shape& s = p.shape;
  const int64_t D = kD > 0 ? kD : s.D, MD = s.M * D, LP = s.L * s.P;
  const PointLevels<I> lv(p.spatial_shapes, p.level_start, s.L, s.P);
  SpareRows<T> spare(D);
  ChunkCorners<T, I> g;
  // Items are (batch, head) pairs, item = n * M + m. A thread's range is walked one batch
  // entry at a time with queries outside and its heads inside, so the locations, weights and
  // output gradients of a query are read contiguously. Each (n, m) still sums its queries
  // in the same order whatever the split, so the result does not depend on the threads.
  for (int64_t n = begin / s.M; n * s.M < end; ++n) {
    const int64_t m_begin = std::max(begin - n * s.M, int64_t(0));
    const int64_t m_end = std::min(end - n * s.M, s.M);
    for (int64_t q = 0; q < s.Lq; ++q) {
      for (int64_t m = m_begin; m < m_end; ++m) {
        const T* base = p.value + n * s.S * MD + m * D;
        T* gbase = p.grad_value + n * s.S * MD + m * D;
        const int64_t nqm = (n * s.Lq + q) * s.M + m;
        const T* __restrict gout = p.grad_output + nqm * D;
        const T* loc = p.loc + nqm * LP * 2;
        const T* attn = p.attn + nqm * LP;
        T* grad_loc = p.grad_loc + nqm * LP * 2;
        T* grad_attn = p.grad_attn + nqm * LP;
        for (int64_t j0 = 0; j0 < LP; j0 += kChunk) {
          const int64_t nj = std::min(kChunk, LP - j0);
          chunk_corners<T, I>(loc + 2 * j0, lv, j0, nj, g);
          for (int64_t jc = 0; jc < nj; ++jc) {
            const int64_t j = j0 + jc;
            PointCorners<T> c;
            if (!chunk_point<T, I>(g, jc, loc + 2 * j0, lv, j, c)) {
              grad_loc[2 * j] = grad_loc[2 * j + 1] = grad_attn[j] = T(0);
              continue;
            }
            const T a = attn[j];
            const T* __restrict v[4];
            T* __restrict gv[4];
            T aw[4];
            for (int k = 0; k < 4; ++k) {
              const int64_t r = c.row[k];
              v[k] = r >= 0 ? base + r * MD : spare.zeros.data();
              gv[k] = r >= 0 ? gbase + r * MD : spare.scratch.data();
              aw[k] = a * c.weight[k];
            }
            // dot[k] = <grad_output, value at corner k>; grad_value gets each corner's share
            T d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
            for (int64_t d = 0; d < D; ++d) {
              const T gd = gout[d];
              d0 += gd * v[0][d];
              d1 += gd * v[1][d];
              d2 += gd * v[2][d];
              d3 += gd * v[3][d];
              gv[0][d] += aw[0] * gd;
              gv[1][d] += aw[1] * gd;
              gv[2][d] += aw[2] * gd;
              gv[3][d] += aw[3] * gd;
            }
            const T dot[4] = {d0, d1, d2, d3};
            grad_attn[j] = c.weight[0] * d0 + c.weight[1] * d1 + c.weight[2] * d2 + c.weight[3] * d3;
            T gx, gy;
            bilinear_location_grad<T>(g.lx[jc], g.ly[jc], dot, lv.H[j], lv.W[j], gx, gy);
            grad_loc[2 * j] = a * gx;
            grad_loc[2 * j + 1] = a * gy;
          }
        }
      }
    }
  }
}

// Channel counts of the published models get unrolled copies; any other D runs the
// generic loop.
// Row indices are int32 when they all fit (the validated shapes have H * W <= S).
template <typename T, int kD>
void forward_rows(const ForwardParams<T>& p, int64_t begin, int64_t end) {
  if (p.shape.S < (int64_t(1) << 30)) return forward_range<T, kD, int32_t>(p, begin, end);
  return forward_range<T, kD, int64_t>(p, begin, end);
}

template <typename T, int kD>
void backward_rows(const BackwardParams<T>& p, int64_t begin, int64_t end) {
  if (p.shape.S < (int64_t(1) << 30)) return backward_range<T, kD, int32_t>(p, begin, end);
  return backward_range<T, kD, int64_t>(p, begin, end);
}

template <typename T>
void forward_any(const ForwardParams<T>& p, int64_t begin, int64_t end) {
  switch (p.shape.D) {
    case 32: return forward_rows<T, 32>(p, begin, end);
    case 64: return forward_rows<T, 64>(p, begin, end);
    default: return forward_rows<T, 0>(p, begin, end);
  }
}

template <typename T>
void backward_any(const BackwardParams<T>& p, int64_t begin, int64_t end) {
  switch (p.shape.D) {
    case 32: return backward_rows<T, 32>(p, begin, end);
    case 64: return backward_rows<T, 64>(p, begin, end);
    default: return backward_rows<T, 0>(p, begin, end);
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
