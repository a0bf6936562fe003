// SIMD helpers: native vectors of this copy's instruction set, fixed-order lane sums, and a
// point's per-corner channel loop.
// Included by kernels_isa.cpp inside its per-ISA namespace.

// Native vectors of this copy's instruction set (GCC/Clang vector extensions), for the
// backward's per-corner dot products: written out, their sums take a few shuffles, where
// the compiler (not allowed to reassociate) adds the lanes one by one.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX2__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif
typedef float VecF __attribute__((vector_size(kVecBytes)));
typedef double VecD __attribute__((vector_size(kVecBytes)));
template <typename T> struct Simd;
template <> struct Simd<float> { using V = VecF; };
template <> struct Simd<double> { using V = VecD; };

template <typename V>
inline V vload(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));  // an unaligned vector load
  return v;
}
template <typename V>
inline void vstore(void* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// The lane sums of a0..a3, in a fixed order: lanes are folded pairwise, the four vectors
// together, so each step's shuffles and adds serve all four sums.
template <typename T, typename V>
inline void sum4(V a0, V a1, V a2, V a3, T out[4]) {
  constexpr int n = sizeof(V) / sizeof(T);
  static_assert(n == 2 || n == 4 || n == 8 || n == 16, "unexpected vector width");
  if constexpr (n == 2) {
    const V b01 = __builtin_shufflevector(a0, a1, 0, 2) + __builtin_shufflevector(a0, a1, 1, 3);
    const V b23 = __builtin_shufflevector(a2, a3, 0, 2) + __builtin_shufflevector(a2, a3, 1, 3);
    out[0] = b01[0], out[1] = b01[1], out[2] = b23[0], out[3] = b23[1];
  } else if constexpr (n == 4) {  // halves, then one lane per vector
    const V b01 = __builtin_shufflevector(a0, a1, 0, 1, 4, 5) + __builtin_shufflevector(a0, a1, 2, 3, 6, 7);
    const V b23 = __builtin_shufflevector(a2, a3, 0, 1, 4, 5) + __builtin_shufflevector(a2, a3, 2, 3, 6, 7);
    const V c = __builtin_shufflevector(b01, b23, 0, 2, 4, 6) + __builtin_shufflevector(b01, b23, 1, 3, 5, 7);
    for (int k = 0; k < 4; ++k) out[k] = c[k];
  } else if constexpr (n == 8) {  // halves, quarters, then pairs
    const V b01 = __builtin_shufflevector(a0, a1, 0, 1, 2, 3, 8, 9, 10, 11) +
                  __builtin_shufflevector(a0, a1, 4, 5, 6, 7, 12, 13, 14, 15);
    const V b23 = __builtin_shufflevector(a2, a3, 0, 1, 2, 3, 8, 9, 10, 11) +
                  __builtin_shufflevector(a2, a3, 4, 5, 6, 7, 12, 13, 14, 15);
    const V c = __builtin_shufflevector(b01, b23, 0, 1, 4, 5, 8, 9, 12, 13) +
                __builtin_shufflevector(b01, b23, 2, 3, 6, 7, 10, 11, 14, 15);
    const V d = c + __builtin_shufflevector(c, c, 1, 0, 3, 2, 5, 4, 7, 6);
    for (int k = 0; k < 4; ++k) out[k] = d[2 * k];
  } else {  // n == 16: halves, quarters, then two folds within groups of four
    const V b01 = __builtin_shufflevector(a0, a1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                  __builtin_shufflevector(a0, a1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const V b23 = __builtin_shufflevector(a2, a3, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                  __builtin_shufflevector(a2, a3, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const V c = __builtin_shufflevector(b01, b23, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
                __builtin_shufflevector(b01, b23, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    const V d = c + __builtin_shufflevector(c, c, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    const V e = d + __builtin_shufflevector(d, d, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    for (int k = 0; k < 4; ++k) out[k] = e[4 * k];
  }
}

// One point's share of the backward over the D channels: grad_value[corner k] +=
// aw[k] * grad_output, and dot[k] = <grad_output, value at corner k>.
template <typename T, int kD>
inline void corner_channels(const T* __restrict gout, const T* const v[4], T* const gv[4],
                            const T aw[4], int64_t D, T dot[4]) {
  using V = typename Simd<T>::V;
  constexpr int n = sizeof(V) / sizeof(T);
  if constexpr (kD > 0 && kD % n == 0) {
    V a0{}, a1{}, a2{}, a3{};
    for (int d = 0; d < kD; d += n) {
      const V gd = vload<V>(gout + d);
      a0 += gd * vload<V>(v[0] + d);
      a1 += gd * vload<V>(v[1] + d);
      a2 += gd * vload<V>(v[2] + d);
      a3 += gd * vload<V>(v[3] + d);
      vstore(gv[0] + d, vload<V>(gv[0] + d) + aw[0] * gd);
      vstore(gv[1] + d, vload<V>(gv[1] + d) + aw[1] * gd);
      vstore(gv[2] + d, vload<V>(gv[2] + d) + aw[2] * gd);
      vstore(gv[3] + d, vload<V>(gv[3] + d) + aw[3] * gd);
    }
    sum4<T>(a0, a1, a2, a3, dot);
  } else {
    const T* __restrict v0 = v[0], * __restrict v1 = v[1], * __restrict v2 = v[2], * __restrict v3 = v[3];
    T* __restrict g0 = gv[0], * __restrict g1 = gv[1], * __restrict g2 = gv[2], * __restrict g3 = gv[3];
    T d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
    for (int64_t d = 0; d < D; ++d) {
      const T gd = gout[d];
      d0 += gd * v0[d];
      d1 += gd * v1[d];
      d2 += gd * v2[d];
      d3 += gd * v3[d];
      g0[d] += aw[0] * gd;
      g1[d] += aw[1] * gd;
      g2[d] += aw[2] * gd;
      g3[d] += aw[3] * gd;
    }
    dot[0] = d0, dot[1] = d1, dot[2] = d2, dot[3] = d3;
  }
}
