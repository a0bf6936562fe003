// Host-side entry points of the CUDA kernels (forward.cu, backward.cu). Plain C++ with the
// CUDA runtime header only, so that the torch glue (ms_deform_attn_cuda.cpp, built by the
// host compiler) and the kernels (built by nvcc without any torch header) share it.
//
// Every function launches on `stream`, never synchronises, and returns the launch status
// (cudaGetLastError after the launch); the glue turns a failure into a torch error.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "../params.h"

namespace ddetr {
namespace cuda {

// 16-bit storage tags: the glue hands at::Half / at::BFloat16 data over as these and the
// kernels reinterpret them as __half / __nv_bfloat16 (same size and bit layout).
struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};
static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2, "16-bit storage tags");

}  // namespace cuda

// The 16-bit kernels take float32 sampling locations (params.h).
template <>
struct LocationType<cuda::Half> {
  using type = float;
};
template <>
struct LocationType<cuda::BFloat16> {
  using type = float;
};

namespace cuda {

// ------------------------------------------------------------------------------ forward
// Writes every element of p.output. Half types accumulate in float32, round once.
cudaError_t forward(const ForwardParams<float>& p, cudaStream_t stream);
cudaError_t forward(const ForwardParams<double>& p, cudaStream_t stream);
cudaError_t forward(const ForwardParams<Half>& p, cudaStream_t stream);
cudaError_t forward(const ForwardParams<BFloat16>& p, cudaStream_t stream);

// ----------------------------------------------------------------------------- backward
// What the backward does with the value gradient. Exactly one of the two is set.
struct ValueGradTarget {
  // Default (fast, not bitwise repeatable): grad_value is accumulated with atomics into
  // this zero-initialised (N, S, M, D) buffer: float for float / half / bfloat16 inputs
  // (the glue rounds it to the input dtype afterwards), double for double. For float and
  // double it is p.grad_value itself. p.grad_value is not otherwise touched.
  void* accum = nullptr;
  // Deterministic: no value gradient is accumulated; instead one int32 (keys_int64 false)
  // or int64 sort key per sampling point, (N, Lq, M, L, P) like attention_weights, is
  // written (see deterministic_num_keys), for the glue to sort stably and hand to
  // deterministic_segments and deterministic_grad_value.
  void* keys = nullptr;
  bool keys_int64 = false;
};

// Writes every element of p.grad_loc and p.grad_attn, and the value gradient as `target`
// says. grad_output, value, loc and attn must be contiguous.
cudaError_t backward(const BackwardParams<float>& p, const ValueGradTarget& target,
                     cudaStream_t stream);
cudaError_t backward(const BackwardParams<double>& p, const ValueGradTarget& target,
                     cudaStream_t stream);
cudaError_t backward(const BackwardParams<Half>& p, const ValueGradTarget& target,
                     cudaStream_t stream);
cudaError_t backward(const BackwardParams<BFloat16>& p, const ValueGradTarget& target,
                     cudaStream_t stream);

// ------------------------------------------------- deterministic value gradient, in steps
// 1. backward() with target.keys: key of a point = bucket of its top-left corner cell,
//    (n * M + m) * cells_bound + cell_start[level] + (y0 + 1) * (W + 1) + (x0 + 1), where
//    cells_bound = 2 * S + 2 * L >= sum over levels of (H + 1) * (W + 1); a point entirely
//    outside its map gets the key num_keys (sorted last, ignored).
// 2. The glue sorts the keys stably (torch.sort(stable=True)): points of one cell end up
//    contiguous and in increasing point order, the same order on every run.
// 3. deterministic_segments: seg_begin[key], seg_end[key] = the range of that cell in the
//    sorted order (both zero-initialised by the caller, so empty cells stay empty).
// 4. deterministic_grad_value: one thread group per value row (n, s, m) gathers, in a fixed
//    order, the contributions of the points of the four cells whose corners include that
//    pixel, and writes the row once: no atomics, and every row written (no zeroing).
int64_t deterministic_num_keys(const Shape& s);
// Whether the keys (and the sentinel num_keys) need int64 rather than int32.
bool deterministic_keys_need_int64(const Shape& s);

cudaError_t deterministic_segments(const void* sorted_keys, bool keys_int64, int64_t count,
                                   int64_t num_keys, int64_t* seg_begin, int64_t* seg_end,
                                   cudaStream_t stream);

// perm: for each position of the sorted keys, the point index it came from (int64, as
// torch.sort returns). Writes every element of p.grad_value (in the input dtype).
cudaError_t deterministic_grad_value(const BackwardParams<float>& p, const int64_t* perm,
                                     const int64_t* seg_begin, const int64_t* seg_end,
                                     cudaStream_t stream);
cudaError_t deterministic_grad_value(const BackwardParams<double>& p, const int64_t* perm,
                                     const int64_t* seg_begin, const int64_t* seg_end,
                                     cudaStream_t stream);
cudaError_t deterministic_grad_value(const BackwardParams<Half>& p, const int64_t* perm,
                                     const int64_t* seg_begin, const int64_t* seg_end,
                                     cudaStream_t stream);
cudaError_t deterministic_grad_value(const BackwardParams<BFloat16>& p, const int64_t* perm,
                                     const int64_t* seg_begin, const int64_t* seg_end,
                                     cudaStream_t stream);

}  // namespace cuda
}  // namespace ddetr
