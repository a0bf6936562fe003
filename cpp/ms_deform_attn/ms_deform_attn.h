// The torch-facing side of ms_deform_attn, on LibTorch's stable ABI: argument checks shared
// by every backend (ms_deform_attn.cpp), which also defines the schema; each backend's glue
// registers its kernels itself (cpu/, cuda/).
#pragma once
#include <torch/csrc/stable/tensor.h>

#include <string>
#include <vector>

#include "params.h"

namespace ddetr {

// Validates the forward arguments and returns the problem's sizes. Throws (RuntimeError in
// Python) naming the argument and what was expected. When `check_shape_values` is false the
// contents of spatial_shapes / level_start_index are not read (a CUDA graph capture cannot
// copy them to the host); sizes, dtypes and devices are still checked.
Shape check_forward_args(const torch::stable::Tensor& value,
                         const torch::stable::Tensor& spatial_shapes,
                         const torch::stable::Tensor& level_start_index,
                         const torch::stable::Tensor& sampling_locations,
                         const torch::stable::Tensor& attention_weights, int64_t im2col_step,
                         bool check_shape_values = true);

// As above, plus grad_output of shape (N, Lq, M * D) with the value's dtype and device.
Shape check_backward_args(const torch::stable::Tensor& grad_output,
                          const torch::stable::Tensor& value,
                          const torch::stable::Tensor& spatial_shapes,
                          const torch::stable::Tensor& level_start_index,
                          const torch::stable::Tensor& sampling_locations,
                          const torch::stable::Tensor& attention_weights, int64_t im2col_step,
                          bool check_shape_values = true);

// The generalised form (ms_deform_attn_v2): sampling_locations (N, Lq, M, K, 2) and
// attention_weights (N, Lq, M, K) with K = sum(num_points_list), level-major; method
// "default" or "discrete". The Shape's P, LP, ragged, level_end and discrete describe it.
Shape check_v2_forward_args(const torch::stable::Tensor& value,
                            const torch::stable::Tensor& spatial_shapes,
                            const torch::stable::Tensor& level_start_index,
                            const torch::stable::Tensor& sampling_locations,
                            const torch::stable::Tensor& attention_weights,
                            const std::vector<int64_t>& num_points_list,
                            const std::string& method, bool check_shape_values = true);

Shape check_v2_backward_args(const torch::stable::Tensor& grad_output,
                             const torch::stable::Tensor& value,
                             const torch::stable::Tensor& spatial_shapes,
                             const torch::stable::Tensor& level_start_index,
                             const torch::stable::Tensor& sampling_locations,
                             const torch::stable::Tensor& attention_weights,
                             const std::vector<int64_t>& num_points_list,
                             const std::string& method, bool check_shape_values = true);

}  // namespace ddetr

