// The CPU kernels, compiled once per instruction set with DDETR_ISA naming the table
// (baseline, avx2, avx512) and the matching -m flags. Only plain C++ lives here: an
// inline function shared with other translation units could be merged by the linker with
// a copy built for another instruction set (.ci/run checks that these objects define no
// weak functions).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../bilinear.h"
#include "bands.h"
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
  I x0[kChunk], y0[kChunk];  // its column and line
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
    g.x0[j] = c.x0;
    g.y0[j] = c.y0;
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

// A call's bands (bands.h, from plan_bands) and the order in which its queries are walked.
// In the encoder layout the walk goes band by band, and each band's part of a level's map in
// column strips of kStrip pixels rather than in raster order, so the value rows that
// neighbouring queries share stay in the core's cache between uses. Any other layout is
// walked in index order. The order depends on the shapes alone: results do not depend on
// the threads.
struct BandWalk {
  const int64_t* shapes;
  const int64_t* starts;
  int64_t L, Lq, K, halo_rows;
  std::vector<LevelBand> level;  // (band, level), from plan_bands
  BandWalk(const Shape& s, const int64_t* spatial_shapes, const int64_t* level_start)
      : shapes(spatial_shapes), starts(level_start), L(s.L), Lq(s.Lq), level(kBands * s.L) {
    K = plan_bands(s, spatial_shapes, level.data(), halo_rows);
  }

  const LevelBand& band(int64_t b, int64_t l) const { return level[b * L + l]; }
  int64_t band_begin(int64_t b) const { return K == 1 ? 0 : band(b, 0).turn0; }
  int64_t band_end(int64_t b) const { return b + 1 < K ? band(b + 1, 0).turn0 : Lq; }

  int64_t operator()(int64_t t) const {  // the t-th query walked
    if (K == 1) return t;
    int64_t e = K * L - 1;  // the last (band, level) starting at or before t is not empty
    while (e > 0 && t < level[e].turn0) --e;
    const LevelBand& lb = level[e];
    const int64_t l = e % L, H = shapes[2 * l], W = shapes[2 * l + 1];
    const int64_t o = t - lb.turn0, k = o / (H * kStrip);  // every strip before is full
    const int64_t x0 = lb.lo + k * kStrip, w = std::min(kStrip, lb.hi - x0);
    const int64_t r = o - k * H * kStrip;
    return starts[l] + (r / w) * W + x0 + r % w;
  }
};

// A row of zeros stands in for corners outside the map (and one scratch row per corner
// takes their gradient, so no two corners ever write the same memory), so the four corners
// of a point are summed in one branch-free, vectorised loop. Multiplying a real row by a
// zero weight instead would turn an infinite value into NaN where grid_sample gives 0.
template <typename T>
struct SpareRows {
  std::vector<T> zeros, scratch;
  explicit SpareRows(int64_t D) : zeros(D, T(0)), scratch(4 * D, T(0)) {}
};

// Native vectors of this copy's instruction set (GCC/Clang vector extensions), for the
// backward's per-corner dot products: written out, their sums take a few shuffles, where
// the compiler (not allowed to reassociate) adds the lanes one by one.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX2__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif
typedef float VecF __attribute__((vector_size(kVecBytes)));
typedef double VecD __attribute__((vector_size(kVecBytes)));
template <typename T> struct Simd;
template <> struct Simd<float> { using V = VecF; };
template <> struct Simd<double> { using V = VecD; };

template <typename V>
inline V vload(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));  // an unaligned vector load
  return v;
}
template <typename V>
inline void vstore(void* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// The lane sums of a0..a3, in a fixed order: lanes are folded pairwise, the four vectors
// together, so each step's shuffles and adds serve all four sums.
template <typename T, typename V>
inline void sum4(V a0, V a1, V a2, V a3, T out[4]) {
  constexpr int n = sizeof(V) / sizeof(T);
  static_assert(n == 2 || n == 4 || n == 8 || n == 16, "unexpected vector width");
  if constexpr (n == 2) {
    const V b01 = __builtin_shufflevector(a0, a1, 0, 2) + __builtin_shufflevector(a0, a1, 1, 3);
    const V b23 = __builtin_shufflevector(a2, a3, 0, 2) + __builtin_shufflevector(a2, a3, 1, 3);
    out[0] = b01[0], out[1] = b01[1], out[2] = b23[0], out[3] = b23[1];
  } else if constexpr (n == 4) {  // halves, then one lane per vector
    const V b01 = __builtin_shufflevector(a0, a1, 0, 1, 4, 5) + __builtin_shufflevector(a0, a1, 2, 3, 6, 7);
    const V b23 = __builtin_shufflevector(a2, a3, 0, 1, 4, 5) + __builtin_shufflevector(a2, a3, 2, 3, 6, 7);
    const V c = __builtin_shufflevector(b01, b23, 0, 2, 4, 6) + __builtin_shufflevector(b01, b23, 1, 3, 5, 7);
    for (int k = 0; k < 4; ++k) out[k] = c[k];
  } else if constexpr (n == 8) {  // halves, quarters, then pairs
    const V b01 = __builtin_shufflevector(a0, a1, 0, 1, 2, 3, 8, 9, 10, 11) +
                  __builtin_shufflevector(a0, a1, 4, 5, 6, 7, 12, 13, 14, 15);
    const V b23 = __builtin_shufflevector(a2, a3, 0, 1, 2, 3, 8, 9, 10, 11) +
                  __builtin_shufflevector(a2, a3, 4, 5, 6, 7, 12, 13, 14, 15);
    const V c = __builtin_shufflevector(b01, b23, 0, 1, 4, 5, 8, 9, 12, 13) +
                __builtin_shufflevector(b01, b23, 2, 3, 6, 7, 10, 11, 14, 15);
    const V d = c + __builtin_shufflevector(c, c, 1, 0, 3, 2, 5, 4, 7, 6);
    for (int k = 0; k < 4; ++k) out[k] = d[2 * k];
  } else {  // n == 16: halves, quarters, then two folds within groups of four
    const V b01 = __builtin_shufflevector(a0, a1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                  __builtin_shufflevector(a0, a1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const V b23 = __builtin_shufflevector(a2, a3, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                  __builtin_shufflevector(a2, a3, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const V c = __builtin_shufflevector(b01, b23, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
                __builtin_shufflevector(b01, b23, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    const V d = c + __builtin_shufflevector(c, c, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    const V e = d + __builtin_shufflevector(d, d, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    for (int k = 0; k < 4; ++k) out[k] = e[4 * k];
  }
}

// One point's share of the backward over the D channels: grad_value[corner k] +=
// aw[k] * grad_output, and dot[k] = <grad_output, value at corner k>.
template <typename T, int kD>
inline void corner_channels(const T* __restrict gout, const T* const v[4], T* const gv[4],
                            const T aw[4], int64_t D, T dot[4]) {
  using V = typename Simd<T>::V;
  constexpr int n = sizeof(V) / sizeof(T);
  if constexpr (kD > 0 && kD % n == 0) {
    V a0{}, a1{}, a2{}, a3{};
    for (int d = 0; d < kD; d += n) {
      const V gd = vload<V>(gout + d);
      a0 += gd * vload<V>(v[0] + d);
      a1 += gd * vload<V>(v[1] + d);
      a2 += gd * vload<V>(v[2] + d);
      a3 += gd * vload<V>(v[3] + d);
      vstore(gv[0] + d, vload<V>(gv[0] + d) + aw[0] * gd);
      vstore(gv[1] + d, vload<V>(gv[1] + d) + aw[1] * gd);
      vstore(gv[2] + d, vload<V>(gv[2] + d) + aw[2] * gd);
      vstore(gv[3] + d, vload<V>(gv[3] + d) + aw[3] * gd);
    }
    sum4<T>(a0, a1, a2, a3, dot);
  } else {
    const T* __restrict v0 = v[0], * __restrict v1 = v[1], * __restrict v2 = v[2], * __restrict v3 = v[3];
    T* __restrict g0 = gv[0], * __restrict g1 = gv[1], * __restrict g2 = gv[2], * __restrict g3 = gv[3];
    T d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
    for (int64_t d = 0; d < D; ++d) {
      const T gd = gout[d];
      d0 += gd * v0[d];
      d1 += gd * v1[d];
      d2 += gd * v2[d];
      d3 += gd * v3[d];
      g0[d] += aw[0] * gd;
      g1[d] += aw[1] * gd;
      g2[d] += aw[2] * gd;
      g3[d] += aw[3] * gd;
    }
    dot[0] = d0, dot[1] = d1, dot[2] = d2, dot[3] = d3;
  }
}

// kD > 0 fixes the channel count at compile time (unrolled loops, sums in registers);
// kD == 0 reads it from the shape.
template <typename T, int kD, typename I>
void forward_range(const ForwardParams<T>& p, int64_t begin, int64_t end) {
  const Shape& s = p.shape;
  const int64_t D = kD > 0 ? kD : s.D, MD = s.M * D, LP = s.L * s.P;
  const PointLevels<I> lv(p.spatial_shapes, p.level_start, s.L, s.P);
  const SpareRows<T> spare(D);
  ChunkCorners<T, I> g;
  const BandWalk walk(s, p.spatial_shapes, p.level_start);
  for (int64_t item = begin; item < end; ++item) {  // item = n * Lq + (query's turn)
    const int64_t n = item / s.Lq, q = walk(item % s.Lq);
    for (int64_t m = 0; m < s.M; ++m) {
      const int64_t nqm = (n * s.Lq + q) * s.M + m;
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

// A band's buffer column of value column x, and back (bands.h).
inline int64_t buffer_column(const LevelBand& lb, int64_t x) {
  return x - lb.halo_lo - (!lb.zone && x >= lb.hi ? lb.hi - lb.lo : 0);
}
inline int64_t value_column(const LevelBand& lb, int64_t c) {
  const int64_t x = lb.halo_lo + c;
  return x + (!lb.zone && x >= lb.lo ? lb.hi - lb.lo : 0);
}

// Where the corner at column x, line y (value row r) takes its gradient in band b's pass
// (bands.h): grad_value in the band's own columns, else the band's buffer within its zone;
// nullptr farther out, where the point is deferred.
template <typename T>
inline T* band_row(const LevelBand& lb, int64_t x, int64_t y, int64_t r, T* gbase, T* hbase,
                   int64_t MD) {
  if (!lb.zone && x >= lb.lo && x < lb.hi) return gbase + r * MD;
  if (x < lb.halo_lo || x >= lb.halo_hi) return nullptr;
  return hbase + (lb.halo_row0 + y * lb.width + buffer_column(lb, x)) * MD;
}

// The targets of a point's four corners (band_row; a scratch row for a corner off the map).
// False when one lies beyond the halo. The corners of an interior point are (x0, y0) and its
// neighbours, in chunk_point's order; a border point's are found from their rows.
template <typename T, typename I>
inline bool band_targets(const ChunkCorners<T, I>& g, int64_t jc, const PointCorners<T>& c,
                         const LevelBand& lb, int64_t start, int64_t W, T* gbase, T* hbase,
                         int64_t MD, T* scratch, int64_t D, T* gv[4]) {
  for (int k = 0; k < 4; ++k) {
    const int64_t r = c.row[k];
    if (r < 0) {
      gv[k] = scratch + k * D;
      continue;
    }
    int64_t x, y;
    if (g.kind[jc] == kInterior) {
      x = g.x0[jc] + (k & 1);
      y = g.y0[jc] + (k >> 1);
    } else {
      y = (r - start) / W;
      x = (r - start) - y * W;
    }
    gv[k] = band_row<T>(lb, x, y, r, gbase, hbase, MD);
    if (!gv[k]) return false;
  }
  return true;
}

// One point's backward, its corners' grad_value rows given: accumulates aw[k] * grad_output
// into them and writes the point's location and attention gradients.
template <typename T, int kD>
inline void point_backward(const PointCorners<T>& c, T a, T lx, T ly, int64_t H, int64_t W,
                           const T* base, int64_t MD, T* const gv[4], const T* gout, int64_t D,
                           const T* zeros, T* grad_loc, T* grad_attn) {
  const T* v[4];
  T aw[4];
  for (int k = 0; k < 4; ++k) {
    v[k] = c.row[k] >= 0 ? base + c.row[k] * MD : zeros;
    aw[k] = a * c.weight[k];
  }
  T dot[4];
  corner_channels<T, kD>(gout, v, gv, aw, D, dot);
  *grad_attn = c.weight[0] * dot[0] + c.weight[1] * dot[1] + c.weight[2] * dot[2] +
               c.weight[3] * dot[3];
  T gx, gy;
  bilinear_location_grad<T>(lx, ly, dot, H, W, gx, gy);
  grad_loc[0] = a * gx;
  grad_loc[1] = a * gy;
}

// The backward's first pass over items (batch, band, head), item = (n * K + b) * M + m.
// A thread's range is walked one (batch, band) at a time with queries outside and its heads
// inside (measured faster than one head at a time: neighbouring heads' parts of a value row
// are adjacent in memory). Each item sums its queries in the same order whatever the split.
template <typename T, int kD, typename I>
void backward_range(const BackwardParams<T>& p, const BandScratch<T>& bs, int64_t begin,
                    int64_t end) {
  const Shape& s = p.shape;
  const int64_t D = kD > 0 ? kD : s.D, MD = s.M * D, LP = s.L * s.P;
  const PointLevels<I> lv(p.spatial_shapes, p.level_start, s.L, s.P);
  SpareRows<T> spare(D);
  ChunkCorners<T, I> g;
  const BandWalk walk(s, p.spatial_shapes, p.level_start);
  const int64_t K = walk.K;
  // Per point, from its band and level: the columns [lo, hi) an interior point's four corners
  // must lie in to be written without tests, and for a zone level (bands.h) the buffer row
  // of column 0 on line 0 and the buffer's width (0 on other levels: grad_value rows).
  std::vector<I> lo(LP), hi(LP), zrow(LP), zwidth(LP);
  for (int64_t nb = begin / s.M; nb * s.M < end; ++nb) {
    const int64_t n = nb / K, b = nb % K;
    const int64_t m_begin = std::max(begin - nb * s.M, int64_t(0));
    const int64_t m_end = std::min(end - nb * s.M, s.M);
    for (int64_t j = 0; j < LP; ++j) {
      const LevelBand& lb = walk.band(b, j / s.P);
      lo[j] = static_cast<I>(lb.zone ? lb.halo_lo : lb.lo);
      hi[j] = static_cast<I>(lb.zone ? lb.halo_hi : lb.hi);
      zrow[j] = static_cast<I>(lb.zone ? lb.halo_row0 - lb.halo_lo : 0);
      zwidth[j] = static_cast<I>(lb.zone ? lb.width : 0);
    }
    T* halo = K > 1 ? bs.halo + nb * walk.halo_rows * MD : nullptr;
    for (int64_t t = walk.band_begin(b); t < walk.band_end(b); ++t) {
      const int64_t q = walk(t);
      for (int64_t m = m_begin; m < m_end; ++m) {
        const T* base = p.value + n * s.S * MD + m * D;
        T* gbase = p.grad_value + n * s.S * MD + m * D;
        T* hbase = halo ? halo + m * D : nullptr;
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
            T* gv[4];
            if (g.kind[jc] == kInterior && g.x0[jc] >= lo[j] && g.x0[jc] + 1 < hi[j]) {
              if (zwidth[j] == 0) {
                for (int k = 0; k < 4; ++k) gv[k] = gbase + c.row[k] * MD;  // all its own
              } else {  // all in its zone's buffer
                T* z = hbase + (zrow[j] + int64_t(g.y0[jc]) * zwidth[j] + g.x0[jc]) * MD;
                gv[0] = z;
                gv[1] = z + MD;
                gv[2] = z + zwidth[j] * MD;
                gv[3] = z + (zwidth[j] + 1) * MD;
              }
            } else if (!band_targets<T, I>(g, jc, c, walk.band(b, j / s.P), lv.start[j],
                                           lv.W[j], gbase, hbase, MD, spare.scratch.data(), D,
                                           gv)) {
              const int64_t item = nb * s.M + m;
              int64_t& count = bs.deferred_count[item];
              if (count < kDeferCapacity) bs.deferred[item * kDeferCapacity + count] = q * LP + j;
              ++count;
              continue;
            }
            point_backward<T, kD>(c, attn[j], g.lx[jc], g.ly[jc], lv.H[j], lv.W[j], base, MD,
                                  gv, gout, D, spare.zeros.data(), grad_loc + 2 * j,
                                  grad_attn + j);
          }
        }
      }
    }
  }
}

// The backward's second pass (encoder layout only), over items (batch, head): adds each
// band's buffer into grad_value, then runs the deferred points writing grad_value
// directly, band by band in the first pass's order. An item whose list overflowed walks its
// band again and picks its deferred points out by the same test.
template <typename T, int kD, typename I>
void deferred_range(const BackwardParams<T>& p, const BandScratch<T>& bs, int64_t begin,
                    int64_t end) {
  const Shape& s = p.shape;
  const int64_t D = kD > 0 ? kD : s.D, MD = s.M * D, LP = s.L * s.P;
  const PointLevels<I> lv(p.spatial_shapes, p.level_start, s.L, s.P);
  SpareRows<T> spare(D);
  ChunkCorners<T, I> g;
  const BandWalk walk(s, p.spatial_shapes, p.level_start);
  const int64_t K = walk.K;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n = item / s.M, m = item % s.M;
    const T* base = p.value + n * s.S * MD + m * D;
    T* gbase = p.grad_value + n * s.S * MD + m * D;
    auto band_buffer = [&](int64_t b) {  // band b's buffer, at head m
      return bs.halo + (n * K + b) * walk.halo_rows * MD + m * D;
    };
    for (int64_t b = 0; b < K; ++b) {
      const T* hbase = band_buffer(b);
      for (int64_t l = 0; l < s.L; ++l) {
        const LevelBand& lb = walk.band(b, l);
        const int64_t H = p.spatial_shapes[2 * l], W = p.spatial_shapes[2 * l + 1];
        for (int64_t y = 0; y < H; ++y) {
          for (int64_t c = 0; c < lb.width; ++c) {
            T* __restrict dst = gbase + (p.level_start[l] + y * W + value_column(lb, c)) * MD;
            const T* __restrict src = hbase + (lb.halo_row0 + y * lb.width + c) * MD;
            for (int64_t d = 0; d < D; ++d) dst[d] += src[d];
          }
        }
      }
    }
    // One deferred point: its geometry again, every corner written in grad_value.
    auto run_point = [&](int64_t q, int64_t j, const ChunkCorners<T, I>& gc, int64_t jc,
                         const PointCorners<T>& c) {
      const int64_t nqm = (n * s.Lq + q) * s.M + m;
      T* gv[4];
      for (int k = 0; k < 4; ++k) {
        gv[k] = c.row[k] >= 0 ? gbase + c.row[k] * MD : spare.scratch.data() + k * D;
      }
      point_backward<T, kD>(c, p.attn[nqm * LP + j], gc.lx[jc], gc.ly[jc], lv.H[j], lv.W[j],
                            base, MD, gv, p.grad_output + nqm * D, D, spare.zeros.data(),
                            p.grad_loc + (nqm * LP + j) * 2, p.grad_attn + nqm * LP + j);
    };
    for (int64_t b = 0; b < K; ++b) {
      const int64_t nbm = (n * K + b) * s.M + m, count = bs.deferred_count[nbm];
      if (count <= kDeferCapacity) {
        for (int64_t e = 0; e < count; ++e) {
          const int64_t code = bs.deferred[nbm * kDeferCapacity + e];
          const int64_t q = code / LP, j = code % LP;
          const T* loc = p.loc + ((n * s.Lq + q) * s.M + m) * LP * 2;
          PointCorners<T> c;
          chunk_corners<T, I>(loc + 2 * j, lv, j, 1, g);
          chunk_point<T, I>(g, 0, loc + 2 * j, lv, j, c);
          run_point(q, j, g, 0, c);
        }
        continue;
      }
      T* gv[4];  // the first pass's targets, for its test only
      T* hbase = band_buffer(b);
      for (int64_t t = walk.band_begin(b); t < walk.band_end(b); ++t) {
        const int64_t q = walk(t);
        const T* loc = p.loc + ((n * s.Lq + q) * s.M + m) * LP * 2;
        for (int64_t j0 = 0; j0 < LP; j0 += kChunk) {
          const int64_t nj = std::min(kChunk, LP - j0);
          chunk_corners<T, I>(loc + 2 * j0, lv, j0, nj, g);
          for (int64_t jc = 0; jc < nj; ++jc) {
            const int64_t j = j0 + jc;
            PointCorners<T> c;
            if (!chunk_point<T, I>(g, jc, loc + 2 * j0, lv, j, c)) continue;
            if (band_targets<T, I>(g, jc, c, walk.band(b, j / s.P), lv.start[j], lv.W[j],
                                   gbase, hbase, MD, spare.scratch.data(), D, gv)) {
              continue;
            }
            run_point(q, j, g, jc, c);
          }
        }
      }
    }
  }
}

// Row indices are int32 when they all fit (the validated shapes have H * W <= S).
// DDETR_CPU_INDEX64=1 forces int64 everywhere, so the tests reach that path without a
// value tensor of 2^30 rows.
inline bool int32_rows(const Shape& s) {
  static const bool force64 = std::getenv("DDETR_CPU_INDEX64") != nullptr;
  return s.S < (int64_t(1) << 30) && !force64;
}

template <typename T, int kD>
void forward_rows(const ForwardParams<T>& p, int64_t begin, int64_t end) {
  if (int32_rows(p.shape)) return forward_range<T, kD, int32_t>(p, begin, end);
  return forward_range<T, kD, int64_t>(p, begin, end);
}

template <typename T, int kD>
void backward_rows(const BackwardParams<T>& p, const BandScratch<T>& bs, int64_t begin,
                   int64_t end) {
  if (int32_rows(p.shape)) return backward_range<T, kD, int32_t>(p, bs, begin, end);
  return backward_range<T, kD, int64_t>(p, bs, begin, end);
}

template <typename T, int kD>
void deferred_rows(const BackwardParams<T>& p, const BandScratch<T>& bs, int64_t begin,
                   int64_t end) {
  if (int32_rows(p.shape)) return deferred_range<T, kD, int32_t>(p, bs, begin, end);
  return deferred_range<T, kD, int64_t>(p, bs, begin, end);
}

// Channel counts of the published models get unrolled copies; any other D runs the
// generic loop.
template <typename T>
void forward_any(const ForwardParams<T>& p, int64_t begin, int64_t end) {
  switch (p.shape.D) {
    case 32: return forward_rows<T, 32>(p, begin, end);
    case 64: return forward_rows<T, 64>(p, begin, end);
    default: return forward_rows<T, 0>(p, begin, end);
  }
}

template <typename T>
void backward_any(const BackwardParams<T>& p, const BandScratch<T>& bs, int64_t begin,
                  int64_t end) {
  switch (p.shape.D) {
    case 32: return backward_rows<T, 32>(p, bs, begin, end);
    case 64: return backward_rows<T, 64>(p, bs, begin, end);
    default: return backward_rows<T, 0>(p, bs, begin, end);
  }
}

template <typename T>
void deferred_any(const BackwardParams<T>& p, const BandScratch<T>& bs, int64_t begin,
                  int64_t end) {
  switch (p.shape.D) {
    case 32: return deferred_rows<T, 32>(p, bs, begin, end);
    case 64: return deferred_rows<T, 64>(p, bs, begin, end);
    default: return deferred_rows<T, 0>(p, bs, begin, end);
  }
}

#define DDETR_STR2(x) #x
#define DDETR_STR(x) DDETR_STR2(x)
const KernelTable kTable = {DDETR_STR(DDETR_ISA), forward_any<float>,   forward_any<double>,
                            backward_any<float>,    backward_any<double>, deferred_any<float>,
                            deferred_any<double>};

}  // namespace
}  // namespace DDETR_ISA

const KernelTable& DDETR_CAT(kernel_table_, DDETR_ISA)() { return DDETR_ISA::kTable; }

}  // namespace cpu
}  // namespace ddetr
