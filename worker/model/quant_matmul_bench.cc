// Google Benchmark: the quantised kernels on TinyLlama-sized layer matrices,
// row by row (QuantMatmul: ggml's vec_dot order) against 8 rows interleaved
// (InterleavedMatmul, llama.cpp's repacked layout), 16 rows packed in
// llama.cpp's AMX order (AmxMatmul: tiles and VNNI), and the K-quants. bytes_per_second is weight
// bytes read per second; compare with the machine's memory bandwidth.
//
//   build/bin/quant_matmul_bench [--benchmark_filter=...]
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "worker/gguf/ggml_types.h"
#include "worker/model/amx_matmul.h"
#include "worker/model/interleaved_matmul.h"
#include "worker/model/kquant_matmul.h"
#include "worker/model/quant_matmul.h"

namespace llorch {
namespace {

// Random block bytes with small finite fp16 scales (the values do not change
// the work done).
std::vector<uint8_t> RandomRows(GgmlType type, int64_t rows, int64_t in) {
  std::mt19937 rng(1);
  std::vector<uint8_t> out(rows * GgmlRowBytes(type, in));
  for (uint8_t& b : out) b = static_cast<uint8_t>(rng());
  const size_t block_bytes = GgmlBlockBytes(type);
  for (size_t offset = 0; offset < out.size(); offset += block_bytes) {
    out[offset] = 0x00;
    out[offset + 1] = 0x20;  // fp16 2^-7
  }
  return out;
}

std::vector<float> RandomActivations(int64_t n, int64_t in) {
  std::mt19937 rng(2);
  std::normal_distribution<float> normal;
  std::vector<float> x(n * in);
  for (float& v : x) v = normal(rng);
  return x;
}

ParallelFor TorchParallelFor(int64_t grain) {
  return [grain](int64_t begin, int64_t end, const RangeFn& body) {
    at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { body(b, e); });
  };
}

// Args: rows, in, activation rows.
void BM_RowByRow(benchmark::State& state, GgmlType type) {
  const int64_t rows = state.range(0), in = state.range(1), n = state.range(2);
  const std::vector<uint8_t> w = RandomRows(type, rows, in);
  const std::vector<float> x = RandomActivations(n, in);
  std::vector<float> out(n * rows);
  const ParallelFor parallel_for = TorchParallelFor(32);
  for (auto _ : state) {
    QuantMatmul(type, w.data(), rows, in, x.data(), n, out.data(), parallel_for);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.size()));
}

// `wide`: the AVX-512 VNNI kernels where the CPU has them, else AVX2 only.
void BM_Interleaved(benchmark::State& state, GgmlType type, bool wide) {
  interleaved_matmul_internal::AllowVnni(wide);
  const int64_t rows = state.range(0), in = state.range(1), n = state.range(2);
  const std::vector<uint8_t> rows_data = RandomRows(type, rows, in);
  std::vector<uint8_t> w(rows_data.size());
  InterleaveRows(type, rows_data.data(), rows, in, w.data());
  const std::vector<float> x = RandomActivations(n, in);
  std::vector<float> out(n * rows);
  const ParallelFor parallel_for = TorchParallelFor(4);
  for (auto _ : state) {
    InterleavedMatmul(type, w.data(), rows, in, x.data(), n, out.data(), parallel_for);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.size()));
  interleaved_matmul_internal::AllowVnni(true);
}

// 16 rows packed, llama.cpp's AMX order (amx_matmul.h), the best kernel here.
void BM_Amx(benchmark::State& state, GgmlType type) {
  const int64_t rows = state.range(0), in = state.range(1), n = state.range(2);
  const std::vector<uint8_t> rows_data = RandomRows(type, rows, in);
  std::vector<uint8_t> w(AmxPackedBytes(type, rows, in));
  PackAmxRows(type, rows_data.data(), rows, in, w.data());
  const std::vector<float> x = RandomActivations(n, in);
  std::vector<float> out(n * rows);
  const ParallelFor parallel_for = TorchParallelFor(2);
  for (auto _ : state) {
    AmxMatmul(type, w.data(), rows, in, x.data(), n, out.data(), parallel_for);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.size()));
}

// AmxMatmulWith one kernel (range 3: 1 = VNNI, 2 = tiles), for the batch
// size where tiles start to pay (amx_matmul.cc's kMinTileRows).
void BM_AmxKernel(benchmark::State& state, GgmlType type) {
  const int64_t rows = state.range(0), in = state.range(1), n = state.range(2);
  const auto kernel = state.range(3) == 2 ? amx_matmul_internal::Kernel::kTiles
                                           : amx_matmul_internal::Kernel::kVnni;
  if (amx_matmul_internal::BestKernel() < kernel) {
    state.SkipWithError("kernel not available on this CPU");
    return;
  }
  if (!AmxMatmulSupports(type, rows, in)) {
    state.SkipWithError("shape not supported for this type");
    return;
  }
  const std::vector<uint8_t> rows_data = RandomRows(type, rows, in);
  std::vector<uint8_t> w(AmxPackedBytes(type, rows, in));
  PackAmxRows(type, rows_data.data(), rows, in, w.data());
  const std::vector<float> x = RandomActivations(n, in);
  std::vector<float> out(n * rows);
  const ParallelFor parallel_for = TorchParallelFor(2);
  for (auto _ : state) {
    amx_matmul_internal::AmxMatmulWith(kernel, type, w.data(), rows, in, x.data(), n, out.data(),
                                       parallel_for);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.size()));
}

void CrossoverShapes(benchmark::internal::Benchmark* b) {
  for (int64_t kernel : {1, 2}) {
    for (int64_t n : {2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32}) {
      b->Args({2 * 5632, 2048, n, kernel});  // TinyLlama's fused gate and up
      b->Args({49152, 576, n, kernel});      // SmolLM2's output head
    }
  }
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

// K-quants straight from the file's blocks, in llama.cpp's order for the
// type (Q4_K: its repacked kernels' order). `wide`: the AVX-512 kernels
// where the CPU has them, else AVX2 only.
void BM_KQuant(benchmark::State& state, GgmlType type, bool wide = true) {
  kquant_matmul_internal::AllowAvx512(wide);
  const int64_t rows = state.range(0), in = state.range(1), n = state.range(2);
  const std::vector<uint8_t> w = RandomRows(type, rows, in);
  const std::vector<float> x = RandomActivations(n, in);
  std::vector<float> out(n * rows);
  const ParallelFor parallel_for = TorchParallelFor(16);
  for (auto _ : state) {
    KQuantMatmul(type, w.data(), rows, in, x.data(), n, out.data(), KQuantOrderFor(type, rows),
                 parallel_for);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.size()));
  kquant_matmul_internal::AllowAvx512(true);
}

// Q4_K rows interleaved by 8 (KQuantInterleavedMatmul): the same results.
void BM_KQuantInterleaved(benchmark::State& state, bool wide) {
  kquant_matmul_internal::AllowAvx512(wide);
  const int64_t rows = state.range(0), in = state.range(1), n = state.range(2);
  const std::vector<uint8_t> rows_data = RandomRows(GgmlType::kQ4_K, rows, in);
  std::vector<uint8_t> w(KQuantInterleavedBytes(rows, in));
  InterleaveKQuantRows(rows_data.data(), rows, in, w.data());
  const std::vector<float> x = RandomActivations(n, in);
  std::vector<float> out(n * rows);
  const ParallelFor parallel_for = TorchParallelFor(2);
  for (auto _ : state) {
    KQuantInterleavedMatmul(w.data(), rows, in, x.data(), n, out.data(), parallel_for);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(rows_data.size()));
  kquant_matmul_internal::AllowAvx512(true);
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {1, 4, 8, 64}) {
    b->Args({2 * 5632, 2048, n});  // fused gate and up
    b->Args({2048, 5632, n});      // down
  }
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

// Activation rows rounded to 8-bit blocks (Q8_1, with sums) before an
// AMX/VNNI product: a decode step's 8 rows of SmolLM2's widest input.
void BM_QuantizeActivations(benchmark::State& state) {
  const int64_t n = 8, in = 1536;
  const std::vector<float> x = RandomActivations(n, in);
  std::vector<quant_matmul_internal::ActBlock> out(n * in / 32);
  for (auto _ : state) {
    quant_matmul_internal::QuantizeActivations(x.data(), n * in / 32, /*with_sum=*/true,
                                               quant_matmul_internal::UsesAvx2(), out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * n * in);
}
BENCHMARK(BM_QuantizeActivations);

BENCHMARK_CAPTURE(BM_RowByRow, q4_0, GgmlType::kQ4_0)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Interleaved, q4_0, GgmlType::kQ4_0, true)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Interleaved, q4_0_avx2, GgmlType::kQ4_0, false)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_RowByRow, q8_0, GgmlType::kQ8_0)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_RowByRow, q4_1, GgmlType::kQ4_1)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Interleaved, q4_1, GgmlType::kQ4_1, true)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Interleaved, q4_1_avx2, GgmlType::kQ4_1, false)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Interleaved, q8_0, GgmlType::kQ8_0, true)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Interleaved, q8_0_avx2, GgmlType::kQ8_0, false)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Amx, q4_0, GgmlType::kQ4_0)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Amx, q4_1, GgmlType::kQ4_1)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Amx, q8_0, GgmlType::kQ8_0)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Amx, q4_k, GgmlType::kQ4_K)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Amx, q5_k, GgmlType::kQ5_K)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Amx, q6_k, GgmlType::kQ6_K)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_AmxKernel, q4_0, GgmlType::kQ4_0)->Apply(CrossoverShapes);
BENCHMARK_CAPTURE(BM_AmxKernel, q4_1, GgmlType::kQ4_1)->Apply(CrossoverShapes);
BENCHMARK_CAPTURE(BM_AmxKernel, q8_0, GgmlType::kQ8_0)->Apply(CrossoverShapes);
BENCHMARK_CAPTURE(BM_AmxKernel, q4_k, GgmlType::kQ4_K)->Apply(CrossoverShapes);
BENCHMARK_CAPTURE(BM_AmxKernel, q5_k, GgmlType::kQ5_K)->Apply(CrossoverShapes);
BENCHMARK_CAPTURE(BM_AmxKernel, q6_k, GgmlType::kQ6_K)->Apply(CrossoverShapes);
BENCHMARK_CAPTURE(BM_KQuant, q4_k, GgmlType::kQ4_K)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_KQuantInterleaved, wide, true)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_KQuantInterleaved, avx2, false)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_KQuant, q5_k, GgmlType::kQ5_K)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_KQuant, q5_k_avx2, GgmlType::kQ5_K, false)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_KQuant, q6_k, GgmlType::kQ6_K)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_KQuant, q6_k_avx2, GgmlType::kQ6_K, false)->Apply(Shapes);

}  // namespace
}  // namespace llorch

BENCHMARK_MAIN();
