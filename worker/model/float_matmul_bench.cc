// Google Benchmark: FloatMatmul (decode), FloatGemm and Bf16Gemm (prompts) against
// libtorch's product on the same weights (the paths they replaced), shapes of
// a TinyLlama-sized layer. Decode: bytes_per_second is weight bytes read per
// second (bound by memory bandwidth, ~35 GB/s here). Prompts: items_per_second
// is multiply-adds per second (compute bound).
//
//   build/bin/float_matmul_bench [--benchmark_filter=...]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "worker/model/bf16_matmul.h"
#include "worker/model/float_gemm.h"
#include "worker/model/float_matmul.h"

namespace llorch {
namespace {

// All cores for at::parallel_for, as the worker's --threads 0 (libtorch's
// default here is one thread).
const bool kAllCores = [] {
  at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
  return true;
}();

// A weight matrix [rows, in] in `type` and its F32 copy for libtorch.
struct Weights {
  at::Tensor f32;     // [rows, in]
  at::Tensor stored;  // [rows, in] in the benchmarked type
};

Weights MakeWeights(GgmlType type, int64_t rows, int64_t in) {
  Weights w;
  w.f32 = at::randn({rows, in});
  w.stored = type == GgmlType::kF16    ? w.f32.to(at::kHalf)
             : type == GgmlType::kBF16 ? w.f32.to(at::kBFloat16)
                                       : w.f32;
  w.f32 = w.stored.to(at::kFloat);
  return w;
}

ParallelFor TorchParallelFor() {
  return [](int64_t begin, int64_t end, const RangeFn& body) {
    at::parallel_for(begin, end, /*grain_size=*/16, [&](int64_t b, int64_t e) { body(b, e); });
  };
}

// Args: rows, in, activation rows.
void BM_FloatMatmul(benchmark::State& state, GgmlType type) {
  const int64_t rows = state.range(0), in = state.range(1), n = state.range(2);
  const Weights w = MakeWeights(type, rows, in);
  const at::Tensor x = at::randn({n, in});
  at::Tensor out = at::empty({n, rows});
  const ParallelFor parallel_for = TorchParallelFor();
  for (auto _ : state) {
    FloatMatmul(type, w.stored.data_ptr(), rows, in, x.data_ptr<float>(), n,
                out.data_ptr<float>(), parallel_for);
    benchmark::DoNotOptimize(out.data_ptr<float>());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.stored.nbytes()));
}

// The peer: at::mv for one row (what llorch used before), at::matmul for more,
// on F32 weights (libtorch has no 16-bit CPU GEMV here).
void BM_Torch(benchmark::State& state) {
  const int64_t rows = state.range(0), in = state.range(1), n = state.range(2);
  const at::Tensor w = at::randn({rows, in});
  const at::Tensor x = at::randn({n, in});
  for (auto _ : state) {
    at::Tensor out = n == 1 ? at::mv(w, x[0]) : at::matmul(x, w.t());
    benchmark::DoNotOptimize(out.data_ptr<float>());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.nbytes()));
}

// Args: rows, in, activation rows.
void BM_FloatGemm(benchmark::State& state, GgmlType type) {
  const int64_t rows = state.range(0), in = state.range(1), n = state.range(2);
  const Weights w = MakeWeights(type, rows, in);
  const at::Tensor x = at::randn({n, in});
  at::Tensor out = at::empty({n, rows});
  const ParallelFor parallel_for = [](int64_t begin, int64_t end, const RangeFn& body) {
    at::parallel_for(begin, end, /*grain_size=*/1, [&](int64_t b, int64_t e) { body(b, e); });
  };
  for (auto _ : state) {
    FloatGemm(type, w.stored.data_ptr(), rows, in, x.data_ptr<float>(), n, out.data_ptr<float>(),
              parallel_for);
    benchmark::DoNotOptimize(out.data_ptr<float>());
  }
  state.SetItemsProcessed(state.iterations() * rows * in * n);
}

// Bf16Gemm (BF16 weights, prompts): the BF16 rows of FloatGemm's table.
void BM_Bf16Gemm(benchmark::State& state) {
  const int64_t rows = state.range(0), in = state.range(1), n = state.range(2);
  const Weights w = MakeWeights(GgmlType::kBF16, rows, in);
  const at::Tensor x = at::randn({n, in});
  at::Tensor out = at::empty({n, rows});
  const ParallelFor parallel_for = [](int64_t begin, int64_t end, const RangeFn& body) {
    at::parallel_for(begin, end, /*grain_size=*/1, [&](int64_t b, int64_t e) { body(b, e); });
  };
  for (auto _ : state) {
    Bf16Gemm(w.stored.data_ptr(), rows, in, x.data_ptr<float>(), n, out.data_ptr<float>(),
             parallel_for);
    benchmark::DoNotOptimize(out.data_ptr<float>());
  }
  state.SetItemsProcessed(state.iterations() * rows * in * n);
}

void BM_TorchGemm(benchmark::State& state) {
  const int64_t rows = state.range(0), in = state.range(1), n = state.range(2);
  const at::Tensor w = at::randn({rows, in});
  const at::Tensor x = at::randn({n, in});
  for (auto _ : state) {
    at::Tensor out = at::matmul(x, w.t());
    benchmark::DoNotOptimize(out.data_ptr<float>());
  }
  state.SetItemsProcessed(state.iterations() * rows * in * n);
}

void PromptShapes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {1, 8, 16, 64, 256}) {
    b->Args({2 * 5632, 2048, n});  // fused gate and up
    b->Args({2048, 5632, n});      // down
    b->Args({11264, 2040, n});
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

void DecodeShapes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {1, 4, 8}) {
    b->Args({2048 + 2 * 256, 2048, n});  // fused q, k, v (TinyLlama: 4 KV heads of 64)
    b->Args({2 * 5632, 2048, n});        // fused gate and up
    b->Args({2048, 5632, n});            // down
  }
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_FloatMatmul, f32, GgmlType::kF32)->Apply(DecodeShapes);
BENCHMARK_CAPTURE(BM_FloatMatmul, f16, GgmlType::kF16)->Apply(DecodeShapes);
BENCHMARK_CAPTURE(BM_FloatMatmul, bf16, GgmlType::kBF16)->Apply(DecodeShapes);
BENCHMARK(BM_Torch)->Apply(DecodeShapes);
BENCHMARK_CAPTURE(BM_FloatGemm, f32, GgmlType::kF32)->Apply(PromptShapes);
BENCHMARK_CAPTURE(BM_FloatGemm, f16, GgmlType::kF16)->Apply(PromptShapes);
BENCHMARK(BM_Bf16Gemm)->Apply(PromptShapes);
BENCHMARK(BM_TorchGemm)->Apply(PromptShapes);

}  // namespace
}  // namespace llorch

BENCHMARK_MAIN();
