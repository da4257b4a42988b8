#include "worker/model/amx_matmul.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/float_bits.h"
#include "worker/model/amx_kernels.h"

// Compiled with -ffp-contract=off: only the fma calls written here are fused.

namespace llorch {
namespace {

using amx_kernels::kGroupRows;
using amx_kernels::kTileRows;
using quant_matmul_internal::ActBlock;

constexpr int64_t kBlock = 32;
constexpr int64_t kPairRows = 2 * kGroupRows;  // llama.cpp's condition: rows % 32 == 0
constexpr int64_t kScaleBytes = 2 * kGroupRows;

[[noreturn]] void Fail(const char* message) {
  std::fprintf(stderr, "AmxMatmul: %s\n", message);
  std::abort();
}

int64_t QuantBytes(GgmlType type) { return type == GgmlType::kQ8_0 ? 32 : 16; }
// 16 fp16 scales (Q4_1: then 16 fp16 mins).
int64_t HeaderBytes(GgmlType type) {
  return type == GgmlType::kQ4_1 ? 2 * kScaleBytes : kScaleBytes;
}
int64_t GroupBlockBytes(GgmlType type) {
  return HeaderBytes(type) + kGroupRows * QuantBytes(type);
}

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Row `lane` of a group's block: its scale, min and quant bytes.
struct BlockRef {
  const uint8_t* group_block;
  int64_t lane;
  int64_t header_bytes;
  float Scale() const { return HalfToFloat(LoadU16(group_block + 2 * lane)); }
  float Min() const { return HalfToFloat(LoadU16(group_block + kScaleBytes + 2 * lane)); }
  uint8_t Byte(int64_t j) const {  // quant byte j of the row's block
    return group_block[header_bytes + 4 * kGroupRows * (j / 4) + 4 * lane + j % 4];
  }
};

BlockRef Locate(GgmlType type, const uint8_t* packed, int64_t num_blocks, int64_t row,
                int64_t b) {
  return {packed + ((row / kGroupRows) * num_blocks + b) * GroupBlockBytes(type),
          row % kGroupRows, HeaderBytes(type)};
}

// The exact integer dot of one weight block with one activation block.
int32_t BlockDot(GgmlType type, const BlockRef& w, const ActBlock& y) {
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
    const BlockRef w = Locate(type, packed, num_blocks, row, b);
    const float dot = static_cast<float>(BlockDot(type, w, act[b]));
    acc = std::fma(dot, w.Scale() * act[b].d, acc);
    if (type == GgmlType::kQ4_1) acc = std::fma(w.Min(), act[b].s, acc);
  }
  return acc;
}

}  // namespace

bool AmxMatmulSupports(GgmlType type, int64_t rows, int64_t in) {
  return (type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0) &&
         rows > 0 && rows % kPairRows == 0 && in > 0 && in % kBlock == 0;
}

void PackAmxRows(GgmlType type, const uint8_t* ggml_rows, int64_t rows, int64_t in,
                 uint8_t* out) {
  if (!AmxMatmulSupports(type, rows, in)) Fail("unsupported type or shape");
  const int64_t num_blocks = in / kBlock;
  const int64_t quant_bytes = QuantBytes(type);
  const int64_t header_bytes = HeaderBytes(type);
  const int64_t ggml_header_bytes = header_bytes / kGroupRows;  // d (and m) of one row
  const int64_t ggml_block_bytes = ggml_header_bytes + quant_bytes;
  for (int64_t g = 0; g < rows / kGroupRows; ++g) {
    for (int64_t b = 0; b < num_blocks; ++b, out += GroupBlockBytes(type)) {
      for (int64_t lane = 0; lane < kGroupRows; ++lane) {
        const uint8_t* block =
            ggml_rows + ((g * kGroupRows + lane) * num_blocks + b) * ggml_block_bytes;
        for (int64_t h = 0; h < ggml_header_bytes / 2; ++h) {  // d, then m
          std::memcpy(out + kScaleBytes * h + 2 * lane, block + 2 * h, 2);
        }
        for (int64_t c = 0; c < quant_bytes / 4; ++c) {
          std::memcpy(out + header_bytes + 4 * kGroupRows * c + 4 * lane,
                      block + ggml_header_bytes + 4 * c, 4);
        }
      }
    }
  }
}

void UnpackAmxRow(GgmlType type, const uint8_t* packed, int64_t in, int64_t row,
                  uint8_t* ggml_row) {
  const int64_t num_blocks = in / kBlock;
  const int64_t quant_bytes = QuantBytes(type);
  const int64_t ggml_header_bytes = HeaderBytes(type) / kGroupRows;
  for (int64_t b = 0; b < num_blocks; ++b, ggml_row += ggml_header_bytes + quant_bytes) {
    const BlockRef w = Locate(type, packed, num_blocks, row, b);
    for (int64_t h = 0; h < ggml_header_bytes / 2; ++h) {
      std::memcpy(ggml_row + 2 * h, w.group_block + kScaleBytes * h + 2 * w.lane, 2);
    }
    for (int64_t j = 0; j < quant_bytes; ++j) ggml_row[ggml_header_bytes + j] = w.Byte(j);
  }
}

namespace amx_matmul_internal {

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
  const bool avx2 = quant_matmul_internal::UsesAvx2();
  const auto quantize = [act, act_sum, x, in, num_blocks, type, avx2](int64_t t0, int64_t t1) {
    quant_matmul_internal::QuantizeActivations(x + t0 * in, (t1 - t0) * num_blocks,
                                               /*with_sum=*/type == GgmlType::kQ4_1, avx2,
                                               act + t0 * num_blocks);
    if (type != GgmlType::kQ4_0) return;
    for (int64_t i = t0 * num_blocks; i < t1 * num_blocks; ++i) {
      int32_t sum = 0;
      for (int64_t j = 0; j < kBlock; ++j) sum += act[i].qs[j];
      act_sum[i] = sum;
    }
  };
  if (n >= 64) {
    parallel_for(0, n, quantize);
  } else {
    quantize(0, n);
  }
  if (kernel == Kernel::kTiles && n >= 4) {
    parallel_for(0, rows / kPairRows, [=](int64_t p0, int64_t p1) {
      amx_kernels::TileGroupPairs(type, packed, rows, num_blocks, act, n, out, p0, p1);
    });
    return;
  }
  if (kernel != Kernel::kPortable) {
    parallel_for(0, rows / kPairRows, [=](int64_t p0, int64_t p1) {
      amx_kernels::VnniGroups(type, packed, rows, num_blocks, act, act_sum, n, out, 2 * p0,
                              2 * p1);
    });
    return;
  }
  parallel_for(0, rows / kPairRows, [=](int64_t p0, int64_t p1) {
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = p0 * kPairRows; r < p1 * kPairRows; ++r) {
        out[t * rows + r] = DotPortable(type, packed, num_blocks, r, act + t * num_blocks);
      }
    }
  });
}

}  // namespace amx_matmul_internal

void AmxMatmul(GgmlType type, const uint8_t* packed, int64_t rows, int64_t in, const float* x,
               int64_t n, float* out, const ParallelFor& parallel_for) {
  amx_matmul_internal::AmxMatmulWith(amx_matmul_internal::BestKernel(), type, packed, rows, in,
                                     x, n, out, parallel_for);
}

}  // namespace llorch
