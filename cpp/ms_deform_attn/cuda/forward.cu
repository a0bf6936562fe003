// Forward kernel of ms_deform_attn (both forms): output[n, q, m, :] = sum over levels and
// points of attention x sample of value[n, :, m, :] (bilinear, or the nearest pixel). See common.cuh for the thread mapping.
//
// Per (n, q, m) and point, each lane reads its four corners as one V-wide load each
// (16 bytes for float4 / 8 halves / 2 doubles) and accumulates in registers (float32
// for the half types, rounded once at the store). Nothing is written but the output, once,
// so the forward is deterministic.
#include "common.cuh"

namespace ddetr {
namespace cuda {
namespace detail {
namespace {

template <typename T, int V>
__global__ void __launch_bounds__(kBlock, 4) forward_kernel(const ForwardParams<T> p, const int G) {
  using A = acc_t<T>;
  __shared__ PointSlots<A> slots;

  const Shape s = p.shape;
  const int lane = static_cast<int>(threadIdx.x) & (G - 1);
  const int first = static_cast<int>(threadIdx.x) - lane;  // this group's first slot
  const unsigned mask = group_mask(G);
  const int64_t LP = s.LP;
  const int64_t MD = s.M * s.D;
  const int64_t items = s.N * s.Lq * s.M;
  const int64_t span = static_cast<int64_t>(G) * V;  // channels covered by one pass
  const int64_t passes = (s.D + span - 1) / span;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * (kBlock / G);

  for (int64_t item = (static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x) / G;
       item < items; item += stride) {
    const int64_t n = item / (s.Lq * s.M);
    const int64_t m = item % s.M;
    const T* vbase = p.value + (n * s.S * s.M + m) * s.D;  // value[n, 0, m, 0]
    const location_t<T>* loc = p.loc + item * LP * 2;
    const T* attn = p.attn + item * LP;
    T* out = p.output + item * s.D;

    // Several passes only when D > 32 * V (e.g. D = 257); the points are then recomputed
    // per pass rather than keeping an accumulator per pass in registers.
    for (int64_t pass = 0; pass < passes; ++pass) {
      const int64_t d = pass * span + static_cast<int64_t>(lane) * V;
      const bool has_d = d < s.D;  // V divides D, so d < D means all V channels exist
      A acc[V];
#pragma unroll
      for (int i = 0; i < V; ++i) acc[i] = A(0);

      for (int64_t p0 = 0; p0 < LP; p0 += G) {
        A aw[4];
        int64_t off[4];
        if (p0 + lane < LP) {
          PointWork<A> w;
          compute_point<T>(loc, attn, p.spatial_shapes, p.level_start, s, MD, p0 + lane, w,
                           aw, off);
        }
        __syncwarp(mask);  // the group is done reading the previous slots
        if (p0 + lane < LP) slots.put(static_cast<int>(threadIdx.x), aw, off);
        __syncwarp(mask);
        const int count = static_cast<int>(LP - p0 < G ? LP - p0 : G);
        for (int j = 0; j < count; ++j) {
          slots.get(first + j, aw, off);
          if (!has_d) continue;
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (off[k] < 0) continue;  // off the map: contributes zero, is never read
            A v[V];
            load_vec<T, V>(vbase + off[k] + d, v);
#pragma unroll
            for (int i = 0; i < V; ++i) acc[i] += aw[k] * v[i];
          }
        }
      }
      if (has_d) store_vec<T, V>(out + d, acc);
    }
  }
}

template <typename T>
cudaError_t run_forward(const ForwardParams<T>& p, cudaStream_t stream) {
  const Shape& s = p.shape;
  const int64_t items = s.N * s.Lq * s.M;
  if (items == 0 || s.D == 0) return cudaSuccess;
  const int V = pick_vec<T>(s.D, {p.value, p.output});
  const int G = pick_group(s.D, V);
  const unsigned blocks = grid_blocks(items, G);
  return with_vec<T>(V, [&](auto vc) {
    forward_kernel<T, decltype(vc)::value><<<blocks, kBlock, 0, stream>>>(p, G);
    return cudaGetLastError();
  });
}

}  // namespace
}  // namespace detail

cudaError_t forward(const ForwardParams<float>& p, cudaStream_t stream) {
  return detail::run_forward(p, stream);
}
cudaError_t forward(const ForwardParams<double>& p, cudaStream_t stream) {
  return detail::run_forward(p, stream);
}
cudaError_t forward(const ForwardParams<Half>& p, cudaStream_t stream) {
  return detail::run_forward(detail::retag<__half>(p), stream);
}
cudaError_t forward(const ForwardParams<BFloat16>& p, cudaStream_t stream) {
  return detail::run_forward(detail::retag<__nv_bfloat16>(p), stream);
}

}  // namespace cuda
}  // namespace ddetr
