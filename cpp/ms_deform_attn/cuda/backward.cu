// Backward kernels of ms_deform_attn (both forms; a discrete point is one corner of weight
// 1 and gets no location gradient). See common.cuh for the thread mapping (one group of
// G lanes per (n, q, m), V channels per lane, per-point work computed once per group).
//
// Default path (backward_kernel with an accumulation buffer):
//   For each point, each lane loads its V channels of the four corners and of grad_output
//   (the latter once per (n, q, m) when D <= 32 V), forms the four partial dot products
//   <grad_output, value at corner k> over its channels, and adds attention x weight x
//   grad_output to the value gradient with atomics: float atomics for float32 / half /
//   bfloat16 (the half types into a float32 buffer that the glue rounds afterwards, so no
//   precision is lost in 16-bit sums), one float4 / float2 vector atomic per corner on
//   sm_90, double atomics for float64.
//   The four partial dots are summed over the group with a halving butterfly: the first
//   step exchanges two of the four values, the second one, later steps one (G = 8 needs
//   4 shuffles per point instead of 12), leaving dot k on lane k' = (k & 2) >> 1 | (k & 1) << 1;
//   those lanes put them in shared memory, and after the G points of a round the lane that
//   computed point j reads its four dots and writes grad_attn = sum_k weight_k * dot_k and
//   grad_loc = attention * bilinear_location_grad(dot) (bilinear.h), one writer per
//   point, coalesced. grad_loc and grad_attn are thus deterministic on both paths.
//
// Deterministic path (torch.use_deterministic_algorithms(True)), sort by destination:
//   Float atomics are the only source of run-to-run variation (their order varies). So
//   the value gradient is instead gathered: each value row (n, s, m) is written by exactly
//   one thread group, summing its contributions in a fixed order.
//   1. backward_kernel, without atomics, writes for every point a key naming the cell
//      (y0, x0) of its top-left corner, per (n, m) and level (launch.h has the formula).
//      A pixel (y, x) is a corner of exactly the points in cells (y-1, x-1), (y-1, x),
//      (y, x-1) and (y, x) (as corner 3, 2, 1, 0).
//   2. The glue sorts the keys with torch.sort(stable=True): the points of a cell become
//      contiguous, in increasing point index, identically on every run (a radix sort).
//   3. segments_kernel records each cell's [begin, end) in the sorted order.
//   4. gather_kernel: one group per value row visits the four cells in the order above and
//      their points in sorted order; lane j recomputes the bilinear weight of point i0 + j
//      for this pixel (the same bilinear_corners), the group shares (weight x attention,
//      grad_output row) through shared memory, and each lane accumulates its V channels
//      of grad_output in registers, then stores the row once. Rows no point touches get 0.
//   Cost against the default: the same main kernel minus the atomics, a sort of N*Lq*M*L*P
//   int32 keys with int64 indices (4.6 M at the COCO encoder shape, a quarter of the
//   18 M corner contributions since keys are per point, not per corner), and the gather,
//   which reads grad_output rows once per contribution (as the atomics did) but writes
//   the value gradient once with plain stores: expected about 1.3 to 1.8 times the default.
#include <algorithm>

#include "common.cuh"

namespace ddetr {
namespace cuda {
namespace detail {
namespace {

// The four dots of the point handled in round j, summed over the G lanes of the group and
// stored to dots[4 * (first + j) .. + 4). Every lane of the group must call it.
template <typename A>
__device__ __forceinline__ void reduce_dots(A (&dot)[4], int G, int lane, unsigned mask,
                                            A* dots) {
  if (G >= 4) {
    // Step 1 (partner lane ^ 1): lanes with bit 0 clear keep dots 0, 1, the others 2, 3;
    // each sends the pair it gives up.
    const bool b0 = lane & 1;
    const A send0 = b0 ? dot[0] : dot[2], send1 = b0 ? dot[1] : dot[3];
    const A got0 = __shfl_xor_sync(mask, send0, 1, G);
    const A got1 = __shfl_xor_sync(mask, send1, 1, G);
    const A e0 = (b0 ? dot[2] : dot[0]) + got0;  // dot 2*b0
    const A e1 = (b0 ? dot[3] : dot[1]) + got1;  // dot 2*b0 + 1
    // Step 2 (lane ^ 2): bit 1 picks which of the two to keep.
    const bool b1 = lane & 2;
    const A got = __shfl_xor_sync(mask, b1 ? e0 : e1, 2, G);
    A r = (b1 ? e1 : e0) + got;  // dot 2*b0 + b1, summed over lanes with equal bits >= 2
    for (int o = 4; o < G; o <<= 1) r += __shfl_xor_sync(mask, r, o, G);
    if (lane < 4) dots[2 * (lane & 1) + (lane >> 1)] = r;
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      for (int o = 1; o < G; o <<= 1) dot[k] += __shfl_xor_sync(mask, dot[k], o, G);
    }
    if (lane == 0) {
#pragma unroll
      for (int k = 0; k < 4; ++k) dots[k] = dot[k];
    }
  }
}

template <typename T, int V, bool kOnePass, bool kAtomics>
__global__ void __launch_bounds__(kBlock, 3)
    backward_kernel(const BackwardParams<T> p, acc_t<T>* __restrict__ accum, void* keys,
                    const bool keys_int64, const int64_t cells_bound, const int64_t num_keys,
                    const int G) {
  using A = acc_t<T>;
  __shared__ PointSlots<A> slots;
  __shared__ __align__(16) A s_dots[4 * kBlock];

  const Shape s = p.shape;
  const int lane = static_cast<int>(threadIdx.x) & (G - 1);
  const int first = static_cast<int>(threadIdx.x) - lane;
  const unsigned mask = group_mask(G);
  const int64_t LP = s.LP;
  const int64_t MD = s.M * s.D;
  const int64_t items = s.N * s.Lq * s.M;
  const int64_t span = static_cast<int64_t>(G) * V;
  const int64_t passes = kOnePass ? 1 : (s.D + span - 1) / span;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * (kBlock / G);

  for (int64_t item = (static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x) / G;
       item < items; item += stride) {
    const int64_t n = item / (s.Lq * s.M);
    const int64_t m = item % s.M;
    const int64_t vrow = (n * s.S * s.M + m) * s.D;  // value[n, 0, m, 0]
    const T* vbase = p.value + vrow;
    const location_t<T>* loc = p.loc + item * LP * 2;
    const T* attn = p.attn + item * LP;
    const T* gout = p.grad_output + item * s.D;

    // grad_output of this (n, q, m): in registers for the whole item when one pass covers D.
    A g_one[V];
    const int64_t d_one = static_cast<int64_t>(lane) * V;
    if (kOnePass && d_one < s.D) load_vec<T, V>(gout + d_one, g_one);

    for (int64_t p0 = 0; p0 < LP; p0 += G) {
      const int64_t pt = p0 + lane;
      const bool owner = pt < LP;
      PointWork<A> w;
      A aw[4];
      int64_t off[4];
      if (owner) {
        compute_point<T>(loc, attn, p.spatial_shapes, p.level_start, s, MD, pt, w, aw, off);
        if (!kAtomics) {  // deterministic path: the point's cell key
          int64_t key = num_keys;
          if (w.valid) {
            key = (n * s.M + m) * cells_bound + cell_start(p.spatial_shapes, w.level) +
                  (w.c.y0 + 1) * (w.W + 1) + (w.c.x0 + 1);
          }
          if (keys_int64) {
            static_cast<int64_t*>(keys)[item * LP + pt] = key;
          } else {
            static_cast<int32_t*>(keys)[item * LP + pt] = static_cast<int32_t>(key);
          }
        }
      }
      __syncwarp(mask);  // the group is done with the previous round's slots and dots
      if (owner) slots.put(static_cast<int>(threadIdx.x), aw, off);
      __syncwarp(mask);

      const int count = static_cast<int>(LP - p0 < G ? LP - p0 : G);
      for (int j = 0; j < count; ++j) {
        slots.get(first + j, aw, off);
        A dot[4] = {A(0), A(0), A(0), A(0)};
        for (int64_t pass = 0; pass < passes; ++pass) {
          const int64_t d = pass * span + static_cast<int64_t>(lane) * V;
          if (d >= s.D) continue;
          A g[V];
          if (kOnePass) {
#pragma unroll
            for (int i = 0; i < V; ++i) g[i] = g_one[i];
          } else {
            load_vec<T, V>(gout + d, g);
          }
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (off[k] < 0) continue;
            A v[V];
            load_vec<T, V>(vbase + off[k] + d, v);
#pragma unroll
            for (int i = 0; i < V; ++i) dot[k] += g[i] * v[i];
            if (kAtomics) {
              A gv[V];
#pragma unroll
              for (int i = 0; i < V; ++i) gv[i] = aw[k] * g[i];
              atomic_add_vec<V>(accum + vrow + off[k] + d, gv);
            }
          }
        }
        reduce_dots(dot, G, lane, mask, s_dots + 4 * (first + j));
      }
      __syncwarp(mask);  // the dots of this round are in shared memory

      if (owner) {
        A gattn = A(0), gx = A(0), gy = A(0);
        if (w.valid) {
          A tot[4];
#pragma unroll
          for (int k = 0; k < 4; ++k) tot[k] = s_dots[4 * threadIdx.x + k];
          gattn = w.c.weight[0] * tot[0] + w.c.weight[1] * tot[1] + w.c.weight[2] * tot[2] +
                  w.c.weight[3] * tot[3];
          bilinear_location_grad<A>(w.c, tot, w.H, w.W, gx, gy);
          gx *= w.a;
          gy *= w.a;
        }
        p.grad_attn[item * LP + pt] = from_acc<T>(gattn);
        if (!s.discrete) {  // the nearest pixel has no location gradient (grad_loc unused)
          p.grad_loc[2 * (item * LP + pt)] = from_acc<location_t<T>>(gx);
          p.grad_loc[2 * (item * LP + pt) + 1] = from_acc<location_t<T>>(gy);
        }
      }
    }
  }
}

// seg_begin[key] / seg_end[key]: where each key's run starts and ends in the sorted keys.
template <typename K>
__global__ void __launch_bounds__(kBlock)
    segments_kernel(const K* __restrict__ keys, const int64_t count, const int64_t num_keys,
                    int64_t* __restrict__ seg_begin, int64_t* __restrict__ seg_end) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kBlock;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x; i < count;
       i += stride) {
    const K k = keys[i];
    if (k < 0 || static_cast<int64_t>(k) >= num_keys) continue;  // off the map
    if (i == 0 || keys[i - 1] != k) seg_begin[k] = i;
    if (i == count - 1 || keys[i + 1] != k) seg_end[k] = i + 1;
  }
}

template <typename T, int V>
__global__ void __launch_bounds__(kBlock, 4)
    gather_kernel(const BackwardParams<T> p, const int64_t* __restrict__ perm,
                  const int64_t* __restrict__ seg_begin, const int64_t* __restrict__ seg_end,
                  const int64_t cells_bound, const int G) {
  using A = acc_t<T>;
  __shared__ A s_aw[kBlock];
  __shared__ long long s_goff[kBlock];

  const Shape s = p.shape;
  const int lane = static_cast<int>(threadIdx.x) & (G - 1);
  const int first = static_cast<int>(threadIdx.x) - lane;
  const unsigned mask = group_mask(G);
  const int64_t LP = s.LP;
  const int64_t rows = s.N * s.S * s.M;
  const int64_t span = static_cast<int64_t>(G) * V;
  const int64_t passes = (s.D + span - 1) / span;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * (kBlock / G);

  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x) / G; row < rows;
       row += stride) {
    const int64_t n = row / (s.S * s.M);
    const int64_t m = row % s.M;
    const int64_t si = (row / s.M) % s.S;
    int64_t level = 0;
    for (int64_t l = 1; l < s.L; ++l) {
      if (__ldg(p.level_start + l) <= si) level = l;
    }
    const int64_t H = __ldg(p.spatial_shapes + 2 * level), W = __ldg(p.spatial_shapes + 2 * level + 1);
    const int64_t local = si - __ldg(p.level_start + level);  // y * W + x
    const int64_t y = local / W, x = local - (local / W) * W;
    const int64_t key0 = (n * s.M + m) * cells_bound + cell_start(p.spatial_shapes, level);
    // Cells (y-1, x-1), (y-1, x), (y, x-1), (y, x): cell (y0, x0) is (y0+1)*(W+1) + (x0+1).
    int64_t begin[4], len[4];
    int64_t total = 0;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t key = key0 + (y + (q >> 1)) * (W + 1) + (x + (q & 1));
      begin[q] = seg_begin[key];
      len[q] = seg_end[key] - begin[q];
      total += len[q];
    }

    for (int64_t pass = 0; pass < passes; ++pass) {
      const int64_t d = pass * span + static_cast<int64_t>(lane) * V;
      const bool has_d = d < s.D;
      A acc[V];
#pragma unroll
      for (int i = 0; i < V; ++i) acc[i] = A(0);

      for (int64_t i0 = 0; i0 < total; i0 += G) {
        // Lane j prepares contribution i0 + j: which point, its weight at this pixel.
        A aw = A(0);
        long long goff = 0;
        int64_t r = i0 + lane;
        if (r < total) {
          int64_t idx = -1;
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            if (idx < 0) {
              if (r < len[q]) {
                idx = begin[q] + r;
              } else {
                r -= len[q];
              }
            }
          }
          const int64_t pt = __ldg(perm + idx);  // index into (N, Lq, M, LP)
          Corners<A> c;
          const A px = ldg_acc(p.loc + 2 * pt), py = ldg_acc(p.loc + 2 * pt + 1);
          if (sample_corners<A>(s.discrete, px, py, H, W, c)) {
            // The corner that is this pixel. Were it absent (a location exactly on a cell
            // edge rounded differently), its bilinear weight is 0 by continuity anyway.
            A wk = A(0);
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              if (c.offset[k] == local) wk = c.weight[k];
            }
            aw = ldg_acc(p.attn + pt) * wk;
          }
          goff = static_cast<long long>(div_nonneg(pt, LP) * s.D);  // grad_output row
        }
        __syncwarp(mask);
        s_aw[threadIdx.x] = aw;
        s_goff[threadIdx.x] = goff;
        __syncwarp(mask);
        const int count = static_cast<int>(total - i0 < G ? total - i0 : G);
        if (!has_d) continue;
        for (int j = 0; j < count; ++j) {
          const A a = s_aw[first + j];
          A g[V];
          load_vec<T, V>(p.grad_output + s_goff[first + j] + d, g);
#pragma unroll
          for (int i = 0; i < V; ++i) acc[i] += a * g[i];
        }
      }
      if (has_d) store_vec<T, V>(p.grad_value + row * s.D + d, acc);
    }
  }
}

int64_t cells_bound(const Shape& s) { return 2 * s.S + 2 * s.L; }

template <typename T>
cudaError_t run_backward(const BackwardParams<T>& p, const ValueGradTarget& target,
                         cudaStream_t stream) {
  using A = acc_t<T>;
  const Shape& s = p.shape;
  const int64_t items = s.N * s.Lq * s.M;
  if (items == 0 || s.LP == 0) return cudaSuccess;
  if ((target.accum == nullptr) == (target.keys == nullptr)) return cudaErrorInvalidValue;
  A* accum = static_cast<A*>(target.accum);
  // D == 0: no channel, every dot is 0; the kernel still writes grad_loc and grad_attn.
  const int V = s.D == 0 ? 1 : pick_vec<T>(s.D, {p.value, p.grad_output}, accum, sizeof(A));
  const int G = pick_group(s.D, V);
  const bool one_pass = s.D <= static_cast<int64_t>(G) * V;
  const unsigned blocks = grid_blocks(items, G);
  const int64_t bound = cells_bound(s);
  const int64_t num_keys = deterministic_num_keys(s);
  return with_vec<T>(V, [&](auto vc) {
    constexpr int kV = decltype(vc)::value;
    if (accum) {
      if (one_pass) {
        backward_kernel<T, kV, true, true><<<blocks, kBlock, 0, stream>>>(
            p, accum, nullptr, false, bound, num_keys, G);
      } else {
        backward_kernel<T, kV, false, true><<<blocks, kBlock, 0, stream>>>(
            p, accum, nullptr, false, bound, num_keys, G);
      }
    } else {
      if (one_pass) {
        backward_kernel<T, kV, true, false><<<blocks, kBlock, 0, stream>>>(
            p, nullptr, target.keys, target.keys_int64, bound, num_keys, G);
      } else {
        backward_kernel<T, kV, false, false><<<blocks, kBlock, 0, stream>>>(
            p, nullptr, target.keys, target.keys_int64, bound, num_keys, G);
      }
    }
    return cudaGetLastError();
  });
}

template <typename T>
cudaError_t run_gather(const BackwardParams<T>& p, const int64_t* perm, const int64_t* seg_begin,
                       const int64_t* seg_end, cudaStream_t stream) {
  const Shape& s = p.shape;
  const int64_t rows = s.N * s.S * s.M;
  if (rows == 0 || s.D == 0) return cudaSuccess;
  const int V = pick_vec<T>(s.D, {p.grad_output, p.grad_value});
  const int G = pick_group(s.D, V);
  const unsigned blocks = grid_blocks(rows, G);
  const int64_t bound = cells_bound(s);
  return with_vec<T>(V, [&](auto vc) {
    gather_kernel<T, decltype(vc)::value>
        <<<blocks, kBlock, 0, stream>>>(p, perm, seg_begin, seg_end, bound, G);
    return cudaGetLastError();
  });
}

}  // namespace
}  // namespace detail

int64_t deterministic_num_keys(const Shape& s) { return s.N * s.M * detail::cells_bound(s); }

bool deterministic_keys_need_int64(const Shape& s) {
  return deterministic_num_keys(s) >= INT32_MAX;  // the sentinel num_keys must fit too
}

cudaError_t backward(const BackwardParams<float>& p, const ValueGradTarget& t, cudaStream_t st) {
  return detail::run_backward(p, t, st);
}
cudaError_t backward(const BackwardParams<double>& p, const ValueGradTarget& t, cudaStream_t st) {
  return detail::run_backward(p, t, st);
}
cudaError_t backward(const BackwardParams<Half>& p, const ValueGradTarget& t, cudaStream_t st) {
  return detail::run_backward(detail::retag<__half>(p), t, st);
}
cudaError_t backward(const BackwardParams<BFloat16>& p, const ValueGradTarget& t,
                     cudaStream_t st) {
  return detail::run_backward(detail::retag<__nv_bfloat16>(p), t, st);
}

cudaError_t deterministic_segments(const void* sorted_keys, bool keys_int64, int64_t count,
                                   int64_t num_keys, int64_t* seg_begin, int64_t* seg_end,
                                   cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const unsigned blocks = detail::grid_blocks(count, 1);
  if (keys_int64) {
    detail::segments_kernel<int64_t><<<blocks, detail::kBlock, 0, stream>>>(
        static_cast<const int64_t*>(sorted_keys), count, num_keys, seg_begin, seg_end);
  } else {
    detail::segments_kernel<int32_t><<<blocks, detail::kBlock, 0, stream>>>(
        static_cast<const int32_t*>(sorted_keys), count, num_keys, seg_begin, seg_end);
  }
  return cudaGetLastError();
}

cudaError_t deterministic_grad_value(const BackwardParams<float>& p, const int64_t* perm,
                                     const int64_t* b, const int64_t* e, cudaStream_t st) {
  return detail::run_gather(p, perm, b, e, st);
}
cudaError_t deterministic_grad_value(const BackwardParams<double>& p, const int64_t* perm,
                                     const int64_t* b, const int64_t* e, cudaStream_t st) {
  return detail::run_gather(p, perm, b, e, st);
}
cudaError_t deterministic_grad_value(const BackwardParams<Half>& p, const int64_t* perm,
                                     const int64_t* b, const int64_t* e, cudaStream_t st) {
  return detail::run_gather(detail::retag<__half>(p), perm, b, e, st);
}
cudaError_t deterministic_grad_value(const BackwardParams<BFloat16>& p, const int64_t* perm,
                                     const int64_t* b, const int64_t* e, cudaStream_t st) {
  return detail::run_gather(detail::retag<__nv_bfloat16>(p), perm, b, e, st);
}

}  // namespace cuda
}  // namespace ddetr
