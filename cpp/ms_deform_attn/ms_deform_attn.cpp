// The op's schema and the argument checks every backend shares.
#include "ms_deform_attn.h"

#include <ATen/ATen.h>
#include <torch/library.h>

namespace ddetr {
namespace {

void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name,
                   " must be a floating-point tensor, got ", t.scalar_type());
}

void check_integral(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isIntegralType(t.scalar_type(), /*includeBool=*/false), name,
                   " must be an integer tensor (int64 preferred), got ", t.scalar_type());
}

void check_dim(const at::Tensor& t, int64_t dim, const char* name, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must have ", dim, " dimensions ", layout, ", got ",
                    t.dim(), " with shape ", t.sizes());
}

void check_size(const at::Tensor& t, int64_t d, int64_t expected, const char* name,
                const char* what) {
  TORCH_CHECK_VALUE(t.size(d) == expected, name, " has ", t.size(d), " ", what, " (dimension ", d,
                    " of shape ", t.sizes(), ") but ", expected, " were expected");
}

}  // namespace

Shape check_forward_args(const at::Tensor& value, const at::Tensor& spatial_shapes,
                         const at::Tensor& level_start_index,
                         const at::Tensor& sampling_locations,
                         const at::Tensor& attention_weights, int64_t im2col_step,
                         bool check_shape_values) {
  check_dim(value, 4, "value", "(N, S, M, D)");
  check_dim(spatial_shapes, 2, "spatial_shapes", "(L, 2)");
  check_dim(level_start_index, 1, "level_start_index", "(L)");
  check_dim(sampling_locations, 6, "sampling_locations", "(N, Lq, M, L, P, 2)");
  check_dim(attention_weights, 5, "attention_weights", "(N, Lq, M, L, P)");
  check_floating(value, "value");
  check_floating(sampling_locations, "sampling_locations");
  check_floating(attention_weights, "attention_weights");
  check_integral(spatial_shapes, "spatial_shapes");
  check_integral(level_start_index, "level_start_index");
  TORCH_CHECK_TYPE(sampling_locations.scalar_type() == value.scalar_type() &&
                       attention_weights.scalar_type() == value.scalar_type(),
                   "value, sampling_locations and attention_weights must share one dtype, got ",
                   value.scalar_type(), ", ", sampling_locations.scalar_type(), " and ",
                   attention_weights.scalar_type());
  TORCH_CHECK_VALUE(sampling_locations.device() == value.device() &&
                        attention_weights.device() == value.device(),
                    "value, sampling_locations and attention_weights must be on one device, got ",
                    value.device(), ", ", sampling_locations.device(), " and ",
                    attention_weights.device());
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{spatial_shapes,
                                                                         "spatial_shapes"},
                                {level_start_index, "level_start_index"}}) {
    TORCH_CHECK_VALUE(t.device() == value.device() || t.device().is_cpu(), name,
                      " must be on the value's device (", value.device(), ") or the CPU, got ",
                      t.device());
  }
  TORCH_CHECK_VALUE(im2col_step > 0, "im2col_step must be positive, got ", im2col_step);

  Shape s;
  s.N = value.size(0);
  s.S = value.size(1);
  s.M = value.size(2);
  s.D = value.size(3);
  s.L = spatial_shapes.size(0);
  s.Lq = sampling_locations.size(1);
  s.P = sampling_locations.size(4);
  TORCH_CHECK_VALUE(s.L >= 1, "spatial_shapes must describe at least one level, got shape ",
                    spatial_shapes.sizes());
  check_size(spatial_shapes, 1, 2, "spatial_shapes", "entries per level (H, W)");
  check_size(level_start_index, 0, s.L, "level_start_index", "levels");
  check_size(sampling_locations, 0, s.N, "sampling_locations", "batch entries (value's N)");
  check_size(sampling_locations, 2, s.M, "sampling_locations", "heads (value's M)");
  check_size(sampling_locations, 3, s.L, "sampling_locations", "levels (spatial_shapes' L)");
  check_size(sampling_locations, 5, 2, "sampling_locations", "coordinates (x, y)");
  check_size(attention_weights, 0, s.N, "attention_weights", "batch entries (value's N)");
  check_size(attention_weights, 1, s.Lq, "attention_weights", "queries (sampling_locations' Lq)");
  check_size(attention_weights, 2, s.M, "attention_weights", "heads (value's M)");
  check_size(attention_weights, 3, s.L, "attention_weights", "levels (spatial_shapes' L)");
  check_size(attention_weights, 4, s.P, "attention_weights", "points (sampling_locations' P)");

  if (check_shape_values) {
    const at::Tensor shapes = spatial_shapes.to(at::kCPU, at::kLong).contiguous();
    const at::Tensor starts = level_start_index.to(at::kCPU, at::kLong).contiguous();
    const int64_t* hw = shapes.data_ptr<int64_t>();
    const int64_t* start = starts.data_ptr<int64_t>();
    int64_t total = 0;
    for (int64_t l = 0; l < s.L; ++l) {
      const int64_t H = hw[2 * l], W = hw[2 * l + 1];
      TORCH_CHECK_VALUE(H > 0 && W > 0, "spatial_shapes[", l, "] must be positive (H, W), got (",
                        H, ", ", W, ")");
      TORCH_CHECK_VALUE(start[l] == total, "level_start_index[", l, "] must be ", total,
                        " (the sum of H * W over the levels before it), got ", start[l]);
      // Division, not H * W, so that absurd sizes cannot overflow before being refused.
      TORCH_CHECK_VALUE(H <= (s.S - total) / W,
                        "value has S = ", s.S, " rows but spatial_shapes' H * W sum to more (",
                        "level ", l, " is ", H, " x ", W, ")");
      total += H * W;
    }
    TORCH_CHECK_VALUE(total == s.S, "value has S = ", s.S,
                      " rows but spatial_shapes' H * W sum to ", total);
  }
  return s;
}

Shape check_backward_args(const at::Tensor& grad_output, const at::Tensor& value,
                          const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                          const at::Tensor& sampling_locations,
                          const at::Tensor& attention_weights, int64_t im2col_step,
                          bool check_shape_values) {
  const Shape s = check_forward_args(value, spatial_shapes, level_start_index, sampling_locations,
                                     attention_weights, im2col_step, check_shape_values);
  check_dim(grad_output, 3, "grad_output", "(N, Lq, M * D)");
  TORCH_CHECK_VALUE(grad_output.size(0) == s.N && grad_output.size(1) == s.Lq &&
                        grad_output.size(2) == s.M * s.D,
                    "grad_output must have shape (", s.N, ", ", s.Lq, ", ", s.M * s.D, "), got ",
                    grad_output.sizes());
  TORCH_CHECK_TYPE(grad_output.scalar_type() == value.scalar_type(), "grad_output must be ",
                   value.scalar_type(), " like value, got ", grad_output.scalar_type());
  TORCH_CHECK_VALUE(grad_output.device() == value.device(), "grad_output must be on ",
                    value.device(), " like value, got ", grad_output.device());
  return s;
}

TORCH_LIBRARY(ddetr, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, int im2col_step) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights, "
      "int im2col_step) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ddetr, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace ddetr
