#include "worker/model/quant_matmul.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/gguf/ggml_types.h"
#include "worker/model/interleaved_matmul.h"
#include "worker/model/kquant_matmul.h"

namespace llorch {
namespace {

// ---------------------------------------------------------------------------
// llama.cpp's own CPU kernels, loaded from the prebuilt AVX2 ("haswell")
// variant that node-llama-cpp ships. Declarations follow
// ggml/include/ggml.h and ggml-cpu.h (the struct layout must match exactly).
extern "C" {
typedef void (*ggml_from_float_t)(const float* x, void* y, int64_t k);
typedef void (*ggml_vec_dot_t)(int n, float* s, size_t bs, const void* x,
                               size_t bx, const void* y, size_t by, int nrc);
struct ggml_type_traits_cpu {
  ggml_from_float_t from_float;
  ggml_vec_dot_t vec_dot;
  int vec_dot_type;  // enum ggml_type
  int64_t nrows;
};
}

class GgmlCpu {
 public:
  // `variant`: one of the prebuilt CPU libraries (haswell = AVX2, zen4 /
  // skylakex = AVX-512). Null when the library is missing or cannot run on
  // this CPU (its own ggml_backend_score says so).
  static const GgmlCpu* Get(const std::string& variant = "haswell") {
    static std::map<std::string, const GgmlCpu*>* instances =
        new std::map<std::string, const GgmlCpu*>();
    auto it = instances->find(variant);
    if (it == instances->end()) it = instances->emplace(variant, Load(variant)).first;
    return it->second;
  }
  static std::string LibraryPath(const std::string& variant = "haswell") {
    return std::string(LLORCH_GGML_CPU_LIB_DIR) + "/libggml-cpu-" + variant + ".so";
  }

  const ggml_type_traits_cpu& Traits(GgmlType type) const {
    return *get_traits_(static_cast<int>(type));
  }

  // llama.cpp's repacked kernels (ggml::cpu::repack::gemv/gemm<block, 8, 8,
  // vec_dot type>) and the 4-row activation quantisers gemm takes; null
  // where this build of the library lacks them.
  using RepackFn = void (*)(int n, float* s, size_t bs, const void* vx, const void* vy,
                            int nr, int nc);
  using QuantizeMatFn = void (*)(const float* x, void* y, int64_t nrows, int64_t n_per_row);
  RepackFn q4_0_gemv = nullptr;
  RepackFn q4_0_gemm = nullptr;
  QuantizeMatFn quantize_mat_q8_0_4x8 = nullptr;
  RepackFn q4_K_gemv = nullptr;
  RepackFn q4_K_gemm = nullptr;
  QuantizeMatFn quantize_mat_q8_K_4x8 = nullptr;
  std::string variant;

 private:
  using GetTraitsFn = const ggml_type_traits_cpu* (*)(int);

  static const GgmlCpu* Load(const std::string& variant) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
      return nullptr;
    }
    void* handle = dlopen(LibraryPath(variant).c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) return nullptr;
    auto score = reinterpret_cast<int (*)()>(dlsym(handle, "ggml_backend_score"));
    if (score != nullptr && score() == 0) return nullptr;  // not for this CPU
    auto init = reinterpret_cast<void (*)()>(dlsym(handle, "ggml_cpu_init"));
    auto get_traits =
        reinterpret_cast<GetTraitsFn>(dlsym(handle, "ggml_get_type_traits_cpu"));
    if (init == nullptr || get_traits == nullptr) return nullptr;
    init();  // fills ggml's fp16 tables
    auto* cpu = new GgmlCpu();
    cpu->variant = variant;
    cpu->get_traits_ = get_traits;
    cpu->q4_0_gemv = reinterpret_cast<RepackFn>(
        dlsym(handle, "_ZN4ggml3cpu6repack4gemvI10block_q4_0Ll8ELl8EL9ggml_type8EEEviPfmPKvS7_ii"));
    cpu->q4_0_gemm = reinterpret_cast<RepackFn>(
        dlsym(handle, "_ZN4ggml3cpu6repack4gemmI10block_q4_0Ll8ELl8EL9ggml_type8EEEviPfmPKvS7_ii"));
    cpu->quantize_mat_q8_0_4x8 = reinterpret_cast<QuantizeMatFn>(
        dlsym(handle, "_Z19ggml_quantize_mat_tILl8EL9ggml_type8EEvPKfPvll"));
    cpu->q4_K_gemv = reinterpret_cast<RepackFn>(
        dlsym(handle, "_ZN4ggml3cpu6repack4gemvI10block_q4_KLl8ELl8EL9ggml_type15EEEviPfmPKvS7_ii"));
    cpu->q4_K_gemm = reinterpret_cast<RepackFn>(
        dlsym(handle, "_ZN4ggml3cpu6repack4gemmI10block_q4_KLl8ELl8EL9ggml_type15EEEviPfmPKvS7_ii"));
    cpu->quantize_mat_q8_K_4x8 = reinterpret_cast<QuantizeMatFn>(
        dlsym(handle, "_Z19ggml_quantize_mat_tILl8EL9ggml_type15EEvPKfPvll"));
    return cpu;
  }

  GetTraitsFn get_traits_ = nullptr;
};

// The variants this CPU can run: haswell, and the AVX-512 ones where present.
std::vector<const GgmlCpu*> RunnableVariants() {
  std::vector<const GgmlCpu*> out;
  for (const char* variant : {"haswell", "skylakex", "zen4"}) {
    if (const GgmlCpu* cpu = GgmlCpu::Get(variant)) out.push_back(cpu);
  }
  return out;
}

#define REQUIRE_GGML(cpu)                                                  \
  const GgmlCpu* cpu = GgmlCpu::Get();                                     \
  if (cpu == nullptr) {                                                    \
    GTEST_SKIP() << "llama.cpp CPU library not loadable (missing, or no " \
                    "AVX2 here): "                                         \
                 << GgmlCpu::LibraryPath()                                 \
                 << " (tools/setup.sh installs it)";                       \
  }

// ---------------------------------------------------------------------------
// Test data.

const GgmlType kTypes[] = {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0,
                           GgmlType::kQ5_1, GgmlType::kQ8_0};

// Activations like a transformer's: mostly N(0, 1), some outliers, an
// all-zero block, and integer blocks whose scaling lands exactly on .5
// (round-half-even ties).
std::vector<float> RandomActivations(int64_t n, int64_t in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> integer(-254, 254);
  std::vector<float> x(n * in);
  for (int64_t t = 0; t < n; ++t) {
    float* row = x.data() + t * in;
    const float row_scale = std::exp2(static_cast<float>(t % 7) - 3.0f);
    for (int64_t j = 0; j < in; ++j) row[j] = normal(rng) * row_scale;
    for (int64_t j = 0; j < in; j += 97) row[j] *= 30.0f;
    const int64_t blocks = in / 32;
    if (blocks > 1 && t % 2 == 0) std::fill(row + 32, row + 64, 0.0f);
    if (blocks > 2) {
      float* tie_block = row + 64;
      for (int j = 0; j < 32; ++j) tie_block[j] = static_cast<float>(integer(rng));
      tie_block[5] = 254.0f;  // amax 254: id = 0.5, odd values tie
    }
  }
  return x;
}

// Rows of weights quantised with ggml's own quantiser for `type`.
std::vector<uint8_t> QuantisedWeights(const GgmlCpu& cpu, GgmlType type,
                                      int64_t rows, int64_t in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> w(in);
  const size_t row_bytes = GgmlRowBytes(type, in);
  std::vector<uint8_t> out(rows * row_bytes);
  for (int64_t r = 0; r < rows; ++r) {
    const float offset = (r % 3 == 0) ? 0.02f : 0.0f;  // asymmetric rows
    for (float& v : w) v = normal(rng) + offset;
    cpu.Traits(type).from_float(w.data(), out.data() + r * row_bytes, in);
  }
  return out;
}

// Random bytes with random (sign, magnitude 2^-12..2^-3) fp16 scales and
// mins: every quant value occurs, e.g. -128 for Q8_0.
std::vector<uint8_t> RandomBlockBytes(GgmlType type, int64_t rows, int64_t in,
                                      uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> exponent(3, 12);  // biased fp16 exponent
  std::uniform_int_distribution<int> mantissa(0, 1023);
  const size_t block_bytes = GgmlBlockBytes(type);
  std::vector<uint8_t> out(rows * GgmlRowBytes(type, in));
  for (uint8_t& b : out) b = static_cast<uint8_t>(byte(rng));
  // Where the block's fp16 fields are (scale, and min for the types with one).
  std::vector<size_t> fields = {0};
  if (type == GgmlType::kQ4_1 || type == GgmlType::kQ5_1 || type == GgmlType::kQ4_K ||
      type == GgmlType::kQ5_K) {
    fields = {0, 2};
  } else if (type == GgmlType::kQ6_K) {
    fields = {208};
  }
  for (size_t offset = 0; offset < out.size(); offset += block_bytes) {
    for (size_t field : fields) {
      const uint16_t half = static_cast<uint16_t>(
          (byte(rng) & 1) << 15 | exponent(rng) << 10 | mantissa(rng));
      std::memcpy(&out[offset + field], &half, 2);
    }
  }
  return out;
}

// What ggml computes: each activation row quantised with the vec_dot type's
// from_float, then one vec_dot per (activation row, weight row).
std::vector<float> GgmlProduct(const GgmlCpu& cpu, GgmlType type,
                               const uint8_t* weight, int64_t rows, int64_t in,
                               const float* x, int64_t n) {
  const ggml_type_traits_cpu& traits = cpu.Traits(type);
  const GgmlType act_type = static_cast<GgmlType>(traits.vec_dot_type);
  const size_t row_bytes = GgmlRowBytes(type, in);
  std::vector<uint8_t> act(GgmlRowBytes(act_type, in));
  std::vector<float> out(n * rows);
  for (int64_t t = 0; t < n; ++t) {
    cpu.Traits(act_type).from_float(x + t * in, act.data(), in);
    for (int64_t r = 0; r < rows; ++r) {
      traits.vec_dot(static_cast<int>(in), &out[t * rows + r], 0,
                     weight + r * row_bytes, 0, act.data(), 0, 1);
    }
  }
  return out;
}

// Splits the range in two at an odd point and runs the halves on two threads.
void TwoThreadFor(int64_t begin, int64_t end, const RangeFn& body) {
  const int64_t mid = begin + (end - begin) / 2 + ((end - begin) > 2 ? 1 : 0);
  std::thread worker([&] {
    if (begin < mid) body(begin, mid);
  });
  if (mid < end) body(mid, end);
  worker.join();
}

// The same split on a persistent spinning worker (like OpenMP's), for timing
// without thread start-up costs.
class SpinningPair {
 public:
  SpinningPair() : worker_([this] { Work(); }) {}
  ~SpinningPair() {
    stop_.store(true);
    worker_.join();
  }
  void For(int64_t begin, int64_t end, const RangeFn& body) {
    const int64_t mid = begin + (end - begin) / 2;
    body_ = &body;
    begin_ = begin;
    mid_ = mid;
    done_.store(false, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    if (mid < end) body(mid, end);
    while (!done_.load(std::memory_order_acquire)) std::this_thread::yield();
  }

 private:
  void Work() {
    uint64_t seen = 0;
    while (!stop_.load(std::memory_order_relaxed)) {
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::this_thread::yield();  // other processes may need this core
        continue;
      }
      ++seen;
      if (begin_ < mid_) (*body_)(begin_, mid_);
      done_.store(true, std::memory_order_release);
    }
  }

  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> done_{true};
  std::atomic<bool> stop_{false};
  const RangeFn* body_ = nullptr;
  int64_t begin_ = 0, mid_ = 0;
  std::thread worker_;
};

// Count of positions where a and b differ (bitwise-equal floats required).
int64_t CountMismatches(const std::vector<float>& a, const std::vector<float>& b,
                        std::string* first) {
  int64_t mismatches = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(a[i] == b[i])) {
      if (mismatches++ == 0) {
        *first = "index " + std::to_string(i) + ": " + std::to_string(a[i]) +
                 " vs " + std::to_string(b[i]);
      }
    }
  }
  return mismatches;
}

TEST(QuantMatmulTest, SupportsTheLegacyBlockTypes) {
  for (GgmlType type : kTypes) EXPECT_TRUE(QuantMatmulSupports(type));
  EXPECT_FALSE(QuantMatmulSupports(GgmlType::kF32));
  EXPECT_FALSE(QuantMatmulSupports(GgmlType::kQ4_K));
  EXPECT_FALSE(QuantMatmulSupports(GgmlType::kQ8_1));
}

// The core requirement: bit-identical to llama.cpp's vec_dot, for every
// batch size (every prefix of a 17-row batch), also split across threads;
// the portable code gives the same bits.
TEST(QuantMatmulTest, EqualsGgmlVecDotExactly) {
  REQUIRE_GGML(cpu);
  const int64_t kIns[] = {32, 64, 576, 1536, 2048, 5632};
  const int64_t kRows[] = {1, 6, 1000};
  const int64_t kBatches[] = {1, 2, 3, 8, 17};
  const int64_t max_n = 17;
  uint32_t seed = 1;
  for (GgmlType type : kTypes) {
    for (int64_t in : kIns) {
      const std::vector<float> x = RandomActivations(max_n, in, seed++);
      for (int64_t rows : kRows) {
        for (bool random_bytes : {false, true}) {
          if (random_bytes && rows > 6) continue;  // keep the run short
          const std::vector<uint8_t> w =
              random_bytes ? RandomBlockBytes(type, rows, in, seed++)
                           : QuantisedWeights(*cpu, type, rows, in, seed++);
          const std::vector<float> expected =
              GgmlProduct(*cpu, type, w.data(), rows, in, x.data(), max_n);
          for (int64_t n : kBatches) {
            SCOPED_TRACE(std::string(GgmlTypeName(type)) + " in=" + std::to_string(in) +
                         " rows=" + std::to_string(rows) + " n=" + std::to_string(n) +
                         (random_bytes ? " random bytes" : " ggml-quantised"));
            const std::vector<float> want(expected.begin(), expected.begin() + n * rows);
            std::vector<float> got(n * rows, NAN);
            QuantMatmul(type, w.data(), rows, in, x.data(), n, got.data());
            std::string first;
            EXPECT_EQ(CountMismatches(got, want, &first), 0) << first;

            std::fill(got.begin(), got.end(), NAN);
            QuantMatmul(type, w.data(), rows, in, x.data(), n, got.data(), TwoThreadFor);
            EXPECT_EQ(CountMismatches(got, want, &first), 0) << "2 threads: " << first;

            if (rows <= 6 || n == max_n) {
              std::fill(got.begin(), got.end(), NAN);
              quant_matmul_internal::QuantMatmulPortable(type, w.data(), rows, in,
                                                         x.data(), n, got.data());
              EXPECT_EQ(CountMismatches(got, want, &first), 0) << "portable: " << first;
            }
          }
        }
      }
    }
  }
}

// A row's result is the same alone and inside a batch (no ggml needed).
TEST(QuantMatmulTest, RowResultDoesNotDependOnBatch) {
  const int64_t in = 576, rows = 67, n = 17;
  const std::vector<float> x = RandomActivations(n, in, 99);
  for (GgmlType type : kTypes) {
    SCOPED_TRACE(GgmlTypeName(type));
    const std::vector<uint8_t> w = RandomBlockBytes(type, rows, in, 7);
    std::vector<float> batch(n * rows);
    QuantMatmul(type, w.data(), rows, in, x.data(), n, batch.data());
    for (int64_t t = 0; t < n; ++t) {
      std::vector<float> single(rows);
      QuantMatmul(type, w.data(), rows, in, x.data() + t * in, 1, single.data());
      const std::vector<float> from_batch(batch.begin() + t * rows,
                                          batch.begin() + (t + 1) * rows);
      std::string first;
      EXPECT_EQ(CountMismatches(single, from_batch, &first), 0)
          << "row " << t << ": " << first;
    }
  }
}

float HalfToFloat(const uint8_t* p) {
  float f = 0.0f;
  EXPECT_TRUE(DequantizeToF32(GgmlType::kF16, p, 1, &f).ok());
  return f;
}

// Against the dequantised weights (DequantizeToF32) and the exact
// activations in double precision. The only error allowed is 8-bit activation
// rounding: per element at most amax/254 of its block, plus fp16 rounding of
// the activation scale and sum (2^-11 relative), plus float summation.
TEST(QuantMatmulTest, MatchesDequantisedProductWithinActivationRounding) {
  const int64_t in = 1536, rows = 40, n = 5;
  const std::vector<float> x = RandomActivations(n, in, 5);
  for (GgmlType type : kTypes) {
    const std::vector<uint8_t> w = RandomBlockBytes(type, rows, in, 11);
    const size_t block_bytes = GgmlBlockBytes(type);
    const bool has_min = type == GgmlType::kQ4_1 || type == GgmlType::kQ5_1;
    std::vector<float> dense(rows * in);
    ASSERT_TRUE(DequantizeToF32(type, w.data(), rows * in, dense.data()).ok());
    for (bool portable : {false, true}) {
      SCOPED_TRACE(std::string(GgmlTypeName(type)) + (portable ? " portable" : ""));
      std::vector<float> got(n * rows);
      if (portable) {
        quant_matmul_internal::QuantMatmulPortable(type, w.data(), rows, in, x.data(),
                                                   n, got.data());
      } else {
        QuantMatmul(type, w.data(), rows, in, x.data(), n, got.data());
      }
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          double exact = 0.0, bound = 0.0, magnitude = 0.0;
          for (int64_t b = 0; b < in / 32; ++b) {
            const float* wb = dense.data() + r * in + b * 32;
            const float* xb = x.data() + t * in + b * 32;
            const double m =
                has_min ? HalfToFloat(w.data() + (r * in / 32 + b) * block_bytes + 2) : 0.0;
            double amax = 0.0, w_spread = 0.0;
            for (int j = 0; j < 32; ++j) {
              exact += static_cast<double>(wb[j]) * xb[j];
              magnitude += std::fabs(static_cast<double>(wb[j]) * xb[j]);
              amax = std::max(amax, std::fabs(static_cast<double>(xb[j])));
              w_spread += std::fabs(wb[j] - m);
            }
            bound += amax * (1.0 / 254 + 1.0 / 1024) * (w_spread + 32 * std::fabs(m));
          }
          bound += 1e-5 * magnitude + 1e-30;
          const double error = std::fabs(got[t * rows + r] - exact);
          ASSERT_LE(error, bound) << "t=" << t << " r=" << r << " exact=" << exact;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Interleaved Q4_0 / Q8_0 (interleaved_matmul.h).

std::vector<uint8_t> Interleaved(GgmlType type, const std::vector<uint8_t>& w, int64_t rows,
                                 int64_t in) {
  std::vector<uint8_t> out(w.size());
  InterleaveRows(type, w.data(), rows, in, out.data());
  return out;
}

// llama.cpp's own repacking of Q4_0 rows into block_q4_0x8 (repack.cpp,
// make_block_q4_0x8 with an interleave of 8: 8 scales, then 8-byte pieces of
// the rows in turn, each nibble xor 8 to make it signed).
std::vector<uint8_t> GgmlRepackQ4_0x8(const std::vector<uint8_t>& w, int64_t rows, int64_t in) {
  const int64_t num_blocks = in / 32;
  std::vector<uint8_t> out(w.size());
  uint8_t* dst = out.data();
  for (int64_t g = 0; g < rows / 8; ++g) {
    for (int64_t b = 0; b < num_blocks; ++b, dst += 144) {
      const uint8_t* block[8];
      for (int i = 0; i < 8; ++i) block[i] = w.data() + ((g * 8 + i) * num_blocks + b) * 18;
      for (int i = 0; i < 8; ++i) std::memcpy(dst + 2 * i, block[i], 2);
      for (int i = 0; i < 16; ++i) {
        for (int j = 0; j < 8; ++j) dst[16 + 8 * i + j] = block[i % 8][2 + (i / 8) * 8 + j] ^ 0x88;
      }
    }
  }
  return out;
}

TEST(InterleavedMatmulTest, SupportsQ4_0Q4_1AndQ8_0WithRowsInEights) {
  EXPECT_TRUE(InterleavedMatmulSupports(GgmlType::kQ4_0, 64, 2048));
  EXPECT_TRUE(InterleavedMatmulSupports(GgmlType::kQ4_1, 64, 2048));
  EXPECT_TRUE(InterleavedMatmulSupports(GgmlType::kQ8_0, 8, 32));
  EXPECT_FALSE(InterleavedMatmulSupports(GgmlType::kQ4_0, 60, 2048));
  EXPECT_FALSE(InterleavedMatmulSupports(GgmlType::kQ5_1, 64, 2048));
  EXPECT_FALSE(InterleavedMatmulSupports(GgmlType::kQ8_0, 64, 48));
}

TEST(InterleavedMatmulTest, DeinterleavedRowsAreTheFilesRows) {
  for (GgmlType type : {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    const int64_t rows = 24, in = 96;
    const std::vector<uint8_t> w = RandomBlockBytes(type, rows, in, 5);
    const std::vector<uint8_t> packed = Interleaved(type, w, rows, in);
    const size_t row_bytes = GgmlRowBytes(type, in);
    std::vector<uint8_t> row(row_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      DeinterleaveRow(type, packed.data(), in, r, row.data());
      EXPECT_EQ(0, std::memcmp(row.data(), w.data() + r * row_bytes, row_bytes)) << "row " << r;
    }
  }
}

// Q8_0 and Q4_1: the same bits as ggml's vec_dot (and the row-by-row kernel).
TEST(InterleavedMatmulTest, Q8_0AndQ4_1EqualGgmlVecDotExactly) {
  REQUIRE_GGML(cpu);
  uint32_t seed = 7;
  for (GgmlType type : {GgmlType::kQ8_0, GgmlType::kQ4_1})
  for (int64_t in : {32, 576, 2048, 5632}) {
    for (int64_t rows : {8, 24, 1000}) {
      for (bool random_bytes : {false, true}) {
        const std::vector<uint8_t> w = random_bytes ? RandomBlockBytes(type, rows, in, seed++)
                                                    : QuantisedWeights(*cpu, type, rows, in, seed++);
        const std::vector<uint8_t> packed = Interleaved(type, w, rows, in);
        const int64_t max_n = 9;
        const std::vector<float> x = RandomActivations(max_n, in, seed++);
        const std::vector<float> expected =
            GgmlProduct(*cpu, type, w.data(), rows, in, x.data(), max_n);
        for (int64_t n : {1, 2, 5, 9}) {
          SCOPED_TRACE(std::string(GgmlTypeName(type)) + " in=" + std::to_string(in) +
                       " rows=" + std::to_string(rows) + " n=" + std::to_string(n) +
                       (random_bytes ? " random bytes" : ""));
          const std::vector<float> want(expected.begin(), expected.begin() + n * rows);
          std::vector<float> got(n * rows, NAN);
          std::string first;
          InterleavedMatmul(type, packed.data(), rows, in, x.data(), n, got.data(), TwoThreadFor);
          EXPECT_EQ(CountMismatches(got, want, &first), 0) << first;
          std::fill(got.begin(), got.end(), NAN);
          interleaved_matmul_internal::InterleavedMatmulPortable(type, packed.data(), rows, in,
                                                                 x.data(), n, got.data());
          EXPECT_EQ(CountMismatches(got, want, &first), 0) << "portable: " << first;
        }
      }
    }
  }
}

// Q4_0: the same bits as llama.cpp's repacked kernels, the ones it runs for
// Q4_0 on AVX2 machines: gemv for one activation row, gemm for groups of 4.
TEST(InterleavedMatmulTest, Q4_0EqualsGgmlRepackedKernelsExactly) {
  REQUIRE_GGML(cpu);
  if (cpu->q4_0_gemv == nullptr || cpu->q4_0_gemm == nullptr ||
      cpu->quantize_mat_q8_0_4x8 == nullptr) {
    GTEST_SKIP() << "this libggml-cpu lacks the repacked Q4_0 kernels";
  }
  const GgmlType type = GgmlType::kQ4_0;
  uint32_t seed = 11;
  for (int64_t in : {32, 576, 2048, 5632}) {
    for (int64_t rows : {8, 24, 1000}) {
      for (bool random_bytes : {false, true}) {
        SCOPED_TRACE("in=" + std::to_string(in) + " rows=" + std::to_string(rows) +
                     (random_bytes ? " random bytes" : ""));
        const std::vector<uint8_t> w = random_bytes ? RandomBlockBytes(type, rows, in, seed++)
                                                    : QuantisedWeights(*cpu, type, rows, in, seed++);
        const std::vector<uint8_t> packed = Interleaved(type, w, rows, in);
        const std::vector<uint8_t> ggml_packed = GgmlRepackQ4_0x8(w, rows, in);
        const int64_t n = 8;
        const std::vector<float> x = RandomActivations(n, in, seed++);
        // gemv, one activation row at a time (quantize_row_q8_0).
        std::vector<float> want(n * rows);
        std::vector<uint8_t> act(GgmlRowBytes(GgmlType::kQ8_0, in));
        for (int64_t t = 0; t < n; ++t) {
          cpu->Traits(GgmlType::kQ8_0).from_float(x.data() + t * in, act.data(), in);
          cpu->q4_0_gemv(static_cast<int>(in), want.data() + t * rows, rows, ggml_packed.data(),
                         act.data(), 1, static_cast<int>(rows));
        }
        // gemm, activation rows 4 at a time (ggml_quantize_mat_t<8, Q8_0>).
        std::vector<float> want_gemm(n * rows);
        std::vector<uint8_t> act4(4 * GgmlRowBytes(GgmlType::kQ8_0, in));
        for (int64_t t = 0; t < n; t += 4) {
          cpu->quantize_mat_q8_0_4x8(x.data() + t * in, act4.data(), 4, in);
          cpu->q4_0_gemm(static_cast<int>(in), want_gemm.data() + t * rows, rows,
                         ggml_packed.data(), act4.data(), 4, static_cast<int>(rows));
        }
        std::string first;
        EXPECT_EQ(CountMismatches(want_gemm, want, &first), 0) << "ggml gemm vs gemv: " << first;
        for (int64_t count : {1, 3, 8}) {
          const std::vector<float> expected(want.begin(), want.begin() + count * rows);
          std::vector<float> got(count * rows, NAN);
          InterleavedMatmul(type, packed.data(), rows, in, x.data(), count, got.data(),
                            TwoThreadFor);
          EXPECT_EQ(CountMismatches(got, expected, &first), 0) << "n=" << count << ": " << first;
          std::fill(got.begin(), got.end(), NAN);
          interleaved_matmul_internal::InterleavedMatmulPortable(type, packed.data(), rows, in,
                                                                 x.data(), count, got.data());
          EXPECT_EQ(CountMismatches(got, expected, &first), 0)
              << "portable n=" << count << ": " << first;
        }
      }
    }
  }
}

// Without llama.cpp: batch invariance and AVX2 == AVX-512 (where the CPU
// has it: pairs of groups, and a last single group of 9) == portable on
// every Q4_0/Q8_0 shape a test machine can run.
TEST(InterleavedMatmulTest, RowResultDoesNotDependOnBatch) {
  const int64_t in = 576, rows = 72, n = 37;
  const std::vector<float> x = RandomActivations(n, in, 123);
  std::vector<bool> vnni_choices = {false};
  if (interleaved_matmul_internal::UsesVnni()) vnni_choices.push_back(true);
  for (bool vnni : vnni_choices)
  for (GgmlType type : {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    SCOPED_TRACE(vnni ? "vnni" : "avx2");
    interleaved_matmul_internal::AllowVnni(vnni);
    const std::vector<uint8_t> packed =
        Interleaved(type, RandomBlockBytes(type, rows, in, 77), rows, in);
    std::vector<float> batch(n * rows), portable(n * rows);
    InterleavedMatmul(type, packed.data(), rows, in, x.data(), n, batch.data(), TwoThreadFor);
    interleaved_matmul_internal::InterleavedMatmulPortable(type, packed.data(), rows, in,
                                                           x.data(), n, portable.data());
    std::string first;
    EXPECT_EQ(CountMismatches(batch, portable, &first), 0) << GgmlTypeName(type) << ": " << first;
    for (int64_t t : {0, 5, 36}) {
      std::vector<float> alone(rows);
      InterleavedMatmul(type, packed.data(), rows, in, x.data() + t * in, 1, alone.data());
      const std::vector<float> in_batch(batch.begin() + t * rows, batch.begin() + (t + 1) * rows);
      EXPECT_EQ(CountMismatches(alone, in_batch, &first), 0) << GgmlTypeName(type) << " row " << t;
    }
  }
  interleaved_matmul_internal::AllowVnni(true);
}

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Timing of a one-token product over SmolLM2-135M's layer matrices in Q4_1:
// 30 x (fused QKV 960x576, O 576x576, fused gate/up 3072x576, down 576x1536).
// Run with --gtest_also_run_disabled_tests. Single-thread runs are timed in
// thread CPU time (other processes share this machine's cores), two-thread
// runs in wall time; best of 7.
// ---------------------------------------------------------------------------
// K-quants (KQuantMatmul).

const GgmlType kKTypes[] = {GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};

// The 6-bit scale and min of sub-block j of a Q4_K block (12 packed bytes).
void Q4KScaleMin(const uint8_t* packed, int j, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = packed[j] & 63;
    *min = packed[j + 4] & 63;
  } else {
    *scale = (packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4);
    *min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
  }
}

// Q4_K rows as llama.cpp repacks them for its q4_K_8x8 kernels
// (block_q4_Kx8, ggml-cpu/repack.h): per group of 8 rows and block, the 8 d,
// the 8 dmin, 12 bytes of scales and mins per sub-block (the low 6 bits of
// rows 0-3 and 4-7, the rest of rows 4-7's bits in the top bits and a third
// run of bytes), then 8 quant bytes of each row in turn.
std::vector<uint8_t> GgmlRepackQ4_Kx8(const std::vector<uint8_t>& w, int64_t rows, int64_t in) {
  constexpr size_t kBlockBytes = 144, kPackedBytes = 16 + 16 + 96 + 1024;
  const int64_t num_blocks = in / 256;
  std::vector<uint8_t> out(rows / 8 * num_blocks * kPackedBytes);
  uint8_t* dst = out.data();
  for (int64_t r0 = 0; r0 < rows; r0 += 8) {
    for (int64_t b = 0; b < num_blocks; ++b, dst += kPackedBytes) {
      const uint8_t* src[8];
      for (int i = 0; i < 8; ++i) src[i] = w.data() + ((r0 + i) * num_blocks + b) * kBlockBytes;
      for (int i = 0; i < 8; ++i) {
        std::memcpy(dst + 2 * i, src[i], 2);
        std::memcpy(dst + 16 + 2 * i, src[i] + 2, 2);
      }
      for (int j = 0; j < 8; ++j) {
        uint8_t sc[8], mn[8];
        for (int i = 0; i < 8; ++i) Q4KScaleMin(src[i] + 4, j, &sc[i], &mn[i]);
        uint8_t* g = dst + 32 + 12 * j;
        for (int k = 0; k < 4; ++k) {
          g[k] = static_cast<uint8_t>((sc[k] & 63) + ((sc[k + 4] & 48) << 2));
          g[k + 4] = static_cast<uint8_t>((mn[k] & 63) + ((mn[k + 4] & 48) << 2));
          g[k + 8] = static_cast<uint8_t>((sc[k + 4] & 15) + ((mn[k + 4] & 15) << 4));
        }
      }
      for (int i = 0; i < 128; ++i) std::memcpy(dst + 128 + 8 * i, src[i % 8] + 16 + (i / 8) * 8, 8);
    }
  }
  return out;
}

TEST(KQuantMatmulTest, OrderFollowsLlamaCppsRepacking) {
  EXPECT_EQ(KQuantOrderFor(GgmlType::kQ4_K, 2048), KQuantOrder::kRepacked);
  EXPECT_EQ(KQuantOrderFor(GgmlType::kQ4_K, 6), KQuantOrder::kVecDot);
  EXPECT_EQ(KQuantOrderFor(GgmlType::kQ5_K, 2048), KQuantOrder::kVecDot);
  EXPECT_EQ(KQuantOrderFor(GgmlType::kQ6_K, 2048), KQuantOrder::kVecDot);
}

// Bit-identical to llama.cpp's vec_dot (quantize_row_q8_K, then
// ggml_vec_dot_<type>_q8_K) in every CPU library this machine can run, for
// every batch size, split across threads, and in the portable code.
TEST(KQuantMatmulTest, VecDotEqualsGgmlExactly) {
  REQUIRE_GGML(haswell);
  const int64_t kIns[] = {256, 2048, 5632};
  const int64_t kRows[] = {1, 7, 300};
  const int64_t kBatches[] = {1, 2, 3, 5, 9};
  const int64_t max_n = 9;
  for (const GgmlCpu* cpu : RunnableVariants()) {
    uint32_t seed = 1;
    for (GgmlType type : kKTypes) {
      for (int64_t in : kIns) {
        const std::vector<float> x = RandomActivations(max_n, in, seed++);
        for (int64_t rows : kRows) {
          for (bool random_bytes : {false, true}) {
            if (random_bytes && rows > 7) continue;  // keep the run short
            const std::vector<uint8_t> w = random_bytes
                                               ? RandomBlockBytes(type, rows, in, seed++)
                                               : QuantisedWeights(*cpu, type, rows, in, seed++);
            const std::vector<float> expected =
                GgmlProduct(*cpu, type, w.data(), rows, in, x.data(), max_n);
            for (int64_t n : kBatches) {
              SCOPED_TRACE(cpu->variant + " " + GgmlTypeName(type) + " in=" +
                           std::to_string(in) + " rows=" + std::to_string(rows) +
                           " n=" + std::to_string(n) +
                           (random_bytes ? " random bytes" : " ggml-quantised"));
              const std::vector<float> want(expected.begin(), expected.begin() + n * rows);
              std::vector<float> got(n * rows, NAN);
              std::string first;
              KQuantMatmul(type, w.data(), rows, in, x.data(), n, got.data(),
                           KQuantOrder::kVecDot, TwoThreadFor);
              EXPECT_EQ(CountMismatches(got, want, &first), 0) << first;
              if (n == max_n || rows <= 7) {
                std::fill(got.begin(), got.end(), NAN);
                kquant_matmul_internal::KQuantMatmulPortable(type, w.data(), rows, in, x.data(),
                                                             n, got.data(), KQuantOrder::kVecDot);
                EXPECT_EQ(CountMismatches(got, want, &first), 0) << "portable: " << first;
              }
            }
          }
        }
      }
    }
  }
}

// Activation rows rounded to Q8_K exactly as llama.cpp's quantize_row_q8_K
// (its from_float for Q8_K) in every CPU library this machine can run: d,
// quants and sums of 16, for random rows, rows with ties of magnitude, a
// negative extreme, exact halves and all-zero blocks.
TEST(KQuantMatmulTest, ActivationsRoundToQ8KAsGgmlDoes) {
  REQUIRE_GGML(haswell);
  constexpr int64_t kBlocks = 8;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uniform(-3.0f, 3.0f);
  std::vector<float> x(kBlocks * 256);
  for (float& v : x) v = uniform(rng);
  for (int j = 0; j < 256; ++j) x[256 + j] = 0.0f;                     // block 1: zeros
  x[2 * 256 + 17] = -9.0f, x[2 * 256 + 200] = 9.0f;                    // block 2: tie, - first
  x[3 * 256 + 5] = 8.0f, x[3 * 256 + 90] = -8.0f;                      // block 3: tie, + first
  for (int j = 0; j < 256; ++j) x[4 * 256 + j] = (j % 9 - 4) * 0.5f;   // block 4: halves
  x[5 * 256 + 255] = -50.0f;                                           // block 5: last, negative
  for (const GgmlCpu* cpu : RunnableVariants()) {
    SCOPED_TRACE(cpu->variant);
    std::vector<kquant_matmul_internal::Q8KBlock> ours(kBlocks);
    kquant_matmul_internal::QuantizeRowQ8K(x.data(), kBlocks, /*four_row_rule=*/false,
                                           ours.data());
    // block_q8_K: float d, int8 qs[256], int16 bsums[16] (292 bytes).
    std::vector<uint8_t> theirs(kBlocks * 292);
    cpu->Traits(GgmlType::kQ8_K).from_float(x.data(), theirs.data(), kBlocks * 256);
    for (int64_t b = 0; b < kBlocks; ++b) {
      const uint8_t* t = theirs.data() + 292 * b;
      float d;
      std::memcpy(&d, t, 4);
      EXPECT_EQ(std::memcmp(&d, &ours[b].d, 4), 0) << "block " << b << " d " << d << " vs "
                                                   << ours[b].d;
      EXPECT_EQ(std::memcmp(t + 4, ours[b].q, 256), 0) << "block " << b << " quants";
      EXPECT_EQ(std::memcmp(t + 260, ours[b].bsums, 32), 0) << "block " << b << " sums";
    }
  }
}

// Q4_K in the repacked order: the same bits as llama.cpp's q4_K_8x8 gemv (one
// activation row) and gemm (4 rows; it sums per 64 elements, so its results
// differ from gemv's), which it runs for Q4_K weights of whole groups of 8
// rows in its AVX2 and AVX-512 libraries.
TEST(KQuantMatmulTest, Q4_KRepackedEqualsGgmlRepackedKernelsExactly) {
  REQUIRE_GGML(haswell);
  const GgmlType type = GgmlType::kQ4_K;
  for (const GgmlCpu* cpu : RunnableVariants()) {
    if (cpu->q4_K_gemv == nullptr || cpu->q4_K_gemm == nullptr ||
        cpu->quantize_mat_q8_K_4x8 == nullptr) {
      ADD_FAILURE() << cpu->variant << " lacks the repacked Q4_K kernels";
      continue;
    }
    uint32_t seed = 31;
    for (int64_t in : {256, 2048, 5632}) {
      for (int64_t rows : {8, 24, 256}) {
        for (bool random_bytes : {false, true}) {
          SCOPED_TRACE(cpu->variant + " in=" + std::to_string(in) + " rows=" +
                       std::to_string(rows) + (random_bytes ? " random bytes" : ""));
          const std::vector<uint8_t> w = random_bytes
                                             ? RandomBlockBytes(type, rows, in, seed++)
                                             : QuantisedWeights(*cpu, type, rows, in, seed++);
          const std::vector<uint8_t> packed = GgmlRepackQ4_Kx8(w, rows, in);
          std::vector<uint8_t> interleaved(KQuantInterleavedBytes(rows, in));
          InterleaveKQuantRows(w.data(), rows, in, interleaved.data());
          const int64_t n = 8;
          const std::vector<float> x = RandomActivations(n, in, seed++);
          std::vector<float> want(n * rows);
          std::vector<uint8_t> act(GgmlRowBytes(GgmlType::kQ8_K, in));
          for (int64_t t = 0; t < n; ++t) {
            cpu->Traits(GgmlType::kQ8_K).from_float(x.data() + t * in, act.data(), in);
            cpu->q4_K_gemv(static_cast<int>(in), want.data() + t * rows, rows, packed.data(),
                           act.data(), 1, static_cast<int>(rows));
          }
          std::vector<float> want_gemm(n * rows);
          std::vector<uint8_t> act4(4 * GgmlRowBytes(GgmlType::kQ8_K, in));
          for (int64_t t = 0; t < n; t += 4) {
            cpu->quantize_mat_q8_K_4x8(x.data() + t * in, act4.data(), 4, in);
            cpu->q4_K_gemm(static_cast<int>(in), want_gemm.data() + t * rows, rows,
                           packed.data(), act4.data(), 4, static_cast<int>(rows));
          }
          // The repacking is right: ggml's own vec_dot on the rows agrees to rounding.
          if (!random_bytes) {
            const std::vector<float> vec_dot =
                GgmlProduct(*cpu, type, w.data(), rows, in, x.data(), n);
            for (size_t i = 0; i < want.size(); ++i) {
              ASSERT_NEAR(want[i], vec_dot[i], 1e-4f * (1.0f + std::fabs(vec_dot[i]))) << i;
            }
          }
          // As llama.cpp's mul_mat: the first count - count % 4 rows through
          // gemm, the rest through gemv.
          std::string first;
          for (int64_t count : {1, 3, 4, 7, 8}) {
            std::vector<float> expected(count * rows);
            std::vector<uint8_t> grouped(count);
            for (int64_t t = 0; t < count; ++t) {
              grouped[t] = t < count - count % 4;
              const std::vector<float>& source = grouped[t] ? want_gemm : want;
              std::copy(source.begin() + t * rows, source.begin() + (t + 1) * rows,
                        expected.begin() + t * rows);
            }
            std::vector<float> got(count * rows, NAN);
            KQuantMatmul(type, w.data(), rows, in, x.data(), count, got.data(),
                         KQuantOrder::kRepacked, TwoThreadFor, grouped.data());
            EXPECT_EQ(CountMismatches(got, expected, &first), 0) << "n=" << count << ": " << first;
            std::fill(got.begin(), got.end(), NAN);
            kquant_matmul_internal::KQuantMatmulPortable(type, w.data(), rows, in, x.data(), count,
                                                         got.data(), KQuantOrder::kRepacked,
                                                         grouped.data());
            EXPECT_EQ(CountMismatches(got, expected, &first), 0)
                << "portable n=" << count << ": " << first;
            std::fill(got.begin(), got.end(), NAN);
            KQuantInterleavedMatmul(interleaved.data(), rows, in, x.data(), count, got.data(),
                                    TwoThreadFor, grouped.data());
            EXPECT_EQ(CountMismatches(got, expected, &first), 0)
                << "interleaved n=" << count << ": " << first;
            std::fill(got.begin(), got.end(), NAN);
            kquant_matmul_internal::KQuantInterleavedMatmulPortable(
                interleaved.data(), rows, in, x.data(), count, got.data(), grouped.data());
            EXPECT_EQ(CountMismatches(got, expected, &first), 0)
                << "interleaved portable n=" << count << ": " << first;
          }
          // Without grouping every row takes gemv's order.
          std::vector<float> got(n * rows, NAN);
          KQuantMatmul(type, w.data(), rows, in, x.data(), n, got.data(), KQuantOrder::kRepacked,
                       TwoThreadFor);
          EXPECT_EQ(CountMismatches(got, want, &first), 0) << "ungrouped: " << first;
          std::fill(got.begin(), got.end(), NAN);
          KQuantInterleavedMatmul(interleaved.data(), rows, in, x.data(), n, got.data(),
                                  TwoThreadFor);
          EXPECT_EQ(CountMismatches(got, want, &first), 0) << "interleaved ungrouped: " << first;
        }
      }
    }
  }
}

// Without llama.cpp: a row's result is the same alone and in a batch, and the
// AVX2 code equals the portable code, in both orders.
// Also the AVX2 kernels where the CPU has AVX-512 (Q5_K: two rows per
// register, an odd last row of a thread's range by the AVX2 kernel).
TEST(KQuantMatmulTest, RowResultDoesNotDependOnBatch) {
  const int64_t in = 512, rows = 41, n = 37;
  const std::vector<float> x = RandomActivations(n, in, 77);
  std::vector<bool> avx512_choices = {false};
  if (kquant_matmul_internal::UsesAvx512()) avx512_choices.push_back(true);
  for (bool avx512 : avx512_choices)
  for (GgmlType type : kKTypes) {
    kquant_matmul_internal::AllowAvx512(avx512);
    for (KQuantOrder order : {KQuantOrder::kVecDot, KQuantOrder::kRepacked}) {
      SCOPED_TRACE(std::string(GgmlTypeName(type)) +
                   (order == KQuantOrder::kRepacked ? " repacked" : " vec_dot") +
                   (avx512 ? " avx512" : " avx2"));
      const std::vector<uint8_t> w = RandomBlockBytes(type, rows, in, 5);
      std::vector<float> batch(n * rows), portable(n * rows);
      KQuantMatmul(type, w.data(), rows, in, x.data(), n, batch.data(), order, TwoThreadFor);
      kquant_matmul_internal::KQuantMatmulPortable(type, w.data(), rows, in, x.data(), n,
                                                   portable.data(), order);
      std::string first;
      EXPECT_EQ(CountMismatches(batch, portable, &first), 0) << "portable: " << first;
      std::vector<uint8_t> grouped(n);
      for (int64_t t = 0; t < n; ++t) grouped[t] = t % 3 != 0;
      KQuantMatmul(type, w.data(), rows, in, x.data(), n, batch.data(), order, TwoThreadFor,
                   grouped.data());
      kquant_matmul_internal::KQuantMatmulPortable(type, w.data(), rows, in, x.data(), n,
                                                   portable.data(), order, grouped.data());
      EXPECT_EQ(CountMismatches(batch, portable, &first), 0) << "grouped portable: " << first;
      for (int64_t t = 1; t < n; t += 7) {  // one grouped row alone
        if (!grouped[t]) continue;
        std::vector<float> single(rows);
        const uint8_t one = 1;
        KQuantMatmul(type, w.data(), rows, in, x.data() + t * in, 1, single.data(), order,
                     TwoThreadFor, &one);
        const std::vector<float> from_batch(batch.begin() + t * rows,
                                            batch.begin() + (t + 1) * rows);
        EXPECT_EQ(CountMismatches(single, from_batch, &first), 0) << "grouped row " << t;
      }
      KQuantMatmul(type, w.data(), rows, in, x.data(), n, batch.data(), order, TwoThreadFor);
      for (int64_t t = 0; t < n; t += 5) {
        std::vector<float> single(rows);
        KQuantMatmul(type, w.data(), rows, in, x.data() + t * in, 1, single.data(), order);
        const std::vector<float> from_batch(batch.begin() + t * rows,
                                            batch.begin() + (t + 1) * rows);
        EXPECT_EQ(CountMismatches(single, from_batch, &first), 0) << "row " << t << ": " << first;
      }
    }
  }
  kquant_matmul_internal::AllowAvx512(true);
}

// Interleaving Q4_K rows keeps every byte: each row comes back out as it went
// in, whatever the bytes (random scales, mins and d included).
TEST(KQuantMatmulTest, InterleavedQ4_KRowsComeBackOut) {
  const int64_t in = 768, rows = 24;
  EXPECT_TRUE(KQuantInterleaveSupports(GgmlType::kQ4_K, rows, in));
  EXPECT_FALSE(KQuantInterleaveSupports(GgmlType::kQ4_K, 20, in));
  EXPECT_FALSE(KQuantInterleaveSupports(GgmlType::kQ5_K, rows, in));
  const std::vector<uint8_t> w = RandomBlockBytes(GgmlType::kQ4_K, rows, in, 9);
  std::vector<uint8_t> interleaved(KQuantInterleavedBytes(rows, in));
  EXPECT_EQ(interleaved.size(), w.size() / 144 * 148);
  InterleaveKQuantRows(w.data(), rows, in, interleaved.data());
  const size_t row_bytes = GgmlRowBytes(GgmlType::kQ4_K, in);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<uint8_t> row(row_bytes);
    DeinterleaveKQuantRow(interleaved.data(), in, r, row.data());
    EXPECT_TRUE(std::equal(row.begin(), row.end(), w.begin() + r * row_bytes)) << "row " << r;
  }
}

// Interleaved Q4_K, without llama.cpp: the same bits as KQuantMatmul on the
// ggml rows for any batch (tiles of 4, 3, 2 and 1 rows, grouped and not,
// mixed), alone or in a batch, AVX-512 (pairs of groups and a last single
// group of 5), AVX2 and portable.
TEST(KQuantMatmulTest, InterleavedQ4_KEqualsRowByRowForAnyBatch) {
  const int64_t in = 512, rows = 40;
  std::vector<bool> avx512_choices = {false};
  if (kquant_matmul_internal::UsesAvx512()) avx512_choices.push_back(true);
  for (int64_t n : {1, 2, 3, 5, 37}) {
    for (bool avx512 : avx512_choices) {
      kquant_matmul_internal::AllowAvx512(avx512);
      SCOPED_TRACE("n=" + std::to_string(n) + (avx512 ? " avx512" : ""));
      const std::vector<float> x = RandomActivations(n, in, 70 + n);
      const std::vector<uint8_t> w = RandomBlockBytes(GgmlType::kQ4_K, rows, in, 6);
      std::vector<uint8_t> interleaved(KQuantInterleavedBytes(rows, in));
      InterleaveKQuantRows(w.data(), rows, in, interleaved.data());
      std::vector<uint8_t> grouped(n);
      for (int64_t t = 0; t < n; ++t) grouped[t] = t % 3 != 0;
      for (const uint8_t* flags : std::initializer_list<const uint8_t*>{nullptr, grouped.data()}) {
        std::vector<float> want(n * rows), got(n * rows, NAN);
        KQuantMatmul(GgmlType::kQ4_K, w.data(), rows, in, x.data(), n, want.data(),
                     KQuantOrder::kRepacked, TwoThreadFor, flags);
        std::string first;
        KQuantInterleavedMatmul(interleaved.data(), rows, in, x.data(), n, got.data(),
                                TwoThreadFor, flags);
        EXPECT_EQ(CountMismatches(got, want, &first), 0) << first;
        std::fill(got.begin(), got.end(), NAN);
        kquant_matmul_internal::KQuantInterleavedMatmulPortable(interleaved.data(), rows, in,
                                                                x.data(), n, got.data(), flags);
        EXPECT_EQ(CountMismatches(got, want, &first), 0) << "portable: " << first;
        for (int64_t t = 0; t < n; t += 4) {
          std::vector<float> single(rows);
          KQuantInterleavedMatmul(interleaved.data(), rows, in, x.data() + t * in, 1,
                                  single.data(), SerialFor, flags ? flags + t : nullptr);
          const std::vector<float> from_batch(want.begin() + t * rows,
                                              want.begin() + (t + 1) * rows);
          EXPECT_EQ(CountMismatches(single, from_batch, &first), 0) << "row " << t << ": " << first;
        }
      }
    }
  }
  kquant_matmul_internal::AllowAvx512(true);
}

TEST(QuantMatmulBenchmark, DISABLED_SmolLm2LayerMatricesQ4_1) {
  struct Shape { int64_t rows, in; };
  const Shape kShapes[] = {{960, 576}, {576, 576}, {3072, 576}, {576, 1536}};
  const int kLayers = 30;
  const GgmlType type = GgmlType::kQ4_1;
  std::vector<std::vector<uint8_t>> weights;
  size_t total_bytes = 0;
  for (int l = 0; l < kLayers; ++l) {
    for (const Shape& s : kShapes) {
      weights.push_back(RandomBlockBytes(type, s.rows, s.in, 1000 + weights.size()));
      total_bytes += weights.back().size();
    }
  }
  SpinningPair pair;
  const ParallelFor two_threads = [&pair](int64_t b, int64_t e, const RangeFn& body) {
    pair.For(b, e, body);
  };
  for (int64_t n : {1, 8}) {
    const std::vector<float> x = RandomActivations(n, 1536, 3);
    std::vector<float> out(n * 3072);
    // llama.cpp's vec_dot on the same work, one thread, for comparison under
    // the same machine load.
    if (const GgmlCpu* cpu = GgmlCpu::Get()) {
      double best = 1e9;
      for (int rep = 0; rep < 7; ++rep) {
        const double start = ThreadCpuSeconds();
        size_t i = 0;
        for (int l = 0; l < kLayers; ++l) {
          for (const Shape& s : kShapes) {
            GgmlProduct(*cpu, type, weights[i++].data(), s.rows, s.in, x.data(), n);
          }
        }
        best = std::min(best, ThreadCpuSeconds() - start);
      }
      std::printf("ggml vec_dot, n=%lld, 1 thread: best %.2f ms, %.1f GB/s of weights\n",
                  static_cast<long long>(n), best * 1e3, total_bytes / best / 1e9);
    }
    for (int threads : {1, 2}) {
      double best = 1e9;
      for (int rep = 0; rep < 7; ++rep) {
        const auto start = std::chrono::steady_clock::now();
        const double cpu_start = ThreadCpuSeconds();
        size_t i = 0;
        for (int l = 0; l < kLayers; ++l) {
          for (const Shape& s : kShapes) {
            if (threads == 1) {
              QuantMatmul(type, weights[i].data(), s.rows, s.in, x.data(), n, out.data());
            } else {
              QuantMatmul(type, weights[i].data(), s.rows, s.in, x.data(), n, out.data(),
                          two_threads);
            }
            ++i;
          }
        }
        const double wall = std::chrono::duration<double>(
                                std::chrono::steady_clock::now() - start).count();
        best = std::min(best, threads == 1 ? ThreadCpuSeconds() - cpu_start : wall);
      }
      std::printf("Q4_1 SmolLM2 layer matrices (%.1f MB), n=%lld, %d thread(s): "
                  "best %.2f ms, %.1f GB/s of weights\n",
                  total_bytes / 1e6, static_cast<long long>(n), threads, best * 1e3,
                  total_bytes / best / 1e9);
    }
  }
}

}  // namespace
}  // namespace llorch
