// The order in which the forward and the backward's point pass walk the queries (query_plan.h):
// band by band, each band's part of a level's map in column strips, for the encoder layout;
// index order otherwise. It depends on the shapes alone. Included by kernels_isa.cpp inside
// its per-ISA namespace.
struct QueryWalk {
  const int64_t* shapes;
  const int64_t* starts;
  int64_t L, Lq, K;
  Array<LevelBand> level;  // (band, level), from plan_bands
  QueryWalk(const Shape& s, const int64_t* spatial_shapes, const int64_t* level_start)
      : shapes(spatial_shapes), starts(level_start), L(s.L), Lq(s.Lq), level(kBands * s.L) {
    K = plan_bands(s, spatial_shapes, level.data());
  }

  int64_t operator()(int64_t t) const {  // the t-th query walked
    if (K == 1) return t;
    int64_t e = K * L - 1;  // the last (band, level) starting at or before t is not empty
    while (e > 0 && t < level[e].first) --e;
    const LevelBand& lb = level[e];
    const int64_t l = e % L, H = shapes[2 * l], W = shapes[2 * l + 1];
    const int64_t o = t - lb.first, k = o / (H * kStrip);  // every strip before is full
    const int64_t x0 = lb.lo + k * kStrip, w = std::min(kStrip, lb.hi - x0);
    const int64_t r = o - k * H * kStrip;
    return starts[l] + (r / w) * W + x0 + r % w;
  }
};
