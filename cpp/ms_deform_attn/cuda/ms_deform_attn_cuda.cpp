// CUDA backend of ms_deform_attn (stable ABI): checks, layout, device and stream, and the
// launch of the plain-CUDA kernels declared in launch.h. Built by the host compiler, and only
// when torch is a CUDA build; besides torch's stable headers it needs the CUDA runtime header.
#include <cuda_runtime_api.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>  // aoti_torch_get_current_cuda_stream
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../check.h"
#include "../glue.h"
#include "../ms_deform_attn.h"
#include "../stable_compat.h"
#include "launch.h"

namespace ddetr {
namespace {

namespace ts = torch::stable;

// A failed launch (or an earlier asynchronous error it reports) becomes a torch error.
void check_cuda(cudaError_t err, const char* what) {
  DDETR_CHECK(err == cudaSuccess, "ms_deform_attn: ", what, " failed: ", cudaGetErrorName(err),
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

void check_value_on_cuda(const Tensor& value, const char* op) {
  DDETR_CHECK(value.is_cuda(), op, ": value must be on a CUDA device (the op runs on the ",
              "device of its tensors), got ", device_name(value));
}

// Stream and capture state for a call whose tensors live with `value` (under a guard that
// made value's device current).
CudaContext enter(const Tensor& value, const Tensor& spatial_shapes,
                  const Tensor& level_start_index, const char* op) {
  void* stream_ptr = nullptr;
  TORCH_ERROR_CODE_CHECK(
      aoti_torch_get_current_cuda_stream(value.get_device_index(), &stream_ptr));
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const bool capturing = is_capturing(stream);
  DDETR_CHECK(!capturing || (spatial_shapes.is_cuda() && level_start_index.is_cuda()), op,
              ": spatial_shapes and level_start_index must be on the GPU while a CUDA graph is "
              "being captured (copying them from the CPU is not allowed then), got ",
              device_name(spatial_shapes), " and ", device_name(level_start_index));
  return {stream, capturing};
}

struct CudaInputs {
  Tensor value, shapes, starts, loc, attn;
};

CudaInputs prepare(const Tensor& value, const Tensor& spatial_shapes,
                   const Tensor& level_start_index, const Tensor& sampling_locations,
                   const Tensor& attention_weights) {
  const auto on_device_int64 = [&](const Tensor& t) {
    return ts::contiguous(ts::to(t, std::optional<ScalarType>(ScalarType::Long), std::nullopt,
                                 value.device()));
  };
  const std::optional<ScalarType> loc_dtype = location_dtype(value.scalar_type());
  return {ts::contiguous(value), on_device_int64(spatial_shapes),
          on_device_int64(level_start_index),
          ts::contiguous(ts::to(sampling_locations, loc_dtype)),
          ts::contiguous(ts::to(attention_weights, std::optional<ScalarType>(value.scalar_type())))};
}

// The forward of both forms, under the device guard, its arguments checked (s).
Tensor forward(const Shape& s, const CudaContext& ctx, const char* op, const Tensor& value,
               const Tensor& spatial_shapes, const Tensor& level_start_index,
               const Tensor& sampling_locations, const Tensor& attention_weights) {
  const CudaInputs in =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const ScalarType dtype = in.value.scalar_type();
  Tensor out = empty_on(value.device(), {s.N, s.Lq, s.M * s.D}, dtype);
  if (out.numel() == 0) return out;  // empty batch, no queries, heads or channels
  if (s.LP == 0 || in.value.numel() == 0) return ts::zero_(out);

  with_kernel_type<cuda::Half, cuda::BFloat16>(dtype, op, [&](auto tag) {
    using K = decltype(tag);
    const ForwardParams<K> p{s,
                             cptr<K>(in.value),
                             cptr<int64_t>(in.shapes),
                             cptr<int64_t>(in.starts),
                             cptr<location_t<K>>(in.loc),
                             cptr<K>(in.attn),
                             mptr<K>(out)};
    check_cuda(cuda::forward(p, ctx.stream), "launching the forward kernel");
  });
  return out;
}

// The backward of both forms: gradients shaped like the inputs; for the discrete method the
// location gradient is an empty tensor (there is none).
std::tuple<Tensor, Tensor, Tensor> backward(const Shape& s, const CudaContext& ctx, const char* op,
                                            const Tensor& grad_output, const Tensor& value,
                                            const Tensor& spatial_shapes,
                                            const Tensor& level_start_index,
                                            const Tensor& sampling_locations,
                                            const Tensor& attention_weights, bool deterministic) {
  const CudaInputs in =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Tensor grad = ts::contiguous(grad_output);
  const ScalarType dtype = in.value.scalar_type();
  // The location and weight gradients in the dtypes those came in.
  const auto as_loc_dtype = [&](const Tensor& t) {
    return ts::to(t, std::optional<ScalarType>(sampling_locations.scalar_type()));
  };
  const auto as_attn_dtype = [&](const Tensor& t) {
    return ts::to(t, std::optional<ScalarType>(attention_weights.scalar_type()));
  };
  Tensor grad_loc = s.discrete ? empty_on(value.device(), {0}, location_dtype(dtype))
                               : empty_on(value.device(), sampling_locations.sizes(), location_dtype(dtype));
  Tensor grad_attn = empty_on(value.device(), attention_weights.sizes(), dtype);
  if (s.N * s.Lq * s.M == 0 || s.LP == 0 || s.D == 0 || in.value.numel() == 0) {
    return {zeros_on(value.device(), {s.N, s.S, s.M, s.D}, dtype), as_loc_dtype(ts::zero_(grad_loc)),
            as_attn_dtype(ts::zero_(grad_attn))};
  }

  Tensor grad_value;
  with_kernel_type<cuda::Half, cuda::BFloat16>(dtype, op, [&](auto tag) {
    using K = decltype(tag);
    BackwardParams<K> p{s,
                        cptr<K>(in.value),
                        cptr<int64_t>(in.shapes),
                        cptr<int64_t>(in.starts),
                        cptr<location_t<K>>(in.loc),
                        cptr<K>(in.attn),
                        cptr<K>(grad),
                        nullptr,
                        s.discrete ? nullptr : mptr<location_t<K>>(grad_loc),
                        mptr<K>(grad_attn)};
    cuda::ValueGradTarget target;
    if (!deterministic) {
      // Atomics into float32 for the half types (rounded once below), else in place.
      const bool half = dtype == ScalarType::Half || dtype == ScalarType::BFloat16;
      const Tensor accum =
          zeros_on(value.device(), {s.N, s.S, s.M, s.D}, half ? ScalarType::Float : dtype);
      target.accum = accum.mutable_data_ptr();
      if (!half) p.grad_value = mptr<K>(accum);
      check_cuda(cuda::backward(p, target, ctx.stream), "launching the backward kernel");
      grad_value = half ? ts::to(accum, std::optional<ScalarType>(dtype)) : accum;
      return;
    }
    // Deterministic: sort the points by the cell of their top-left corner, then gather
    // each value row's contributions in that fixed order (design in backward.cu).
    grad_value = empty_on(value.device(), {s.N, s.S, s.M, s.D}, dtype);
    p.grad_value = mptr<K>(grad_value);
    target.keys_int64 = cuda::deterministic_keys_need_int64(s);
    const Tensor keys = empty_on(value.device(), {s.N * s.Lq * s.M * s.LP},
                                 target.keys_int64 ? ScalarType::Long : ScalarType::Int);
    target.keys = keys.mutable_data_ptr();
    check_cuda(cuda::backward(p, target, ctx.stream), "launching the backward kernel");
    const auto [sorted_keys, perm] = stable_sort(keys);  // perm: int64 point indices
    const int64_t num_keys = cuda::deterministic_num_keys(s);
    const Tensor seg_begin = zeros_on(value.device(), {num_keys}, ScalarType::Long);
    const Tensor seg_end = zeros_on(value.device(), {num_keys}, ScalarType::Long);
    check_cuda(cuda::deterministic_segments(sorted_keys.const_data_ptr(), target.keys_int64,
                                            keys.numel(), num_keys, mptr<int64_t>(seg_begin),
                                            mptr<int64_t>(seg_end), ctx.stream),
               "launching the deterministic backward's segment kernel");
    check_cuda(cuda::deterministic_grad_value(p, cptr<int64_t>(perm), cptr<int64_t>(seg_begin),
                                              cptr<int64_t>(seg_end), ctx.stream),
               "launching the deterministic backward's value-gradient kernel");
  });
  return {grad_value, as_loc_dtype(grad_loc), as_attn_dtype(grad_attn)};
}

Tensor ms_deform_attn_cuda(const Tensor& value, const Tensor& spatial_shapes,
                           const Tensor& level_start_index, const Tensor& sampling_locations,
                           const Tensor& attention_weights, int64_t im2col_step) {
  constexpr const char* op = "ms_deform_attn";
  check_value_on_cuda(value, op);
  const ts::accelerator::DeviceGuard guard(value.get_device_index());
  const CudaContext ctx = enter(value, spatial_shapes, level_start_index, op);
  // im2col_step only sized the 2020 kernel's batches; every batch size works here.
  const Shape s = check_forward_args(value, spatial_shapes, level_start_index,
                                     sampling_locations, attention_weights, im2col_step,
                                     /*check_shape_values=*/!ctx.capturing);
  return forward(s, ctx, op, value, spatial_shapes, level_start_index, sampling_locations,
                 attention_weights);
}

std::tuple<Tensor, Tensor, Tensor> ms_deform_attn_backward_cuda(
    const Tensor& grad_output, const Tensor& value, const Tensor& spatial_shapes,
    const Tensor& level_start_index, const Tensor& sampling_locations,
    const Tensor& attention_weights, int64_t im2col_step, bool deterministic) {
  constexpr const char* op = "ms_deform_attn_backward";
  check_value_on_cuda(value, op);
  const ts::accelerator::DeviceGuard guard(value.get_device_index());
  const CudaContext ctx = enter(value, spatial_shapes, level_start_index, op);
  const Shape s = check_backward_args(grad_output, value, spatial_shapes, level_start_index,
                                      sampling_locations, attention_weights, im2col_step,
                                      /*check_shape_values=*/!ctx.capturing);
  return backward(s, ctx, op, grad_output, value, spatial_shapes, level_start_index,
                  sampling_locations, attention_weights, deterministic);
}

Tensor ms_deform_attn_v2_cuda(const Tensor& value, const Tensor& spatial_shapes,
                              const Tensor& level_start_index, const Tensor& sampling_locations,
                              const Tensor& attention_weights,
                              std::vector<int64_t> num_points_list, std::string method) {
  constexpr const char* op = "ms_deform_attn_v2";
  check_value_on_cuda(value, op);
  const ts::accelerator::DeviceGuard guard(value.get_device_index());
  const CudaContext ctx = enter(value, spatial_shapes, level_start_index, op);
  const Shape s = check_v2_forward_args(value, spatial_shapes, level_start_index,
                                        sampling_locations, attention_weights, num_points_list,
                                        method, /*check_shape_values=*/!ctx.capturing);
  return forward(s, ctx, op, value, spatial_shapes, level_start_index, sampling_locations,
                 attention_weights);
}

std::tuple<Tensor, Tensor, Tensor> ms_deform_attn_v2_backward_cuda(
    const Tensor& grad_output, const Tensor& value, const Tensor& spatial_shapes,
    const Tensor& level_start_index, const Tensor& sampling_locations,
    const Tensor& attention_weights, std::vector<int64_t> num_points_list, std::string method,
    bool deterministic) {
  constexpr const char* op = "ms_deform_attn_v2_backward";
  check_value_on_cuda(value, op);
  const ts::accelerator::DeviceGuard guard(value.get_device_index());
  const CudaContext ctx = enter(value, spatial_shapes, level_start_index, op);
  const Shape s = check_v2_backward_args(grad_output, value, spatial_shapes, level_start_index,
                                         sampling_locations, attention_weights, num_points_list,
                                         method, /*check_shape_values=*/!ctx.capturing);
  return backward(s, ctx, op, grad_output, value, spatial_shapes, level_start_index,
                  sampling_locations, attention_weights, deterministic);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(ddetr, CUDA, m) {
  m.impl("ms_deform_attn", TORCH_BOX(&ms_deform_attn_cuda));
  m.impl("ms_deform_attn_backward", TORCH_BOX(&ms_deform_attn_backward_cuda));
  m.impl("ms_deform_attn_v2", TORCH_BOX(&ms_deform_attn_v2_cuda));
  m.impl("ms_deform_attn_v2_backward", TORCH_BOX(&ms_deform_attn_v2_backward_cuda));
}

}  // namespace ddetr
