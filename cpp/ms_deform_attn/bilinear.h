// Bilinear sampling of one point and its gradient, and the discrete (nearest-pixel)
// sample: the one source of this math for every backend (CPU kernels and CUDA kernels
// include it; no torch header here).
//
// Semantics are those of grid_sample(mode="bilinear", padding_mode="zeros",
// align_corners=False) at grid = 2 * loc - 1: the pixel coordinate is loc * size - 0.5
// and corners outside the map contribute zero.
#pragma once
#include <cstdint>

// Always inlined: the CPU kernels' `omp simd` loops vectorise only with these bodies inlined
// (GCC stops inlining them as a file grows), and an out-of-line copy would be a weak symbol
// that the linker could share between instruction-set copies.
#if defined(__CUDACC__)
#define DDETR_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define DDETR_HD inline __attribute__((always_inline))
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

// The cell of a sampling point: its top-left corner (x0, y0) and fractional parts.
// index_t may be int32_t where the caller knows every index fits (vectorises better).
template <typename acc_t, typename index_t = int64_t>
struct Cell {
  index_t x0, y0;
  acc_t lx, ly;
  bool inside;  // some corner lies on the map
  // All four corners on the map: the common case, with no per-corner checks.
  DDETR_HD bool interior(index_t H, index_t W) const {
    return (x0 >= 0) & (y0 >= 0) & (x0 + 1 < W) & (y0 + 1 < H);
  }
};

// A point outside the map, or non-finite (NaN fails every comparison), is not `inside`;
// it is moved to a harmless spot before the float-to-int conversion, which would be
// undefined for out-of-range values, and gets x0 = y0 = -2: no corner on the map.
template <typename acc_t, typename index_t = int64_t>
DDETR_HD Cell<acc_t, index_t> bilinear_cell(acc_t x, acc_t y, index_t H, index_t W) {
  const acc_t px = x * static_cast<acc_t>(W) - acc_t(0.5);
  const acc_t py = y * static_cast<acc_t>(H) - acc_t(0.5);
  // `&`, not `&&`: no short-circuit branches
  const bool inside = (px > acc_t(-1)) & (py > acc_t(-1)) & (px < static_cast<acc_t>(W)) &
                      (py < static_cast<acc_t>(H));
  // For px in (-1, W), truncating px + 1 is floor(px) + 1.
  const acc_t sx = inside ? px + acc_t(1) : acc_t(-1);
  const acc_t sy = inside ? py + acc_t(1) : acc_t(-1);
  Cell<acc_t, index_t> cell;
  cell.x0 = static_cast<index_t>(sx) - 1;
  cell.y0 = static_cast<index_t>(sy) - 1;
  cell.lx = inside ? px - static_cast<acc_t>(cell.x0) : acc_t(0);
  cell.ly = inside ? py - static_cast<acc_t>(cell.y0) : acc_t(0);
  cell.inside = inside;
  return cell;
}

// Bilinear weights of the four corners of a cell, all assumed on the map. (Four outputs
// rather than an array: a local array defeats GCC's vectorisation of `omp simd` loops.)
template <typename acc_t>
DDETR_HD void bilinear_weights(acc_t lx, acc_t ly, acc_t& w0, acc_t& w1, acc_t& w2, acc_t& w3) {
  const acc_t hx = acc_t(1) - lx, hy = acc_t(1) - ly;
  w0 = hy * hx;
  w1 = hy * lx;
  w2 = ly * hx;
  w3 = ly * lx;
}

// Fills `c` for the normalised location (x, y) on an H x W map and returns whether any
// corner lies on the map. Branch-free, so GPU warps do not diverge.
template <typename acc_t>
DDETR_HD bool bilinear_corners(acc_t x, acc_t y, int64_t H, int64_t W, Corners<acc_t>& c) {
  const Cell<acc_t> cell = bilinear_cell(x, y, H, W);
  const int64_t x0 = cell.x0, y0 = cell.y0, x1 = x0 + 1, y1 = y0 + 1;
  c.x0 = x0;
  c.y0 = y0;
  c.lx = cell.lx;
  c.ly = cell.ly;
  acc_t w[4];
  bilinear_weights(cell.lx, cell.ly, w[0], w[1], w[2], w[3]);
  const bool vx0 = x0 >= 0, vx1 = (x1 >= 0) & (x1 < W), vy0 = y0 >= 0, vy1 = (y1 >= 0) & (y1 < H);
  c.offset[0] = (vy0 & vx0) ? y0 * W + x0 : int64_t(-1);
  c.offset[1] = (vy0 & vx1) ? y0 * W + x1 : int64_t(-1);
  c.offset[2] = (vy1 & vx0) ? y1 * W + x0 : int64_t(-1);
  c.offset[3] = (vy1 & vx1) ? y1 * W + x1 : int64_t(-1);
  for (int k = 0; k < 4; ++k) c.weight[k] = c.offset[k] >= 0 ? w[k] : acc_t(0);
  return cell.inside;
}

// Gradient of the sampled value with respect to the normalised location, given the
// fractional parts of the cell and dot[k] = <grad_output, value at corner k> (0 for
// corners off the map). Returns d/dx, d/dy of sum_k weight[k] * dot[k], already scaled by
// W and H (the chain rule of px = x * W - 0.5).
template <typename acc_t>
DDETR_HD void bilinear_location_grad(acc_t lx, acc_t ly, const acc_t dot[4], int64_t H,
                                     int64_t W, acc_t& grad_x, acc_t& grad_y) {
  const acc_t hx = acc_t(1) - lx, hy = acc_t(1) - ly;
  // d weight / d px: (-hy, +hy, -ly, +ly); d weight / d py: (-hx, -lx, +hx, +lx)
  const acc_t gx = hy * (dot[1] - dot[0]) + ly * (dot[3] - dot[2]);
  const acc_t gy = hx * (dot[2] - dot[0]) + lx * (dot[3] - dot[1]);
  grad_x = gx * static_cast<acc_t>(W);
  grad_y = gy * static_cast<acc_t>(H);
}

template <typename acc_t>
DDETR_HD void bilinear_location_grad(const Corners<acc_t>& c, const acc_t dot[4], int64_t H,
                                     int64_t W, acc_t& grad_x, acc_t& grad_y) {
  bilinear_location_grad(c.lx, c.ly, dot, H, W, grad_x, grad_y);
}

// ------------------------------------------------------------------ discrete sampling
// The "discrete" method of RT-DETRv2 / D-FINE: the nearest pixel, index
// clamp(int64(x * W + 0.5), 0, W - 1), the border clamped (no padding, every point samples
// the map). The clamp is taken before the conversion, which truncates like torch's
// .to(int64): the same index for every finite coordinate in int64's range; NaN and values
// below 0 give 0, +inf and values past the map W - 1 (where a float-to-int64 conversion
// of an out-of-range value is undefined).
// a * b rounded on its own, never fused with a following add into an FMA (which rounds
// once and would move points at pixel edges to the neighbouring pixel).
DDETR_HD float mul_unfused(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#elif defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
  return __builtin_assoc_barrier(a * b);
#else
  return a * b;  // clang contracts only within one expression; nvcc's host pass runs no kernel
#endif
}
DDETR_HD double mul_unfused(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#elif defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
  return __builtin_assoc_barrier(a * b);
#else
  return a * b;
#endif
}

template <typename acc_t, typename index_t = int64_t>
DDETR_HD index_t discrete_index(acc_t x, index_t W) {
  const acc_t px = mul_unfused(x, static_cast<acc_t>(W)) + acc_t(0.5);
  const acc_t last = static_cast<acc_t>(W - 1);
  return px >= last ? W - 1 : px > acc_t(0) ? static_cast<index_t>(px) : index_t(0);
}

// The discrete sample as Corners, for code shared with the bilinear path: one corner of
// weight 1 at the pixel, the other three off the map; (x0, y0) is the pixel itself.
template <typename acc_t>
DDETR_HD bool discrete_corners(acc_t x, acc_t y, int64_t H, int64_t W, Corners<acc_t>& c) {
  c.x0 = discrete_index<acc_t>(x, W);
  c.y0 = discrete_index<acc_t>(y, H);
  c.lx = c.ly = acc_t(0);
  c.offset[0] = c.y0 * W + c.x0;
  c.weight[0] = acc_t(1);
  for (int k = 1; k < 4; ++k) {
    c.offset[k] = -1;
    c.weight[k] = acc_t(0);
  }
  return true;
}

// The sample of either method as Corners; returns whether any corner lies on the map.
template <typename acc_t>
DDETR_HD bool sample_corners(bool discrete, acc_t x, acc_t y, int64_t H, int64_t W,
                             Corners<acc_t>& c) {
  return discrete ? discrete_corners<acc_t>(x, y, H, W, c) : bilinear_corners<acc_t>(x, y, H, W, c);
}

}  // namespace ddetr
