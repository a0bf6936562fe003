// Arguments of the ms_deform_attn kernels, filled once by the torch glue and handed to
// every backend. Plain C++ (no torch header) so the CUDA kernels compile with nvcc alone.
// All tensors are dense and contiguous in the 2020 layout; sizes are int64 so that index
// products never overflow.
#pragma once
#include <cstdint>

#include "bilinear.h"  // DDETR_HD

namespace ddetr {

// The generalised form (RT-DETRv2, D-FINE, DEIM) lists a point count per level; its level
// ends travel inside Shape, by value, so that the CUDA kernels need no device table (and a
// CUDA graph capture no copy). This bounds the levels of a ragged list, not of the 2020 form.
constexpr int kMaxRaggedLevels = 16;

struct Shape {
  int64_t N;   // batch
  int64_t S;   // value rows: sum over levels of H * W
  int64_t M;   // heads
  int64_t D;   // channels per head
  int64_t L;   // levels
  int64_t P;   // points per level and head; 0 when `ragged`
  int64_t Lq;  // queries
  int64_t LP;  // points per (query, head): L * P, or the sum of the points list
  // The points list when its counts differ: point j of a (query, head) lies on the first
  // level l with j < level_end[l] (level-major, as the tensors are laid out).
  bool ragged = false;
  int64_t level_end[kMaxRaggedLevels] = {};
  // Sampling: bilinear with zero padding (the 2020 form), or the nearest pixel with the
  // border clamped ("discrete"; bilinear.h's discrete_index), which has no location gradient.
  bool discrete = false;

  // The level of point j (0 <= j < LP) of a (query, head).
  DDETR_HD int64_t level_of(int64_t j) const {
    if (!ragged) return j / P;
    int64_t l = 0;
    while (l + 1 < L && j >= level_end[l]) ++l;
    return l;
  }
};

// Storage type of the sampling locations (and their gradient) beside values of type T: T
// itself, except for the 16-bit types, whose kernels take float32 locations (a bfloat16
// location is off by up to 0.4 px on a 100-pixel map). The 16-bit types specialise it where
// they are declared (cuda/launch.h, cuda/common.cuh).
template <typename T>
struct LocationType {
  using type = T;
};
template <typename T>
using location_t = typename LocationType<T>::type;

template <typename scalar_t>
struct ForwardParams {
  Shape shape;
  const scalar_t* value;         // (N, S, M, D)
  const int64_t* spatial_shapes;  // (L, 2) as (H, W)
  const int64_t* level_start;    // (L)
  const location_t<scalar_t>* loc;  // (N, Lq, M, LP, 2) normalised (x, y)
  const scalar_t* attn;          // (N, Lq, M, LP)
  scalar_t* output;              // (N, Lq, M, D)
};

template <typename scalar_t>
struct BackwardParams {
  Shape shape;
  const scalar_t* value;
  const int64_t* spatial_shapes;
  const int64_t* level_start;
  const location_t<scalar_t>* loc;
  const scalar_t* attn;
  const scalar_t* grad_output;      // (N, Lq, M, D)
  scalar_t* grad_value;             // (N, S, M, D), zero on entry
  location_t<scalar_t>* grad_loc;   // (N, Lq, M, L, P, 2); unused (may be null) when discrete
  scalar_t* grad_attn;          // (N, Lq, M, L, P)
};

}  // namespace ddetr
