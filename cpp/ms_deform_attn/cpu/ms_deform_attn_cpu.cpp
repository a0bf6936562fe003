// CPU backend: checks, layout, threading with at::parallel_for, and the choice of the
// instruction-set copy of the kernels (cpu/kernels_isa.cpp).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "../ms_deform_attn.h"
#include "kernels.h"

namespace ddetr {
namespace {

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

void run_kernel(const ForwardParams<float>& p, int64_t b, int64_t e) {
  kernels().forward_f32(p, b, e);
}
void run_kernel(const ForwardParams<double>& p, int64_t b, int64_t e) {
  kernels().forward_f64(p, b, e);
}
void run_kernel(const BackwardParams<float>& p, const cpu::BandScratch<float>& bs, int64_t b,
                int64_t e) {
  kernels().backward_f32(p, bs, b, e);
}
void run_kernel(const BackwardParams<double>& p, const cpu::BandScratch<double>& bs, int64_t b,
                int64_t e) {
  kernels().backward_f64(p, bs, b, e);
}
void run_deferred(const BackwardParams<float>& p, const cpu::BandScratch<float>& bs, int64_t b,
                  int64_t e) {
  kernels().deferred_f32(p, bs, b, e);
}
void run_deferred(const BackwardParams<double>& p, const cpu::BandScratch<double>& bs,
                  int64_t b, int64_t e) {
  kernels().deferred_f64(p, bs, b, e);
}

// Half types have no CPU kernel of their own: they compute in float32 and round once.
at::ScalarType compute_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

struct CpuInputs {
  at::Tensor value, shapes, starts, loc, attn;
};

CpuInputs prepare(const at::Tensor& value, const at::Tensor& spatial_shapes,
                  const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                  const at::Tensor& attention_weights) {
  const auto dt = compute_dtype(value.scalar_type());
  return {value.to(dt).contiguous(), spatial_shapes.to(at::kLong).contiguous(),
          level_start_index.to(at::kLong).contiguous(), sampling_locations.to(dt).contiguous(),
          attention_weights.to(dt).contiguous()};
}

// Items per parallel chunk: at::parallel_for stays on one thread below this, so a tiny
// call (a few queries) does not pay for waking the thread pool.
int64_t grain(int64_t cost_per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(cost_per_item, 1));
}

}  // namespace

const char* cpu_kernel_isa() { return kernels().isa; }

// Decided by how this file was compiled: at::parallel_for is a header template, serial
// unless this translation unit sees torch's intra-op backend (cmake/TorchOpenMP.cmake).
bool cpu_kernel_threaded() {
#ifdef INTRA_OP_PARALLEL
  return true;
#else
  return false;
#endif
}

at::Tensor ms_deform_attn_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                              const at::Tensor& level_start_index,
                              const at::Tensor& sampling_locations,
                              const at::Tensor& attention_weights, int64_t im2col_step) {
  // im2col_step only sized the 2020 CUDA kernel's batches; every batch size works here.
  const Shape s = check_forward_args(value, spatial_shapes, level_start_index, sampling_locations,
                                     attention_weights, im2col_step);
  TORCH_CHECK_VALUE(value.device().is_cpu() && spatial_shapes.device().is_cpu() &&
                        level_start_index.device().is_cpu(),
                    "ms_deform_attn's CPU kernel needs every argument on the CPU");
  const CpuInputs in =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  at::Tensor out = at::empty({s.N, s.Lq, s.M * s.D}, in.value.options());
  if (out.numel() == 0) return out.to(value.scalar_type());
  if (s.P == 0) return out.zero_().to(value.scalar_type());

  AT_DISPATCH_FLOATING_TYPES(in.value.scalar_type(), "ms_deform_attn_cpu", [&] {
    ForwardParams<scalar_t> p{s,
                              in.value.data_ptr<scalar_t>(),
                              in.shapes.data_ptr<int64_t>(),
                              in.starts.data_ptr<int64_t>(),
                              in.loc.data_ptr<scalar_t>(),
                              in.attn.data_ptr<scalar_t>(),
                              out.data_ptr<scalar_t>()};
    at::parallel_for(0, s.N * s.Lq, grain(s.M * s.L * s.P * s.D),
                     [&](int64_t begin, int64_t end) { run_kernel(p, begin, end); });
  });
  return out.to(value.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, int64_t im2col_step) {
  const Shape s = check_backward_args(grad_output, value, spatial_shapes, level_start_index,
                                      sampling_locations, attention_weights, im2col_step);
  TORCH_CHECK_VALUE(value.device().is_cpu() && spatial_shapes.device().is_cpu() &&
                        level_start_index.device().is_cpu(),
                    "ms_deform_attn_backward's CPU kernel needs every argument on the CPU");
  const CpuInputs in =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const at::Tensor grad = grad_output.to(in.value.scalar_type()).contiguous();
  at::Tensor grad_value = at::zeros_like(in.value);
  at::Tensor grad_loc = at::empty_like(in.loc);
  at::Tensor grad_attn = at::empty_like(in.attn);
  if (grad_loc.numel() > 0 && s.D > 0) {
    // Scratch (bands.h): halo buffers and deferred-point lists, neither growing with Lq.
    std::vector<cpu::LevelBand> level(cpu::kBands * s.L);
    int64_t halo_rows = 0;
    const int64_t K = cpu::plan_bands(s, in.shapes.data_ptr<int64_t>(), level.data(), halo_rows);
    const int64_t spread = K > 1 ? s.N * K * s.M : 0;
    at::Tensor halo = at::zeros({spread * halo_rows * s.D}, in.value.options());
    at::Tensor deferred = at::empty({spread * cpu::kDeferCapacity}, in.shapes.options());
    at::Tensor deferred_count = at::zeros({s.N * K * s.M}, in.shapes.options());
    AT_DISPATCH_FLOATING_TYPES(in.value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
      BackwardParams<scalar_t> p{s,
                                 in.value.data_ptr<scalar_t>(),
                                 in.shapes.data_ptr<int64_t>(),
                                 in.starts.data_ptr<int64_t>(),
                                 in.loc.data_ptr<scalar_t>(),
                                 in.attn.data_ptr<scalar_t>(),
                                 grad.data_ptr<scalar_t>(),
                                 grad_value.data_ptr<scalar_t>(),
                                 grad_loc.data_ptr<scalar_t>(),
                                 grad_attn.data_ptr<scalar_t>()};
      const cpu::BandScratch<scalar_t> bs{halo.data_ptr<scalar_t>(),
                                          deferred.data_ptr<int64_t>(),
                                          deferred_count.data_ptr<int64_t>()};
      at::parallel_for(0, s.N * K * s.M, 1,
                       [&](int64_t begin, int64_t end) { run_kernel(p, bs, begin, end); });
      if (K > 1) {
        at::parallel_for(0, s.N * s.M, 1,
                         [&](int64_t begin, int64_t end) { run_deferred(p, bs, begin, end); });
      }
    });
  } else {
    grad_loc.zero_();
    grad_attn.zero_();
  }
  const auto dt = value.scalar_type();
  return {grad_value.to(dt), grad_loc.to(dt), grad_attn.to(dt)};
}

}  // namespace ddetr
