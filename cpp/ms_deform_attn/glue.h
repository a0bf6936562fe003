// Helpers that every backend's torch glue shares (cpu/ms_deform_attn_cpu.cpp,
// cuda/ms_deform_attn_cuda.cpp): data pointers, new tensors, the dtype rule of the sampling
// locations and the dispatch from a torch dtype to the kernels' element type.
#pragma once
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <optional>
#include <type_traits>

#include "check.h"

namespace ddetr {

template <typename K>
const K* cptr(const Tensor& t) {
  return static_cast<const K*>(t.const_data_ptr());
}
template <typename K>
K* mptr(const Tensor& t) {
  return static_cast<K*>(t.mutable_data_ptr());
}

// A new tensor on `device`; zeroed by zeros_on.
inline Tensor empty_on(torch::stable::Device device, torch::headeronly::IntHeaderOnlyArrayRef sizes,
                       ScalarType dt) {
  return torch::stable::empty(sizes, dt, std::nullopt, device);
}
inline Tensor zeros_on(torch::stable::Device device, torch::headeronly::IntHeaderOnlyArrayRef sizes,
                       ScalarType dt) {
  Tensor t = empty_on(device, sizes, dt);
  return torch::stable::zero_(t);
}

// t as a contiguous tensor of dtype dt (itself when it already is one).
inline Tensor as_contiguous(const Tensor& t, ScalarType dt) {
  return torch::stable::contiguous(torch::stable::to(t, std::optional<ScalarType>(dt)));
}

// The dtype the kernels read sampling locations in beside a value of `value_dtype` (params.h's
// location_t): float32 for the 16-bit types, whose locations are never rounded to 16 bits (a
// bfloat16 location is off by up to 0.4 px on a 100-pixel map), else the value's own. The op
// accepts exactly these and the value's dtype (ms_deform_attn.cpp).
inline ScalarType location_dtype(ScalarType value_dtype) {
  const bool half = value_dtype == ScalarType::Half || value_dtype == ScalarType::BFloat16;
  return half ? ScalarType::Float : value_dtype;
}

// Calls f(K{}) with K the kernels' element type for dtype t: float, double, and the backend's
// 16-bit storage types Half16 / BFloat16 where it has kernels for them (void: it has none, and
// its glue converts those dtypes before dispatching).
template <typename Half16, typename BFloat16, typename F>
void with_kernel_type(ScalarType t, const char* op, F&& f) {
  switch (t) {
    case ScalarType::Float:
      f(float{});
      return;
    case ScalarType::Double:
      f(double{});
      return;
    case ScalarType::Half:
      if constexpr (!std::is_void_v<Half16>) {
        f(Half16{});
        return;
      }
      break;
    case ScalarType::BFloat16:
      if constexpr (!std::is_void_v<BFloat16>) {
        f(BFloat16{});
        return;
      }
      break;
    default:
      break;
  }
  fail(op, "'s kernels have no element type for ", dtype_name(t));
}

}  // namespace ddetr
