// CUDA backend of ms_deform_attn: checks, layout, device and stream, and the launch of
// the plain-CUDA kernels declared in launch.h. Built by the host compiler, and only when
// torch is a CUDA build; it includes no header that needs more than the CUDA runtime
// (c10/cuda rather than ATen/cuda/CUDAContext.h, which pulls in cuBLAS and cuSPARSE).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <tuple>

#include "../ms_deform_attn.h"
#include "launch.h"

namespace ddetr {
namespace {

// A failed launch (or an earlier asynchronous error it reports) becomes a torch error.
void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "ms_deform_attn: ", what, " failed: ", cudaGetErrorName(err),
              ": ", cudaGetErrorString(err));
}

// Whether work queued on `stream` is being recorded into a CUDA graph: then nothing may
// copy to the host (the checks skip reading spatial_shapes' values).
bool is_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(stream, &status), "querying the stream's capture status");
  return status != cudaStreamCaptureStatusNone;
}

struct CudaContext {
  cudaStream_t stream;
  bool capturing;
};

void check_value_on_cuda(const at::Tensor& value, const char* op) {
  TORCH_CHECK_VALUE(value.is_cuda(), op, ": value must be on a CUDA device (the op runs on the ",
                    "device of its tensors), got ", value.device());
}

// Stream and capture state for a call whose tensors live with `value` (under a guard
// that made value's device current).
CudaContext enter(const at::Tensor& value, const at::Tensor& spatial_shapes,
                  const at::Tensor& level_start_index, const char* op) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(value.device().index()).stream();
  const bool capturing = is_capturing(stream);
  TORCH_CHECK_VALUE(!capturing || (spatial_shapes.is_cuda() && level_start_index.is_cuda()), op,
                    ": spatial_shapes and level_start_index must be on the GPU while a CUDA "
                    "graph is being captured (copying them from the CPU is not allowed then), "
                    "got ",
                    spatial_shapes.device(), " and ", level_start_index.device());
  return {stream, capturing};
}

struct CudaInputs {
  at::Tensor value, shapes, starts, loc, attn;
};

CudaInputs prepare(const at::Tensor& value, const at::Tensor& spatial_shapes,
                   const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                   const at::Tensor& attention_weights) {
  const at::Device dev = value.device();
  return {value.contiguous(), spatial_shapes.to(dev, at::kLong).contiguous(),
          level_start_index.to(dev, at::kLong).contiguous(), sampling_locations.contiguous(),
          attention_weights.contiguous()};
}

// Calls f(K{}) with K the kernels' storage type for torch dtype t.
template <typename F>
void with_kernel_type(at::ScalarType t, const char* op, F&& f) {
  switch (t) {
    case at::kFloat:
      f(float{});
      return;
    case at::kDouble:
      f(double{});
      return;
    case at::kHalf:
      f(cuda::Half{});
      return;
    case at::kBFloat16:
      f(cuda::BFloat16{});
      return;
    default:
      TORCH_CHECK_TYPE(false, op, "'s CUDA kernels take float32, float64, float16 or bfloat16, "
                       "got ", t);
  }
}

template <typename K>
const K* cptr(const at::Tensor& t) {
  return static_cast<const K*>(t.const_data_ptr());
}
template <typename K>
K* mptr(const at::Tensor& t) {
  return static_cast<K*>(t.data_ptr());
}

at::Tensor ms_deform_attn_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                               const at::Tensor& level_start_index,
                               const at::Tensor& sampling_locations,
                               const at::Tensor& attention_weights, int64_t im2col_step) {
  constexpr const char* op = "ms_deform_attn";
  check_value_on_cuda(value, op);
  const c10::cuda::CUDAGuard guard(value.device());
  const CudaContext ctx = enter(value, spatial_shapes, level_start_index, op);
  // im2col_step only sized the 2020 kernel's batches; every batch size works here.
  const Shape s = check_forward_args(value, spatial_shapes, level_start_index,
                                     sampling_locations, attention_weights, im2col_step,
                                     /*check_shape_values=*/!ctx.capturing);
  const CudaInputs in =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  at::Tensor out = at::empty({s.N, s.Lq, s.M * s.D}, in.value.options());
  if (out.numel() == 0) return out;  // empty batch, no queries, heads or channels
  if (s.L * s.P == 0 || in.value.numel() == 0) return out.zero_();

  with_kernel_type(in.value.scalar_type(), op, [&](auto tag) {
    using K = decltype(tag);
    const ForwardParams<K> p{s,
                             cptr<K>(in.value),
                             in.shapes.const_data_ptr<int64_t>(),
                             in.starts.const_data_ptr<int64_t>(),
                             cptr<K>(in.loc),
                             cptr<K>(in.attn),
                             mptr<K>(out)};
    check_cuda(cuda::forward(p, ctx.stream), "launching the forward kernel");
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, int64_t im2col_step) {
  constexpr const char* op = "ms_deform_attn_backward";
  check_value_on_cuda(value, op);
  const c10::cuda::CUDAGuard guard(value.device());
  const CudaContext ctx = enter(value, spatial_shapes, level_start_index, op);
  const Shape s = check_backward_args(grad_output, value, spatial_shapes, level_start_index,
                                      sampling_locations, attention_weights, im2col_step,
                                      /*check_shape_values=*/!ctx.capturing);
  const CudaInputs in =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const at::Tensor grad = grad_output.contiguous();
  at::Tensor grad_loc = at::empty_like(in.loc, at::MemoryFormat::Contiguous);
  at::Tensor grad_attn = at::empty_like(in.attn, at::MemoryFormat::Contiguous);
  if (s.N * s.Lq * s.M == 0 || s.L * s.P == 0 || s.D == 0 || in.value.numel() == 0) {
    return {at::zeros_like(in.value, at::MemoryFormat::Contiguous), grad_loc.zero_(),
            grad_attn.zero_()};
  }

  const at::ScalarType dtype = in.value.scalar_type();
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  at::Tensor grad_value;
  with_kernel_type(dtype, op, [&](auto tag) {
    using K = decltype(tag);
    BackwardParams<K> p{s,
                        cptr<K>(in.value),
                        in.shapes.const_data_ptr<int64_t>(),
                        in.starts.const_data_ptr<int64_t>(),
                        cptr<K>(in.loc),
                        cptr<K>(in.attn),
                        cptr<K>(grad),
                        nullptr,
                        mptr<K>(grad_loc),
                        mptr<K>(grad_attn)};
    cuda::ValueGradTarget target;
    if (!deterministic) {
      // Atomics into float32 for the half types (rounded once below), else in place.
      const bool half = dtype == at::kHalf || dtype == at::kBFloat16;
      at::Tensor accum =
          half ? at::zeros(in.value.sizes(), in.value.options().dtype(at::kFloat))
               : at::zeros_like(in.value, at::MemoryFormat::Contiguous);
      target.accum = accum.data_ptr();
      if (!half) p.grad_value = mptr<K>(accum);
      check_cuda(cuda::backward(p, target, ctx.stream), "launching the backward kernel");
      grad_value = half ? accum.to(dtype) : accum;
      return;
    }
    // Deterministic: sort the points by the cell of their top-left corner, then gather
    // each value row's contributions in that fixed order (design in backward.cu).
    grad_value = at::empty_like(in.value, at::MemoryFormat::Contiguous);
    p.grad_value = mptr<K>(grad_value);
    target.keys_int64 = cuda::deterministic_keys_need_int64(s);
    const at::Tensor keys =
        at::empty({s.N * s.Lq * s.M * s.L * s.P},
                  in.value.options().dtype(target.keys_int64 ? at::kLong : at::kInt));
    target.keys = keys.data_ptr();
    check_cuda(cuda::backward(p, target, ctx.stream), "launching the backward kernel");
    const auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    const at::Tensor& sorted_keys = std::get<0>(sorted);
    const at::Tensor& perm = std::get<1>(sorted);  // int64 point indices
    const int64_t num_keys = cuda::deterministic_num_keys(s);
    const auto long_opts = in.value.options().dtype(at::kLong);
    const at::Tensor seg_begin = at::zeros({num_keys}, long_opts);
    const at::Tensor seg_end = at::zeros({num_keys}, long_opts);
    check_cuda(cuda::deterministic_segments(sorted_keys.const_data_ptr(), target.keys_int64,
                                            keys.numel(), num_keys, mptr<int64_t>(seg_begin),
                                            mptr<int64_t>(seg_end), ctx.stream),
               "launching the deterministic backward's segment kernel");
    check_cuda(cuda::deterministic_grad_value(p, perm.const_data_ptr<int64_t>(),
                                              seg_begin.const_data_ptr<int64_t>(),
                                              seg_end.const_data_ptr<int64_t>(), ctx.stream),
               "launching the deterministic backward's value-gradient kernel");
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(ddetr, CUDA, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace ddetr
