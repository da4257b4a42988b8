// Google Benchmark: one decode step's attention for one KV head and the
// query heads that share it (GgmlAttendHeads), SmolLM2's shape (3 query heads
// per KV head, head_dim 64) over an F16 or F32 cache, at several positions;
// "warm": one cache, read from the L1/L2 again and again; "cold": 64 caches
// in turn (several MiB), as a batch of jobs' layers reads them; "paged": rows
// found through a block table of 16-position blocks in reverse order, as the
// worker's KV pool hands them out (--kv_block_size 16), else contiguous.
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
  const bool paged = state.range(3) != 0;
  constexpr int64_t kHeadDim = 64;
  constexpr int64_t kBlockSize = 16;
  const int64_t blocks = (positions + kBlockSize - 1) / kBlockSize;
  std::vector<int32_t> table(blocks);
  for (int64_t b = 0; b < blocks; ++b) table[b] = static_cast<int32_t>(blocks - 1 - b);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> query(count * kHeadDim);
  for (float& v : query) v = normal(rng);
  const int64_t element_bytes = element == KvElement::kF32 ? 4 : 2;
  const int64_t cache_bytes = blocks * kBlockSize * kHeadDim * element_bytes;
  std::vector<uint8_t> keys(copies * cache_bytes), values(copies * cache_bytes);
  // Small 16-bit patterns: finite halves and bfloats; as floats, random.
  if (element == KvElement::kF32) {
    for (int64_t i = 0; i < copies * blocks * kBlockSize * kHeadDim; ++i) {
      reinterpret_cast<float*>(keys.data())[i] = normal(rng);
      reinterpret_cast<float*>(values.data())[i] = normal(rng);
    }
  } else {
    for (int64_t i = 0; i < copies * blocks * kBlockSize * kHeadDim; ++i) {
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
                    scratch.data(), positions, out.data(), paged ? table.data() : nullptr,
                    paged ? kBlockSize : 0);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * count * positions);
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (int64_t paged : {0, 1}) {
    for (int64_t cold : {0, 1}) {
      for (int64_t positions : {40, 128, 512}) b->Args({3, positions, cold, paged});
    }
  }
  b->ArgNames({"heads", "positions", "cold", "paged"});
}

// A prompt's attention for one head (GgmlAttendPromptRows, as CausalAttention's
// tasks call it): 8 causal rows at the end of `positions` keys of a prepared
// F16 head (SmolLM2's head_dim 64, or 128). items_per_second is (row, key) pairs.
void BM_PromptRows(benchmark::State& state, GgmlVariant variant) {
  const int64_t positions = state.range(0), head_dim = state.range(1);
  constexpr int kRows = 8;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<uint16_t> keys(positions * head_dim), values(positions * head_dim);
  for (uint16_t& k : keys) k = static_cast<uint16_t>(0x3000 + rng() % 0x800);
  for (uint16_t& v : values) v = static_cast<uint16_t>(0x3000 + rng() % 0x800);
  std::vector<float> queries(kRows * head_dim);
  for (float& q : queries) q = normal(rng);
  GgmlPreparedKv kv;
  GgmlPrepareKv(keys.data(), values.data(), KvElement::kF16, head_dim, positions, nullptr, 0,
                &kv, 0, variant);
  int64_t first[kRows], last[kRows];
  for (int r = 0; r < kRows; ++r) first[r] = 0, last[r] = positions - kRows + r;
  std::vector<float> scratch(kRows * positions), out(kRows * head_dim);
  for (auto _ : state) {
    GgmlAttendPromptRows(queries.data(), head_dim, kRows, first, last, kv, head_dim,
                         0.125f, variant, scratch.data(), positions, out.data(), head_dim);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * kRows * positions);
}

void PromptShapes(benchmark::internal::Benchmark* b) {
  for (int64_t head_dim : {64, 128}) {
    for (int64_t positions : {512, 4096}) b->Args({positions, head_dim});
  }
  b->ArgNames({"positions", "head_dim"});
}

BENCHMARK_CAPTURE(BM_PromptRows, avx512, GgmlVariant::kAvx512)->Apply(PromptShapes);
BENCHMARK_CAPTURE(BM_PromptRows, avx2, GgmlVariant::kAvx2)->Apply(PromptShapes);

BENCHMARK_CAPTURE(BM_DecodeAttention, f16_avx512, KvElement::kF16, GgmlVariant::kAvx512)
    ->Apply(Shapes);
BENCHMARK_CAPTURE(BM_DecodeAttention, f16_avx2, KvElement::kF16, GgmlVariant::kAvx2)
    ->Apply(Shapes);
BENCHMARK_CAPTURE(BM_DecodeAttention, f32_avx512, KvElement::kF32, GgmlVariant::kAvx512)
    ->Apply(Shapes);

}  // namespace
}  // namespace llorch

BENCHMARK_MAIN();
