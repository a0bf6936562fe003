// Bilinear sampling of one point and its gradient: the one source of this math for
// every backend (CPU kernels and CUDA kernels include it; no torch header here).
//
// Semantics are those of grid_sample(mode="bilinear", padding_mode="zeros",
// align_corners=False) at grid = 2 * loc - 1: the pixel coordinate is loc * size - 0.5
// and corners outside the map contribute zero.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define DDETR_HD __host__ __device__ __forceinline__
#else
#define DDETR_HD inline
#endif

namespace ddetr {

// The four corners around a sampling point, in the order (y0,x0), (y0,x1), (y1,x0), (y1,x1).
// An invalid corner (outside the map) has weight 0 and offset -1.
template <typename acc_t>
struct Corners {
  int64_t offset[4];  // y * W + x within the level, or -1 when outside the map
  acc_t weight[4];    // bilinear weights
  acc_t lx, ly;       // fractional parts, needed by the gradient
  int64_t x0, y0;     // top-left corner (each may be -1), e.g. to bucket points by cell
};

// Fills `c` for the normalised location (x, y) on an H x W map and returns whether any
// corner lies on the map. Branch-free, so CPU loops over points vectorise and GPU warps do
// not diverge. A point outside the map, or non-finite (NaN fails every comparison), gets
// four invalid corners; it is moved to a harmless spot before the float-to-int
// conversion, which would be undefined for out-of-range values.
template <typename acc_t>
DDETR_HD bool bilinear_corners(acc_t x, acc_t y, int64_t H, int64_t W, Corners<acc_t>& c) {
  const acc_t px = x * static_cast<acc_t>(W) - acc_t(0.5);
  const acc_t py = y * static_cast<acc_t>(H) - acc_t(0.5);
  const bool inside = px > acc_t(-1) && py > acc_t(-1) && px < static_cast<acc_t>(W) &&
                      py < static_cast<acc_t>(H);
  // For px in (-1, W), truncating px + 1 is floor(px) + 1. Outside points use -1 here,
  // giving x0 = -2: both corner columns invalid.
  const acc_t sx = inside ? px + acc_t(1) : acc_t(-1);
  const acc_t sy = inside ? py + acc_t(1) : acc_t(-1);
  const int64_t x0 = inside ? static_cast<int64_t>(sx) - 1 : int64_t(-2);
  const int64_t y0 = inside ? static_cast<int64_t>(sy) - 1 : int64_t(-2);
  const int64_t x1 = x0 + 1, y1 = y0 + 1;
  c.x0 = x0;
  c.y0 = y0;
  c.lx = inside ? px - static_cast<acc_t>(x0) : acc_t(0);
  c.ly = inside ? py - static_cast<acc_t>(y0) : acc_t(0);
  const acc_t hx = acc_t(1) - c.lx, hy = acc_t(1) - c.ly;
  const bool vx0 = x0 >= 0, vx1 = x1 >= 0 && x1 < W, vy0 = y0 >= 0, vy1 = y1 >= 0 && y1 < H;
  c.offset[0] = (vy0 && vx0) ? y0 * W + x0 : int64_t(-1);
  c.offset[1] = (vy0 && vx1) ? y0 * W + x1 : int64_t(-1);
  c.offset[2] = (vy1 && vx0) ? y1 * W + x0 : int64_t(-1);
  c.offset[3] = (vy1 && vx1) ? y1 * W + x1 : int64_t(-1);
  c.weight[0] = c.offset[0] >= 0 ? hy * hx : acc_t(0);
  c.weight[1] = c.offset[1] >= 0 ? hy * c.lx : acc_t(0);
  c.weight[2] = c.offset[2] >= 0 ? c.ly * hx : acc_t(0);
  c.weight[3] = c.offset[3] >= 0 ? c.ly * c.lx : acc_t(0);
  return inside;
}

// Gradient of the sampled value with respect to the normalised location, given
// dot[k] = <grad_output, value at corner k> (0 for invalid corners). Returns d/dx, d/dy
// of sum_k weight[k] * dot[k], already scaled by W and H (the chain rule of px = x*W-0.5).
template <typename acc_t>
DDETR_HD void bilinear_location_grad(const Corners<acc_t>& c, const acc_t dot[4], int64_t H,
                                     int64_t W, acc_t& grad_x, acc_t& grad_y) {
  const acc_t hx = acc_t(1) - c.lx, hy = acc_t(1) - c.ly;
  // d weight / d px: (-hy, +hy, -ly, +ly); d weight / d py: (-hx, -lx, +hx, +lx)
  const acc_t gx = hy * (dot[1] - dot[0]) + c.ly * (dot[3] - dot[2]);
  const acc_t gy = hx * (dot[2] - dot[0]) + c.lx * (dot[3] - dot[1]);
  grad_x = gx * static_cast<acc_t>(W);
  grad_y = gy * static_cast<acc_t>(H);
}

}  // namespace ddetr
