// Point geometry: where a sampling point's four corners lie and their bilinear weights (the
// math itself is bilinear.h). Included by kernels_isa.cpp inside its per-ISA namespace.

// Per-point copies of the level sizes (point j of a head lies on level s.level_of(j)), so
// the geometry of a chunk of points reads them like the locations, one SIMD lane per point.
// I is the index type: int32_t where every index fits, which vectorises better.
template <typename I>
struct PointLevels {
  Array<I> H, W, start;
  PointLevels(const int64_t* shapes, const int64_t* level_start, const Shape& s)
      : H(s.LP), W(s.LP), start(s.LP) {
    for (int64_t j = 0; j < s.LP; ++j) {
      const int64_t l = s.level_of(j);
      H[j] = static_cast<I>(shapes[2 * l]);
      W[j] = static_cast<I>(shapes[2 * l + 1]);
      start[j] = static_cast<I>(level_start[l]);
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

// Where the four corners of point jc of a chunk lie in an array whose row r starts at
// base + r * MD, c being chunk_point's result; a corner off the map gets off[k]. An interior
// point's rows follow from its top-left one, with no per-corner tests.
template <typename T, typename I, typename P>
inline void corner_rows(const ChunkCorners<T, I>& g, int64_t jc, const PointCorners<T>& c,
                        int64_t W, P* base, int64_t MD, P* const off[4], P* rows[4]) {
  if (g.kind[jc] == kInterior) {
    rows[0] = base + int64_t(g.row[jc]) * MD;
    rows[1] = rows[0] + MD;
    rows[2] = rows[0] + W * MD;
    rows[3] = rows[2] + MD;
    return;
  }
  for (int k = 0; k < 4; ++k) rows[k] = c.row[k] >= 0 ? base + c.row[k] * MD : off[k];
}

// A row of zeros stands in for corners outside the map, so the four corners of a point are
// read in one branch-free, vectorised loop. Multiplying a real row by a zero weight instead
// would turn an infinite value into NaN where grid_sample gives 0.
template <typename T>
struct ZeroRow {
  Array<T> zeros;
  const T* each[4];  // the `off` rows of corner_rows
  explicit ZeroRow(int64_t D) : zeros(D, T(0)) {
    for (int k = 0; k < 4; ++k) each[k] = zeros.data();
  }
};

// The value rows of up to kChunk consecutive discrete points (the nearest pixel, border
// clamped: every point lies on its map), computed across SIMD lanes.
template <typename T, typename I>
inline void chunk_discrete_rows(const T* loc, const PointLevels<I>& lv, int64_t j0, int64_t nj,
                                I* row) {
  const I* H = lv.H.data() + j0;
  const I* W = lv.W.data() + j0;
  const I* start = lv.start.data() + j0;
#pragma omp simd
  for (int64_t j = 0; j < nj; ++j) {
    row[j] = start[j] + discrete_index<T, I>(loc[2 * j + 1], H[j]) * W[j] +
             discrete_index<T, I>(loc[2 * j], W[j]);
  }
}
