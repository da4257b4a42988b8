#include "worker/model/amx_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/float_bits.h"
#include "worker/model/amx_kernels.h"
#include "worker/model/kquant_matmul.h"
#include "worker/model/row_groups.h"

// Compiled with -ffp-contract=off: only the fma calls written here are fused.

namespace llorch {
namespace {

using amx_kernels::kGroupRows;
using amx_kernels::kTileRows;
using quant_matmul_internal::ActBlock;

using Layout = RowGroups<kGroupRows>;
constexpr int64_t kBlock = Layout::kBlock;
constexpr int64_t kPairRows = 2 * kGroupRows;  // llama.cpp's condition: rows % 32 == 0

[[noreturn]] void Fail(const char* message) {
  std::fprintf(stderr, "AmxMatmul: %s\n", message);
  std::abort();
}

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// The exact integer dot of one weight block with one activation block.
int32_t BlockDot(GgmlType type, const Layout::BlockRef& w, const ActBlock& y) {
  int32_t dot = 0;
  if (type == GgmlType::kQ8_0) {
    for (int64_t j = 0; j < kBlock; ++j) dot += static_cast<int8_t>(w.Byte(j)) * y.qs[j];
    return dot;
  }
  const int32_t offset = type == GgmlType::kQ4_0 ? 8 : 0;
  for (int64_t j = 0; j < kBlock / 2; ++j) {
    dot += ((w.Byte(j) & 0xF) - offset) * y.qs[j];
    dot += ((w.Byte(j) >> 4) - offset) * y.qs[j + kBlock / 2];
  }
  return dot;
}

// llama.cpp's AMX order for one output, in scalar code.
float DotPortable(GgmlType type, const uint8_t* packed, int64_t num_blocks, int64_t row,
                  const ActBlock* act) {
  float acc = 0.0f;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const Layout::BlockRef w = Layout::Locate(type, packed, num_blocks, row, b);
    const float dot = static_cast<float>(BlockDot(type, w, act[b]));
    acc = std::fma(dot, w.Scale() * act[b].d, acc);
    if (type == GgmlType::kQ4_1) acc = std::fma(w.Min(), act[b].s, acc);
  }
  return acc;
}


// ---------------------------------------------------------------------------
// K-quants (Q4_K, Q5_K, Q6_K): 16 rows per group as in KLayoutOf; scales and
// mins of Q4_K/Q5_K unpacked to bytes, quant bytes interleaved by 4 as above.

using amx_kernels::KLayout;
using amx_kernels::KLayoutOf;
using kquant_matmul_internal::Q8KBlock;

bool IsKQuant(GgmlType type) {
  return type == GgmlType::kQ4_K || type == GgmlType::kQ5_K || type == GgmlType::kQ6_K;
}

// Where a ggml K-quant block keeps its parts (ggml-common.h).
struct GgmlKParts {
  int64_t d, dmin, scales, qh, qs, qh_bytes;
};
GgmlKParts GgmlKPartsOf(GgmlType type) {
  if (type == GgmlType::kQ4_K) return {0, 2, 4, -1, 16, 0};
  if (type == GgmlType::kQ5_K) return {0, 2, 4, 16, 48, 32};
  return {208, -1, 192, 128, 0, 64};  // Q6_K: ql, qh, scales, d
}

// get_scale_min_k4: the 6-bit scale and min of sub-block j.
void ScaleMinK4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Its inverse: the 12 packed bytes from 8 scales and 8 mins.
void PackScaleMinK4(const uint8_t scale[8], const uint8_t min[8], uint8_t* q) {
  for (int j = 0; j < 4; ++j) {
    q[j] = scale[j] | ((scale[j + 4] >> 4) << 6);
    q[j + 4] = min[j] | ((min[j + 4] >> 4) << 6);
    q[j + 8] = (scale[j + 4] & 0xF) | ((min[j + 4] & 0xF) << 4);
  }
}

// One ggml row block of a K-quant into the group block (row `lane`), or back.
void PackKBlock(GgmlType type, const uint8_t* block, int64_t lane, uint8_t* group_block) {
  const KLayout l = KLayoutOf(type);
  const GgmlKParts g = GgmlKPartsOf(type);
  std::memcpy(group_block + l.d + 2 * lane, block + g.d, 2);
  if (type == GgmlType::kQ6_K) {
    for (int j = 0; j < 16; ++j) group_block[l.scales + 16 * j + lane] = block[g.scales + j];
  } else {
    std::memcpy(group_block + l.dmin + 2 * lane, block + g.dmin, 2);
    for (int j = 0; j < 8; ++j) {
      ScaleMinK4(j, block + g.scales, &group_block[l.scales + 16 * j + lane],
                 &group_block[l.mins + 16 * j + lane]);
    }
  }
  for (int64_t c = 0; c < 32; ++c) {
    std::memcpy(group_block + l.qs + 64 * c + 4 * lane, block + g.qs + 4 * c, 4);
  }
  for (int64_t c = 0; c < g.qh_bytes / 4; ++c) {
    std::memcpy(group_block + l.qh + 64 * c + 4 * lane, block + g.qh + 4 * c, 4);
  }
}

void UnpackKBlock(GgmlType type, const uint8_t* group_block, int64_t lane, uint8_t* block) {
  const KLayout l = KLayoutOf(type);
  const GgmlKParts g = GgmlKPartsOf(type);
  std::memcpy(block + g.d, group_block + l.d + 2 * lane, 2);
  if (type == GgmlType::kQ6_K) {
    for (int j = 0; j < 16; ++j) block[g.scales + j] = group_block[l.scales + 16 * j + lane];
  } else {
    std::memcpy(block + g.dmin, group_block + l.dmin + 2 * lane, 2);
    uint8_t scale[8], min[8];
    for (int j = 0; j < 8; ++j) {
      scale[j] = group_block[l.scales + 16 * j + lane];
      min[j] = group_block[l.mins + 16 * j + lane];
    }
    PackScaleMinK4(scale, min, block + g.scales);
  }
  for (int64_t c = 0; c < 32; ++c) {
    std::memcpy(block + g.qs + 4 * c, group_block + l.qs + 64 * c + 4 * lane, 4);
  }
  for (int64_t c = 0; c < g.qh_bytes / 4; ++c) {
    std::memcpy(block + g.qh + 4 * c, group_block + l.qh + 64 * c + 4 * lane, 4);
  }
}

// Quant value of element e of a ggml K-quant block (Q6_K: still + 32).
int KQuantValue(GgmlType type, const uint8_t* block, int e) {
  const GgmlKParts g = GgmlKPartsOf(type);
  if (type == GgmlType::kQ6_K) {
    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
    const int low = (block[g.qs + 64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0xF;
    const int high = (block[g.qh + 32 * h + l] >> (2 * k)) & 3;
    return low | high << 4;
  }
  const int s = e / 32;
  int q = (block[g.qs + 32 * (s / 2) + e % 32] >> (4 * (s % 2))) & 0xF;
  if (type == GgmlType::kQ5_K) q |= ((block[g.qh + e % 32] >> s) & 1) << 4;
  return q;
}

// llama.cpp's AMX order for one K-quant block: the scaled products' exact sum
// S (and the mins' M), then acc = fma(S, d_w * d_x, acc) and
// acc = fma(M, -(dmin_w * d_x), acc) (its fnmadd).
float KBlockStep(GgmlType type, const uint8_t* block, const Q8KBlock& a, float acc) {
  const GgmlKParts g = GgmlKPartsOf(type);
  int32_t sum = 0, min_sum = 0;
  if (type == GgmlType::kQ6_K) {
    for (int j = 0; j < 16; ++j) {
      int32_t dot = 0;
      for (int e = 16 * j; e < 16 * j + 16; ++e) dot += (KQuantValue(type, block, e) - 32) * a.q[e];
      sum += static_cast<int8_t>(block[g.scales + j]) * dot;
    }
  } else {
    for (int j = 0; j < 8; ++j) {
      uint8_t scale, min;
      ScaleMinK4(j, block + g.scales, &scale, &min);
      int32_t dot = 0;
      for (int e = 32 * j; e < 32 * j + 32; ++e) dot += KQuantValue(type, block, e) * a.q[e];
      sum += scale * dot;
      min_sum += min * (a.bsums[2 * j] + a.bsums[2 * j + 1]);
    }
  }
  acc = std::fma(static_cast<float>(sum), HalfToFloat(LoadU16(block + g.d)) * a.d, acc);
  if (type == GgmlType::kQ6_K) return acc;
  return std::fma(static_cast<float>(min_sum), -(HalfToFloat(LoadU16(block + g.dmin)) * a.d),
                  acc);
}

float DotPortableK(GgmlType type, const uint8_t* packed, int64_t num_blocks, int64_t row,
                   const Q8KBlock* act) {
  const KLayout l = KLayoutOf(type);
  uint8_t block[256];
  float acc = 0.0f;
  for (int64_t b = 0; b < num_blocks; ++b) {
    UnpackKBlock(type, packed + ((row / kGroupRows) * num_blocks + b) * l.bytes, row % kGroupRows,
                 block);
    acc = KBlockStep(type, block, act[b], acc);
  }
  return acc;
}

}  // namespace

bool AmxMatmulSupports(GgmlType type, int64_t rows, int64_t in) {
  if (rows <= 0 || rows % kPairRows != 0 || in <= 0) return false;
  if (IsKQuant(type)) return in % kKBlock == 0;
  return (type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0) &&
         in % kBlock == 0;
}

size_t AmxPackedBytes(GgmlType type, int64_t rows, int64_t in) {
  if (IsKQuant(type)) {
    return static_cast<size_t>(rows / kGroupRows * (in / kKBlock) * KLayoutOf(type).bytes);
  }
  return GgmlRowBytes(type, in) * static_cast<size_t>(rows);
}

void PackAmxRows(GgmlType type, const uint8_t* ggml_rows, int64_t rows, int64_t in,
                 uint8_t* out) {
  if (!AmxMatmulSupports(type, rows, in)) Fail("unsupported type or shape");
  if (IsKQuant(type)) {
    const int64_t num_blocks = in / kKBlock;
    const size_t block_bytes = GgmlBlockBytes(type);
    for (int64_t g = 0; g < rows / kGroupRows; ++g) {
      for (int64_t b = 0; b < num_blocks; ++b, out += KLayoutOf(type).bytes) {
        for (int64_t lane = 0; lane < kGroupRows; ++lane) {
          PackKBlock(type, ggml_rows + ((g * kGroupRows + lane) * num_blocks + b) * block_bytes,
                     lane, out);
        }
      }
    }
    return;
  }
  Layout::Pack(type, ggml_rows, rows, in, out);
}

void UnpackAmxRow(GgmlType type, const uint8_t* packed, int64_t in, int64_t row,
                  uint8_t* ggml_row) {
  if (IsKQuant(type)) {
    const int64_t num_blocks = in / kKBlock;
    for (int64_t b = 0; b < num_blocks; ++b, ggml_row += GgmlBlockBytes(type)) {
      UnpackKBlock(type, packed + ((row / kGroupRows) * num_blocks + b) * KLayoutOf(type).bytes,
                   row % kGroupRows, ggml_row);
    }
    return;
  }
  Layout::Unpack(type, packed, in, row, ggml_row);
}

namespace amx_matmul_internal {
namespace {

// Fewest activation rows for which one 16-row tile beats VNNI row by row:
// a tile's cost barely depends on how many of its rows are live (its integer
// dots are cheap, its per-block float steps and the weights' spreading are
// not), VNNI's grows with each row. Measured (one thread) with quant_matmul_bench's
// BM_AmxKernel (TinyLlama's 11264 x 2048, SmolLM2's 49152 x 576) on a
// 2-core Xeon with AMX, 2026-12-03.
int64_t MinTileRows(GgmlType type) {
  switch (type) {
    // Q8_0: a last tile of at most 8 live rows takes two blocks per tile
    // store (amx_kernels' TilePairsQ8), which beats VNNI from 5 rows.
    case GgmlType::kQ8_0: return 5;
    case GgmlType::kQ5_K: return 10;
    case GgmlType::kQ6_K: return 13;
    case GgmlType::kQ4_K: return 12;
    default: return 14;  // Q4_0, Q4_1
  }
}

// How many of the n activation rows go to tiles (the rest to VNNI): the
// whole tiles, and the last partial one where it has enough live rows.
int64_t TileRowsOf(Kernel kernel, GgmlType type, int64_t n) {
  if (kernel != Kernel::kTiles) return 0;
  const int64_t whole = n / kTileRows * kTileRows;
  return n - whole >= MinTileRows(type) ? n : whole;
}

// Pairs of groups per step when both kernels run: the tiles' weights are
// still in L2 when VNNI reads them for the remaining rows.
constexpr int64_t kPairsPerStep = 16;

// Runs tiles(c0, c1) then vnni(c0, c1) over [p0, p1) in steps of
// kPairsPerStep pairs, or one of them over the whole range.
template <typename Tiles, typename Vnni>
void SplitRows(bool tiles_run, bool vnni_run, int64_t p0, int64_t p1, const Tiles& tiles,
               const Vnni& vnni) {
  if (!vnni_run) return tiles(p0, p1);
  if (!tiles_run) return vnni(p0, p1);
  for (int64_t c0 = p0; c0 < p1; c0 += kPairsPerStep) {
    const int64_t c1 = std::min(p1, c0 + kPairsPerStep);
    tiles(c0, c1);
    vnni(c0, c1);
  }
}

// AmxMatmulWith for K-quants: activations rounded to Q8_K
// (quantize_row_q8_K_ref, as llama.cpp's AMX path does).
void MatmulK(Kernel kernel, GgmlType type, const uint8_t* packed, int64_t rows, int64_t in,
             const float* x, int64_t n, float* out, const ParallelFor& parallel_for) {
  const int64_t num_blocks = in / kKBlock;
  const int64_t padded = (n + kTileRows - 1) / kTileRows * kTileRows;
  thread_local std::vector<Q8KBlock> acts;
  if (acts.size() < static_cast<size_t>(padded * num_blocks)) {
    acts.resize(padded * num_blocks, Q8KBlock{});
  }
  Q8KBlock* act = acts.data();
  const auto quantize = [act, x, in, num_blocks](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      kquant_matmul_internal::QuantizeRowQ8K(x + t * in, num_blocks, /*four_row_rule=*/false,
                                             act + t * num_blocks);
    }
  };
  if (n >= 64) {
    parallel_for(0, n, quantize);
  } else {
    quantize(0, n);
  }
  if (kernel == Kernel::kPortable) {
    parallel_for(0, rows / kPairRows, [=](int64_t p0, int64_t p1) {
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = p0 * kPairRows; r < p1 * kPairRows; ++r) {
          out[t * rows + r] = DotPortableK(type, packed, num_blocks, r, act + t * num_blocks);
        }
      }
    });
    return;
  }
  const int64_t tile_rows = TileRowsOf(kernel, type, n);
  parallel_for(0, rows / kPairRows, [=](int64_t p0, int64_t p1) {
    SplitRows(
        tile_rows > 0, tile_rows < n, p0, p1,
        [=](int64_t c0, int64_t c1) {
          amx_kernels::TileGroupPairsK(type, packed, rows, num_blocks, act, tile_rows, out, c0,
                                       c1);
        },
        [=](int64_t c0, int64_t c1) {
          amx_kernels::VnniGroupsK(type, packed, rows, num_blocks, act + tile_rows * num_blocks,
                                   n - tile_rows, out + tile_rows * rows, 2 * c0, 2 * c1);
        });
  });
}

}  // namespace

Kernel BestKernel() {
  static const Kernel best = [] {
    if (amx_kernels::TilesSupported()) {
      const char* env = std::getenv("LLORCH_AMX");
      return env != nullptr && std::strcmp(env, "0") == 0 ? Kernel::kVnni : Kernel::kTiles;
    }
    return amx_kernels::VnniSupported() ? Kernel::kVnni : Kernel::kPortable;
  }();
  return best;
}

void AmxMatmulWith(Kernel kernel, GgmlType type, const uint8_t* packed, int64_t rows,
                   int64_t in, const float* x, int64_t n, float* out,
                   const ParallelFor& parallel_for) {
  if (!AmxMatmulSupports(type, rows, in)) Fail("unsupported type or shape");
  if (n < 0) Fail("negative row count");
  if (n == 0) return;
  if (kernel == Kernel::kTiles && !amx_kernels::TilesSupported()) Fail("no AMX tiles here");
  if (kernel == Kernel::kVnni && !amx_kernels::VnniSupported()) Fail("no AVX-512 VNNI here");
  if (IsKQuant(type)) return MatmulK(kernel, type, packed, rows, in, x, n, out, parallel_for);
  const int64_t num_blocks = in / kBlock;
  // Tiles read activation rows in sixteens: the buffer holds n rounded up,
  // the padding zeroed once. Reused across calls on the same thread.
  const int64_t padded = (n + kTileRows - 1) / kTileRows * kTileRows;
  thread_local std::vector<ActBlock> acts;
  thread_local std::vector<int32_t> act_sums;  // sum of each block's qs (Q4_0)
  if (acts.size() < static_cast<size_t>(padded * num_blocks)) {
    acts.resize(padded * num_blocks, ActBlock{});
    act_sums.resize(padded * num_blocks);
  }
  ActBlock* act = acts.data();
  int32_t* act_sum = act_sums.data();
  quant_matmul_internal::QuantizeActivationRows(type, x, n, in, quant_matmul_internal::UsesAvx2(),
                                                parallel_for, act, act_sum);
  if (kernel == Kernel::kPortable) {
    parallel_for(0, rows / kPairRows, [=](int64_t p0, int64_t p1) {
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = p0 * kPairRows; r < p1 * kPairRows; ++r) {
          out[t * rows + r] = DotPortable(type, packed, num_blocks, r, act + t * num_blocks);
        }
      }
    });
    return;
  }
  const int64_t tile_rows = TileRowsOf(kernel, type, n);
  parallel_for(0, rows / kPairRows, [=](int64_t p0, int64_t p1) {
    SplitRows(
        tile_rows > 0, tile_rows < n, p0, p1,
        [=](int64_t c0, int64_t c1) {
          amx_kernels::TileGroupPairs(type, packed, rows, num_blocks, act, tile_rows, out, c0,
                                      c1);
        },
        [=](int64_t c0, int64_t c1) {
          amx_kernels::VnniGroups(type, packed, rows, num_blocks, act + tile_rows * num_blocks,
                                  act_sum + tile_rows * num_blocks, n - tile_rows,
                                  out + tile_rows * rows, 2 * c0, 2 * c1);
        });
  });
}

}  // namespace amx_matmul_internal

void AmxMatmul(GgmlType type, const uint8_t* packed, int64_t rows, int64_t in, const float* x,
               int64_t n, float* out, const ParallelFor& parallel_for) {
  amx_matmul_internal::AmxMatmulWith(amx_matmul_internal::BestKernel(), type, packed, rows, in,
                                     x, n, out, parallel_for);
}

}  // namespace llorch
