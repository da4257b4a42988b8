// The block layout InterleavedMatmul (8 rows, interleaved_matmul.h) and
// AmxMatmul (16 rows, amx_matmul.h) hold Q4_0, Q4_1 and Q8_0 weights in:
// rows in groups of kRows; per group and block of 32 elements, the rows' fp16
// scales (Q4_1: then their fp16 mins), then chunks of 4 * kRows bytes, chunk
// c holding quant bytes [4c, 4c + 4) of each row in turn. The same size as
// the ggml rows.
#ifndef LLORCH_WORKER_MODEL_ROW_GROUPS_H_
#define LLORCH_WORKER_MODEL_ROW_GROUPS_H_

#include <cstdint>
#include <cstring>

#include "common/float_bits.h"
#include "worker/gguf/ggml_types.h"

namespace llorch {

template <int64_t kRows>
struct RowGroups {
  static constexpr int64_t kBlock = 32;
  static constexpr int64_t kScaleBytes = 2 * kRows;  // kRows fp16 scales

  // Quant bytes per row and block (Q4_0/Q4_1: 16 of nibbles, Q8_0: 32).
  static constexpr int64_t QuantBytes(GgmlType type) {
    return type == GgmlType::kQ8_0 ? 32 : 16;
  }
  // Bytes before a group block's quants: scales (Q4_1: then mins).
  static constexpr int64_t HeaderBytes(GgmlType type) {
    return type == GgmlType::kQ4_1 ? 2 * kScaleBytes : kScaleBytes;
  }
  // Bytes of one group's block: the rows' scales (and mins) and quants.
  static constexpr int64_t GroupBlockBytes(GgmlType type) {
    return HeaderBytes(type) + kRows * QuantBytes(type);
  }

  // Row `lane` of a group's block: its scale, min and quant bytes.
  struct BlockRef {
    const uint8_t* group_block;
    int64_t lane;
    int64_t header_bytes;
    float Scale() const { return Half(group_block + 2 * lane); }
    float Min() const { return Half(group_block + kScaleBytes + 2 * lane); }
    uint8_t Byte(int64_t j) const {  // quant byte j (< 16 or 32) of the row's block
      return group_block[header_bytes + 4 * kRows * (j / 4) + 4 * lane + j % 4];
    }
  };

  static BlockRef Locate(GgmlType type, const uint8_t* packed, int64_t num_blocks, int64_t row,
                         int64_t b) {
    return {packed + ((row / kRows) * num_blocks + b) * GroupBlockBytes(type), row % kRows,
            HeaderBytes(type)};
  }

  // Writes `rows` (a multiple of kRows) ggml rows of `in` elements in the layout.
  static void Pack(GgmlType type, const uint8_t* ggml_rows, int64_t rows, int64_t in,
                   uint8_t* out) {
    const int64_t num_blocks = in / kBlock;
    const int64_t quant_bytes = QuantBytes(type);
    const int64_t header_bytes = HeaderBytes(type);
    const int64_t ggml_header_bytes = header_bytes / kRows;  // d (and m) of one row
    const int64_t ggml_block_bytes = ggml_header_bytes + quant_bytes;
    for (int64_t g = 0; g < rows / kRows; ++g) {
      for (int64_t b = 0; b < num_blocks; ++b, out += GroupBlockBytes(type)) {
        for (int64_t lane = 0; lane < kRows; ++lane) {
          const uint8_t* block = ggml_rows + ((g * kRows + lane) * num_blocks + b) * ggml_block_bytes;
          for (int64_t h = 0; h < ggml_header_bytes / 2; ++h) {  // d, then m
            std::memcpy(out + kScaleBytes * h + 2 * lane, block + 2 * h, 2);
          }
          for (int64_t c = 0; c < quant_bytes / 4; ++c) {
            std::memcpy(out + header_bytes + 4 * kRows * c + 4 * lane,
                        block + ggml_header_bytes + 4 * c, 4);
          }
        }
      }
    }
  }

  // Copies row `row` of a packed matrix back out as one ggml row.
  static void Unpack(GgmlType type, const uint8_t* packed, int64_t in, int64_t row,
                     uint8_t* ggml_row) {
    const int64_t num_blocks = in / kBlock;
    const int64_t quant_bytes = QuantBytes(type);
    const int64_t ggml_header_bytes = HeaderBytes(type) / kRows;
    for (int64_t b = 0; b < num_blocks; ++b, ggml_row += ggml_header_bytes + quant_bytes) {
      const BlockRef w = Locate(type, packed, num_blocks, row, b);
      for (int64_t h = 0; h < ggml_header_bytes / 2; ++h) {
        std::memcpy(ggml_row + 2 * h, w.group_block + kScaleBytes * h + 2 * w.lane, 2);
      }
      for (int64_t j = 0; j < quant_bytes; ++j) ggml_row[ggml_header_bytes + j] = w.Byte(j);
    }
  }

 private:
  static float Half(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, sizeof(v));
    return HalfToFloat(v);
  }
};

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_ROW_GROUPS_H_
