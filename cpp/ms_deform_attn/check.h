// Argument errors and their wording for the stable-ABI glue. Across LibTorch's stable ABI an
// exception reaches Python only as RuntimeError (no ValueError / TypeError), so the message
// carries everything: the argument, what was expected and what came.
#pragma once
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <sstream>
#include <stdexcept>
#include <string>

namespace ddetr {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw std::runtime_error(os.str());
}

// Not STD_TORCH_CHECK: that one prefixes the function, file and line to the message.
#define DDETR_CHECK(cond, ...)                      \
  do {                                              \
    if (!(cond)) ::ddetr::fail(__VA_ARGS__);        \
  } while (0)

// Python's spelling of a dtype ("torch.float32"), as users write it.
inline const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "torch.float32";
    case ScalarType::Double: return "torch.float64";
    case ScalarType::Half: return "torch.float16";
    case ScalarType::BFloat16: return "torch.bfloat16";
    case ScalarType::Long: return "torch.int64";
    case ScalarType::Int: return "torch.int32";
    case ScalarType::Short: return "torch.int16";
    case ScalarType::Char: return "torch.int8";
    case ScalarType::Byte: return "torch.uint8";
    case ScalarType::Bool: return "torch.bool";
    default: return torch::headeronly::toString(t);
  }
}

inline bool is_floating(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Double || t == ScalarType::Half ||
         t == ScalarType::BFloat16;
}

inline bool is_integral(ScalarType t) {
  return t == ScalarType::Long || t == ScalarType::Int || t == ScalarType::Short ||
         t == ScalarType::Char || t == ScalarType::Byte;
}

// "cpu", "cuda:0", as torch prints devices.
inline std::string device_name(const Tensor& t) {
  if (t.is_cpu()) return "cpu";
  std::ostringstream os;
  os << (t.is_cuda() ? "cuda" : "device") << ':' << t.get_device_index();
  return os.str();
}

// Whether two tensors live on the same device.
inline bool same_device(const Tensor& a, const Tensor& b) {
  return a.device() == b.device();
}

// "(2, 3, 4)"
inline std::string shape_of(const Tensor& t) {
  std::ostringstream os;
  os << '(';
  for (int64_t d = 0; d < t.dim(); ++d) os << (d ? ", " : "") << t.size(d);
  os << (t.dim() == 1 ? ",)" : ")");
  return os.str();
}

}  // namespace ddetr
