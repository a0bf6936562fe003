#include "bands.h"

#include <algorithm>

namespace ddetr {
namespace cpu {

int64_t plan_bands(const Shape& s, const int64_t* spatial_shapes, LevelBand* level,
                   int64_t& halo_rows) {
  const int64_t K = s.Lq == s.S ? kBands : 1;
  int64_t turn = 0;
  halo_rows = 0;
  for (int64_t b = 0; b < K; ++b) {
    int64_t rows = 0;
    for (int64_t l = 0; l < s.L; ++l) {
      const int64_t H = spatial_shapes[2 * l], W = spatial_shapes[2 * l + 1];
      LevelBand& lb = level[b * s.L + l];
      lb.lo = b * W / K;
      lb.hi = (b + 1) * W / K;
      lb.halo_lo = K > 1 ? std::max<int64_t>(lb.lo - kHaloColumns, 0) : lb.lo;
      lb.halo_hi = K > 1 ? std::min<int64_t>(lb.hi + kHaloColumns, W) : lb.hi;
      lb.zone = K > 1 && lb.hi - lb.lo < kZoneBelow;
      lb.width = (lb.halo_hi - lb.halo_lo) - (lb.zone ? 0 : lb.hi - lb.lo);
      lb.halo_row0 = rows;
      rows += H * lb.width;
      lb.turn0 = turn;
      turn += H * (lb.hi - lb.lo);
    }
    halo_rows = std::max(halo_rows, rows);
  }
  for (int64_t b = K; b < kBands; ++b)
    for (int64_t l = 0; l < s.L; ++l) level[b * s.L + l] = LevelBand{0, 0, 0, 0, 0, 0, 0, turn};
  return K;
}

}  // namespace cpu
}  // namespace ddetr
