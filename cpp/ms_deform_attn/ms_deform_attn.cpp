// The op's schema and the argument checks every backend shares (stable ABI).
#include "ms_deform_attn.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <optional>
#include <string>
#include <vector>

#include "check.h"
#include "glue.h"

namespace ddetr {
namespace {

void check_floating(const Tensor& t, const char* name) {
  DDETR_CHECK(is_floating(t.scalar_type()), name, " must be a floating-point tensor, got ",
              dtype_name(t.scalar_type()));
}

void check_integral(const Tensor& t, const char* name) {
  DDETR_CHECK(is_integral(t.scalar_type()), name,
              " must be an integer tensor (int64 preferred), got ", dtype_name(t.scalar_type()));
}

void check_dim(const Tensor& t, int64_t dim, const char* name, const char* layout) {
  DDETR_CHECK(t.dim() == dim, name, " must have ", dim, " dimensions ", layout, ", got ",
              t.dim(), " with shape ", shape_of(t));
}

void check_size(const Tensor& t, int64_t d, int64_t expected, const char* name,
                const char* what) {
  DDETR_CHECK(t.size(d) == expected, name, " has ", t.size(d), " ", what, " (dimension ", d,
              " of shape ", shape_of(t), ") but ", expected, " were expected");
}

// spatial_shapes or level_start_index as a contiguous int64 tensor on the CPU (a copy from
// the GPU synchronises; see check_shape_values).
Tensor host_int64(const Tensor& t) {
  return torch::stable::contiguous(torch::stable::to(
      t, std::optional<ScalarType>(ScalarType::Long), std::nullopt,
      torch::stable::Device(torch::headeronly::DeviceType::CPU)));
}

// The dtype and device checks both forms share (their ranks already checked).
void check_kinds(const Tensor& value, const Tensor& spatial_shapes,
                 const Tensor& level_start_index, const Tensor& sampling_locations,
                 const Tensor& attention_weights) {
  check_floating(value, "value");
  check_floating(sampling_locations, "sampling_locations");
  check_floating(attention_weights, "attention_weights");
  check_integral(spatial_shapes, "spatial_shapes");
  check_integral(level_start_index, "level_start_index");
  // The precision policy: attention weights of any floating dtype (the backends cast them to
  // the value's, as MMCV does; their gradient comes back in their own dtype); locations in the
  // value's dtype or in the one the kernels read them in (glue.h's location_dtype: float32
  // beside a 16-bit value), anything else refused, as a silent cast would round them.
  const ScalarType dtype = value.scalar_type();
  const ScalarType loc_dtype = sampling_locations.scalar_type();
  const ScalarType kernel_loc_dtype = location_dtype(dtype);
  DDETR_CHECK(loc_dtype == dtype || loc_dtype == kernel_loc_dtype, "sampling_locations must be ",
              dtype_name(dtype), " like value",
              kernel_loc_dtype != dtype ? " or " : "",
              kernel_loc_dtype != dtype ? dtype_name(kernel_loc_dtype) : "", ", got ",
              dtype_name(loc_dtype));
  DDETR_CHECK(same_device(sampling_locations, value) && same_device(attention_weights, value),
              "value, sampling_locations and attention_weights must be on one device, got ",
              device_name(value), ", ", device_name(sampling_locations), " and ",
              device_name(attention_weights));
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{spatial_shapes,
                                                                      "spatial_shapes"},
                                {level_start_index, "level_start_index"}}) {
    DDETR_CHECK(same_device(t, value) || t.is_cpu(), name, " must be on the value's device (",
                device_name(value), ") or the CPU, got ", device_name(t));
  }
}

// The sizes of value and spatial_shapes, and the sizes both forms share: N, Lq, M of the
// locations and weights against value, the (x, y) pair; the point dimensions are the
// caller's.
Shape shared_sizes(const Tensor& value, const Tensor& spatial_shapes,
                   const Tensor& level_start_index, const Tensor& sampling_locations,
                   const Tensor& attention_weights) {
  Shape s;
  s.N = value.size(0);
  s.S = value.size(1);
  s.M = value.size(2);
  s.D = value.size(3);
  s.L = spatial_shapes.size(0);
  s.Lq = sampling_locations.size(1);
  DDETR_CHECK(s.L >= 1, "spatial_shapes must describe at least one level, got shape ",
              shape_of(spatial_shapes));
  check_size(spatial_shapes, 1, 2, "spatial_shapes", "entries per level (H, W)");
  check_size(level_start_index, 0, s.L, "level_start_index", "levels");
  check_size(sampling_locations, 0, s.N, "sampling_locations", "batch entries (value's N)");
  check_size(sampling_locations, 2, s.M, "sampling_locations", "heads (value's M)");
  check_size(sampling_locations, sampling_locations.dim() - 1, 2, "sampling_locations",
             "coordinates (x, y)");
  check_size(attention_weights, 0, s.N, "attention_weights", "batch entries (value's N)");
  check_size(attention_weights, 1, s.Lq, "attention_weights", "queries (sampling_locations' Lq)");
  check_size(attention_weights, 2, s.M, "attention_weights", "heads (value's M)");
  return s;
}

// The contents of spatial_shapes and level_start_index against each other and value's S.
void check_shape_values(const Shape& s, const Tensor& spatial_shapes,
                        const Tensor& level_start_index) {
  const Tensor shapes = host_int64(spatial_shapes);
  const Tensor starts = host_int64(level_start_index);
  const int64_t* hw = shapes.const_data_ptr<int64_t>();
  const int64_t* start = starts.const_data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t l = 0; l < s.L; ++l) {
    const int64_t H = hw[2 * l], W = hw[2 * l + 1];
    DDETR_CHECK(H > 0 && W > 0, "spatial_shapes[", l, "] must be positive (H, W), got (", H,
                ", ", W, ")");
    DDETR_CHECK(start[l] == total, "level_start_index[", l, "] must be ", total,
                " (the sum of H * W over the levels before it), got ", start[l]);
    // Division, not H * W, so that absurd sizes cannot overflow before being refused.
    DDETR_CHECK(H <= (s.S - total) / W, "value has S = ", s.S,
                " rows but spatial_shapes' H * W sum to more (level ", l, " is ", H, " x ", W,
                ")");
    total += H * W;
  }
  DDETR_CHECK(total == s.S, "value has S = ", s.S, " rows but spatial_shapes' H * W sum to ",
              total);
}

// grad_output against the problem's sizes and value's dtype and device.
void check_grad_output(const Tensor& grad_output, const Tensor& value, const Shape& s) {
  check_dim(grad_output, 3, "grad_output", "(N, Lq, M * D)");
  DDETR_CHECK(grad_output.size(0) == s.N && grad_output.size(1) == s.Lq &&
                  grad_output.size(2) == s.M * s.D,
              "grad_output must have shape (", s.N, ", ", s.Lq, ", ", s.M * s.D, "), got ",
              shape_of(grad_output));
  DDETR_CHECK(grad_output.scalar_type() == value.scalar_type(), "grad_output must be ",
              dtype_name(value.scalar_type()), " like value, got ",
              dtype_name(grad_output.scalar_type()));
  DDETR_CHECK(same_device(grad_output, value), "grad_output must be on ", device_name(value),
              " like value, got ", device_name(grad_output));
}

}  // namespace

Shape check_forward_args(const Tensor& value, const Tensor& spatial_shapes,
                         const Tensor& level_start_index, const Tensor& sampling_locations,
                         const Tensor& attention_weights, int64_t im2col_step,
                         bool check_values) {
  check_dim(value, 4, "value", "(N, S, M, D)");
  check_dim(spatial_shapes, 2, "spatial_shapes", "(L, 2)");
  check_dim(level_start_index, 1, "level_start_index", "(L)");
  check_dim(sampling_locations, 6, "sampling_locations", "(N, Lq, M, L, P, 2)");
  check_dim(attention_weights, 5, "attention_weights", "(N, Lq, M, L, P)");
  check_kinds(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  DDETR_CHECK(im2col_step > 0, "im2col_step must be positive, got ", im2col_step);

  Shape s = shared_sizes(value, spatial_shapes, level_start_index, sampling_locations,
                         attention_weights);
  s.P = sampling_locations.size(4);
  s.LP = s.L * s.P;
  check_size(sampling_locations, 3, s.L, "sampling_locations", "levels (spatial_shapes' L)");
  check_size(attention_weights, 3, s.L, "attention_weights", "levels (spatial_shapes' L)");
  check_size(attention_weights, 4, s.P, "attention_weights", "points (sampling_locations' P)");
  if (check_values) check_shape_values(s, spatial_shapes, level_start_index);
  return s;
}

Shape check_v2_forward_args(const Tensor& value, const Tensor& spatial_shapes,
                            const Tensor& level_start_index, const Tensor& sampling_locations,
                            const Tensor& attention_weights,
                            const std::vector<int64_t>& num_points_list,
                            const std::string& method, bool check_values) {
  check_dim(value, 4, "value", "(N, S, M, D)");
  check_dim(spatial_shapes, 2, "spatial_shapes", "(L, 2)");
  check_dim(level_start_index, 1, "level_start_index", "(L)");
  check_dim(sampling_locations, 5, "sampling_locations", "(N, Lq, M, sum of num_points_list, 2)");
  check_dim(attention_weights, 4, "attention_weights", "(N, Lq, M, sum of num_points_list)");
  check_kinds(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  DDETR_CHECK(method == "default" || method == "discrete",
              "method must be \"default\" (bilinear) or \"discrete\" (nearest pixel), got \"",
              method, "\"");

  Shape s = shared_sizes(value, spatial_shapes, level_start_index, sampling_locations,
                         attention_weights);
  s.discrete = method == "discrete";
  const int64_t levels = static_cast<int64_t>(num_points_list.size());
  DDETR_CHECK(levels == s.L, "num_points_list has ", levels, " entries but spatial_shapes has ",
              s.L, " levels (one count per level)");
  s.LP = 0;
  for (int64_t l = 0; l < levels; ++l) {
    DDETR_CHECK(num_points_list[l] > 0, "num_points_list[", l, "] must be positive, got ",
                num_points_list[l]);
    s.LP += num_points_list[l];
  }
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{sampling_locations,
                                                                      "sampling_locations"},
                                {attention_weights, "attention_weights"}}) {
    DDETR_CHECK(t.size(3) == s.LP, name, " has ", t.size(3), " points (dimension 3 of shape ",
                shape_of(t), ") but num_points_list sums to ", s.LP);
  }
  s.ragged = false;
  for (int64_t l = 1; l < levels; ++l) s.ragged |= num_points_list[l] != num_points_list[0];
  if (s.ragged) {
    DDETR_CHECK(levels <= kMaxRaggedLevels, "num_points_list may list different counts for at most ",
                kMaxRaggedLevels, " levels, got ", levels);
    s.P = 0;
    int64_t end = 0;
    for (int64_t l = 0; l < levels; ++l) s.level_end[l] = end += num_points_list[l];
  } else {
    s.P = num_points_list[0];  // equal counts: the 2020 layout
  }
  if (check_values) check_shape_values(s, spatial_shapes, level_start_index);
  return s;
}

Shape check_backward_args(const Tensor& grad_output, const Tensor& value,
                          const Tensor& spatial_shapes, const Tensor& level_start_index,
                          const Tensor& sampling_locations, const Tensor& attention_weights,
                          int64_t im2col_step, bool check_values) {
  const Shape s = check_forward_args(value, spatial_shapes, level_start_index, sampling_locations,
                                     attention_weights, im2col_step, check_values);
  check_grad_output(grad_output, value, s);
  return s;
}

Shape check_v2_backward_args(const Tensor& grad_output, const Tensor& value,
                             const Tensor& spatial_shapes, const Tensor& level_start_index,
                             const Tensor& sampling_locations, const Tensor& attention_weights,
                             const std::vector<int64_t>& num_points_list,
                             const std::string& method, bool check_values) {
  const Shape s =
      check_v2_forward_args(value, spatial_shapes, level_start_index, sampling_locations,
                            attention_weights, num_points_list, method, check_values);
  check_grad_output(grad_output, value, s);
  return s;
}

// `deterministic` is decided in Python (torch.are_deterministic_algorithms_enabled(), which
// the stable ABI cannot read): the CUDA backward then gathers the value gradient in a fixed
// order instead of accumulating it with atomics. The CPU backward is always deterministic.
STABLE_TORCH_LIBRARY(ddetr, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, int im2col_step) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights, "
      "int im2col_step, bool deterministic=False) -> (Tensor, Tensor, Tensor)");
  // The generalised form (RT-DETRv2, D-FINE, DEIM): a point count per level, method
  // "default" (bilinear, as above) or "discrete" (nearest pixel, border clamped). The
  // discrete backward has no location gradient: it returns an empty tensor in its place.
  m.def(
      "ms_deform_attn_v2(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, int[] num_points_list, "
      "str method) -> Tensor");
  m.def(
      "ms_deform_attn_v2_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights, "
      "int[] num_points_list, str method, bool deterministic=False) -> (Tensor, Tensor, Tensor)");
}

}  // namespace ddetr
