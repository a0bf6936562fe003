// Calls that LibTorch's stable ABI (targeting torch 2.10) has no wrapper for, made through the
// dispatcher by name: one place to replace when the stable ABI grows them.
#pragma once
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace ddetr {

// torch.sort(keys, stable=True): (sorted keys, int64 permutation).
inline std::tuple<torch::stable::Tensor, torch::stable::Tensor> stable_sort(
    const torch::stable::Tensor& keys) {
  namespace d = torch::stable::detail;
  std::array<StableIValue, 4> stack{d::from(keys), d::from(std::optional<bool>(true)),
                                    d::from(int64_t{0}), d::from(false)};
  TORCH_ERROR_CODE_CHECK(
      torch_call_dispatcher("aten::sort", "stable", stack.data(), TORCH_ABI_VERSION));
  return {d::to<torch::stable::Tensor>(stack[0]), d::to<torch::stable::Tensor>(stack[1])};
}

}  // namespace ddetr
