// Cache correctness: logits computed through a job's KV cache (prefill then
// one-token steps, or prefill in chunks) equal one forward over the whole
// sequence. Run on random-weight models written by tools/make-test-model.py
// and on the real SmolLM2 model.
#include "worker/model/llama_model.h"

#include <algorithm>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/float_bits.h"
#include "gtest/gtest.h"
#include "worker/gguf/gguf.h"
#include "worker/model/model_config.h"
#include "worker/model/test_models.h"

namespace llorch {
namespace {

// The device under test: LLORCH_TEST_DEVICE=cuda runs these on a GPU.
std::string TestDevice() {
  const char* device = std::getenv("LLORCH_TEST_DEVICE");
  return device != nullptr ? device : "cpu";
}

bool Exists(const std::string& path) { return !path.empty() && std::ifstream(path).good(); }

class CacheCorrectnessTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    at::set_num_threads(2);
    const std::string path = TestModelPath(GetParam());
    if (GetParam() == "smollm2" && !Exists(path)) GTEST_SKIP() << "no SmolLM2 at " << path;
    const std::string test_name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    if (test_name.rfind("DeviceMatchesCpu", 0) == 0 && TestDevice() == "cpu") {
      GTEST_SKIP() << "set LLORCH_TEST_DEVICE to compare a device with the CPU";
    }
    ASSERT_NO_FATAL_FAILURE(model_ = LoadModel(KvType::kF32));
    std::mt19937 rng(7);
    std::uniform_int_distribution<int32_t> dist(0, model_->config().vocab_size - 1);
    for (int i = 0; i < 24; ++i) tokens_.push_back(dist(rng));
    ASSERT_NO_FATAL_FAILURE(full_ = FullForward(*model_));
  }

  // F32 on every device (a GPU's default is BF16: Bf16Test below).
  static std::unique_ptr<LlamaModel> LoadModel(
      KvType kv_type, bool map_weights = true,
      LoadOptions::Dtype dtype = TestDevice() == "cpu" ? LoadOptions::Dtype::kAuto
                                                       : LoadOptions::Dtype::kF32) {
    auto gguf = GgufFile::Open(TestModelPath(GetParam()));
    EXPECT_TRUE(gguf.ok()) << gguf.status();
    if (!gguf.ok()) return nullptr;
    LoadOptions options;
    options.device = TestDevice();
    options.dtype = dtype;
    // In F32: 8-bit activation rounding (the default for quantised weights,
    // as in llama.cpp) turns 1e-7 summation-order differences between batch
    // shapes into flipped roundings; the cache logic is checked without it,
    // and without ggml's F16-rounded GELU (phi2) for the same reason.
    options.quantize_activations = false;
    options.gelu = LoadOptions::Gelu::kExact;
    options.kv_type = kv_type;
    options.map_weights = map_weights;
    auto model = LlamaModel::Load(**gguf, options);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? std::move(*model) : nullptr;
  }

  // Reference: the whole sequence in one forward on a fresh cache, [n, vocab].
  at::Tensor FullForward(const LlamaModel& model) const {
    auto cache = model.NewCache(tokens_.size());
    auto full = model.Forward(tokens_, 0, cache.get(), /*all_logits=*/true);
    EXPECT_TRUE(full.ok()) << full.status();
    return full.ok() ? *full : at::Tensor();
  }

  // Feeds tokens_ in chunks of the given sizes (the last repeats) and checks
  // every position's logits against the full forward.
  void CheckChunks(const std::vector<int64_t>& chunk_sizes) {
    CheckChunksOf(*model_, full_, chunk_sizes, 1e-4);
  }
  void CheckChunksOf(const LlamaModel& model, const at::Tensor& full,
                     const std::vector<int64_t>& chunk_sizes, double tolerance) {
    const int64_t n = tokens_.size();
    auto cache = model.NewCache(n);
    int64_t pos = 0;
    size_t chunk_index = 0;
    double max_diff = 0;
    while (pos < n) {
      const int64_t size =
          std::min(n - pos, chunk_sizes[std::min(chunk_index++, chunk_sizes.size() - 1)]);
      auto logits = model.Forward(absl::MakeConstSpan(tokens_).subspan(pos, size), pos,
                                  cache.get(), /*all_logits=*/true);
      ASSERT_TRUE(logits.ok()) << logits.status();
      ASSERT_EQ(logits->size(0), size);
      max_diff = std::max(max_diff,
                          (*logits - full.narrow(0, pos, size)).abs().max().item<double>());
      pos += size;
      EXPECT_EQ(cache->num_tokens(), pos);
    }
    EXPECT_LE(max_diff, tolerance) << "chunks starting with " << chunk_sizes[0];
  }

  std::unique_ptr<LlamaModel> model_;
  std::vector<int32_t> tokens_;
  at::Tensor full_;
};

TEST_P(CacheCorrectnessTest, PrefillThenSingleSteps) { CheckChunks({5, 1}); }
TEST_P(CacheCorrectnessTest, ChunksOfOne) { CheckChunks({1}); }
TEST_P(CacheCorrectnessTest, ChunksOfThree) { CheckChunks({3}); }
TEST_P(CacheCorrectnessTest, ChunksOfSeven) { CheckChunks({7}); }

TEST_P(CacheCorrectnessTest, LastLogitsMatchAllLogits) {
  auto cache = model_->NewCache(tokens_.size());
  auto last = model_->Forward(tokens_, 0, cache.get(), /*all_logits=*/false);
  ASSERT_TRUE(last.ok());
  ASSERT_EQ(last->size(0), 1);
  EXPECT_LE((*last - full_.narrow(0, full_.size(0) - 1, 1)).abs().max().item<double>(), 1e-4);
}

// CPU weights multiplied from the file's mapping (the default; LoadModel
// closes the GgufFile after Load) and copied into fresh memory give the same
// bits.
TEST_P(CacheCorrectnessTest, MappedWeightsEqualCopiedWeights) {
  if (TestDevice() != "cpu") GTEST_SKIP() << "the mapping is the CPU path's";
  std::unique_ptr<LlamaModel> copied = LoadModel(KvType::kF32, /*map_weights=*/false);
  ASSERT_NE(copied, nullptr);
  const at::Tensor logits = FullForward(*copied);
  ASSERT_TRUE(logits.defined());
  EXPECT_TRUE(at::equal(logits, full_));
}

TEST_P(CacheCorrectnessTest, RejectsBadInput) {
  auto cache = model_->NewCache(4);
  const std::vector<int32_t> too_many(5, 1);
  EXPECT_FALSE(model_->Forward(too_many, 0, cache.get(), false).ok());
  const std::vector<int32_t> bad_id = {static_cast<int32_t>(model_->config().vocab_size)};
  EXPECT_FALSE(model_->Forward(bad_id, 0, cache.get(), false).ok());
  const std::vector<int32_t> one = {1};
  EXPECT_FALSE(model_->Forward(one, 2, cache.get(), false).ok());  // gap in the cache
}

// --kv_type f16 / bf16: keys and values held in 16 bits (half the bytes),
// each rounded once when written; attention reads them widened to F32. The
// change from the F32 cache is that rounding: nonzero, larger for bf16
// (8-bit significand) than for f16 (11 bits), and small. Chunked prefill and
// one-token steps still give the whole-sequence logits, within what the
// rounding itself moves: the 1e-7 by which F32 products differ between batch
// shapes flip a few of the 16-bit roundings (by one unit each), never more
// than rounding every key and value moves the logits.
TEST_P(CacheCorrectnessTest, SixteenBitCaches) {
  const int64_t n = tokens_.size();
  const size_t f32_bytes = KvCache::BytesFor(model_->config(), n, KvType::kF32);
  EXPECT_EQ(model_->NewCache(n)->num_bytes(), f32_bytes);
  std::map<KvType, double> moved;  // max |logit - F32 cache's logit|
  for (KvType type : {KvType::kF16, KvType::kBF16}) {
    SCOPED_TRACE(KvTypeName(type));
    std::unique_ptr<LlamaModel> model;
    ASSERT_NO_FATAL_FAILURE(model = LoadModel(type));
    ASSERT_NE(model, nullptr);
    EXPECT_EQ(model->kv_type(), type);
    auto cache = model->NewCache(n);
    EXPECT_EQ(cache->type(), type);
    EXPECT_EQ(cache->num_bytes() * 2, f32_bytes);
    EXPECT_EQ(cache->num_bytes(), KvCache::BytesFor(model->config(), n, type));
    at::Tensor full;
    ASSERT_NO_FATAL_FAILURE(full = FullForward(*model));
    moved[type] = (full - full_).abs().max().item<double>();
    CheckChunksOf(*model, full, {5, 1}, std::max(1e-4, moved[type]));
    CheckChunksOf(*model, full, {3}, std::max(1e-4, moved[type]));
    const double scale = full_.abs().max().item<double>();
    std::cout << GetParam() << " " << KvTypeName(type) << " cache: max |Δlogit| " << moved[type]
              << " (max |logit| " << scale << ")\n";
    EXPECT_LT(moved[type], 0.05 * scale);
  }
  EXPECT_GT(moved[KvType::kF16], 0);
  EXPECT_LT(moved[KvType::kF16], moved[KvType::kBF16]);
}

// --kv_type q8_0: each head's row of keys and values rounded to ggml's
// block_q8_0 (34 bytes per 32 values) when written, widened when read. The
// change from the F32 cache is that rounding: nonzero and small; chunked
// prefill and one-token steps agree as for 16-bit caches. Models whose
// head_dim is not a multiple of 32 refuse it at load, naming the reason.
TEST_P(CacheCorrectnessTest, Q8_0Cache) {
  const int64_t n = tokens_.size();
  auto gguf = GgufFile::Open(TestModelPath(GetParam()));
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  LoadOptions options;
  options.device = TestDevice();
  options.quantize_activations = false;
  options.gelu = LoadOptions::Gelu::kExact;
  options.kv_type = KvType::kQ8_0;
  absl::StatusOr<std::unique_ptr<LlamaModel>> loaded = LlamaModel::Load(**gguf, options);
  if (model_->config().head_dim % 32 != 0 || TestDevice() != "cpu") {
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(loaded.status().message()).find("q8_0 KV cache"), std::string::npos)
        << loaded.status();
    return;
  }
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  LlamaModel& model = **loaded;
  auto cache = model.NewCache(n);
  EXPECT_EQ(cache->type(), KvType::kQ8_0);
  const size_t f32_bytes = KvCache::BytesFor(model.config(), n, KvType::kF32);
  EXPECT_EQ(cache->num_bytes() * 128, f32_bytes * 34);
  at::Tensor full;
  ASSERT_NO_FATAL_FAILURE(full = FullForward(model));
  const double moved = (full - full_).abs().max().item<double>();
  const double scale = full_.abs().max().item<double>();
  std::cout << GetParam() << " q8_0 cache: max |Δlogit| " << moved << " (max |logit| " << scale
            << ")\n";
  EXPECT_GT(moved, 0);
  EXPECT_LT(moved, 0.05 * scale);
  CheckChunksOf(model, full, {5, 1}, std::max(1e-4, moved));
  CheckChunksOf(model, full, {3}, std::max(1e-4, moved));
}

// The Q8_0 rows are ggml's: quantize_row_q8_0's scale (max|x|/127, stored
// as F16) and rounding, and dequantize_row_q8_0 gives q * d back.
TEST(KvQ8Test, RowsRoundAsGgmlDoes) {
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[i] = std::sin(0.37f * i) * (i < 32 ? 3.0f : 0.01f);
  x[5] = -4.5f;  // the first block's max |x|
  std::vector<uint8_t> row(KvRowBytes(KvType::kQ8_0, 64));
  ASSERT_EQ(row.size(), 68u);
  KvPool::QuantizeRows(x.data(), 1, 64, row.data());
  std::vector<float> back(64);
  KvPool::DequantizeRow(row.data(), 64, back.data());
  for (int b = 0; b < 2; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    uint16_t bits;
    std::memcpy(&bits, row.data() + b * 34, 2);
    const float d = HalfToFloat(bits);
    EXPECT_EQ(d, static_cast<float>(at::Half(amax / 127)));
    for (int i = 0; i < 32; ++i) {
      const int8_t q = static_cast<int8_t>(row[b * 34 + 2 + i]);
      // x86 ggml scales by 127 / max|x| (its reference code by 1 / d: ties aside, the same).
      EXPECT_EQ(q, static_cast<int8_t>(std::nearbyint(x[b * 32 + i] * (127.0f / amax))))
          << b << " " << i;
      EXPECT_EQ(back[b * 32 + i], q * d);
    }
  }
  EXPECT_EQ(static_cast<int8_t>(row[2 + 5]), -127);
}

// Continuous batching's steady state: more one-token steps than twice the
// threads are attended across the threads (a job's heads on one thread,
// 16-bit and Q8_0 caches widened on that thread's buffers); each job's
// logits equal its step alone. To the bit with float weights under the CPU
// kernels, every cache type (on the libtorch path, a GPU's, a batch's product
// shapes change the summation order: F32 cache, within 1e-4); quantised ones multiplied by unrounded activations (this fixture)
// differ by the 1e-7 summation-order differences between batch shapes (see
// LoadModel), which 16-bit caches turn into flipped roundings (see
// SixteenBitCaches): checked with an F32 cache, within 1e-4.
TEST_P(CacheCorrectnessTest, ManyDecodeStepsInOneBatchMatchStepsAlone) {
  const int64_t num_jobs = std::max<int64_t>(4, 2 * at::get_num_threads()) + 1;
  const int64_t n = tokens_.size();
  auto span = absl::MakeConstSpan(tokens_);
  // To the bit (and with 16-bit and Q8_0 caches, whose roundings would
  // flip on summation-order differences) where the CPU kernels multiply.
  const bool bit_exact =
      GetParam().find("f32") != std::string::npos && model_->cpu_kernels();
  std::vector<KvType> types = {KvType::kF32};
  if (bit_exact) types.push_back(KvType::kF16);
  if (bit_exact && model_->config().head_dim % 32 == 0) types.push_back(KvType::kQ8_0);
  for (KvType type : types) {
    SCOPED_TRACE(KvTypeName(type));
    std::unique_ptr<LlamaModel> model;
    ASSERT_NO_FATAL_FAILURE(model = LoadModel(type));
    ASSERT_NE(model, nullptr);
    std::vector<std::unique_ptr<KvCache>> batched_caches, alone_caches;
    std::vector<ForwardItem> items;
    std::vector<at::Tensor> alone;
    for (int64_t j = 0; j < num_jobs; ++j) {
      const int64_t past = 1 + j % (n - 1);  // positions already cached
      for (auto* caches : {&batched_caches, &alone_caches}) {
        caches->push_back(model->NewCache(n));
        ASSERT_TRUE(model->Forward(span.subspan(0, past), 0, caches->back().get(), false).ok());
      }
      auto logits = model->Forward(span.subspan(past, 1), past, alone_caches.back().get(), false,
                                   /*decode=*/true);
      ASSERT_TRUE(logits.ok()) << logits.status();
      alone.push_back(*logits);
      items.push_back({span.subspan(past, 1), past, batched_caches.back().get(), false, true});
    }
    auto batched = model->ForwardBatch(items);
    ASSERT_TRUE(batched.ok()) << batched.status();
    ASSERT_EQ(batched->size(0), num_jobs);
    for (int64_t j = 0; j < num_jobs; ++j) {
      const at::Tensor row = batched->narrow(0, j, 1);
      if (bit_exact) {
        EXPECT_TRUE(at::equal(row, alone[j])) << "job " << j;
      } else {
        EXPECT_LE((row - alone[j]).abs().max().item<double>(), 1e-4) << "job " << j;
      }
      EXPECT_EQ(batched_caches[j]->num_tokens(), alone_caches[j]->num_tokens());
    }
  }
}

// The libtorch path (a GPU's; here on the test device) with the worker's
// shared, paged pool: one-token steps of several jobs attended together
// (one gather of all their blocks, one masked attention) give each job's
// step alone, within the summation-order differences of the longer padded
// rows (F32), or in BF16 within the bound Bf16TracksF32 puts on BF16's
// own drift (last-bit differences grow through the layers).
TEST_P(CacheCorrectnessTest, LibtorchDecodeBatchOverSharedPoolMatchesStepsAlone) {
  const int64_t n = tokens_.size(), block_size = 4, num_jobs = 5;
  const int64_t blocks_per_job = (n + block_size - 1) / block_size;
  auto span = absl::MakeConstSpan(tokens_);
  for (LoadOptions::Dtype dtype : {LoadOptions::Dtype::kF32, LoadOptions::Dtype::kBF16}) {
    SCOPED_TRACE(dtype == LoadOptions::Dtype::kF32 ? "f32" : "bf16");
    std::unique_ptr<LlamaModel> model = LoadModel(KvType::kF32, /*map_weights=*/true, dtype);
    ASSERT_NE(model, nullptr);
    std::unique_ptr<KvPool> batched_pool = model->NewPool(num_jobs * blocks_per_job, block_size);
    std::unique_ptr<KvPool> alone_pool = model->NewPool(num_jobs * blocks_per_job, block_size);
    std::vector<std::unique_ptr<KvCache>> batched, alone;
    std::vector<ForwardItem> items;
    std::vector<at::Tensor> expected;
    for (int64_t j = 0; j < num_jobs; ++j) {
      batched.push_back(std::make_unique<KvCache>(batched_pool.get()));
      alone.push_back(std::make_unique<KvCache>(alone_pool.get()));
      // Blocks interleaved across jobs: job j's k-th block is k * num_jobs + j.
      for (int64_t k = 0; k < blocks_per_job; ++k) {
        batched.back()->AppendBlock(static_cast<int32_t>(k * num_jobs + j));
        alone.back()->AppendBlock(static_cast<int32_t>(k * num_jobs + j));
      }
      const int64_t past = 2 + 4 * j;  // positions already cached: 2 .. 18
      for (KvCache* cache : {batched.back().get(), alone.back().get()}) {
        ASSERT_TRUE(model->Forward(span.subspan(0, past), 0, cache, false).ok());
      }
      auto step = model->Forward(span.subspan(past, 1), past, alone.back().get(), false, true);
      ASSERT_TRUE(step.ok()) << step.status();
      expected.push_back(*step);
      items.push_back({span.subspan(past, 1), past, batched.back().get(), false, true});
    }
    auto together = model->ForwardBatch(items);
    ASSERT_TRUE(together.ok()) << together.status();
    ASSERT_EQ(together->size(0), num_jobs);
    const double range = full_.abs().max().item<double>();
    const double tolerance = dtype == LoadOptions::Dtype::kF32 ? 1e-4 : 0.05 * range;
    for (int64_t j = 0; j < num_jobs; ++j) {
      EXPECT_LE((together->narrow(0, j, 1) - expected[j]).abs().max().item<double>(), tolerance)
          << "job " << j;
      EXPECT_EQ(batched[j]->num_tokens(), 3 + 4 * j);
    }
    // The next step reads what the batched one wrote: still each job's.
    for (int64_t j = 0; j < num_jobs; ++j) {
      const int64_t pos = 3 + 4 * j;
      auto next_batched = model->Forward(span.subspan(pos, 1), pos, batched[j].get(), false, true);
      auto next_alone = model->Forward(span.subspan(pos, 1), pos, alone[j].get(), false, true);
      ASSERT_TRUE(next_batched.ok() && next_alone.ok());
      EXPECT_LE((*next_batched - *next_alone).abs().max().item<double>(), tolerance) << "job " << j;
    }
  }
}

// Decode steps padded to a multiple of positions (LoadOptions::decode_pad),
// replayed as CUDA graphs on a CUDA test device (captured once per shape,
// then replayed with other jobs' positions and tokens), give the plain
// path's logits: lone and batched steps, crossing the padding's multiples,
// within BF16's drift (as above), and every step's greedy token equal where
// the plain path's best token leads clearly.
// Decode steps of the same 5 jobs (prompts of 2, 5, .. 14 tokens of
// `tokens`, their caches in one pool of 4-token blocks) on models a and b:
// even steps every job, odd ones `lone_job` alone. Logits within 5% of
// `range`, the same picks where one clearly leads (at least one does), the
// same cache lengths.
void ExpectSameDecodeSteps(const LlamaModel& a, const LlamaModel& b,
                           absl::Span<const int32_t> tokens, double range, int steps,
                           int64_t lone_job) {
  const int64_t n = tokens.size(), block_size = 4, num_jobs = 5;
  const int64_t blocks_per_job = (n + block_size - 1) / block_size;
  struct Jobs {
    std::unique_ptr<KvPool> pool;
    std::vector<std::unique_ptr<KvCache>> caches;
  };
  const auto start = [&](const LlamaModel& model, Jobs* jobs) {
    jobs->pool = model.NewPool(num_jobs * blocks_per_job, block_size);
    for (int64_t j = 0; j < num_jobs; ++j) {
      jobs->caches.push_back(std::make_unique<KvCache>(jobs->pool.get()));
      for (int64_t k = 0; k < blocks_per_job; ++k) {
        jobs->caches.back()->AppendBlock(static_cast<int32_t>(k * num_jobs + j));
      }
      const int64_t prompt = 2 + 3 * j;  // 2, 5, .. 14 positions
      ASSERT_TRUE(model.Forward(tokens.subspan(0, prompt), 0, jobs->caches.back().get(), false).ok());
    }
  };
  Jobs jobs[2];
  ASSERT_NO_FATAL_FAILURE(start(a, &jobs[0]));
  ASSERT_NO_FATAL_FAILURE(start(b, &jobs[1]));
  int clear_leads = 0;
  for (int step = 0; step < steps; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    std::vector<int64_t> which = {0, 1, 2, 3, 4};
    if (step % 2 == 1) which = {lone_job};
    at::Tensor logits[2];
    for (int m = 0; m < 2; ++m) {
      std::vector<ForwardItem> items;
      for (int64_t j : which) {
        const int64_t pos = jobs[m].caches[j]->num_tokens();
        items.push_back({tokens.subspan(pos, 1), pos, jobs[m].caches[j].get(), false, true});
      }
      auto out = (m == 0 ? a : b).ForwardBatch(items);
      ASSERT_TRUE(out.ok()) << out.status();
      logits[m] = *out;
    }
    EXPECT_LE((logits[1] - logits[0]).abs().max().item<double>(), 0.05 * range);
    for (int64_t r = 0; r < logits[0].size(0); ++r) {
      const at::Tensor top = std::get<0>(logits[0][r].topk(2));
      if ((top[0] - top[1]).item<double>() < 0.05 * range) continue;
      ++clear_leads;
      EXPECT_EQ(logits[1][r].argmax().item<int64_t>(), logits[0][r].argmax().item<int64_t>());
    }
    for (int64_t j = 0; j < num_jobs; ++j) {
      EXPECT_EQ(jobs[1].caches[j]->num_tokens(), jobs[0].caches[j]->num_tokens());
    }
  }
  EXPECT_GT(clear_leads, 0);
}

TEST_P(CacheCorrectnessTest, PaddedDecodeStepsAndCudaGraphsMatchPlainSteps) {
  // 5 jobs: padded to 8 (three copies of job 0's step) where decode_pad is set.
  auto gguf = GgufFile::Open(TestModelPath(GetParam()));
  ASSERT_TRUE(gguf.ok());
  const auto load = [&](int64_t decode_pad, bool cuda_graphs) {
    LoadOptions options;
    options.device = TestDevice();
    options.dtype = LoadOptions::Dtype::kBF16;
    options.kv_type = KvType::kBF16;
    options.decode_pad = decode_pad;
    options.cuda_graphs = cuda_graphs;
    auto model = LlamaModel::Load(**gguf, options);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? std::move(*model) : nullptr;
  };
  std::unique_ptr<LlamaModel> plain = load(/*decode_pad=*/0, /*cuda_graphs=*/false);
  std::unique_ptr<LlamaModel> padded = load(/*decode_pad=*/8, /*cuda_graphs=*/true);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(padded, nullptr);
  EXPECT_FALSE(plain->cuda_graphs());
  EXPECT_EQ(padded->cuda_graphs(), TestDevice() == "cuda");
  // Job 4 ends at position 22.
  ExpectSameDecodeSteps(*plain, *padded, tokens_, full_.abs().max().item<double>(), /*steps=*/16,
                        /*lone_job=*/1);
  // Still on: no capture failed (a failure falls back to launching each kernel).
  EXPECT_EQ(padded->cuda_graphs(), TestDevice() == "cuda");
}

// llorch's CUDA kernels (products of up to 8 rows, fused norms and SiLU,
// RoPE with the pool writes, decode attention) against libtorch's ops, on
// CUDA in builds with them: the same steps, logits within the BF16 path's
// spread and the same clear greedy picks.
TEST_P(CacheCorrectnessTest, CudaKernelsMatchLibtorchOps) {
  if (TestDevice() != "cuda") GTEST_SKIP() << "llorch's CUDA kernels run on CUDA only";
  auto gguf = GgufFile::Open(TestModelPath(GetParam()));
  ASSERT_TRUE(gguf.ok());
  const auto load = [&](bool kernels) {
    LoadOptions options;
    options.device = TestDevice();
    options.dtype = LoadOptions::Dtype::kBF16;
    options.kv_type = KvType::kBF16;
    options.cuda_kernels = kernels;
    auto model = LlamaModel::Load(**gguf, options);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? std::move(*model) : nullptr;
  };
  std::unique_ptr<LlamaModel> ops = load(false), kernels = load(true);
  ASSERT_NE(ops, nullptr);
  ASSERT_NE(kernels, nullptr);
  EXPECT_FALSE(ops->cuda_kernels());
#ifdef LLORCH_HAVE_CUDA_KERNELS
  EXPECT_TRUE(kernels->cuda_kernels());
#else
  GTEST_SKIP() << "built without llorch's CUDA kernels (-DLLORCH_CUDA_KERNELS=ON)";
#endif
  ExpectSameDecodeSteps(*ops, *kernels, tokens_, full_.abs().max().item<double>(), /*steps=*/12,
                        /*lone_job=*/3);
}

// Continuous batching: jobs at different positions, some prefilling a chunk
// and some decoding one token, in one ForwardBatch give each job's logits
// alone.
TEST_P(CacheCorrectnessTest, BatchOfJobsMatchesJobsAlone) {
  const int64_t n = tokens_.size();
  auto span = absl::MakeConstSpan(tokens_);
  // Job A: fresh, prefills 5 tokens. Job B: 10 tokens cached, decodes 1.
  // Job C: 4 tokens cached, prefills 3 more, all logits.
  auto a = model_->NewCache(n), b = model_->NewCache(n), c = model_->NewCache(n);
  ASSERT_TRUE(model_->Forward(span.subspan(0, 10), 0, b.get(), false).ok());
  ASSERT_TRUE(model_->Forward(span.subspan(0, 4), 0, c.get(), false).ok());
  const std::vector<ForwardItem> items = {{span.subspan(0, 5), 0, a.get(), false},
                                          {span.subspan(10, 1), 10, b.get(), false},
                                          {span.subspan(4, 3), 4, c.get(), true}};
  auto batched = model_->ForwardBatch(items);
  ASSERT_TRUE(batched.ok()) << batched.status();
  ASSERT_EQ(batched->size(0), 1 + 1 + 3);
  EXPECT_EQ(a->num_tokens(), 5);
  EXPECT_EQ(b->num_tokens(), 11);
  EXPECT_EQ(c->num_tokens(), 7);
  // Against the full forward of the same sequence (every job is a prefix).
  EXPECT_LE((batched->narrow(0, 0, 1) - full_.narrow(0, 4, 1)).abs().max().item<double>(), 1e-4);
  EXPECT_LE((batched->narrow(0, 1, 1) - full_.narrow(0, 10, 1)).abs().max().item<double>(), 1e-4);
  EXPECT_LE((batched->narrow(0, 2, 3) - full_.narrow(0, 4, 3)).abs().max().item<double>(), 1e-4);
  // One cache twice in a batch is refused.
  const std::vector<ForwardItem> twice = {{span.subspan(5, 1), 5, a.get(), false},
                                          {span.subspan(5, 1), 5, a.get(), false}};
  EXPECT_FALSE(model_->ForwardBatch(twice).ok());
}

// On an accelerator, the same model gives the CPU's logits (F32 both sides;
// only summation order differs).
TEST_P(CacheCorrectnessTest, DeviceMatchesCpu) {
  auto gguf = GgufFile::Open(TestModelPath(GetParam()));
  ASSERT_TRUE(gguf.ok());
  LoadOptions cpu_options;
  cpu_options.quantize_activations = false;
  cpu_options.gelu = LoadOptions::Gelu::kExact;  // as full_'s (LoadModel)
  auto cpu_model = LlamaModel::Load(**gguf, cpu_options);
  ASSERT_TRUE(cpu_model.ok()) << cpu_model.status();
  auto cache = (*cpu_model)->NewCache(tokens_.size());
  auto cpu_logits = (*cpu_model)->Forward(tokens_, 0, cache.get(), /*all_logits=*/true);
  ASSERT_TRUE(cpu_logits.ok());
  const double max_diff = (*cpu_logits - full_).abs().max().item<double>();
  std::cout << GetParam() << ": max |cpu - " << TestDevice() << "| = " << max_diff << "\n";
  EXPECT_LE(max_diff, 1e-3);
}

// BF16 on the libtorch path (a GPU's default; here on the test device):
// weights held in BF16, every position's logits, prefilled whole or one token
// a step over the cache, close to F32's (BF16 keeps 8 bits: a few hundredths
// of these logits' range), and the same greedy choice wherever F32's best
// token leads by a clear margin. (transformers_conformance.py checks this
// path against transformers in BF16: the same bits.)
TEST_P(CacheCorrectnessTest, Bf16TracksF32) {
  std::unique_ptr<LlamaModel> bf16 =
      LoadModel(KvType::kF32, /*map_weights=*/true, LoadOptions::Dtype::kBF16);
  ASSERT_NE(bf16, nullptr);
  EXPECT_EQ(bf16->dtype(), at::kBFloat16);
  const at::Tensor whole = FullForward(*bf16);  // [n, vocab] F32 on the CPU
  ASSERT_TRUE(whole.defined());
  ASSERT_EQ(whole.scalar_type(), at::kFloat);
  const double range = full_.abs().max().item<double>();
  const double diff = (whole - full_).abs().max().item<double>();
  std::cout << GetParam() << ": max |bf16 - f32| = " << diff << " of " << range << "\n";
  EXPECT_LE(diff, 0.05 * range);
  const at::Tensor top2 = std::get<0>(full_.topk(2, -1));  // [n, 2]
  const at::Tensor clear = (top2.select(1, 0) - top2.select(1, 1)) > 0.1 * range;
  const at::Tensor same = whole.argmax(-1) == full_.argmax(-1);
  EXPECT_TRUE(same.logical_or(clear.logical_not()).all().item<bool>());
  // One token a step over the cache: the whole prompt's numbers, up to BF16.
  CheckChunksOf(*bf16, whole, {5, 1}, 0.05 * range);
}

// BF16 and F16 weights where libtorch multiplies them; clear errors elsewhere.
TEST(LoadDtypeTest, ParsesAndRefusesWhatCannotRun) {
  EXPECT_EQ(*ParseDtype("bf16"), LoadOptions::Dtype::kBF16);
  EXPECT_EQ(*ParseDtype("auto"), LoadOptions::Dtype::kAuto);
  EXPECT_EQ(ParseDtype("fp8").status().code(), absl::StatusCode::kInvalidArgument);
  auto gguf = GgufFile::Open(TestModelPath("tiny-f32-gqa"));
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  LoadOptions f16;
  f16.dtype = LoadOptions::Dtype::kF16;
  auto model = LlamaModel::Load(**gguf, f16);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(model.status().message().find("f16 needs a GPU"), absl::string_view::npos);
  LoadOptions q8_cache;
  q8_cache.dtype = LoadOptions::Dtype::kBF16;
  q8_cache.kv_type = KvType::kQ8_0;
  model = LlamaModel::Load(**gguf, q8_cache);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("q8_0 KV cache"), absl::string_view::npos)
      << model.status();
  EXPECT_EQ((*LlamaModel::Load(**gguf, LoadOptions{}))->dtype(), at::kFloat);
  // --kv_type auto: F32 under the CPU kernels, else the dtype's own type.
  LoadOptions options;
  EXPECT_EQ(*ParseKvTypeFor("auto", options), KvType::kF32);
  options.device = "cuda";
  EXPECT_EQ(*ParseKvTypeFor("auto", options), KvType::kBF16);
  options.dtype = LoadOptions::Dtype::kF32;
  EXPECT_EQ(*ParseKvTypeFor("auto", options), KvType::kF32);
  options.device = "cpu";
  options.dtype = LoadOptions::Dtype::kBF16;
  EXPECT_EQ(*ParseKvTypeFor("auto", options), KvType::kBF16);
  EXPECT_EQ(*ParseKvTypeFor("q8_0", options), KvType::kQ8_0);
  EXPECT_EQ(ParseKvTypeFor("f8", options).status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Models, CacheCorrectnessTest,
                         ::testing::Values("tiny-f32-gqa", "tiny-f32-mha-untied", "tiny-q8_0",
                                           "tiny-qwen2-f32", "tiny-phi3-f32", "tiny-phi2-f32",
                                           "tiny-phi2-q4_0", "smollm2"));

// Found by tests/fuzz (gguf_fuzzer): feed_forward_length 2^62 overflowed
// 2 * ffn (undefined behaviour) while the shapes were checked.
TEST(ModelConfigTest, ImplausiblyLargeSizesAreRefused) {
  auto u64 = [](int64_t v) { return GgufInt(GgufValueType::kUint64, v); };
  auto tensor = [](std::string name, std::vector<int64_t> shape) {
    GgufTensorInfo info;
    info.name = std::move(name);
    info.shape = std::move(shape);
    return info;
  };
  for (const char* key : {"llama.feed_forward_length", "llama.embedding_length",
                          "llama.context_length", "llama.attention.head_count"}) {
    std::map<std::string, GgufValue> metadata = {
        {"general.architecture", GgufString("llama")},
        {"llama.block_count", u64(1)},
        {"llama.context_length", u64(64)},
        {"llama.embedding_length", u64(32)},
        {"llama.feed_forward_length", u64(64)},
        {"llama.attention.head_count", u64(2)},
        {"llama.attention.layer_norm_rms_epsilon", GgufFloat32(1e-5)}};
    metadata[key] = u64(int64_t{1} << 62);
    auto gguf = GgufFile::FromParts(
        "test.gguf", metadata, {tensor("token_embd.weight", {32, 10}), tensor("output_norm.weight", {32})},
        {});
    auto config = ModelConfigFromGguf(*gguf);
    ASSERT_FALSE(config.ok()) << key;
    EXPECT_TRUE(absl::IsInvalidArgument(config.status())) << config.status();
    EXPECT_NE(config.status().message().find(key), std::string::npos) << config.status();
  }
}

}  // namespace
}  // namespace llorch
