// The forward over items (batch, sweep, query's position in the walk): a sweep is `heads`
// consecutive heads (query_plan.h's heads_per_sweep, 1 or M), walked together for each query.
// Each output row is computed by the same operations whichever the split, so the result does
// not depend on it. Included by kernels_isa.cpp inside its per-ISA namespace.
//
// kD > 0 fixes the channel count at compile time (unrolled loops, sums in registers);
// kD == 0 reads it from the shape.
template <typename T, int kD, typename I>
void forward_range(const ForwardParams<T>& p, int64_t heads, int64_t begin, int64_t end) {
  const Shape& s = p.shape;
  const int64_t D = kD > 0 ? kD : s.D, MD = s.M * D, LP = s.LP, sweeps = s.M / heads;
  const PointLevels<I> lv(p.spatial_shapes, p.level_start, s);
  const ZeroRow<T> zero(D);
  ChunkCorners<T, I> g;
  const QueryWalk walk(s, p.spatial_shapes, p.level_start);
  for (int64_t item = begin; item < end; ++item) {  // item = (n * sweeps + sweep) * Lq + t
    const int64_t ns = item / s.Lq, n = ns / sweeps, q = walk(item % s.Lq);
    const int64_t m_begin = (ns % sweeps) * heads;
    for (int64_t m = m_begin; m < m_begin + heads; ++m) {
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
          const T* v[4];
          corner_rows<T, I, const T>(g, j, c, lv.W[j0 + j], base, MD, zero.each, v);
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

// The forward of the discrete method (s.discrete): one value row per point, weight 1; items
// as above, the queries in index order.
template <typename T, int kD, typename I>
void forward_discrete_range(const ForwardParams<T>& p, int64_t heads, int64_t begin,
                            int64_t end) {
  const Shape& s = p.shape;
  const int64_t D = kD > 0 ? kD : s.D, MD = s.M * D, LP = s.LP, sweeps = s.M / heads;
  const PointLevels<I> lv(p.spatial_shapes, p.level_start, s);
  I rows[kChunk];
  for (int64_t item = begin; item < end; ++item) {  // item = (n * sweeps + sweep) * Lq + q
    const int64_t ns = item / s.Lq, n = ns / sweeps, q = item % s.Lq;
    const int64_t m_begin = (ns % sweeps) * heads;
    for (int64_t m = m_begin; m < m_begin + heads; ++m) {
      const int64_t nqm = (n * s.Lq + q) * s.M + m;
      const T* loc = p.loc + nqm * LP * 2;
      const T* attn = p.attn + nqm * LP;
      const T* base = p.value + n * s.S * MD + m * D;
      T local[kD > 0 ? kD : 1];
      T* __restrict acc = kD > 0 ? local : p.output + nqm * D;
      for (int64_t d = 0; d < D; ++d) acc[d] = T(0);
      for (int64_t j0 = 0; j0 < LP; j0 += kChunk) {
        const int64_t nj = std::min(kChunk, LP - j0);
        chunk_discrete_rows<T, I>(loc + 2 * j0, lv, j0, nj, rows);
        for (int64_t j = 0; j < nj; ++j) {
          const T a = attn[j0 + j];
          const T* __restrict v = base + int64_t(rows[j]) * MD;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) acc[d] += a * v[d];
        }
      }
      if (kD > 0) {
        T* __restrict out = p.output + nqm * D;
        for (int64_t d = 0; d < D; ++d) out[d] = acc[d];
      }
    }
  }
}
