// Where the CPU kernels walk and split an encoder-layout call (Lq == S: each query is a pixel
// of the value's own maps, sampling around it). Plain C++, compiled once (bands.cpp).
//
// Each level's map is cut into kBands bands of columns. The backward's work items are
// (batch, band, head): two threads then work on different value rows, where splitting by
// head alone makes both read and write every row (measured at the COCO encoder shape on 2
// cores: backward about 1.5x faster on 2 threads than on 1 when split by head, 1.9x by band).
// An item writes grad_value directly only in its band's own columns; corners up to
// kHaloColumns outside go to the band's halo buffer, added in afterwards, and a point with a
// corner farther out is deferred to that second pass. Every grad_value sum therefore runs in
// an order fixed by the shapes alone, whatever the number of threads.
//
// Any other layout (the decoder's queries) is one band with no halo: nothing is deferred.
#pragma once
#include <cstdint>

#include "../params.h"

namespace ddetr {
namespace cpu {

// Fixed, not the thread count, so that the sums' order (and bits) do not depend on threads.
constexpr int64_t kBands = 2;
constexpr int64_t kHaloColumns = 8;       // offsets of a few pixels stay within the halo
constexpr int64_t kStrip = 16;  // query walk: columns per strip (8, 32 no faster; 4, 64 slower)
constexpr int64_t kDeferCapacity = 1024;  // deferred points listed per item (then rescan)
constexpr int64_t kZoneBelow = 32;        // a band narrower than this writes via its buffer

// One band of one level. Its buffer holds, line by line, the halo columns, or on a level
// where the band is narrower than kZoneBelow columns (most of its points lie near an edge,
// and testing each corner costs more than the extra rows), the whole zone [halo_lo,
// halo_hi) including its own columns: the band then writes only there.
struct LevelBand {
  int64_t lo, hi;            // its own columns [lo, hi)
  int64_t halo_lo, halo_hi;  // its zone: the own columns and kHaloColumns either side
  int64_t zone;              // 1: the buffer holds the whole zone; 0: the halo columns only
  int64_t width;             // buffer columns per line
  int64_t halo_row0;         // this level's first row in the band's buffer
  int64_t turn0;             // this (band, level)'s first position in the query walk
};

// Fills level[b * L + l] for every band (kBands * L entries); returns the number of bands
// in use (1 unless Lq == S) and sets halo_rows, the rows of one band's halo buffer.
int64_t plan_bands(const Shape& s, const int64_t* spatial_shapes, LevelBand* level,
                   int64_t& halo_rows);

// The scratch of one backward call, allocated by the glue (K bands, halo_rows from plan_bands).
template <typename T>
struct BandScratch {
  T* halo;                    // (N, K, halo_rows, M, D), zero on entry
  int64_t* deferred;          // (N, K, M, kDeferCapacity): q * L * P + point
  int64_t* deferred_count;    // (N, K, M), zero on entry; above the capacity: rescan
};

}  // namespace cpu
}  // namespace ddetr
