// The backward over items (batch, head), item = n * M + m, in one pass: each point's
// attention and location gradients from the dot products of grad_output with its four
// corners' values, and its four terms aw[k] * grad_output added into the corners'
// grad_value rows. An item owns its head's slice of grad_value, so no two items write the
// same memory wherever the points lie, and each row's terms are added in the walk's order:
// no atomics, no scratch, and bits that do not depend on the number of threads.
// A thread's items are walked one batch at a time, queries outside and its heads inside, all
// of them or one at a time (query_plan.h's heads_per_sweep). Included by kernels_isa.cpp
// inside its per-ISA namespace.

// One point's backward, its corners' value rows v and grad_value rows gv given.
template <typename T, int kD>
inline void point_backward(const PointCorners<T>& c, T a, T lx, T ly, int64_t H, int64_t W,
                           const T* const v[4], T* const gv[4], const T* gout, int64_t D,
                           T* grad_loc, T* grad_attn) {
  T aw[4];
  for (int k = 0; k < 4; ++k) aw[k] = a * c.weight[k];
  T dot[4];
  corner_channels<T, kD>(gout, v, gv, aw, D, dot);
  *grad_attn = c.weight[0] * dot[0] + c.weight[1] * dot[1] + c.weight[2] * dot[2] +
               c.weight[3] * dot[3];
  T gx, gy;
  bilinear_location_grad<T>(lx, ly, dot, H, W, gx, gy);
  grad_loc[0] = a * gx;
  grad_loc[1] = a * gy;
}

template <typename T, int kD, typename I>
void backward_range(const BackwardParams<T>& p, int64_t heads, int64_t begin, int64_t end) {
  const Shape& s = p.shape;
  const int64_t D = kD > 0 ? kD : s.D, MD = s.M * D, LP = s.LP;
  const PointLevels<I> lv(p.spatial_shapes, p.level_start, s);
  const ZeroRow<T> zero(D);
  Array<T> sink(4 * D);  // takes the gradient of corners off the map, one row per corner
  T* const sink_rows[4] = {sink.data(), sink.data() + D, sink.data() + 2 * D, sink.data() + 3 * D};
  ChunkCorners<T, I> g;
  const QueryWalk walk(s, p.spatial_shapes, p.level_start);
  for (int64_t n = begin / s.M; n * s.M < end; ++n) {
    const int64_t m_begin = std::max(begin - n * s.M, int64_t(0));
    const int64_t m_end = std::min(end - n * s.M, s.M);
    for (int64_t sweep = m_begin; sweep < m_end; sweep += heads) {
      for (int64_t t = 0; t < s.Lq; ++t) {
        const int64_t q = walk(t);
        for (int64_t m = sweep; m < std::min(sweep + heads, m_end); ++m) {
          const T* base = p.value + n * s.S * MD + m * D;  // value[n, row, m, :]: base + row * MD
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
              const T* v[4];
              T* gv[4];
              corner_rows<T, I, const T>(g, jc, c, lv.W[j], base, MD, zero.each, v);
              corner_rows<T, I, T>(g, jc, c, lv.W[j], gbase, MD, sink_rows, gv);
              point_backward<T, kD>(c, attn[j], g.lx[jc], g.ly[jc], lv.H[j], lv.W[j], v, gv,
                                    gout, D, grad_loc + 2 * j, grad_attn + j);
            }
          }
        }
      }
    }
  }
}

// The backward of the discrete method (s.discrete) over items (batch, head), in index order:
// grad_value[row] += a * grad_output and grad_attn = <grad_output, value[row]> per point; no
// location gradient (the nearest pixel is piecewise constant). As above, an item owns its
// head's slice of grad_value and adds its terms in a fixed order.
template <typename T, int kD, typename I>
void backward_discrete_range(const BackwardParams<T>& p, int64_t begin, int64_t end) {
  const Shape& s = p.shape;
  const int64_t D = kD > 0 ? kD : s.D, MD = s.M * D, LP = s.LP;
  const PointLevels<I> lv(p.spatial_shapes, p.level_start, s);
  I rows[kChunk];
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n = item / s.M, m = item % s.M;
    const T* base = p.value + n * s.S * MD + m * D;
    T* gbase = p.grad_value + n * s.S * MD + m * D;
    for (int64_t q = 0; q < s.Lq; ++q) {
      const int64_t nqm = (n * s.Lq + q) * s.M + m;
      const T* __restrict gout = p.grad_output + nqm * D;
      const T* loc = p.loc + nqm * LP * 2;
      const T* attn = p.attn + nqm * LP;
      T* grad_attn = p.grad_attn + nqm * LP;
      for (int64_t j0 = 0; j0 < LP; j0 += kChunk) {
        const int64_t nj = std::min(kChunk, LP - j0);
        chunk_discrete_rows<T, I>(loc + 2 * j0, lv, j0, nj, rows);
        for (int64_t j = 0; j < nj; ++j) {
          const T a = attn[j0 + j];
          const T* __restrict v = base + int64_t(rows[j]) * MD;
          T* __restrict gv = gbase + int64_t(rows[j]) * MD;
          T dot = 0;
#pragma omp simd reduction(+ : dot)
          for (int64_t d = 0; d < D; ++d) {
            dot += gout[d] * v[d];
            gv[d] += a * gout[d];
          }
          grad_attn[j0 + j] = dot;
        }
      }
    }
  }
}
