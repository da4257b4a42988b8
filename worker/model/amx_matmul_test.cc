#include "worker/model/amx_matmul.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "common/float_bits.h"
#include "gtest/gtest.h"
#include "worker/gguf/ggml_types.h"
#include "worker/model/kquant_matmul.h"
#include "worker/model/quant_matmul.h"

namespace llorch {
namespace {

using amx_matmul_internal::Kernel;
using kquant_matmul_internal::Q8KBlock;
using quant_matmul_internal::ActBlock;

bool IsK(GgmlType type) {
  return type == GgmlType::kQ4_K || type == GgmlType::kQ5_K || type == GgmlType::kQ6_K;
}

// Random ggml blocks: every quant byte occurs (-128 too for Q8_0), fp16
// scales and mins of random sign and magnitude 2^-12..2^-3.
std::vector<uint8_t> RandomRows(GgmlType type, int64_t rows, int64_t in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> exponent(3, 12);
  std::uniform_int_distribution<int> mantissa(0, 1023);
  std::vector<uint8_t> out(rows * GgmlRowBytes(type, in));
  for (uint8_t& b : out) b = static_cast<uint8_t>(byte(rng));
  // Byte offsets of the fp16 fields in a block.
  std::vector<size_t> halves = {0};
  if (type == GgmlType::kQ4_1 || type == GgmlType::kQ4_K || type == GgmlType::kQ5_K) {
    halves = {0, 2};
  } else if (type == GgmlType::kQ6_K) {
    halves = {208};
  }
  for (size_t offset = 0; offset < out.size(); offset += GgmlBlockBytes(type)) {
    for (size_t h : halves) {
      const uint16_t half =
          static_cast<uint16_t>((byte(rng) & 1) << 15 | exponent(rng) << 10 | mantissa(rng));
      std::memcpy(&out[offset + h], &half, 2);
    }
  }
  return out;
}

std::vector<float> RandomActivations(int64_t n, int64_t in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n * in);
  for (float& v : x) v = normal(rng);
  return x;
}

float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return HalfToFloat(h);
}

// llama.cpp's AMX order written from the ggml rows as they are in the file
// (ggml-cpu/amx/mmq.cpp: tinygemm_kernel_vnni and acc_C): per block the exact
// integer dot, then acc = fma(dot, d_w * d_x, acc) (Q4_1: + fma(m_w, s_x)).
std::vector<float> Expected(GgmlType type, const std::vector<uint8_t>& w, int64_t rows,
                            int64_t in, const std::vector<float>& x, int64_t n) {
  const int64_t num_blocks = in / 32;
  std::vector<ActBlock> act(n * num_blocks);
  quant_matmul_internal::QuantizeActivations(x.data(), n * num_blocks,
                                             type == GgmlType::kQ4_1, /*avx2=*/false,
                                             act.data());
  const size_t block_bytes = GgmlBlockBytes(type);
  std::vector<float> out(n * rows);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      float acc = 0.0f;
      for (int64_t b = 0; b < num_blocks; ++b) {
        const uint8_t* block = w.data() + (r * num_blocks + b) * block_bytes;
        const ActBlock& y = act[t * num_blocks + b];
        int32_t dot = 0;
        if (type == GgmlType::kQ8_0) {
          for (int j = 0; j < 32; ++j) dot += static_cast<int8_t>(block[2 + j]) * y.qs[j];
        } else {
          const uint8_t* qs = block + (type == GgmlType::kQ4_1 ? 4 : 2);
          const int offset = type == GgmlType::kQ4_0 ? 8 : 0;
          for (int j = 0; j < 16; ++j) {
            dot += ((qs[j] & 0xF) - offset) * y.qs[j] + ((qs[j] >> 4) - offset) * y.qs[j + 16];
          }
        }
        acc = std::fma(static_cast<float>(dot), Half(block) * y.d, acc);
        if (type == GgmlType::kQ4_1) acc = std::fma(Half(block + 2), y.s, acc);
      }
      out[t * rows + r] = acc;
    }
  }
  return out;
}

// ggml's get_scale_min_k4.
void ScaleMin(int j, const uint8_t* q, int* scale, int* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// The quants of a K-quant block as ggml's dequantize_row_<type> walks them
// (Q6_K: the 6-bit values less 32), and the scale of each element.
void KQuants(GgmlType type, const uint8_t* block, int q[256], int scale[256], int min[256]) {
  if (type == GgmlType::kQ6_K) {
    const uint8_t* ql = block;
    const uint8_t* qh = block + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(block + 192);
    for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        q[n + l] = ((ql[l] & 0xF) | ((qh[l] >> 0 & 3) << 4)) - 32;
        q[n + l + 32] = ((ql[l + 32] & 0xF) | ((qh[l] >> 2 & 3) << 4)) - 32;
        q[n + l + 64] = ((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32;
        q[n + l + 96] = ((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32;
        for (int k = 0; k < 4; ++k) scale[n + l + 32 * k] = sc[is + 2 * k];
      }
    }
    return;
  }
  const bool q5 = type == GgmlType::kQ5_K;
  const uint8_t* scales = block + 4;
  const uint8_t* qh = block + 16;
  const uint8_t* ql = block + (q5 ? 48 : 16);
  for (int j = 0, is = 0; j < 256; j += 64, ql += 32, is += 2) {
    int sc0, m0, sc1, m1;
    ScaleMin(is, scales, &sc0, &m0);
    ScaleMin(is + 1, scales, &sc1, &m1);
    for (int l = 0; l < 32; ++l) {
      q[j + l] = (ql[l] & 0xF) + (q5 && (qh[l] & (1 << is)) ? 16 : 0);
      q[j + l + 32] = (ql[l] >> 4) + (q5 && (qh[l] & (2 << is)) ? 16 : 0);
      scale[j + l] = sc0, min[j + l] = m0;
      scale[j + l + 32] = sc1, min[j + l + 32] = m1;
    }
  }
}

// llama.cpp's AMX order for K-quants (mmq.cpp: the q4_K/q5_K/q6_K VNNI
// kernels and acc_C): per block the exact sum of scale * sub-block dot and of
// min * sub-block activation sum; fma(S, d * d_x), then fnmadd(M, dmin * d_x).
std::vector<float> ExpectedK(GgmlType type, const std::vector<uint8_t>& w, int64_t rows,
                             int64_t in, const std::vector<float>& x, int64_t n) {
  const int64_t num_blocks = in / 256;
  std::vector<Q8KBlock> act(n * num_blocks);
  for (int64_t t = 0; t < n; ++t) {
    kquant_matmul_internal::QuantizeRowQ8K(x.data() + t * in, num_blocks, false,
                                           act.data() + t * num_blocks);
  }
  const size_t block_bytes = GgmlBlockBytes(type);
  const int sub = type == GgmlType::kQ6_K ? 16 : 32;
  std::vector<float> out(n * rows);
  int q[256], scale[256], min[256];
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      float acc = 0.0f;
      for (int64_t b = 0; b < num_blocks; ++b) {
        const uint8_t* block = w.data() + (r * num_blocks + b) * block_bytes;
        const Q8KBlock& y = act[t * num_blocks + b];
        KQuants(type, block, q, scale, min);
        int32_t sum = 0, min_sum = 0;
        for (int e0 = 0; e0 < 256; e0 += sub) {
          int32_t dot = 0, act_sum = 0;
          for (int e = e0; e < e0 + sub; ++e) dot += q[e] * y.q[e], act_sum += y.q[e];
          sum += scale[e0] * dot;
          min_sum += min[e0] * act_sum;
        }
        const float d = Half(block + (type == GgmlType::kQ6_K ? 208 : 0));
        acc = std::fma(static_cast<float>(sum), d * y.d, acc);
        if (type != GgmlType::kQ6_K) {
          acc = std::fma(static_cast<float>(min_sum), -(Half(block + 2) * y.d), acc);
        }
      }
      out[t * rows + r] = acc;
    }
  }
  return out;
}

void ExpectSameBits(const std::vector<float>& want, const std::vector<float>& got,
                    const char* what) {
  ASSERT_EQ(want.size(), got.size());
  int64_t differ = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::memcmp(&want[i], &got[i], sizeof(float)) != 0 && differ++ < 3) {
      ADD_FAILURE() << what << ": output " << i << " " << got[i] << " != " << want[i];
    }
  }
  EXPECT_EQ(differ, 0) << what;
}

std::vector<Kernel> KernelsHere() {
  std::vector<Kernel> kernels = {Kernel::kPortable};
  if (amx_matmul_internal::BestKernel() != Kernel::kPortable) kernels.push_back(Kernel::kVnni);
  if (amx_matmul_internal::BestKernel() == Kernel::kTiles) kernels.push_back(Kernel::kTiles);
  return kernels;
}

const char* Name(Kernel kernel) {
  return kernel == Kernel::kTiles ? "tiles" : kernel == Kernel::kVnni ? "vnni" : "portable";
}

class AmxMatmulTest : public ::testing::TestWithParam<GgmlType> {};

// Batch sizes around the kernels' steps: VNNI takes rows 4 at a time, tiles
// 16 (whole tiles, and a partial one from a per-type number of live rows, the
// rest by VNNI; Q8_0's last tile of at most 8 rows takes blocks in pairs).
void ExpectEveryKernelGivesTheAmxOrder(GgmlType type, int64_t in) {
  const int64_t rows = 96;
  const std::vector<uint8_t> w = RandomRows(type, rows, in, 7);
  std::vector<uint8_t> packed(AmxPackedBytes(type, rows, in));
  PackAmxRows(type, w.data(), rows, in, packed.data());
  for (int64_t n : {1, 2, 3, 4, 5, 8, 15, 16, 17, 21, 24, 31, 32, 33, 70}) {
    const std::vector<float> x = RandomActivations(n, in, static_cast<uint32_t>(n));
    const std::vector<float> want =
        IsK(type) ? ExpectedK(type, w, rows, in, x, n) : Expected(type, w, rows, in, x, n);
    for (Kernel kernel : KernelsHere()) {
      std::vector<float> got(n * rows, -1.0f);
      amx_matmul_internal::AmxMatmulWith(kernel, type, packed.data(), rows, in, x.data(), n,
                                         got.data());
      ExpectSameBits(want, got, Name(kernel));
    }
  }
}

TEST_P(AmxMatmulTest, EveryKernelGivesTheAmxOrder) {
  const GgmlType type = GetParam();
  std::printf("kernels here: best %s\n", Name(amx_matmul_internal::BestKernel()));
  if (IsK(type)) {
    ExpectEveryKernelGivesTheAmxOrder(type, 512);
  } else {
    ExpectEveryKernelGivesTheAmxOrder(type, 320);  // 10 blocks
    ExpectEveryKernelGivesTheAmxOrder(type, 352);  // 11: a block without a pair
  }
}

TEST_P(AmxMatmulTest, ThreadsDoNotChangeTheBits) {
  const GgmlType type = GetParam();
  const int64_t rows = 256, in = 512, n = 40;
  const std::vector<uint8_t> w = RandomRows(type, rows, in, 11);
  std::vector<uint8_t> packed(AmxPackedBytes(type, rows, in));
  PackAmxRows(type, w.data(), rows, in, packed.data());
  const std::vector<float> x = RandomActivations(n, in, 3);
  const std::vector<float> want =
      IsK(type) ? ExpectedK(type, w, rows, in, x, n) : Expected(type, w, rows, in, x, n);
  // Two real threads, each running its half of the row pairs.
  const ParallelFor two_threads = [](int64_t begin, int64_t end, const RangeFn& body) {
    const int64_t mid = begin + (end - begin) / 2;
    std::thread other([&] { body(mid, end); });
    body(begin, mid);
    other.join();
  };
  for (int64_t batch : {int64_t{1}, n}) {
    std::vector<float> got(batch * rows);
    AmxMatmul(type, packed.data(), rows, in, x.data(), batch, got.data(), two_threads);
    ExpectSameBits(std::vector<float>(want.begin(), want.begin() + batch * rows), got,
                   "two threads");
  }
}

TEST_P(AmxMatmulTest, UnpackGivesTheGgmlRows) {
  const GgmlType type = GetParam();
  const int64_t rows = 64, in = IsK(type) ? 512 : 96;
  const std::vector<uint8_t> w = RandomRows(type, rows, in, 5);
  std::vector<uint8_t> packed(AmxPackedBytes(type, rows, in));
  PackAmxRows(type, w.data(), rows, in, packed.data());
  EXPECT_FALSE(packed.size() == w.size() && packed == w);
  const size_t row_bytes = GgmlRowBytes(type, in);
  std::vector<uint8_t> row(row_bytes);
  for (int64_t r = 0; r < rows; ++r) {
    UnpackAmxRow(type, packed.data(), in, r, row.data());
    EXPECT_EQ(0, std::memcmp(row.data(), w.data() + r * row_bytes, row_bytes)) << "row " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, AmxMatmulTest,
                         ::testing::Values(GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0,
                                           GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K),
                         [](const ::testing::TestParamInfo<GgmlType>& info) {
                           return std::string(GgmlTypeName(info.param));
                         });

TEST(AmxMatmul, SupportsLlamaCppsShapes) {
  EXPECT_TRUE(AmxMatmulSupports(GgmlType::kQ4_0, 32, 32));
  EXPECT_FALSE(AmxMatmulSupports(GgmlType::kQ4_0, 48, 32));  // rows % 32
  EXPECT_FALSE(AmxMatmulSupports(GgmlType::kQ8_0, 64, 48));  // in % 32
  EXPECT_FALSE(AmxMatmulSupports(GgmlType::kQ5_0, 64, 64));
  EXPECT_TRUE(AmxMatmulSupports(GgmlType::kQ4_K, 64, 256));
  EXPECT_FALSE(AmxMatmulSupports(GgmlType::kQ6_K, 64, 128));  // in % 256
  EXPECT_EQ(AmxPackedBytes(GgmlType::kQ4_K, 32, 512), 32u * 2 * 148);
  EXPECT_EQ(AmxPackedBytes(GgmlType::kQ6_K, 32, 512), 32u * 2 * 210);
}

}  // namespace
}  // namespace llorch
