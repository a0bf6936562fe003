// Runs the CUDA kernels (forward.cu, backward.cu) on the CPU under emu.h and compares
// them with the CPU kernels in float64: every dtype, odd and wide channel counts,
// unaligned storage, locations outside the map and non-finite, both backward paths (the
// deterministic one with int32 and int64 keys). Built and run by run.sh.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>
#include "cpu/kernels.h"
#include "cuda/launch.h"
using namespace ddetr;

template <typename K> struct Conv;
template <> struct Conv<float> { static float to(double x) { return float(x); } static double from(float x) { return x; } };
template <> struct Conv<double> { static double to(double x) { return x; } static double from(double x) { return x; } };
template <> struct Conv<cuda::Half> {
  static cuda::Half to(double x) { __half h = __float2half_rn(float(x)); cuda::Half r; memcpy(&r, &h, 2); return r; }
  static double from(cuda::Half x) { __half h; memcpy(&h, &x, 2); return __half2float(h); }
};
template <> struct Conv<cuda::BFloat16> {
  static cuda::BFloat16 to(double x) { __nv_bfloat16 h = __float2bfloat16_rn(float(x)); cuda::BFloat16 r; memcpy(&r, &h, 2); return r; }
  static double from(cuda::BFloat16 x) { __nv_bfloat16 h; memcpy(&h, &x, 2); return __bfloat162float(h); }
};

int failures = 0;
void check(const char* what, const std::vector<double>& got, const std::vector<double>& ref, double tol) {
  double maxref = 0, maxerr = 0; size_t bad = 0;
  for (double r : ref) if (std::isfinite(r)) maxref = std::max(maxref, std::abs(r));
  for (size_t i = 0; i < ref.size(); ++i) {
    const bool bothnan = std::isnan(got[i]) && std::isnan(ref[i]);
    double e = bothnan ? 0 : std::abs(got[i] - ref[i]);
    if (!(e <= tol * (1 + maxref))) { if (!bad) fprintf(stderr, "   first bad %s[%zu]: got %g ref %g\n", what, i, got[i], ref[i]); ++bad; }
    if (std::isfinite(e)) maxerr = std::max(maxerr, e);
  }
  if (bad) { ++failures; fprintf(stderr, "  FAIL %s: %zu bad of %zu, maxerr %g maxref %g\n", what, bad, ref.size(), maxerr, maxref); }
}

template <typename K>
void run_case(const char* name, int64_t N, int64_t Lq, int64_t M, int64_t D, std::vector<std::pair<int64_t,int64_t>> levels, int64_t P, int value_shift, double tol, unsigned seed,
              std::vector<int64_t> points = {}, bool discrete = false) {  // points: a ragged list (P unused)
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-1, 1), ul(-0.15, 1.15), ua(0, 1);
  Shape s; s.N = N; s.M = M; s.D = D; s.L = levels.size(); s.P = P; s.Lq = Lq; s.LP = s.L * P; s.discrete = discrete;
  if (!points.empty()) {
    s.ragged = true; s.P = 0; s.LP = 0;
    for (size_t l = 0; l < points.size(); ++l) s.level_end[l] = s.LP += points[l];
  }
  std::vector<int64_t> shapes, starts; int64_t S = 0;
  for (auto [h, w] : levels) { shapes.push_back(h); shapes.push_back(w); starts.push_back(S); S += h * w; }
  s.S = S;
  const int64_t nv = N * S * M * D, nl = N * Lq * M * s.LP * 2, na = nl / 2, no = N * Lq * M * D;
  using LK = location_t<K>;  // float32 locations beside 16-bit values
  std::vector<K> vbuf(nv + value_shift), attn(na), gout(no + value_shift);
  std::vector<LK> loc(nl);
  K* value = vbuf.data() + value_shift; K* g = gout.data() + value_shift;
  std::vector<double> rv(nv), rl(nl), ra(na), rg(no);
  for (int64_t i = 0; i < nv; ++i) { value[i] = Conv<K>::to(u(rng)); rv[i] = Conv<K>::from(value[i]); }
  for (int64_t i = 0; i < nl; ++i) { double x = ul(rng); if (i % 37 == 5) x = NAN; if (i % 53 == 7) x = INFINITY; if (i % 41 == 3) x = 0.5; if (discrete && i % 43 == 9) x = -INFINITY; loc[i] = Conv<LK>::to(x); rl[i] = Conv<LK>::from(loc[i]); }
  for (int64_t i = 0; i < na; ++i) { attn[i] = Conv<K>::to(ua(rng)); ra[i] = Conv<K>::from(attn[i]); }
  for (int64_t i = 0; i < no; ++i) { g[i] = Conv<K>::to(u(rng)); rg[i] = Conv<K>::from(g[i]); }
  // reference (CPU f64 kernels)
  const auto& tab = cpu::kernel_table_baseline();
  std::vector<double> ref_out(no), ref_gv(nv, 0.0), ref_gl(nl), ref_ga(na);
  // the CPU kernels' passes, as the glue runs them (cpu/ms_deform_attn_cpu.cpp)
  cpu::Job<double> job{};
  job.int32 = cpu::int32_indices(s);
  job.heads = s.M;  // every head in one walk of the queries (query_plan.h's heads_per_sweep)
  job.forward = ForwardParams<double>{s, rv.data(), shapes.data(), starts.data(), rl.data(), ra.data(), ref_out.data()};
  job.pass = cpu::Pass::kForward;
  tab.run_f64(job, 0, N * Lq);
  job.backward = BackwardParams<double>{s, rv.data(), shapes.data(), starts.data(), rl.data(), ra.data(), rg.data(), ref_gv.data(), discrete ? nullptr : ref_gl.data(), ref_ga.data()};
  job.pass = cpu::Pass::kBackward;
  tab.run_f64(job, 0, N * M);
  fprintf(stderr, "case %s D=%ld shift=%d%s\n", name, (long)D, value_shift, discrete ? " discrete" : "");
  // forward
  std::vector<K> obuf(no + value_shift); K* out = obuf.data() + value_shift;
  ForwardParams<K> kp{s, value, shapes.data(), starts.data(), loc.data(), attn.data(), out};
  if (cuda::forward(kp, nullptr) != cudaSuccess) { ++failures; fprintf(stderr, "forward launch failed\n"); }
  std::vector<double> o(no); for (int64_t i = 0; i < no; ++i) o[i] = Conv<K>::from(out[i]);
  check("output", o, ref_out, tol);
  // backward default
  using A = std::conditional_t<std::is_same_v<K, double>, double, float>;
  std::vector<A> accum(nv, A(0)); std::vector<LK> gl(nl); std::vector<K> ga(na), gv(nv);
  BackwardParams<K> kb{s, value, shapes.data(), starts.data(), loc.data(), attn.data(), g, nullptr, discrete ? nullptr : gl.data(), ga.data()};
  cuda::ValueGradTarget t; t.accum = accum.data();
  if (cuda::backward(kb, t, nullptr) != cudaSuccess) { ++failures; fprintf(stderr, "backward launch failed\n"); }
  std::vector<double> x(nv), y(nl), z(na);
  for (int64_t i = 0; i < nv; ++i) x[i] = Conv<K>::from(Conv<K>::to(accum[i]));
  for (int64_t i = 0; i < nl; ++i) y[i] = Conv<LK>::from(gl[i]);
  for (int64_t i = 0; i < na; ++i) z[i] = Conv<K>::from(ga[i]);
  check("grad_value", x, ref_gv, tol); check("grad_attn", z, ref_ga, tol);
  if (!discrete) check("grad_loc", y, ref_gl, tol);
  // deterministic
  for (int rep = 0; rep < 2; ++rep) {
    std::vector<LK> gl2(nl); std::vector<K> ga2(na), gv2(nv + value_shift); K* gvp = gv2.data() + value_shift;
    BackwardParams<K> kd = kb; kd.grad_loc = discrete ? nullptr : gl2.data(); kd.grad_attn = ga2.data(); kd.grad_value = gvp;
    const bool k64 = rep == 1;  // exercise both key widths
    const int64_t np = na;
    std::vector<int64_t> keys64(np); std::vector<int32_t> keys32(np);
    cuda::ValueGradTarget td; td.keys = k64 ? (void*)keys64.data() : (void*)keys32.data(); td.keys_int64 = k64;
    cuda::backward(kd, td, nullptr);
    std::vector<int64_t> perm(np); std::iota(perm.begin(), perm.end(), 0);
    auto key = [&](int64_t i) { return k64 ? keys64[i] : (int64_t)keys32[i]; };
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return key(a) < key(b); });
    std::vector<int64_t> sk64(np); std::vector<int32_t> sk32(np);
    for (int64_t i = 0; i < np; ++i) { sk64[i] = key(perm[i]); sk32[i] = (int32_t)key(perm[i]); }
    const int64_t nk = cuda::deterministic_num_keys(s);
    std::vector<int64_t> sb(nk, 0), se(nk, 0);
    cuda::deterministic_segments(k64 ? (void*)sk64.data() : (void*)sk32.data(), k64, np, nk, sb.data(), se.data(), nullptr);
    cuda::deterministic_grad_value(kd, perm.data(), sb.data(), se.data(), nullptr);
    for (int64_t i = 0; i < nv; ++i) x[i] = Conv<K>::from(gvp[i]);
    check("det grad_value", x, ref_gv, tol);
    if (memcmp(gl2.data(), gl.data(), nl * sizeof(LK)) || memcmp(ga2.data(), ga.data(), na * sizeof(K))) { ++failures; fprintf(stderr, "  FAIL det grad_loc/attn differ from default\n"); }
  }
}

int main() {
  std::vector<std::pair<int64_t,int64_t>> lv = {{4, 5}, {2, 3}, {1, 1}};
  for (int64_t D : {32, 1, 3, 8, 71, 257, 64}) {
    run_case<float>("f32", 2, 5, 2, D, lv, 3, 0, 2e-5, 1 + D);
    run_case<double>("f64", 2, 5, 2, D, lv, 3, 0, 1e-12, 2 + D);
    run_case<cuda::Half>("f16", 2, 5, 2, D, lv, 3, 0, 2e-2, 3 + D);
    run_case<cuda::BFloat16>("bf16", 2, 5, 2, D, lv, 3, 0, 8e-2, 4 + D);
  }
  run_case<float>("f32 misaligned", 2, 5, 2, 32, lv, 3, 1, 2e-5, 9);
  run_case<cuda::Half>("f16 misaligned", 2, 5, 2, 32, lv, 3, 3, 2e-2, 9);
  run_case<float>("f32 many points", 1, 3, 3, 16, {{3, 3}, {5, 2}}, 13, 0, 2e-5, 11);
  run_case<float>("f32 M=1 L=1 P=1", 3, 7, 1, 4, {{6, 7}}, 1, 0, 2e-5, 12);
  // The generalised form: ragged points per level, and the discrete method.
  for (int64_t D : {32, 3, 257}) {
    run_case<float>("f32 ragged", 2, 5, 2, D, lv, 0, 0, 2e-5, 20 + D, {3, 6, 1});
    run_case<double>("f64 ragged", 2, 5, 2, D, lv, 0, 0, 1e-12, 21 + D, {1, 8, 2});
    run_case<double>("f64 discrete", 2, 5, 2, D, lv, 3, 0, 1e-12, 22 + D, {}, true);
    run_case<double>("f64 ragged discrete", 2, 5, 2, D, lv, 0, 0, 1e-12, 23 + D, {3, 6, 1}, true);
    run_case<cuda::BFloat16>("bf16 ragged discrete", 2, 5, 2, D, lv, 0, 0, 8e-2, 24 + D, {2, 1, 4}, true);
  }
  fprintf(stderr, failures ? "FAILURES: %d\n" : "ALL OK\n", failures);
  return failures != 0;
}
