// CPU backend (stable ABI): checks, layout, threading on torch's intra-op pool
// (torch::stable::parallel_for runs at::parallel_for inside libtorch, so torch's own OpenMP
// runtime and torch.set_num_threads apply), and the choice of the instruction-set copy of
// the kernels (cpu/kernels_isa.cpp).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../build_info.h"
#include "../check.h"
#include "../glue.h"
#include "../ms_deform_attn.h"
#include "kernels.h"

namespace ddetr {
namespace {

namespace ts = torch::stable;
using torch::headeronly::DeviceType;

const cpu::KernelTable& pick_kernels() {
  // DDETR_CPU_ISA=baseline|avx2|avx512 caps the choice (for testing and comparison).
  const char* cap_env = std::getenv("DDETR_CPU_ISA");
  const std::string cap = cap_env ? cap_env : "avx512";
  // The instruction-set copies exist only in x86-64 builds (cmake/CpuKernels.cmake).
#if defined(DDETR_HAVE_AVX2) || defined(DDETR_HAVE_AVX512)
  __builtin_cpu_init();
#endif
#if defined(DDETR_HAVE_AVX512)
  if (cap == "avx512" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    return cpu::kernel_table_avx512();
  }
#endif
#if defined(DDETR_HAVE_AVX2)
  if ((cap == "avx512" || cap == "avx2") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma")) {
    return cpu::kernel_table_avx2();
  }
#endif
  return cpu::kernel_table_baseline();
}

const cpu::KernelTable& kernels() {
  static const cpu::KernelTable& table = pick_kernels();
  return table;
}

void run_kernel(const cpu::Job<float>& job, int64_t b, int64_t e) { kernels().run_f32(job, b, e); }
void run_kernel(const cpu::Job<double>& job, int64_t b, int64_t e) { kernels().run_f64(job, b, e); }

// Half types have no CPU kernel of their own: they compute in float32 (their locations, float32
// or not, too) and round once.
ScalarType compute_dtype(ScalarType t) {
  return t == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

Tensor cpu_empty(torch::headeronly::IntHeaderOnlyArrayRef sizes, ScalarType dt) {
  return empty_on(ts::Device(DeviceType::CPU), sizes, dt);
}

struct CpuInputs {
  Tensor value, shapes, starts, loc, attn;
};

CpuInputs prepare(const Tensor& value, const Tensor& spatial_shapes,
                  const Tensor& level_start_index, const Tensor& sampling_locations,
                  const Tensor& attention_weights) {
  const ScalarType dt = compute_dtype(value.scalar_type());
  // weights in the value's dtype first (rounded as the CUDA kernels read them), then computed
  const Tensor attn = ts::to(attention_weights, std::optional<ScalarType>(value.scalar_type()));
  return {as_contiguous(value, dt), as_contiguous(spatial_shapes, ScalarType::Long),
          as_contiguous(level_start_index, ScalarType::Long),
          as_contiguous(sampling_locations, location_dtype(dt)), as_contiguous(attn, dt)};
}

void check_on_cpu(const Tensor& value, const Tensor& spatial_shapes,
                  const Tensor& level_start_index, const char* op) {
  DDETR_CHECK(value.is_cpu() && spatial_shapes.is_cpu() && level_start_index.is_cpu(), op,
              "'s CPU kernel needs every argument on the CPU");
}

// Items per claimed chunk (about 2^18 multiply-adds, tens of microseconds): enough that the
// shared counter is touched rarely, small enough for hundreds of chunks at the encoder
// shape. A call of one chunk or less (a few queries) runs on the calling thread and does not
// wake the pool.
int64_t chunk_items(int64_t cost_per_item) {
  return std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(cost_per_item, 1));
}

// Runs f over [0, n) in chunks of `chunk` items that the pool's threads claim one at a time,
// in order, from a shared counter. A static split (one contiguous half per thread) makes the
// call wait for whichever thread the machine slowed down (another process, a busy sibling
// core); claiming lets the faster thread take more. Only for items that write disjoint
// outputs: which thread ran an item then changes nothing in the result.
template <typename F>
void claimed_chunks(int64_t n, int64_t chunk, const F& f) {
  const int64_t chunks = (n + chunk - 1) / chunk;
  if (chunks <= 1) {
    if (n > 0) f(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  // One task per chunk at most; each task claims chunks until none are left, so the pool's
  // threads share them whatever way parallel_for splits [0, chunks).
  ts::parallel_for(0, chunks, 1, [&](int64_t, int64_t) {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      f(c * chunk, std::min(n, (c + 1) * chunk));
    }
  });
}

// The forward of both forms, its arguments checked (s) and on the CPU.
Tensor forward(const Shape& s, const Tensor& value, const Tensor& spatial_shapes,
               const Tensor& level_start_index, const Tensor& sampling_locations,
               const Tensor& attention_weights) {
  const CpuInputs in =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const ScalarType dt = in.value.scalar_type();
  Tensor out = cpu_empty({s.N, s.Lq, s.M * s.D}, dt);
  if (out.numel() > 0 && s.LP == 0) ts::zero_(out);
  if (out.numel() > 0 && s.LP > 0) {
    with_kernel_type<void, void>(dt, "ms_deform_attn", [&](auto tag) {
      using scalar_t = decltype(tag);
      cpu::Job<scalar_t> job{};
      job.pass = cpu::Pass::kForward;
      job.int32 = cpu::int32_indices(s);
      job.forward = {s,
                     cptr<scalar_t>(in.value),
                     cptr<int64_t>(in.shapes),
                     cptr<int64_t>(in.starts),
                     cptr<scalar_t>(in.loc),
                     cptr<scalar_t>(in.attn),
                     mptr<scalar_t>(out)};
      job.heads = cpu::heads_per_sweep(s, job.forward.loc, job.forward.spatial_shapes,
                                       job.forward.level_start, /*forward=*/true);
      claimed_chunks(s.N * (s.M / job.heads) * s.Lq, chunk_items(job.heads * s.LP * s.D),
                     [&](int64_t begin, int64_t end) { run_kernel(job, begin, end); });
    });
  }
  return ts::to(out, std::optional<ScalarType>(value.scalar_type()));
}

// The backward of both forms: gradients shaped like the inputs; for the discrete method the
// location gradient is an empty tensor (there is none).
std::tuple<Tensor, Tensor, Tensor> backward(const Shape& s, const Tensor& grad_output,
                                            const Tensor& value, const Tensor& spatial_shapes,
                                            const Tensor& level_start_index,
                                            const Tensor& sampling_locations,
                                            const Tensor& attention_weights) {
  const CpuInputs in =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const ScalarType cdt = in.value.scalar_type();
  const Tensor grad = as_contiguous(grad_output, cdt);
  Tensor grad_value = zeros_on(ts::Device(DeviceType::CPU), {s.N, s.S, s.M, s.D}, cdt);
  Tensor grad_loc = s.discrete ? cpu_empty({0}, cdt)
                               : cpu_empty(sampling_locations.sizes(), cdt);
  Tensor grad_attn = cpu_empty(attention_weights.sizes(), cdt);
  if (grad_attn.numel() > 0 && s.D > 0) {
    with_kernel_type<void, void>(cdt, "ms_deform_attn_backward", [&](auto tag) {
      using scalar_t = decltype(tag);
      cpu::Job<scalar_t> job{};
      job.int32 = cpu::int32_indices(s);
      job.backward = {s,
                      cptr<scalar_t>(in.value),
                      cptr<int64_t>(in.shapes),
                      cptr<int64_t>(in.starts),
                      cptr<scalar_t>(in.loc),
                      cptr<scalar_t>(in.attn),
                      cptr<scalar_t>(grad),
                      mptr<scalar_t>(grad_value),
                      s.discrete ? nullptr : mptr<scalar_t>(grad_loc),
                      mptr<scalar_t>(grad_attn)};
      job.pass = cpu::Pass::kBackward;
      job.heads = cpu::heads_per_sweep(s, job.backward.loc, job.backward.spatial_shapes,
                                       job.backward.level_start, /*forward=*/false);
      // A static split, not claimed_chunks: a thread's heads are walked together
      // (heads_per_sweep), which one head per chunk would undo.
      ts::parallel_for(0, s.N * s.M, 1,
                       [&](int64_t begin, int64_t end) { run_kernel(job, begin, end); });
    });
  } else {
    ts::zero_(grad_loc);
    ts::zero_(grad_attn);
  }
  // each gradient in its input's dtype
  const auto as_dtype_of = [](const Tensor& grad, const Tensor& input) {
    return ts::to(grad, std::optional<ScalarType>(input.scalar_type()));
  };
  return {as_dtype_of(grad_value, value), as_dtype_of(grad_loc, sampling_locations),
          as_dtype_of(grad_attn, attention_weights)};
}

Tensor ms_deform_attn_cpu(const Tensor& value, const Tensor& spatial_shapes,
                          const Tensor& level_start_index, const Tensor& sampling_locations,
                          const Tensor& attention_weights, int64_t im2col_step) {
  // im2col_step only sized the 2020 CUDA kernel's batches; every batch size works here.
  const Shape s = check_forward_args(value, spatial_shapes, level_start_index, sampling_locations,
                                     attention_weights, im2col_step);
  check_on_cpu(value, spatial_shapes, level_start_index, "ms_deform_attn");
  return forward(s, value, spatial_shapes, level_start_index, sampling_locations,
                 attention_weights);
}

std::tuple<Tensor, Tensor, Tensor> ms_deform_attn_backward_cpu(
    const Tensor& grad_output, const Tensor& value, const Tensor& spatial_shapes,
    const Tensor& level_start_index, const Tensor& sampling_locations,
    const Tensor& attention_weights, int64_t im2col_step, bool /*deterministic: always*/) {
  const Shape s = check_backward_args(grad_output, value, spatial_shapes, level_start_index,
                                      sampling_locations, attention_weights, im2col_step);
  check_on_cpu(value, spatial_shapes, level_start_index, "ms_deform_attn_backward");
  return backward(s, grad_output, value, spatial_shapes, level_start_index, sampling_locations,
                  attention_weights);
}

Tensor ms_deform_attn_v2_cpu(const Tensor& value, const Tensor& spatial_shapes,
                             const Tensor& level_start_index, const Tensor& sampling_locations,
                             const Tensor& attention_weights, std::vector<int64_t> num_points_list,
                             std::string method) {
  const Shape s = check_v2_forward_args(value, spatial_shapes, level_start_index,
                                        sampling_locations, attention_weights, num_points_list,
                                        method);
  check_on_cpu(value, spatial_shapes, level_start_index, "ms_deform_attn_v2");
  return forward(s, value, spatial_shapes, level_start_index, sampling_locations,
                 attention_weights);
}

std::tuple<Tensor, Tensor, Tensor> ms_deform_attn_v2_backward_cpu(
    const Tensor& grad_output, const Tensor& value, const Tensor& spatial_shapes,
    const Tensor& level_start_index, const Tensor& sampling_locations,
    const Tensor& attention_weights, std::vector<int64_t> num_points_list, std::string method,
    bool /*deterministic: always*/) {
  const Shape s = check_v2_backward_args(grad_output, value, spatial_shapes, level_start_index,
                                         sampling_locations, attention_weights, num_points_list,
                                         method);
  check_on_cpu(value, spatial_shapes, level_start_index, "ms_deform_attn_v2_backward");
  return backward(s, grad_output, value, spatial_shapes, level_start_index, sampling_locations,
                  attention_weights);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(ddetr, CPU, m) {
  m.impl("ms_deform_attn", TORCH_BOX(&ms_deform_attn_cpu));
  m.impl("ms_deform_attn_backward", TORCH_BOX(&ms_deform_attn_backward_cpu));
  m.impl("ms_deform_attn_v2", TORCH_BOX(&ms_deform_attn_v2_cpu));
  m.impl("ms_deform_attn_v2_backward", TORCH_BOX(&ms_deform_attn_v2_backward_cpu));
}

}  // namespace ddetr

const char* ddetr_cpu_kernel_isa() { return ddetr::kernels().isa; }
