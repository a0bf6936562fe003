// The torch-facing side of ms_deform_attn: argument checks shared by every backend and
// the backend entry points registered in ms_deform_attn.cpp.
#pragma once
#include <ATen/core/Tensor.h>

#include <tuple>

#include "params.h"

namespace ddetr {

// Validates the forward arguments and returns the problem's sizes. Throws a ValueError
// or TypeError naming the argument and what was expected. When `check_shape_values` is
// false the contents of spatial_shapes / level_start_index are not read (a CUDA graph
// capture cannot copy them to the host); sizes, dtypes and devices are still checked.
Shape check_forward_args(const at::Tensor& value, const at::Tensor& spatial_shapes,
                         const at::Tensor& level_start_index,
                         const at::Tensor& sampling_locations,
                         const at::Tensor& attention_weights, int64_t im2col_step,
                         bool check_shape_values = true);

// As above, plus grad_output of shape (N, Lq, M * D) with the value's dtype and device.
Shape check_backward_args(const at::Tensor& grad_output, const at::Tensor& value,
                          const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                          const at::Tensor& sampling_locations,
                          const at::Tensor& attention_weights, int64_t im2col_step,
                          bool check_shape_values = true);

at::Tensor ms_deform_attn_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                              const at::Tensor& level_start_index,
                              const at::Tensor& sampling_locations,
                              const at::Tensor& attention_weights, int64_t im2col_step);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, int64_t im2col_step);

// The instruction set the CPU kernels run with on this machine ("avx512", "avx2", "baseline").
const char* cpu_kernel_isa();

// Whether the CPU kernels run on torch's intra-op threads (false: one thread, always).
bool cpu_kernel_threaded();

}  // namespace ddetr
