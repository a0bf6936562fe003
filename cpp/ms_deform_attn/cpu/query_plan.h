// The plan of a CPU call, made from the shapes alone (plain C++, compiled once:
// query_plan.cpp): the order in which the kernels walk the queries, and the index width.
//
// Walk: when the queries are the value's own pixels (the encoder, Lq == S), each level's map
// is cut into kBands bands of columns and the queries are walked band by band, each band's
// part of a level in column strips of kStrip pixels, so the value rows that neighbouring
// queries share stay in cache while a thread works through its chunks of the walk. Any other
// layout is walked in index order.
#pragma once
#include <cstdint>

#include "../params.h"

namespace ddetr {
namespace cpu {

// Fixed, not the thread count: the walk depends on the shapes alone, and so does the order of
// the backward's sums (isa/backward.h).
constexpr int64_t kBands = 2;
constexpr int64_t kStrip = 16;  // columns per strip

// One band of one level.
struct LevelBand {
  int64_t lo, hi;  // its columns [lo, hi)
  int64_t first;   // this (band, level)'s first position in the query walk
};

// Fills level[b * L + l] for every band (kBands * L entries); returns the number of bands in
// use (1 unless Lq == S).
int64_t plan_bands(const Shape& s, const int64_t* spatial_shapes, LevelBand* level);

// How many of its heads one walk of the queries takes along: all of them (M) when the points
// lie near their queries, as they do in a trained encoder, or the queries are not the value's
// pixels (a decoder's few hundred): the walk then keeps the rows it touches in cache, and
// neighbouring heads' parts of a row are adjacent in memory. One when an encoder's points
// spread out: the rows a walk touches are then one head's slice of value (and grad_value), an
// M-th of the memory, which the caches hold far better. "Near" is decided per pass from a
// sample of the points (`loc`, (N, Lq, M, LP, 2)); which one is taken changes no result.
// DDETR_CPU_HEADS=1 or =all forces one (for tests and measurements).
template <typename L>
int64_t heads_per_sweep(const Shape& s, const L* loc, const int64_t* spatial_shapes,
                        const int64_t* level_start, bool forward);

// Whether every row index fits int32_t (which vectorises better).
// DDETR_CPU_INDEX64=1 forces int64_t, so the tests reach that path without a value tensor of
// 2^30 rows.
bool int32_indices(const Shape& s);

}  // namespace cpu
}  // namespace ddetr
