#include "worker/model/amx_kernels.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "worker/model/cpu_isa.h"
#include "worker/model/row_groups.h"

#if defined(__x86_64__) && defined(__linux__) && defined(__AVX512F__) && \
    defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__AMX_TILE__) && \
    defined(__AMX_INT8__)
#define LLORCH_AMX_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "worker/model/avx512_helpers.h"
#endif

// Compiled with -ffp-contract=off: only the fma intrinsics written here fuse.

namespace llorch {
namespace amx_kernels {

#ifdef LLORCH_AMX_KERNELS
namespace {

using Layout = RowGroups<kGroupRows>;
constexpr int64_t kBlock = Layout::kBlock;
constexpr int64_t kScaleBytes = Layout::kScaleBytes;

using avx512::Broadcast4;

inline __m512 LoadHalf16(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// ---------------------------------------------------------------------------
// AVX-512 VNNI: one group of 16 weight rows (a lane each) against kCols
// activation rows; each weight chunk is loaded once for all of them.

// Integer block dots of 16 rows with activation block y (exact).
template <GgmlType kType>
inline __m512i BlockDots(const uint8_t* quants, const ActBlock& y, const __m512i* w_chunks,
                         __m512i comp) {
  __m512i sum = _mm512_setzero_si512();
  if constexpr (kType == GgmlType::kQ8_0) {
    // vpdpbusd multiplies unsigned by signed bytes: (y + 128) * w, then the
    // 128 * sum(w) the offset added (comp) is taken away.
    const __m512i off = _mm512_set1_epi8(static_cast<char>(0x80));
    for (int k = 0; k < 8; ++k) {
      sum = _mm512_dpbusd_epi32(sum, _mm512_xor_si512(Broadcast4(y.qs + 4 * k), off),
                                w_chunks[k]);
    }
    return _mm512_sub_epi32(sum, comp);
  } else {
    // w_chunks[k]: unsigned nibbles of elements 4k..4k+3 of each row.
    for (int k = 0; k < 8; ++k) sum = _mm512_dpbusd_epi32(sum, w_chunks[k], Broadcast4(y.qs + 4 * k));
    (void)quants;
    (void)comp;
    return sum;
  }
}

// Blocks ahead that the kernels ask the cache for. A pass of several
// activation rows spends 30-60 cycles on a block, so 3 blocks ahead is under
// the memory latency of weights that are not in the cache (a model's weights,
// one layer after another): 12 (~4 KiB of Q4_1) measured best of 3-32 in
// `llorch bench` on SmolLM2, 2 to 8 jobs 15-25% faster; quant_matmul_bench,
// whose matrix stays in the L3 cache, had put it at 3. A one-row pass and
// the tiles, with 4 streams or many rows in flight, keep 3 (longer measured
// no better or slower).
constexpr int64_t kPrefetchBlocks = 3;
constexpr int64_t kMultiRowPrefetchBlocks = 12;

// Asks the cache for the `bytes` at p (prefetches do not fault: past the
// matrix they are dropped).
inline void PrefetchLines(const uint8_t* p, int64_t bytes) {
  for (int64_t line = 0; line < bytes; line += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p + line), _MM_HINT_T0);
  }
}

// The group block kAhead blocks after `block` (past a group's end: the
// next group's first).
template <GgmlType kType, int64_t kAhead = kPrefetchBlocks>
inline void PrefetchAhead(const uint8_t* block) {
  constexpr int64_t kBlockBytes = Layout::GroupBlockBytes(kType);
  PrefetchLines(block + kAhead * kBlockBytes, kBlockBytes);
}

template <GgmlType kType, int kCols>
void VnniGroup(const uint8_t* group, int64_t num_blocks, const ActBlock* act0,
               const int32_t* act_sum0, int64_t act_stride, float* out, int64_t out_stride) {
  constexpr int64_t kBlockBytes = Layout::GroupBlockBytes(kType);
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  const __m512i off = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[kCols];
  for (int c = 0; c < kCols; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t b = 0; b < num_blocks; ++b, group += kBlockBytes) {
    const uint8_t* quants = group + Layout::HeaderBytes(kType);
    PrefetchAhead<kType, kMultiRowPrefetchBlocks>(group);
    __m512i w[8];
    __m512i comp = _mm512_setzero_si512();
    if constexpr (kType == GgmlType::kQ8_0) {
      for (int k = 0; k < 8; ++k) {
        w[k] = _mm512_loadu_si512(quants + 64 * k);
        comp = _mm512_dpbusd_epi32(comp, off, w[k]);
      }
    } else {
      for (int k = 0; k < 4; ++k) {
        const __m512i bytes = _mm512_loadu_si512(quants + 64 * k);
        w[k] = _mm512_and_si512(bytes, low_mask);
        w[k + 4] = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low_mask);
      }
    }
    const __m512 dw = LoadHalf16(group);
    for (int c = 0; c < kCols; ++c) {
      const ActBlock& y = act0[c * act_stride + b];
      __m512i dot = BlockDots<kType>(quants, y, w, comp);
      if constexpr (kType == GgmlType::kQ4_0) {
        dot = _mm512_sub_epi32(dot, _mm512_set1_epi32(8 * act_sum0[c * act_stride + b]));
      }
      acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_set1_ps(y.d)),
                               acc[c]);
      if constexpr (kType == GgmlType::kQ4_1) {
        acc[c] = _mm512_fmadd_ps(LoadHalf16(group + kScaleBytes), _mm512_set1_ps(y.s), acc[c]);
      }
    }
  }
  for (int c = 0; c < kCols; ++c) _mm512_storeu_ps(out + c * out_stride, acc[c]);
}

// One activation row against kGroups groups at once: kGroups streams of
// weights in flight instead of one (as llama.cpp's kernel reads 4 tiles),
// which the memory system serves faster in a decode step.
template <GgmlType kType, int kGroups>
void VnniOneRow(const uint8_t* group0, int64_t num_blocks, const ActBlock* act,
                const int32_t* act_sum, float* out) {
  constexpr int64_t kBlockBytes = Layout::GroupBlockBytes(kType);
  const int64_t group_bytes = num_blocks * kBlockBytes;
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  const __m512i off = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[kGroups];
  for (int j = 0; j < kGroups; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < num_blocks; ++b) {
    const ActBlock& y = act[b];
    __m512i ys[8];  // activation bytes 4k..4k+3 in every lane (Q8_0: + 128)
    for (int k = 0; k < 8; ++k) {
      ys[k] = Broadcast4(y.qs + 4 * k);
      if constexpr (kType == GgmlType::kQ8_0) ys[k] = _mm512_xor_si512(ys[k], off);
    }
    const __m512 dx = _mm512_set1_ps(y.d);
    for (int j = 0; j < kGroups; ++j) {
      const uint8_t* block = group0 + j * group_bytes + b * kBlockBytes;
      PrefetchAhead<kType>(block);  // each of the kGroups streams
      const uint8_t* quants = block + Layout::HeaderBytes(kType);
      __m512i dot = _mm512_setzero_si512();
      if constexpr (kType == GgmlType::kQ8_0) {
        __m512i comp = _mm512_setzero_si512();
        for (int k = 0; k < 8; ++k) {
          const __m512i w = _mm512_loadu_si512(quants + 64 * k);
          comp = _mm512_dpbusd_epi32(comp, off, w);
          dot = _mm512_dpbusd_epi32(dot, ys[k], w);
        }
        dot = _mm512_sub_epi32(dot, comp);
      } else {
        for (int k = 0; k < 4; ++k) {
          const __m512i bytes = _mm512_loadu_si512(quants + 64 * k);
          dot = _mm512_dpbusd_epi32(dot, _mm512_and_si512(bytes, low_mask), ys[k]);
          dot = _mm512_dpbusd_epi32(
              dot, _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low_mask), ys[k + 4]);
        }
        if constexpr (kType == GgmlType::kQ4_0) {
          dot = _mm512_sub_epi32(dot, _mm512_set1_epi32(8 * act_sum[b]));
        }
      }
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(LoadHalf16(block), dx),
                               acc[j]);
      if constexpr (kType == GgmlType::kQ4_1) {
        acc[j] = _mm512_fmadd_ps(LoadHalf16(block + kScaleBytes), _mm512_set1_ps(y.s), acc[j]);
      }
    }
  }
  for (int j = 0; j < kGroups; ++j) _mm512_storeu_ps(out + j * kGroupRows, acc[j]);
}

template <GgmlType kType>
void VnniGroupsOf(const uint8_t* packed, int64_t rows, int64_t num_blocks, const ActBlock* act,
                  const int32_t* act_sum, int64_t n, float* out, int64_t g0, int64_t g1) {
  constexpr int64_t kBlockBytes = Layout::GroupBlockBytes(kType);
  if (n == 1) {
    int64_t g = g0;
    for (; g + 4 <= g1; g += 4) {
      VnniOneRow<kType, 4>(packed + g * num_blocks * kBlockBytes, num_blocks, act, act_sum,
                           out + g * kGroupRows);
    }
    for (; g < g1; ++g) {
      VnniOneRow<kType, 1>(packed + g * num_blocks * kBlockBytes, num_blocks, act, act_sum,
                           out + g * kGroupRows);
    }
    return;
  }
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* group = packed + g * num_blocks * kBlockBytes;
    int64_t t = 0;
    // Rows 8 at a time (each block's weights spread once for 8; 15-19%
    // faster than twice 4 at 8 rows), then 4, then the rest.
    for (; t + 8 <= n; t += 8) {
      VnniGroup<kType, 8>(group, num_blocks, act + t * num_blocks, act_sum + t * num_blocks,
                          num_blocks, out + t * rows + g * kGroupRows, rows);
    }
    for (; t + 4 <= n; t += 4) {
      VnniGroup<kType, 4>(group, num_blocks, act + t * num_blocks, act_sum + t * num_blocks,
                          num_blocks, out + t * rows + g * kGroupRows, rows);
    }
    const ActBlock* a = act + t * num_blocks;
    const int32_t* s = act_sum + t * num_blocks;
    float* o = out + t * rows + g * kGroupRows;
    switch (n - t) {
      case 3: VnniGroup<kType, 3>(group, num_blocks, a, s, num_blocks, o, rows); break;
      case 2: VnniGroup<kType, 2>(group, num_blocks, a, s, num_blocks, o, rows); break;
      case 1: VnniGroup<kType, 1>(group, num_blocks, a, s, num_blocks, o, rows); break;
      default: break;
    }
  }
}

// ---------------------------------------------------------------------------
// AMX: per block, int8 tiles give the 16 x 16 integer dots of 16 activation
// rows with 16 weight rows; the float steps follow on AVX-512 in order.

// Tiles 0, 1: weights (8 rows of 4 elements x 16 columns); 2, 3: activations
// (16 rows x 32 bytes); 4-7: int32 dots (16 x 16).
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// `k`: elements per dot (32; Q6_K's sub-blocks: 16).
void ConfigureTiles(int k = kBlock) {
  TileConfig config = {};
  config.palette_id = 1;
  for (int t = 0; t < 2; ++t) {
    config.rows[t] = static_cast<uint8_t>(k / 4);
    config.colsb[t] = 4 * kGroupRows;
  }
  for (int t = 2; t < 4; ++t) {
    config.rows[t] = kTileRows;
    config.colsb[t] = static_cast<uint16_t>(k);
  }
  for (int t = 4; t < 8; ++t) {
    config.rows[t] = kTileRows;
    config.colsb[t] = 4 * kGroupRows;
  }
  // GCC 12's _tile_loadconfig tells the compiler it reads 8 bytes (its asm
  // operand is *(const void**)config): stores past them may be dropped as
  // dead (a test program lost rows and colsb, and every tile instruction
  // faulted). The empty asm takes the address and clobbers memory: they stay.
  __asm__ volatile("" : : "r"(&config) : "memory");
  _tile_loadconfig(&config);
}

// A weight block of 16 rows as a B tile (signed bytes; Q4_1: unsigned).
// Q8_0's chunks are the tile already; nibbles are spread to bytes, low
// nibbles of chunk k to tile row k, high ones to row k + 4.
template <GgmlType kType>
inline const void* WeightTile(const uint8_t* group_block, int8_t* scratch) {
  const uint8_t* quants = group_block + Layout::HeaderBytes(kType);
  if constexpr (kType == GgmlType::kQ8_0) {
    (void)scratch;
    return quants;
  } else {
    const __m512i low_mask = _mm512_set1_epi8(0x0F);
    const __m512i bias = _mm512_set1_epi8(kType == GgmlType::kQ4_0 ? 8 : 0);
    for (int k = 0; k < 4; ++k) {
      const __m512i bytes = _mm512_loadu_si512(quants + 64 * k);
      const __m512i lo = _mm512_sub_epi8(_mm512_and_si512(bytes, low_mask), bias);
      const __m512i hi =
          _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(bytes, 4), low_mask), bias);
      _mm512_store_si512(scratch + 64 * k, lo);
      _mm512_store_si512(scratch + 64 * (k + 4), hi);
    }
    return scratch;
  }
}

// A 64-byte aligned buffer of at least `bytes`, this thread's, kept between
// calls. Plain malloc, no std::vector: this file is compiled for AVX-512, and
// a template instantiated here (a weak symbol) could be the copy the linker
// keeps for the whole program, AVX-512 code run on every CPU.
// `slot` 0: spread weights; 1: activation tiles; 2: their scales.
int8_t* SpreadBuffer(int64_t bytes, int slot = 0) {
  struct Buffer {
    void* data = nullptr;
    int64_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[3];
  Buffer& buffer = buffers[slot];
  if (buffer.size < bytes) {
    std::free(buffer.data);
    buffer.data = std::aligned_alloc(64, static_cast<size_t>((bytes + 63) / 64 * 64));
    if (buffer.data == nullptr) std::abort();
    buffer.size = bytes;
  }
  return static_cast<int8_t*>(buffer.data);
}

// One block of 16 activation rows, as an A tile reads it (512 contiguous
// bytes, not 16 rows a whole activation row apart) with the rows' scales.
struct ActTileBlock {
  int8_t qs[kTileRows][32];
  float d[kTileRows];
  float s[kTileRows];
};

// Activation rows [m0, m0 + 16 * num_tiles) as num_tiles x num_blocks tile
// blocks (tile t's block b at out[t * num_blocks + b]).
void PackActTiles(const ActBlock* act, int64_t num_blocks, int64_t m0, int64_t num_tiles,
                  ActTileBlock* out) {
  for (int64_t t = 0; t < num_tiles; ++t) {
    for (int m = 0; m < kTileRows; ++m) {
      const ActBlock* row = act + (m0 + t * kTileRows + m) * num_blocks;
      for (int64_t b = 0; b < num_blocks; ++b) {
        ActTileBlock& tile = out[t * num_blocks + b];
        std::memcpy(tile.qs[m], row[b].qs, 32);
        tile.d[m] = row[b].d;
        tile.s[m] = row[b].s;
      }
    }
  }
}

// 16 activation rows (from m0; the rows past n are padding) x one group of
// 16 weight rows over all blocks, the 16 x 16 sums held in registers.
// `tiles`: block b's B tile at tiles + b * tile_stride (Q8_0: the packed
// block's quants; Q4_0/Q4_1: the group spread to bytes by SpreadGroup).
template <GgmlType kType>
__attribute__((noinline)) void TileSingle(const uint8_t* group, const int8_t* tiles,
                                          int64_t tile_stride, int64_t num_blocks,
                                          const ActTileBlock* y, int64_t m0, int64_t m_rows,
                                          float* out, int64_t rows) {
  constexpr int64_t kBlockBytes = Layout::GroupBlockBytes(kType);
  __m512 acc[kTileRows];
#pragma GCC unroll 16
  for (int m = 0; m < kTileRows; ++m) acc[m] = _mm512_setzero_ps();
  alignas(64) int32_t dots[kTileRows * kGroupRows];
  for (int64_t b = 0; b < num_blocks; ++b) {
    // Q8_0's tiles are the packed blocks; Q4_0/Q4_1's were spread (cached).
    if constexpr (kType == GgmlType::kQ8_0) PrefetchAhead<kType>(group + b * kBlockBytes);
    _tile_loadd(0, tiles + b * tile_stride, 4 * kGroupRows);
    _tile_loadd(2, y[b].qs, 32);
    _tile_zero(4);
    if constexpr (kType == GgmlType::kQ4_1) {
      _tile_dpbsud(4, 2, 0);
    } else {
      _tile_dpbssd(4, 2, 0);
    }
    _tile_stored(4, dots, 4 * kGroupRows);
    const uint8_t* block = group + b * kBlockBytes;
    const __m512 dw = LoadHalf16(block);
    const __m512 mw = kType == GgmlType::kQ4_1 ? LoadHalf16(block + kScaleBytes) : dw;
#pragma GCC unroll 16
    for (int m = 0; m < kTileRows; ++m) {
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(dots + m * kGroupRows)),
                               _mm512_mul_ps(dw, _mm512_set1_ps(y[b].d[m])), acc[m]);
      if constexpr (kType == GgmlType::kQ4_1) {
        acc[m] = _mm512_fmadd_ps(mw, _mm512_set1_ps(y[b].s[m]), acc[m]);
      }
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < kTileRows; ++m) {
    if (m < m_rows) _mm512_storeu_ps(out + (m0 + m) * rows, acc[m]);
  }
}

// At most this many activation rows share a tile between two blocks (Q8_0's
// last partial tile of a batch).
constexpr int64_t kPairedRows = kTileRows / 2;

// Up to 8 activation rows of two consecutive blocks b, b + 1 as two A tiles
// that share one C tile (TilePairsQ8, Q8_0): qs rows 0-7 hold block b of
// the activation rows, rows 8-15 zeros, rows 16-23 block b + 1. Tile
// "first" (qs rows 0-15) meets block b's weights, tile "second" (rows 8-23)
// block b + 1's: the C tile's rows 0-7 are the block b dots, rows 8-15 the
// block b + 1 dots, so a few rows use all 16 rows of the tile store and
// float steps they pay for.
// d[r]: row r's block b scale; d[8 + r]: its block b + 1 scale.
struct ActPairBlock {
  int8_t qs[3 * kPairedRows][32];
  float d[kTileRows];
};

// Activation rows [m0, m0 + m_rows) (m_rows <= 8) as ceil(num_blocks / 2)
// pair blocks; missing rows and the block past an odd num_blocks are zero.
void PackActPairs(const ActBlock* act, int64_t num_blocks, int64_t m0, int64_t m_rows,
                  ActPairBlock* out) {
  const int64_t num_pairs = (num_blocks + 1) / 2;
  std::memset(out, 0, static_cast<size_t>(num_pairs) * sizeof(ActPairBlock));
  for (int64_t m = 0; m < m_rows; ++m) {
    const ActBlock* row = act + (m0 + m) * num_blocks;
    for (int64_t b = 0; b < num_blocks; ++b) {
      ActPairBlock& pair = out[b / 2];
      const int64_t slot = b % 2 * kPairedRows + m;  // row of C, of d and s
      std::memcpy(pair.qs[b % 2 * 2 * kPairedRows + m], row[b].qs, 32);
      pair.d[slot] = row[b].d;
    }
  }
}

// TileSingle for Q8_0 and at most 8 live activation rows, two blocks per
// tile store. Each row still takes block b's float step, then block b + 1's:
// the bits of TileSingle and VNNI. (Q4_0/Q4_1 gain nothing over VNNI from
// it: they pay for spreading their weights besides.)
__attribute__((noinline)) void TilePairsQ8(const uint8_t* group, int64_t num_blocks,
                                           const ActPairBlock* y, int64_t m0, int64_t m_rows,
                                           float* out, int64_t rows) {
  constexpr GgmlType kType = GgmlType::kQ8_0;
  constexpr int64_t kBlockBytes = Layout::GroupBlockBytes(kType);
  const uint8_t* quants = group + Layout::HeaderBytes(kType);  // block b's B tile
  __m512 acc[kPairedRows];
#pragma GCC unroll 8
  for (int m = 0; m < kPairedRows; ++m) acc[m] = _mm512_setzero_ps();
  alignas(64) int32_t dots[kTileRows * kGroupRows];
  for (int64_t b = 0; b < num_blocks; b += 2) {
    PrefetchAhead<kType>(group + b * kBlockBytes);
    PrefetchAhead<kType>(group + (b + 1) * kBlockBytes);
    const ActPairBlock& pair = y[b / 2];
    const bool second = b + 1 < num_blocks;
    _tile_loadd(0, quants + b * kBlockBytes, 4 * kGroupRows);
    _tile_loadd(2, pair.qs[0], 32);
    _tile_zero(4);
    _tile_dpbssd(4, 2, 0);
    if (second) {
      _tile_loadd(1, quants + (b + 1) * kBlockBytes, 4 * kGroupRows);
      _tile_loadd(3, pair.qs[kPairedRows], 32);
      _tile_dpbssd(4, 3, 1);
    }
    _tile_stored(4, dots, 4 * kGroupRows);
    for (int half = 0; half < (second ? 2 : 1); ++half) {
      const __m512 dw = LoadHalf16(group + (b + half) * kBlockBytes);
#pragma GCC unroll 8
      for (int m = 0; m < kPairedRows; ++m) {
        const int c = half * kPairedRows + m;
        acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(dots + c * kGroupRows)),
                                 _mm512_mul_ps(dw, _mm512_set1_ps(pair.d[c])), acc[m]);
      }
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < kPairedRows; ++m) {
    if (m < m_rows) _mm512_storeu_ps(out + (m0 + m) * rows, acc[m]);
  }
}

template <GgmlType kType>
void TileGroupPairsOf(const uint8_t* packed, int64_t rows, int64_t num_blocks,
                      const ActBlock* act, int64_t n, float* out, int64_t p0, int64_t p1) {
  constexpr int64_t kBlockBytes = Layout::GroupBlockBytes(kType);
  // Activation rows in chunks that stay in L2 while every group passes.
  constexpr int64_t kChunkRows = 128;
  // Each call configures the tiles: other code on this thread (a library's
  // own AMX kernels) may have changed them.
  ConfigureTiles();
  // Q4_0/Q4_1: a group's nibbles spread to bytes once per chunk, for every
  // activation tile of the chunk (spreading per tile cost more than the
  // products: the tile load waits for the stores).
  int8_t* spread = nullptr;
  if constexpr (kType != GgmlType::kQ8_0) spread = SpreadBuffer(num_blocks * 512);
  auto* act_tiles = reinterpret_cast<ActTileBlock*>(
      SpreadBuffer(kChunkRows / kTileRows * num_blocks * sizeof(ActTileBlock), /*slot=*/1));
  // Q8_0, a last tile of at most 8 live rows: two blocks per tile store.
  const int64_t whole = n / kTileRows * kTileRows;
  const int64_t pair_rows =
      kType == GgmlType::kQ8_0 && n - whole <= kPairedRows ? n - whole : 0;
  ActPairBlock* act_pairs = nullptr;
  if (pair_rows > 0) {
    act_pairs = reinterpret_cast<ActPairBlock*>(SpreadBuffer(
        (num_blocks + 1) / 2 * static_cast<int64_t>(sizeof(ActPairBlock)), /*slot=*/2));
    PackActPairs(act, num_blocks, whole, pair_rows, act_pairs);
  }
  for (int64_t c0 = 0; c0 < n; c0 += kChunkRows) {
    const int64_t c1 = std::min(n, c0 + kChunkRows);
    PackActTiles(act, num_blocks, c0, (c1 - c0 + kTileRows - 1) / kTileRows, act_tiles);
    for (int64_t g = 2 * p0; g < 2 * p1; ++g) {
      const uint8_t* group = packed + g * num_blocks * kBlockBytes;
      const int8_t* tiles;
      int64_t tile_stride;
      if constexpr (kType == GgmlType::kQ8_0) {
        tiles = reinterpret_cast<const int8_t*>(group + Layout::HeaderBytes(kType));
        tile_stride = kBlockBytes;
      } else {
        for (int64_t b = 0; b < num_blocks; ++b) {
          PrefetchAhead<kType>(group + b * kBlockBytes);
          WeightTile<kType>(group + b * kBlockBytes, spread + 512 * b);
        }
        tiles = spread;
        tile_stride = 512;
      }
      for (int64_t m0 = c0; m0 < c1; m0 += kTileRows) {
        if constexpr (kType == GgmlType::kQ8_0) {
          if (m0 == whole && pair_rows > 0) {
            TilePairsQ8(group, num_blocks, act_pairs, m0, pair_rows, out + g * kGroupRows, rows);
            continue;
          }
        }
        TileSingle<kType>(group, tiles, tile_stride, num_blocks,
                          act_tiles + (m0 - c0) / kTileRows * num_blocks, m0,
                          std::min(kTileRows, n - m0), out + g * kGroupRows, rows);
      }
    }
  }
  _tile_release();
}


// ---------------------------------------------------------------------------
// K-quants: per block of 256, sub-blocks of 32 (Q6_K: 16) elements; integer
// dots scaled by the sub-block scales and summed exactly, then the float
// steps of llama.cpp's AMX order.

template <GgmlType kType>
constexpr int kSubElems = kType == GgmlType::kQ6_K ? 16 : 32;
template <GgmlType kType>
constexpr int kNumSubs = kKBlock / kSubElems<kType>;

// The tiles' units of a block of 256: 64 elements (K) per tile product,
// the sub-block scales already in the weights, split into parts whose
// products with the quants are bytes:
// - Q4_K/Q5_K (dpbsud, quants unsigned): scale = 2^shift * hi + lo, q * lo
//   and q * hi both bytes (Q4_K: q < 16, lo < 16, hi < 4; Q5_K: q < 32,
//   lo, hi < 8); S = 2^shift * (A . B_hi) + A . B_lo.
// - Q6_K (dpbssd, quants q - 32 in [-32, 31], scales in [-128, 127]):
//   balanced base-7 digits, scale = 49 d2 + 7 d1 + d0 with |d| <= 3, so
//   |(q - 32) d| <= 96; S = 7 (7 (A . B_2) + A . B_1) + A . B_0.
// Every product and sum is an exact integer: S equals the sum over
// sub-blocks of scale * (quants . activations).
inline constexpr int kTileK = 64;
inline constexpr int kNumUnits = kKBlock / kTileK;
template <GgmlType kType>
constexpr int kParts = kType == GgmlType::kQ6_K ? 3 : 2;
template <GgmlType kType>
constexpr int kScaleShift = kType == GgmlType::kQ4_K ? 4 : 3;
inline constexpr int64_t kBTileBytes = kTileK / 4 * 64;  // 16 rows of 64 bytes
template <GgmlType kType>
constexpr int64_t kSpreadBlockBytes = kNumUnits * kParts<kType> * kBTileBytes;

inline __m512i ShiftRight16(__m512i v, int n) {
  return _mm512_srl_epi16(v, _mm_cvtsi32_si128(n));
}

// The unsigned quants of sub-block s of 16 rows: w[r] holds elements
// 4r..4r+3 of each row (r < 8; Q6_K: r < 4, quants still + 32).
template <GgmlType kType>
inline void SubBlockWeights(const uint8_t* group_block, int s, __m512i* w) {
  constexpr KLayout l = KLayoutOf(kType);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  if constexpr (kType == GgmlType::kQ6_K) {
    const int h = s / 8, k = (s % 8) / 2, half = s % 2;
    for (int r = 0; r < 4; ++r) {
      const __m512i ql = _mm512_loadu_si512(group_block + l.qs +
                                            64 * (16 * h + 8 * (k % 2) + 4 * half + r));
      const __m512i qh = _mm512_loadu_si512(group_block + l.qh + 64 * (8 * h + 4 * half + r));
      const __m512i low = _mm512_and_si512(ShiftRight16(ql, 4 * (k / 2)), low4);
      const __m512i high = _mm512_slli_epi16(
          _mm512_and_si512(ShiftRight16(qh, 2 * k), _mm512_set1_epi8(3)), 4);
      w[r] = _mm512_or_si512(low, high);
    }
  } else {
    for (int r = 0; r < 8; ++r) {
      const __m512i qs = _mm512_loadu_si512(group_block + l.qs + 64 * (8 * (s / 2) + r));
      w[r] = _mm512_and_si512(ShiftRight16(qs, 4 * (s % 2)), low4);
      if constexpr (kType == GgmlType::kQ5_K) {
        const __m512i qh = _mm512_loadu_si512(group_block + l.qh + 64 * r);
        w[r] = _mm512_or_si512(w[r], _mm512_slli_epi16(_mm512_and_si512(ShiftRight16(qh, s),
                                                                        _mm512_set1_epi8(1)),
                                                       4));
      }
    }
  }
}

// Sub-block s's scales of the 16 rows as int32 lanes.
template <GgmlType kType>
inline __m512i SubBlockScales(const uint8_t* group_block, int s) {
  const __m128i bytes = _mm_loadu_si128(
      reinterpret_cast<const __m128i*>(group_block + KLayoutOf(kType).scales + 16 * s));
  return kType == GgmlType::kQ6_K ? _mm512_cvtepi8_epi32(bytes) : _mm512_cvtepu8_epi32(bytes);
}

// M = sum over sub-blocks j of min_j * (sum of activation sub-block j).
// The 8 sub-blocks' mins of the 16 rows, in pairs: lane r of pair[k] holds
// row r's mins of sub-blocks 2k and 2k + 1 as two int16 (mins < 64), so that
// M = sum of min_j * (activation sum of sub-block j) takes 4 vpdpwssd (the
// activation sums, |sum| <= 32 * 127, fit int16 too; every product and sum
// exact).
struct GroupMins {
  __m512i pair[4];
  explicit GroupMins(const uint8_t* mins) {
    for (int k = 0; k < 4; ++k) {
      const __m512i even = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(mins + 16 * (2 * k))));
      const __m512i odd = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(mins + 16 * (2 * k + 1))));
      pair[k] = _mm512_or_si512(even, _mm512_slli_epi32(odd, 16));
    }
  }
  // The activation block's sub-block sums (of 32), as TimesPairs takes them:
  // pairs[k] holds sums 2k (low 16 bits) and 2k + 1 (high).
  static void SumPairs(const Q8KBlock& a, int32_t* pairs) {
    for (int k = 0; k < 4; ++k) {
      const int32_t even = a.bsums[4 * k] + a.bsums[4 * k + 1];
      const int32_t odd = a.bsums[4 * k + 2] + a.bsums[4 * k + 3];
      pairs[k] = static_cast<int32_t>(static_cast<uint16_t>(even) |
                                      static_cast<uint32_t>(odd) << 16);
    }
  }
  // M = sum over sub-blocks j of min_j * sum_j, exact, for the 16 rows.
  __m512i TimesPairs(const int32_t* pairs) const {
    __m512i m = _mm512_setzero_si512();
    for (int k = 0; k < 4; ++k) m = _mm512_dpwssd_epi32(m, pair[k], _mm512_set1_epi32(pairs[k]));
    return m;
  }
  __m512i TimesSums(const Q8KBlock& a) const {
    int32_t pairs[4];
    SumPairs(a, pairs);
    return TimesPairs(pairs);
  }
};

inline __m512i MinsTimesSums(const uint8_t* mins, const Q8KBlock& a) {
  return GroupMins(mins).TimesSums(a);
}

// acc = fma(S, d_w * d_x, acc), then (Q4_K/Q5_K) acc = fnmadd(M, dmin_w * d_x, acc).
template <GgmlType kType>
inline __m512 KBlockStep(const uint8_t* group_block, const Q8KBlock& a, __m512i sum,
                         __m512 acc) {
  constexpr KLayout l = KLayoutOf(kType);
  const __m512 dx = _mm512_set1_ps(a.d);
  acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum),
                        _mm512_mul_ps(LoadHalf16(group_block + l.d), dx), acc);
  if constexpr (kType != GgmlType::kQ6_K) {
    acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(MinsTimesSums(group_block + l.mins, a)),
                           _mm512_mul_ps(LoadHalf16(group_block + l.dmin), dx), acc);
  }
  return acc;
}

// Calls body(s, w) for every sub-block s of a group block, w as
// SubBlockWeights gives it; Q6_K's bytes are loaded once for the four
// sub-blocks that share them.
template <GgmlType kType, class Body>
inline void ForEachSubBlock(const uint8_t* group_block, const Body& body) {
  if constexpr (kType == GgmlType::kQ6_K) {
    constexpr KLayout l = KLayoutOf(kType);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i two_bits = _mm512_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
      for (int half = 0; half < 2; ++half) {
        __m512i ql[2][4], qh[4];
        for (int r = 0; r < 4; ++r) {
          for (int p = 0; p < 2; ++p) {
            ql[p][r] = _mm512_loadu_si512(group_block + l.qs +
                                          64 * (16 * h + 8 * p + 4 * half + r));
          }
          qh[r] = _mm512_loadu_si512(group_block + l.qh + 64 * (8 * h + 4 * half + r));
        }
        for (int k = 0; k < 4; ++k) {
          __m512i w[4];
          for (int r = 0; r < 4; ++r) {
            const __m512i low = _mm512_and_si512(ShiftRight16(ql[k % 2][r], 4 * (k / 2)), low4);
            const __m512i high =
                _mm512_slli_epi16(_mm512_and_si512(ShiftRight16(qh[r], 2 * k), two_bits), 4);
            w[r] = _mm512_or_si512(low, high);
          }
          body(8 * h + 2 * k + half, w);
        }
      }
    }
  } else {
    for (int s = 0; s < kNumSubs<kType>; ++s) {
      __m512i w[8];
      SubBlockWeights<kType>(group_block, s, w);
      body(s, w);
    }
  }
}

// kGroups groups of 16 rows (group_bytes apart) against kCols activation
// rows, VNNI: several weight streams in flight for one row (a decode step),
// or each weight load shared by several rows.
template <GgmlType kType, int kGroups, int kCols>
void VnniGroupK(const uint8_t* group0, int64_t group_bytes, int64_t num_blocks,
                const Q8KBlock* act0, int64_t act_stride, float* out, int64_t out_stride) {
  constexpr KLayout l = KLayoutOf(kType);
  constexpr int kRows = kSubElems<kType> / 4;
  __m512 acc[kGroups][kCols];
  for (int j = 0; j < kGroups; ++j) {
    for (int c = 0; c < kCols; ++c) acc[j][c] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < num_blocks; ++b) {
    for (int j = 0; j < kGroups; ++j) {
      const uint8_t* group_block = group0 + j * group_bytes + b * l.bytes;
      if constexpr (kCols == 1) {
        // One activation row (memory-bound): the next block asked for now
        // (TinyLlama Q6_K decode 17 -> 21 tok/s; passes of several rows
        // showed no gain).
        PrefetchLines(group_block + l.bytes, l.bytes);
      }
      __m512i sum[kCols];
      for (int c = 0; c < kCols; ++c) sum[c] = _mm512_setzero_si512();
      ForEachSubBlock<kType>(group_block, [&](int s, const __m512i* w) {
        const __m512i scale = SubBlockScales<kType>(group_block, s);
        for (int c = 0; c < kCols; ++c) {
          const Q8KBlock& a = act0[c * act_stride + b];
          __m512i dot = _mm512_setzero_si512();
          for (int r = 0; r < kRows; ++r) {
            dot = _mm512_dpbusd_epi32(dot, w[r], Broadcast4(a.q + kSubElems<kType> * s + 4 * r));
          }
          if constexpr (kType == GgmlType::kQ6_K) {  // quants - 32
            dot = _mm512_sub_epi32(dot, _mm512_set1_epi32(32 * a.bsums[s]));
          }
          sum[c] = _mm512_add_epi32(sum[c], _mm512_mullo_epi32(dot, scale));
        }
      });
      for (int c = 0; c < kCols; ++c) {
        acc[j][c] = KBlockStep<kType>(group_block, act0[c * act_stride + b], sum[c], acc[j][c]);
      }
    }
  }
  for (int j = 0; j < kGroups; ++j) {
    for (int c = 0; c < kCols; ++c) {
      _mm512_storeu_ps(out + c * out_stride + j * kGroupRows, acc[j][c]);
    }
  }
}

template <GgmlType kType>
void VnniGroupsKOf(const uint8_t* packed, int64_t rows, int64_t num_blocks, const Q8KBlock* act,
                   int64_t n, float* out, int64_t g0, int64_t g1) {
  const int64_t group_bytes = num_blocks * KLayoutOf(kType).bytes;
  if (n == 1) {
    int64_t g = g0;
    for (; g + 4 <= g1; g += 4) {
      VnniGroupK<kType, 4, 1>(packed + g * group_bytes, group_bytes, num_blocks, act, num_blocks,
                              out + g * kGroupRows, rows);
    }
    for (; g < g1; ++g) {
      VnniGroupK<kType, 1, 1>(packed + g * group_bytes, group_bytes, num_blocks, act, num_blocks,
                              out + g * kGroupRows, rows);
    }
    return;
  }
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* group = packed + g * group_bytes;
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) {
      VnniGroupK<kType, 1, 8>(group, group_bytes, num_blocks, act + t * num_blocks, num_blocks,
                              out + t * rows + g * kGroupRows, rows);
    }
    for (; t + 4 <= n; t += 4) {
      VnniGroupK<kType, 1, 4>(group, group_bytes, num_blocks, act + t * num_blocks, num_blocks,
                              out + t * rows + g * kGroupRows, rows);
    }
    const Q8KBlock* a = act + t * num_blocks;
    float* o = out + t * rows + g * kGroupRows;
    switch (n - t) {
      case 3: VnniGroupK<kType, 1, 3>(group, group_bytes, num_blocks, a, num_blocks, o, rows); break;
      case 2: VnniGroupK<kType, 1, 2>(group, group_bytes, num_blocks, a, num_blocks, o, rows); break;
      case 1: VnniGroupK<kType, 1, 1>(group, group_bytes, num_blocks, a, num_blocks, o, rows); break;
      default: break;
    }
  }
}

// The quants of activation rows [m0, m0 + 16 * num_tiles) as A tiles: tile
// t, block b, unit u is 16 rows x kTileK contiguous bytes at
// out + ((t * num_blocks + b) * kNumUnits + u) * 16 * kTileK (not 16 rows
// a whole Q8_K row apart).
// Beside them, per tile and block, the 16 rows' scales and (Q4_K, Q5_K)
// sub-block sums in GroupMins::SumPairs form, computed once for every group.
struct KActScales {
  float d[kTileRows];
  int32_t pairs[kTileRows][4];
};

template <GgmlType kType>
void PackActTilesK(const Q8KBlock* act, int64_t num_blocks, int64_t m0, int64_t num_tiles,
                   int8_t* out, KActScales* scales) {
  constexpr int kUnit = kTileK;
  for (int64_t t = 0; t < num_tiles; ++t) {
    for (int m = 0; m < kTileRows; ++m) {
      const Q8KBlock* row = act + (m0 + t * kTileRows + m) * num_blocks;
      for (int64_t b = 0; b < num_blocks; ++b) {
        int8_t* tiles = out + (t * num_blocks + b) * kKBlock * kTileRows;
        for (int u = 0; u < kNumUnits; ++u) {
          std::memcpy(tiles + (u * kTileRows + m) * kUnit, row[b].q + u * kUnit, kUnit);
        }
        KActScales& block_scales = scales[t * num_blocks + b];
        block_scales.d[m] = row[b].d;
        if constexpr (kType != GgmlType::kQ6_K) GroupMins::SumPairs(row[b], block_scales.pairs[m]);
      }
    }
  }
}

// 16 activation rows (from m0; rows past n are padding) x one group of 16
// weight rows over all blocks. `tiles`: the group's sub-block B tiles, spread
// by SpreadGroupK. Per block the scaled sub-block dots add up in 16
// registers; the float sums wait in L1 between blocks.
template <GgmlType kType>
__attribute__((noinline)) void TileSingleK(const uint8_t* group, const int8_t* tiles,
                                           int64_t num_blocks, const int8_t* act_tiles,
                                           const KActScales* act_scales, int64_t m0,
                                           int64_t m_rows, float* out, int64_t rows) {
  constexpr KLayout l = KLayoutOf(kType);
  constexpr int64_t kUnitBytes = kTileRows * kTileK;  // one A tile
  alignas(64) int32_t dots[kParts<kType>][kTileRows * kGroupRows];
  alignas(64) float acc[kTileRows][kGroupRows] = {};
  for (int64_t b = 0; b < num_blocks; ++b) {
    const KActScales& y = act_scales[b];
    const uint8_t* group_block = group + b * l.bytes;
    const int8_t* block_tiles = tiles + b * kSpreadBlockBytes<kType>;
    const int8_t* block_act = act_tiles + b * kNumUnits * kUnitBytes;
    // The parts' sums on tiles 4, 5 (and 6), one A tile per unit.
    _tile_zero(4);
    _tile_zero(5);
    if constexpr (kParts<kType> == 3) _tile_zero(6);
    for (int u = 0; u < kNumUnits; ++u) {
      const int8_t* unit_tiles = block_tiles + u * kParts<kType> * kBTileBytes;
      _tile_loadd(2, block_act + u * kUnitBytes, kTileK);
      _tile_loadd(0, unit_tiles, 4 * kGroupRows);
      _tile_loadd(1, unit_tiles + kBTileBytes, 4 * kGroupRows);
      if constexpr (kType == GgmlType::kQ6_K) {
        _tile_dpbssd(4, 2, 0);
        _tile_dpbssd(5, 2, 1);
        _tile_loadd(0, unit_tiles + 2 * kBTileBytes, 4 * kGroupRows);
        _tile_dpbssd(6, 2, 0);
      } else {
        _tile_dpbsud(4, 2, 0);
        _tile_dpbsud(5, 2, 1);
      }
    }
    _tile_stored(4, dots[0], 4 * kGroupRows);
    _tile_stored(5, dots[1], 4 * kGroupRows);
    if constexpr (kParts<kType> == 3) _tile_stored(6, dots[kParts<kType> - 1], 4 * kGroupRows);
    __m512i sum[kTileRows];
#pragma GCC unroll 16
    for (int m = 0; m < kTileRows; ++m) {
      const __m512i c0 = _mm512_load_si512(dots[0] + m * kGroupRows);
      const __m512i c1 = _mm512_load_si512(dots[1] + m * kGroupRows);
      if constexpr (kType == GgmlType::kQ6_K) {
        const __m512i c2 = _mm512_load_si512(dots[kParts<kType> - 1] + m * kGroupRows);
        // 7 x = 8 x - x.
        const __m512i t = _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(c2, 3), c2), c1);
        sum[m] = _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(t, 3), t), c0);
      } else {
        sum[m] = _mm512_add_epi32(_mm512_slli_epi32(c1, kScaleShift<kType>), c0);
      }
    }
    const __m512 dw = LoadHalf16(group_block + l.d);
    if constexpr (kType == GgmlType::kQ6_K) {
#pragma GCC unroll 16
      for (int m = 0; m < kTileRows; ++m) {
        const __m512 dx = _mm512_set1_ps(y.d[m]);
        _mm512_store_ps(acc[m], _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[m]),
                                                _mm512_mul_ps(dw, dx), _mm512_load_ps(acc[m])));
      }
    } else {
      // KBlockStep's steps, the mins widened once for the 16 rows.
      const GroupMins mins(group_block + l.mins);
      const __m512 dmin = LoadHalf16(group_block + l.dmin);
#pragma GCC unroll 16
      for (int m = 0; m < kTileRows; ++m) {
        const __m512 dx = _mm512_set1_ps(y.d[m]);
        __m512 a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[m]), _mm512_mul_ps(dw, dx),
                                   _mm512_load_ps(acc[m]));
        a = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins.TimesPairs(y.pairs[m])),
                             _mm512_mul_ps(dmin, dx), a);
        _mm512_store_ps(acc[m], a);
      }
    }
  }
  for (int64_t m = 0; m < m_rows; ++m) {
    std::memcpy(out + (m0 + m) * rows, acc[m], sizeof(acc[m]));
  }
}

// Bytes q * s for unsigned bytes q and per-column part scales s (each
// dword's four bytes are one column's; q * s < 256): `even` holds s in the
// even bytes of each dword, `odd` in the odd ones.
inline __m512i TimesPartScale(__m512i q, __m512i even, __m512i odd) {
  const __m512i even_products = _mm512_maddubs_epi16(q, even);  // q[2i] * s, as int16
  const __m512i odd_products = _mm512_maddubs_epi16(q, odd);    // q[2i + 1] * s
  return _mm512_or_si512(even_products, _mm512_slli_epi16(odd_products, 8));
}

// Q6_K's scales as balanced base-7 digits (16 lanes, scales in
// [-128, 127]): d[0] + 7 d[1] + 49 d[2] = scale, each digit in [-3, 3].
// floor(n / 7) = ((n + 133) * 9363 >> 16) - 19 for n in [-133, 300]
// (9363 / 65536 exceeds 1/7 by less than 1/7 / 300), one 16-bit multiply.
inline void Base7Digits(__m512i scale, __m512i* d) {
  const __m512i three = _mm512_set1_epi32(3);
  __m512i rest = scale;
  for (int k = 0; k < 2; ++k) {
    const __m512i n = _mm512_add_epi32(rest, three);
    const __m512i q = _mm512_sub_epi32(
        _mm512_mulhi_epu16(_mm512_add_epi32(n, _mm512_set1_epi32(133)),
                           _mm512_set1_epi32(9363)),
        _mm512_set1_epi32(19));
    // d = n - 7 q - 3, in [-3, 3]; the rest is q.
    d[k] = _mm512_sub_epi32(
        _mm512_sub_epi32(n, _mm512_sub_epi32(_mm512_slli_epi32(q, 3), q)), three);
    rest = q;
  }
  d[2] = rest;
}

// Bytes (q - 32) * d for unsigned quants q < 64 and a per-column digit d in
// [-3, 3] (each dword's four bytes are one column's): `even`/`odd` hold d in
// the even/odd bytes of each dword, `bias` 32 d in each int16.
struct DigitFactors {
  __m512i even, odd, bias;
  explicit DigitFactors(__m512i d) {
    const __m512i d_byte = _mm512_and_si512(d, _mm512_set1_epi32(0xFF));
    even = _mm512_or_si512(d_byte, _mm512_slli_epi32(d_byte, 16));
    odd = _mm512_slli_epi32(even, 8);
    const __m512i d32 = _mm512_and_si512(_mm512_slli_epi32(d, 5), _mm512_set1_epi32(0xFFFF));
    bias = _mm512_or_si512(d32, _mm512_slli_epi32(d32, 16));
  }
  __m512i Times(__m512i q) const {
    const __m512i even_products = _mm512_sub_epi16(_mm512_maddubs_epi16(q, even), bias);
    const __m512i odd_products = _mm512_sub_epi16(_mm512_maddubs_epi16(q, odd), bias);
    return _mm512_or_si512(_mm512_and_si512(even_products, _mm512_set1_epi16(0xFF)),
                           _mm512_slli_epi16(odd_products, 8));
  }
};

// A group's B tiles in order (block, unit, part): unit u holds sub-blocks
// of its 64 elements (tile row r: elements 4r..4r + 3), times each part of
// their scales (see kParts).
template <GgmlType kType>
void SpreadGroupK(const uint8_t* group, int64_t num_blocks, int8_t* tiles) {
  constexpr int kRowsPerSub = kSubElems<kType> / 4;  // tile rows per sub-block
  for (int64_t b = 0; b < num_blocks; ++b) {
    const uint8_t* group_block = group + b * KLayoutOf(kType).bytes;
    int8_t* block_tiles = tiles + b * kSpreadBlockBytes<kType>;
    for (int s = 0; s < kNumSubs<kType>; ++s) {
      const __m512i scale = SubBlockScales<kType>(group_block, s);
      __m512i w[8];
      SubBlockWeights<kType>(group_block, s, w);
      const int unit = s * kSubElems<kType> / kTileK;
      const int row0 = (s * kSubElems<kType> % kTileK) / 4;
      int8_t* unit_tiles = block_tiles + unit * kParts<kType> * kBTileBytes;
      if constexpr (kType == GgmlType::kQ6_K) {
        __m512i digits[3];
        Base7Digits(scale, digits);
        for (int part = 0; part < 3; ++part) {
          const DigitFactors factors(digits[part]);
          for (int r = 0; r < kRowsPerSub; ++r) {
            _mm512_store_si512(unit_tiles + part * kBTileBytes + 64 * (row0 + r),
                               factors.Times(w[r]));
          }
        }
      } else {
        const __m512i parts[2] = {
            _mm512_and_si512(scale, _mm512_set1_epi32((1 << kScaleShift<kType>) - 1)),
            _mm512_srli_epi32(scale, kScaleShift<kType>)};
        for (int part = 0; part < 2; ++part) {
          const __m512i even = _mm512_or_si512(parts[part], _mm512_slli_epi32(parts[part], 16));
          const __m512i odd = _mm512_slli_epi32(even, 8);
          for (int r = 0; r < kRowsPerSub; ++r) {
            _mm512_store_si512(unit_tiles + part * kBTileBytes + 64 * (row0 + r),
                               TimesPartScale(w[r], even, odd));
          }
        }
      }
    }
  }
}

template <GgmlType kType>
void TileGroupPairsKOf(const uint8_t* packed, int64_t rows, int64_t num_blocks,
                       const Q8KBlock* act, int64_t n, float* out, int64_t p0, int64_t p1) {
  constexpr int64_t kBytes = KLayoutOf(kType).bytes;
  constexpr int64_t kChunkRows = 128;  // activation rows kept in L2 while the groups pass
  int8_t* tiles = SpreadBuffer(num_blocks * kSpreadBlockBytes<kType>);
  int8_t* act_tiles = SpreadBuffer(kChunkRows * num_blocks * kKBlock, /*slot=*/1);
  auto* act_scales = reinterpret_cast<KActScales*>(SpreadBuffer(
      kChunkRows / kTileRows * num_blocks * static_cast<int64_t>(sizeof(KActScales)),
      /*slot=*/2));
  ConfigureTiles(kTileK);
  for (int64_t c0 = 0; c0 < n; c0 += kChunkRows) {
    const int64_t c1 = std::min(n, c0 + kChunkRows);
    PackActTilesK<kType>(act, num_blocks, c0, (c1 - c0 + kTileRows - 1) / kTileRows, act_tiles,
                         act_scales);
    for (int64_t g = 2 * p0; g < 2 * p1; ++g) {
      const uint8_t* group = packed + g * num_blocks * kBytes;
      SpreadGroupK<kType>(group, num_blocks, tiles);
      for (int64_t m0 = c0; m0 < c1; m0 += kTileRows) {
        TileSingleK<kType>(group, tiles, num_blocks, act_tiles + (m0 - c0) * num_blocks * kKBlock,
                           act_scales + (m0 - c0) / kTileRows * num_blocks, m0,
                           std::min(kTileRows, n - m0),
                           out + g * kGroupRows, rows);
      }
    }
  }
  _tile_release();
}

bool CpuHasAmxInt8() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool amx_tile = (edx >> 24) & 1;
  const bool amx_int8 = (edx >> 25) & 1;
  if (!amx_tile || !amx_int8) return false;
  // The kernel must save tile state (XCR0 bits 17 and 18) ...
  uint32_t xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if (((xcr0_lo >> 17) & 3) != 3) return false;
  // ... and let this process use tile data, as ggml asks it too.
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

}  // namespace

bool VnniSupported() {
  static const bool supported =
      CpuIsaAllowed(CpuIsa::kAvx512) && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512vnni");
  return supported;
}

bool TilesSupported() {
  static const bool supported =
      VnniSupported() && CpuIsaAllowed(CpuIsa::kAmx) && CpuHasAmxInt8();
  return supported;
}

// Calls body(std::integral_constant<GgmlType, type>) for the three block
// types (kKQuants: the three K-quants); anything else aborts.
template <bool kKQuants, class Body>
void WithType(GgmlType type, const Body& body) {
  using T = GgmlType;
  switch (type) {
    case kKQuants ? T::kQ4_K : T::kQ4_0:
      return body(std::integral_constant<T, kKQuants ? T::kQ4_K : T::kQ4_0>{});
    case kKQuants ? T::kQ5_K : T::kQ4_1:
      return body(std::integral_constant<T, kKQuants ? T::kQ5_K : T::kQ4_1>{});
    case kKQuants ? T::kQ6_K : T::kQ8_0:
      return body(std::integral_constant<T, kKQuants ? T::kQ6_K : T::kQ8_0>{});
    default:
      std::abort();
  }
}

void VnniGroups(GgmlType type, const uint8_t* packed, int64_t rows, int64_t num_blocks,
                const ActBlock* act, const int32_t* act_sum, int64_t n, float* out, int64_t g0,
                int64_t g1) {
  WithType<false>(type, [&](auto t) {
    VnniGroupsOf<t.value>(packed, rows, num_blocks, act, act_sum, n, out, g0, g1);
  });
}

void TileGroupPairs(GgmlType type, const uint8_t* packed, int64_t rows, int64_t num_blocks,
                    const ActBlock* act, int64_t n, float* out, int64_t p0, int64_t p1) {
  WithType<false>(type, [&](auto t) {
    TileGroupPairsOf<t.value>(packed, rows, num_blocks, act, n, out, p0, p1);
  });
}

void VnniGroupsK(GgmlType type, const uint8_t* packed, int64_t rows, int64_t num_blocks,
                 const Q8KBlock* act, int64_t n, float* out, int64_t g0, int64_t g1) {
  WithType<true>(type, [&](auto t) {
    VnniGroupsKOf<t.value>(packed, rows, num_blocks, act, n, out, g0, g1);
  });
}

void TileGroupPairsK(GgmlType type, const uint8_t* packed, int64_t rows, int64_t num_blocks,
                     const Q8KBlock* act, int64_t n, float* out, int64_t p0, int64_t p1) {
  WithType<true>(type, [&](auto t) {
    TileGroupPairsKOf<t.value>(packed, rows, num_blocks, act, n, out, p0, p1);
  });
}

#else  // !LLORCH_AMX_KERNELS

bool VnniSupported() { return false; }
bool TilesSupported() { return false; }
void VnniGroups(GgmlType, const uint8_t*, int64_t, int64_t, const ActBlock*, const int32_t*,
                int64_t, float*, int64_t, int64_t) {
  std::abort();
}
void TileGroupPairs(GgmlType, const uint8_t*, int64_t, int64_t, const ActBlock*, int64_t,
                    float*, int64_t, int64_t) {
  std::abort();
}
void VnniGroupsK(GgmlType, const uint8_t*, int64_t, int64_t, const Q8KBlock*, int64_t, float*,
                 int64_t, int64_t) {
  std::abort();
}
void TileGroupPairsK(GgmlType, const uint8_t*, int64_t, int64_t, const Q8KBlock*, int64_t,
                     float*, int64_t, int64_t) {
  std::abort();
}

#endif  // LLORCH_AMX_KERNELS

}  // namespace amx_kernels
}  // namespace llorch
