#include "query_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace ddetr {
namespace cpu {

int64_t plan_bands(const Shape& s, const int64_t* spatial_shapes, LevelBand* level) {
  const int64_t K = s.Lq == s.S ? kBands : 1;
  int64_t position = 0;
  for (int64_t b = 0; b < K; ++b) {
    for (int64_t l = 0; l < s.L; ++l) {
      const int64_t H = spatial_shapes[2 * l], W = spatial_shapes[2 * l + 1];
      LevelBand& lb = level[b * s.L + l];
      lb.lo = b * W / K;
      lb.hi = (b + 1) * W / K;
      lb.first = position;
      position += H * (lb.hi - lb.lo);
    }
  }
  for (int64_t b = K; b < kBands; ++b)
    for (int64_t l = 0; l < s.L; ++l) level[b * s.L + l] = LevelBand{0, 0, position};
  return K;
}

namespace {

// Whether most of a sample of the points lie within `pixels` of their queries' own pixels
// (encoder layout).
template <typename L>
bool points_near_queries(const Shape& s, const L* loc, const int64_t* spatial_shapes,
                         const int64_t* level_start, double pixels) {
  const int64_t samples = std::min<int64_t>(s.N * s.Lq, 256);
  int64_t near = 0, far = 0;
  for (int64_t i = 0; i < samples; ++i) {  // queries spread evenly over the call, heads in turn
    const int64_t nq = i * (s.N * s.Lq) / samples, q = nq % s.Lq, m = i % s.M;
    int64_t lq = s.L - 1;  // the level whose pixel query q is
    while (lq > 0 && q < level_start[lq]) --lq;
    const int64_t Wq = spatial_shapes[2 * lq + 1], Hq = spatial_shapes[2 * lq];
    const int64_t o = q - level_start[lq];
    const double xq = (o % Wq + 0.5) / Wq, yq = (o / Wq + 0.5) / Hq;  // normalised
    const L* p = loc + (nq * s.M + m) * s.LP * 2;
    for (int64_t j = 0; j < s.LP; ++j) {
      const int64_t l = s.level_of(j);
      const double dx = (p[2 * j] - xq) * spatial_shapes[2 * l + 1];
      const double dy = (p[2 * j + 1] - yq) * spatial_shapes[2 * l];
      if (std::abs(dx) <= pixels && std::abs(dy) <= pixels) {
        ++near;
      } else {
        ++far;  // NaN too
      }
    }
  }
  return near >= far;
}

}  // namespace

template <typename L>
int64_t heads_per_sweep(const Shape& s, const L* loc, const int64_t* spatial_shapes,
                        const int64_t* level_start, bool forward) {
  static const char* forced = std::getenv("DDETR_CPU_HEADS");
  if (forced != nullptr && std::strcmp(forced, "1") == 0) return 1;
  const int64_t all = std::max<int64_t>(s.M, 1);
  if (forced != nullptr && std::strcmp(forced, "all") == 0) return all;
  if (s.M <= 1 || s.L == 0 || s.N * s.Lq == 0 || s.Lq != s.S) return all;
  // Measured (benchmarks/README.md): the backward gains from one head at a time once points
  // lie beyond a few pixels; the forward loses 19% at an 8 px spread and gains 18-40% with
  // points anywhere (32 px lies between; spreads in between were not measured).
  const double near_pixels = forward ? 32 : 4;
  return points_near_queries(s, loc, spatial_shapes, level_start, near_pixels) ? all : 1;
}

template int64_t heads_per_sweep<float>(const Shape&, const float*, const int64_t*,
                                        const int64_t*, bool);
template int64_t heads_per_sweep<double>(const Shape&, const double*, const int64_t*,
                                         const int64_t*, bool);

bool int32_indices(const Shape& s) {
  static const bool force64 = std::getenv("DDETR_CPU_INDEX64") != nullptr;
  return !force64 && s.S < (int64_t(1) << 30);  // validated shapes have H * W <= S
}

}  // namespace cpu
}  // namespace ddetr
