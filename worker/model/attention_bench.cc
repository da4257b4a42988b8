// Google Benchmark: one decode step's attention for one KV head and the
// query heads that share it (GgmlAttendHeads), SmolLM2's shape (3 query heads
// per KV head, head_dim 64) over an F16 or F32 cache, at several positions;
// "warm": one cache, read from the L1/L2 again and again; "cold": 64 caches
// in turn (several MiB), as a batch of jobs' layers reads them.
// items_per_second is (head, key) pairs.
//
//   build/bin/attention_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "worker/model/ggml_ops.h"

namespace llorch {
namespace {

void BM_DecodeAttention(benchmark::State& state, KvElement element, GgmlVariant variant) {
  const int count = static_cast<int>(state.range(0));
  const int64_t positions = state.range(1);
  const int64_t copies = state.range(2) != 0 ? 64 : 1;
  constexpr int64_t kHeadDim = 64;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> query(count * kHeadDim);
  for (float& v : query) v = normal(rng);
  const int64_t element_bytes = element == KvElement::kF32 ? 4 : 2;
  const int64_t cache_bytes = positions * kHeadDim * element_bytes;
  std::vector<uint8_t> keys(copies * cache_bytes), values(copies * cache_bytes);
  // Small 16-bit patterns: finite halves and bfloats; as floats, random.
  if (element == KvElement::kF32) {
    for (int64_t i = 0; i < copies * positions * kHeadDim; ++i) {
      reinterpret_cast<float*>(keys.data())[i] = normal(rng);
      reinterpret_cast<float*>(values.data())[i] = normal(rng);
    }
  } else {
    for (int64_t i = 0; i < copies * positions * kHeadDim; ++i) {
      reinterpret_cast<uint16_t*>(keys.data())[i] = static_cast<uint16_t>(0x3000 + rng() % 0x800);
      reinterpret_cast<uint16_t*>(values.data())[i] =
          static_cast<uint16_t>(0x3000 + rng() % 0x800);
    }
  }
  std::vector<float> scratch(count * positions), out(count * kHeadDim);
  int64_t copy = 0;
  for (auto _ : state) {
    const int64_t offset = copy * cache_bytes;
    copy = (copy + 1) % copies;
    GgmlAttendHeads(query.data(), count, keys.data() + offset, values.data() + offset, element,
                    kHeadDim, 0, positions - 1, 0.125f, /*one_token_order=*/true, variant,
                    scratch.data(), positions, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * count * positions);
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (int64_t cold : {0, 1}) {
    for (int64_t positions : {40, 128, 512}) b->Args({3, positions, cold});
  }
  b->ArgNames({"heads", "positions", "cold"});
}

BENCHMARK_CAPTURE(BM_DecodeAttention, f16_avx512, KvElement::kF16, GgmlVariant::kAvx512)
    ->Apply(Shapes);
BENCHMARK_CAPTURE(BM_DecodeAttention, f16_avx2, KvElement::kF16, GgmlVariant::kAvx2)
    ->Apply(Shapes);
BENCHMARK_CAPTURE(BM_DecodeAttention, f32_avx512, KvElement::kF32, GgmlVariant::kAvx512)
    ->Apply(Shapes);

}  // namespace
}  // namespace llorch

BENCHMARK_MAIN();
