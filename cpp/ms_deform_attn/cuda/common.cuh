// Pieces shared by the forward and backward kernels: element types, vector loads and
// stores, the thread-group layout, the per-point work and the launch configuration.
// Plain CUDA C++, no torch header.
//
// Thread mapping (both directions): one group of G lanes (G a power of two, 1..32, inside
// one warp) per (n, q, m); lane i handles V consecutive channels d = i*V .. i*V+V-1 (and
// d + G*V, ... in further passes when D > G*V). V is the widest vector that divides D and
// keeps every row aligned (16 bytes: 4 floats, 2 doubles, 8 halves), G the smallest power
// of two with G*V >= D. So D = 32 float32 runs as 8 lanes x float4, D = 32 half as
// 4 lanes x 8 halves (one 16-byte load), D = 1, 3, 71, 257 as 1, 4, 32, 32 lanes x 1.
//
// The per-point work (level, H, W, location, attention weight, bilinear corners) is done
// once: lane j of the group computes point p0 + j, puts its four (corner offset,
// attention x bilinear weight) pairs in shared memory, and every lane of the group then
// reads them back (a broadcast: all lanes of a group read the same address, and the slots
// are laid out in 16-byte arrays so that the groups of one warp hit distinct banks).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "../bilinear.h"
#include "../params.h"
#include "launch.h"

namespace ddetr {
namespace cuda {
namespace detail {

constexpr int kBlock = 256;  // threads per block; a multiple of every group size

// ------------------------------------------------------------------------- element types
// Storage tag (launch.h) -> CUDA type.
template <typename T>
struct DeviceType {
  using type = T;
};
template <>
struct DeviceType<Half> {
  using type = __half;
};
template <>
struct DeviceType<BFloat16> {
  using type = __nv_bfloat16;
};

}  // namespace detail
}  // namespace cuda

// The CUDA 16-bit types read float32 locations, like their storage tags (launch.h).
template <>
struct LocationType<__half> {
  using type = float;
};
template <>
struct LocationType<__nv_bfloat16> {
  using type = float;
};

namespace cuda {
namespace detail {

// Accumulation type: float for float / half / bfloat16, double for double.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccType<T>::type;

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ double from_acc<double>(double x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Loads through the read-only data cache; the kernels never write what they read this way.
template <typename T>
__device__ __forceinline__ acc_t<T> ldg_acc(const T* p) {
  return to_acc(__ldg(p));
}

// ------------------------------------------------------------------------ vector access
// V elements (V * sizeof(T) <= 16 bytes, aligned to that) move as one load or store of
// 32-bit words, split into elements with bit casts so that nothing goes through memory.
template <int Words>
struct WordVec;  // Words 32-bit words as one aligned load/store
template <>
struct WordVec<4> {
  using type = uint4;
  __device__ static void split(const uint4& r, unsigned (&w)[4]) { w[0] = r.x, w[1] = r.y, w[2] = r.z, w[3] = r.w; }
  __device__ static uint4 join(const unsigned (&w)[4]) { return make_uint4(w[0], w[1], w[2], w[3]); }
};
template <>
struct WordVec<2> {
  using type = uint2;
  __device__ static void split(const uint2& r, unsigned (&w)[2]) { w[0] = r.x, w[1] = r.y; }
  __device__ static uint2 join(const unsigned (&w)[2]) { return make_uint2(w[0], w[1]); }
};
template <>
struct WordVec<1> {
  using type = unsigned int;
  __device__ static void split(const unsigned& r, unsigned (&w)[1]) { w[0] = r; }
  __device__ static unsigned join(const unsigned (&w)[1]) { return w[0]; }
};

// Element i of a word array, in the accumulation type; and the reverse.
__device__ __forceinline__ float word_elem(const unsigned* w, int i, const float*) {
  return __uint_as_float(w[i]);
}
__device__ __forceinline__ double word_elem(const unsigned* w, int i, const double*) {
  return __hiloint2double(static_cast<int>(w[2 * i + 1]), static_cast<int>(w[2 * i]));
}
__device__ __forceinline__ float word_elem(const unsigned* w, int i, const __half*) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(w[i / 2] >> (16 * (i & 1)))));
}
__device__ __forceinline__ float word_elem(const unsigned* w, int i, const __nv_bfloat16*) {
  return __bfloat162float(
      __ushort_as_bfloat16(static_cast<unsigned short>(w[i / 2] >> (16 * (i & 1)))));
}
template <int V, int Words>
__device__ __forceinline__ void elems_to_words(const float (&x)[V], unsigned (&w)[Words],
                                               const float*) {
#pragma unroll
  for (int i = 0; i < V; ++i) w[i] = __float_as_uint(x[i]);
}
template <int V, int Words>
__device__ __forceinline__ void elems_to_words(const double (&x)[V], unsigned (&w)[Words],
                                               const double*) {
#pragma unroll
  for (int i = 0; i < V; ++i) {
    w[2 * i] = static_cast<unsigned>(__double2loint(x[i]));
    w[2 * i + 1] = static_cast<unsigned>(__double2hiint(x[i]));
  }
}
__device__ __forceinline__ unsigned bits16(float x, const __half*) {
  return __half_as_ushort(__float2half_rn(x));
}
__device__ __forceinline__ unsigned bits16(float x, const __nv_bfloat16*) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}
// The 16-bit types (those with a bits16): two rounded elements per word.
template <int V, int Words, typename H>
__device__ __forceinline__ auto elems_to_words(const float (&x)[V], unsigned (&w)[Words],
                                               const H* tag) -> decltype(bits16(0.f, tag), void()) {
#pragma unroll
  for (int i = 0; i < Words; ++i) w[i] = bits16(x[2 * i], tag) | (bits16(x[2 * i + 1], tag) << 16);
}

// V elements at p (aligned to V * sizeof(T)) as one load through the read-only cache,
// converted to the accumulation type.
template <typename T, int V>
__device__ __forceinline__ void load_vec(const T* p, acc_t<T> (&out)[V]) {
  constexpr int kBytes = static_cast<int>(sizeof(T)) * V;
  if constexpr (kBytes < 4) {  // a single 16-bit element
    out[0] = to_acc(__ldg(p));
  } else {
    constexpr int kWords = kBytes / 4;
    using IO = WordVec<kWords>;
    unsigned w[kWords];
    IO::split(__ldg(reinterpret_cast<const typename IO::type*>(p)), w);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = word_elem(w, i, p);
  }
}

template <typename T, int V>
__device__ __forceinline__ void store_vec(T* p, const acc_t<T> (&in)[V]) {
  constexpr int kBytes = static_cast<int>(sizeof(T)) * V;
  if constexpr (kBytes < 4) {
    *p = from_acc<T>(in[0]);
  } else {
    constexpr int kWords = kBytes / 4;
    using IO = WordVec<kWords>;
    unsigned w[kWords];
    elems_to_words<V, kWords>(in, w, static_cast<const T*>(p));
    *reinterpret_cast<typename IO::type*>(p) = IO::join(w);
  }
}

// p[0..V) += x atomically (p aligned to V * 4 bytes, or 16 when V >= 4). Hopper has
// vector float atomics (one float4 instruction instead of four); older GPUs add each float.
template <int V>
__device__ __forceinline__ void atomic_add_vec(float* p, const float (&x)[V]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (V % 4 == 0) {
#pragma unroll
    for (int i = 0; i < V; i += 4) {
      atomicAdd(reinterpret_cast<float4*>(p + i), make_float4(x[i], x[i + 1], x[i + 2], x[i + 3]));
    }
  } else if constexpr (V % 2 == 0) {
#pragma unroll
    for (int i = 0; i < V; i += 2) {
      atomicAdd(reinterpret_cast<float2*>(p + i), make_float2(x[i], x[i + 1]));
    }
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) atomicAdd(p + i, x[i]);
  }
#else
#pragma unroll
  for (int i = 0; i < V; ++i) atomicAdd(p + i, x[i]);
#endif
}

template <int V>
__device__ __forceinline__ void atomic_add_vec(double* p, const double (&x)[V]) {
#pragma unroll
  for (int i = 0; i < V; ++i) atomicAdd(p + i, x[i]);
}

// ------------------------------------------------------------------------ thread groups
// Lanes of the calling thread's group within its warp (groups never straddle warps).
__device__ __forceinline__ unsigned group_mask(int G) {
  if (G >= 32) return 0xffffffffu;
  const int first = (static_cast<int>(threadIdx.x) & 31) & ~(G - 1);
  return ((1u << G) - 1u) << first;
}

// Shared-memory slots, one per thread, holding the four (offset, weight) pairs of the point
// that thread computed. Struct of 16-byte arrays: conflict-free broadcast reads.
template <typename A>
struct PointSlots;

template <>
struct PointSlots<float> {
  float4 w[kBlock];
  longlong2 o01[kBlock];
  longlong2 o23[kBlock];
  __device__ __forceinline__ void put(int i, const float (&aw)[4], const int64_t (&off)[4]) {
    w[i] = make_float4(aw[0], aw[1], aw[2], aw[3]);
    o01[i] = make_longlong2(off[0], off[1]);
    o23[i] = make_longlong2(off[2], off[3]);
  }
  __device__ __forceinline__ void get(int i, float (&aw)[4], int64_t (&off)[4]) const {
    const float4 a = w[i];
    const longlong2 b = o01[i], c = o23[i];
    aw[0] = a.x, aw[1] = a.y, aw[2] = a.z, aw[3] = a.w;
    off[0] = b.x, off[1] = b.y, off[2] = c.x, off[3] = c.y;
  }
};

template <>
struct PointSlots<double> {
  double2 w01[kBlock];
  double2 w23[kBlock];
  longlong2 o01[kBlock];
  longlong2 o23[kBlock];
  __device__ __forceinline__ void put(int i, const double (&aw)[4], const int64_t (&off)[4]) {
    w01[i] = make_double2(aw[0], aw[1]);
    w23[i] = make_double2(aw[2], aw[3]);
    o01[i] = make_longlong2(off[0], off[1]);
    o23[i] = make_longlong2(off[2], off[3]);
  }
  __device__ __forceinline__ void get(int i, double (&aw)[4], int64_t (&off)[4]) const {
    const double2 a = w01[i], b = w23[i];
    const longlong2 c = o01[i], d = o23[i];
    aw[0] = a.x, aw[1] = a.y, aw[2] = b.x, aw[3] = b.y;
    off[0] = c.x, off[1] = c.y, off[2] = d.x, off[3] = d.y;
  }
};

// --------------------------------------------------------------------- per-point work
// a / b for non-negative a, b, in 32 bits when both fit (64-bit division is a long
// instruction sequence on the GPU).
__device__ __forceinline__ int64_t div_nonneg(int64_t a, int64_t b) {
  if (a <= INT32_MAX && b <= INT32_MAX) {
    return static_cast<int64_t>(static_cast<uint32_t>(a) / static_cast<uint32_t>(b));
  }
  return a / b;
}

// One sampling point: the owner lane keeps this for the gradient of its point.
template <typename A>
struct PointWork {
  Corners<A> c;
  A a;         // attention weight
  int64_t H, W, level;
  bool valid;  // some corner lies on the map
};

// Computes point `pt` (0 <= pt < LP) of the (n, q, m) whose locations start at `loc` and
// attention weights at `attn`: fills `w`, and for the group the four corners as element
// offsets from value[n, 0, m, 0] (-1 when off the map) and attention x sample weights (a
// discrete point has one corner, of weight 1).
template <typename T, typename A = acc_t<T>>
__device__ __forceinline__ void compute_point(const location_t<T>* loc, const T* attn, const int64_t* shapes,
                                              const int64_t* starts, const Shape& s, int64_t MD,
                                              int64_t pt, PointWork<A>& w, A (&aw)[4],
                                              int64_t (&off)[4]) {
  w.level = s.ragged ? s.level_of(pt) : div_nonneg(pt, s.P);
  w.H = __ldg(shapes + 2 * w.level);
  w.W = __ldg(shapes + 2 * w.level + 1);
  const int64_t start = __ldg(starts + w.level);
  const A x = ldg_acc(loc + 2 * pt), y = ldg_acc(loc + 2 * pt + 1);
  w.a = ldg_acc(attn + pt);
  w.valid = sample_corners<A>(s.discrete, x, y, w.H, w.W, w.c);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const bool on = w.valid && w.c.offset[k] >= 0;
    off[k] = on ? (start + w.c.offset[k]) * MD : -1;
    aw[k] = on ? w.a * w.c.weight[k] : A(0);
  }
}

// Start of `level` in the per-(n, m) cell numbering of the deterministic backward: cells
// (y0, x0) in [-1, H-1] x [-1, W-1], (H + 1) * (W + 1) per level.
__device__ __forceinline__ int64_t cell_start(const int64_t* shapes, int64_t level) {
  int64_t c = 0;
  for (int64_t l = 0; l < level; ++l) c += (__ldg(shapes + 2 * l) + 1) * (__ldg(shapes + 2 * l + 1) + 1);
  return c;
}

// ------------------------------------------------------------------------- host side
inline bool is_aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Widest V (elements per lane) with V | D, V * sizeof(T) <= 16 and every pointer aligned
// to V * sizeof(T). `acc_ptr` (may be null) is a float/double buffer indexed like value,
// which then needs min(V * sizeof(acc), 16)-byte alignment for vector atomics.
template <typename T>
int pick_vec(int64_t D, std::initializer_list<const void*> ptrs, const void* acc_ptr = nullptr,
             size_t acc_size = 4) {
  for (int V = static_cast<int>(16 / sizeof(T)); V > 1; V /= 2) {
    if (D % V != 0) continue;
    bool ok = true;
    for (const void* p : ptrs) ok = ok && is_aligned(p, V * sizeof(T));
    if (acc_ptr) {
      const size_t a = V * acc_size < 16 ? V * acc_size : 16;
      ok = ok && is_aligned(acc_ptr, a);
    }
    if (ok) return V;
  }
  return 1;
}

// Smallest power of two G <= 32 with G * V >= D.
inline int pick_group(int64_t D, int V) {
  int G = 1;
  while (G < 32 && static_cast<int64_t>(G) * V < D) G *= 2;
  return G;
}

// Blocks for `groups` groups of G lanes; the kernels loop (grid-stride, 64-bit) over what
// a grid of at most 2^31 - 1 blocks cannot cover at once.
inline unsigned grid_blocks(int64_t groups, int G) {
  const int64_t threads = groups * G;
  const int64_t blocks = (threads + kBlock - 1) / kBlock;
  const int64_t cap = 0x7fffffff;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

// Calls f(std::integral_constant<int, V>{}) for the runtime V, instantiating only the
// widths that fit 16 bytes of T.
template <typename T, typename F>
cudaError_t with_vec(int V, F&& f) {
  constexpr int kMax = static_cast<int>(16 / sizeof(T));
  if constexpr (kMax >= 8) {
    if (V == 8) return f(std::integral_constant<int, 8>{});
  }
  if constexpr (kMax >= 4) {
    if (V == 4) return f(std::integral_constant<int, 4>{});
  }
  if (V == 2) return f(std::integral_constant<int, 2>{});
  return f(std::integral_constant<int, 1>{});
}

// Params over storage tags -> params over the CUDA types (same sizes and layouts).
template <typename D, typename S>
ForwardParams<D> retag(const ForwardParams<S>& p) {
  static_assert(sizeof(D) == sizeof(S), "same element size");
  return {p.shape,
          reinterpret_cast<const D*>(p.value),
          p.spatial_shapes,
          p.level_start,
          p.loc,  // location_t<D> is location_t<S>
          reinterpret_cast<const D*>(p.attn),
          reinterpret_cast<D*>(p.output)};
}

template <typename D, typename S>
BackwardParams<D> retag(const BackwardParams<S>& p) {
  static_assert(sizeof(D) == sizeof(S), "same element size");
  return {p.shape,
          reinterpret_cast<const D*>(p.value),
          p.spatial_shapes,
          p.level_start,
          p.loc,  // location_t<D> is location_t<S>
          reinterpret_cast<const D*>(p.attn),
          reinterpret_cast<const D*>(p.grad_output),
          reinterpret_cast<D*>(p.grad_value),
          p.grad_loc,
          reinterpret_cast<D*>(p.grad_attn)};
}

}  // namespace detail
}  // namespace cuda
}  // namespace ddetr
