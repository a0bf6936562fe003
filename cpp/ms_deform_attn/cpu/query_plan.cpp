#include "query_plan.h"

#include <algorithm>
#include <cstdlib>

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

bool int32_indices(const Shape& s) {
  static const bool force64 = std::getenv("DDETR_CPU_INDEX64") != nullptr;
  return !force64 && s.S < (int64_t(1) << 30);  // validated shapes have H * W <= S
}

}  // namespace cpu
}  // namespace ddetr
