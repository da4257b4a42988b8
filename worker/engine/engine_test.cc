// The engine loop: concurrent jobs batched together give the tokens each
// gives alone; cancellation frees KV memory; admission errors; exceptions
// end only the jobs they touch; unseeded jobs report a replayable seed.
#include "worker/engine/engine.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <future>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/gguf/gguf.h"

namespace llorch {
namespace {

// Collects one job's events; Wait() returns once it finished.
class CollectingSink : public JobSink {
 public:
  void OnStarted(const JobStart& start) override {
    started = start.prompt_tokens;
    cached = start.cached_prompt_tokens;
    seed = start.seed;
  }
  void OnToken(const TokenEvent& event) override {
    ids.push_back(event.id);
    logprobs.push_back(event.logprob);
  }
  void OnFinished(const JobSummary& s) override {
    summary = s;
    done.set_value();
  }
  void OnError(const absl::Status& status) override {
    error = status;
    done.set_value();
  }
  void Wait() { done.get_future().wait(); }

  int32_t started = -1;
  int32_t cached = -1;
  uint64_t seed = 0;
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  JobSummary summary;
  absl::Status error;
  std::promise<void> done;
};

std::string ModelPath() {
  const char* model = std::getenv("LLORCH_ENGINE_TEST_MODEL");
  return model != nullptr ? model : std::string(LLORCH_TESTDATA_DIR) + "/tiny-f32-gqa.gguf";
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(2);
    auto gguf = GgufFile::Open(ModelPath());
    ASSERT_TRUE(gguf.ok()) << gguf.status();
    auto vocab = VocabFromGguf(**gguf);
    ASSERT_TRUE(vocab.ok());
    tokenizer_ = std::move(*Tokenizer::Create(std::move(*vocab)));
    auto model = LlamaModel::Load(**gguf, LoadOptions());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
  }

  GenerationParams Greedy(int32_t max_tokens) {
    GenerationParams params;
    params.max_tokens = max_tokens;
    params.ignore_eos = true;
    params.sampling.temperature = 0;
    return params;
  }

  std::vector<int32_t> Prompt(int n, int offset) {
    std::vector<int32_t> prompt;
    for (int i = 0; i < n; ++i) prompt.push_back((offset + 131 * i) % model_->config().vocab_size);
    return prompt;
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<LlamaModel> model_;
};

TEST_F(EngineTest, ConcurrentJobsMatchJobsAlone) {
  for (int num_jobs : {8, 16}) {
    std::vector<std::vector<int32_t>> alone;
    for (int j = 0; j < num_jobs; ++j) {
      auto job = Job::Create("alone", Prompt(3 + 5 * j, j), Greedy(12), model_.get(),
                             tokenizer_.get());
      ASSERT_TRUE(job.ok());
      std::vector<int32_t> ids;
      ASSERT_TRUE(RunJob(*model_, **job, 512, [&](const TokenEvent& e) { ids.push_back(e.id); }).ok());
      alone.push_back(ids);
    }
    EngineOptions options;
    options.max_prefill_tokens_per_step = 16;  // forces chunked prefill mixed with decode
    Engine engine(model_.get(), tokenizer_.get(), options);
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (int j = 0; j < num_jobs; ++j) {
      sinks.push_back(std::make_shared<CollectingSink>());
      ASSERT_TRUE(engine.Submit("job" + std::to_string(j), Prompt(3 + 5 * j, j), Greedy(12),
                                sinks.back()).ok());
    }
    for (int j = 0; j < num_jobs; ++j) {
      sinks[j]->Wait();
      EXPECT_TRUE(sinks[j]->error.ok()) << sinks[j]->error;
      EXPECT_EQ(sinks[j]->started, 3 + 5 * j);
      EXPECT_EQ(sinks[j]->summary.reason, FinishReason::kLength);
      EXPECT_EQ(sinks[j]->ids, alone[j]) << "job " << j << " of " << num_jobs;
    }
    EXPECT_EQ(engine.Stats().kv_used_bytes, 0u);
  }
}

// Every row's result is independent of the batch and chunk shapes (fixed
// orders in every kernel), so results must match to the bit.
void ExpectSameResults(const std::vector<int32_t>& ids, const std::vector<float>& logprobs,
                       const std::vector<int32_t>& want_ids,
                       const std::vector<float>& want_logprobs, const std::string& what) {
  EXPECT_EQ(ids, want_ids) << what;
  EXPECT_EQ(logprobs, want_logprobs) << what;
}

// Runs `prompts` (greedy, `max_tokens` each) through one engine, all
// submitted at once; returns each job's sink once all finished.
std::vector<std::shared_ptr<CollectingSink>> RunAll(Engine& engine,
                                                    const std::vector<std::vector<int32_t>>& prompts,
                                                    const GenerationParams& params) {
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (size_t j = 0; j < prompts.size(); ++j) {
    sinks.push_back(std::make_shared<CollectingSink>());
    EXPECT_TRUE(engine.Submit("job" + std::to_string(j), prompts[j], params, sinks.back()).ok());
  }
  for (auto& sink : sinks) {
    sink->Wait();
    EXPECT_TRUE(sink->error.ok()) << sink->error;
  }
  return sinks;
}

// Jobs whose prompts share a long start map the blocks an earlier job
// computed, and give the tokens and log-probs they give with the prefix
// cache off (each job computing its whole prompt).
TEST_F(EngineTest, PrefixCacheReuseGivesIdenticalResults) {
  const std::vector<int32_t> shared = Prompt(45, 11);  // 2 full blocks of 16, then 13
  std::vector<std::vector<int32_t>> prompts;
  for (int j = 0; j < 4; ++j) {
    std::vector<int32_t> prompt = shared;
    for (int32_t t : Prompt(3 + 7 * j, 100 + j)) prompt.push_back(t);
    prompts.push_back(prompt);
  }
  prompts.push_back(shared);  // a prompt that is all cached but its last token
  std::vector<std::vector<int32_t>> alone_ids;
  std::vector<std::vector<float>> alone_logprobs;
  for (bool prefix_cache : {false, true}) {
    EngineOptions options;
    options.prefix_cache = prefix_cache;
    options.max_prefill_tokens_per_step = 24;  // chunks that end inside blocks
    Engine engine(model_.get(), tokenizer_.get(), options);
    // One after another, so each later job finds the earlier ones' blocks.
    for (size_t j = 0; j < prompts.size(); ++j) {
      auto sinks = RunAll(engine, {prompts[j]}, Greedy(20));
      if (!prefix_cache) {
        EXPECT_EQ(sinks[0]->cached, 0);
        EXPECT_EQ(engine.CachedPrefixTokens(prompts[j]), 0);
        alone_ids.push_back(sinks[0]->ids);
        alone_logprobs.push_back(sinks[0]->logprobs);
        continue;
      }
      // The first job finds nothing; later ones the 2 shared full blocks
      // (the last one: 2 blocks, as its 45th token must be computed), and
      // placement's view (CachedPrefixTokens) agrees beforehand.
      EXPECT_EQ(sinks[0]->cached, j == 0 ? 0 : 32) << "job " << j;
      if (j + 1 < prompts.size()) {
        EXPECT_EQ(engine.CachedPrefixTokens(prompts[j + 1]), 32) << "job " << j + 1;
      }
      EXPECT_EQ(engine.CachedPrefixTokens(Prompt(45, 999)), 0);
      ExpectSameResults(sinks[0]->ids, sinks[0]->logprobs, alone_ids[j], alone_logprobs[j],
                        "job " + std::to_string(j));
    }
    const EngineStats stats = engine.Stats();
    EXPECT_EQ(stats.kv_used_bytes, 0u);
    if (prefix_cache) {
      EXPECT_EQ(stats.prefix_hit_tokens, 4 * 32);
      EXPECT_GT(stats.kv_blocks_cached, 0);
    } else {
      EXPECT_EQ(stats.prefix_hit_tokens, 0);
      EXPECT_EQ(stats.kv_blocks_cached, 0);
    }
  }
}

// cache_answers: once a job ends, its prompt and answer are recomputed as
// prompt rows in the background, so the next turn (prompt + answer + more)
// maps the answer's blocks too, and still gives the tokens and log-probs it
// gives with the prefix cache off. Without it, the next turn finds only the
// first job's prompt blocks (its answer's rows are generated rows).
TEST_F(EngineTest, CachedAnswersGiveIdenticalResults) {
  const std::vector<int32_t> first = Prompt(21, 5);  // 1 full block of 16, then 5
  std::vector<int32_t> answer_ids;
  std::vector<int32_t> want_ids;
  std::vector<float> want_logprobs;
  for (int mode = 0; mode < 3; ++mode) {  // no prefix cache, prefix cache, + answers
    SCOPED_TRACE(mode);
    EngineOptions options;
    options.prefix_cache = mode > 0;
    options.cache_answers = mode == 2;
    Engine engine(model_.get(), tokenizer_.get(), options);
    auto turn1 = RunAll(engine, {first}, Greedy(40));
    ASSERT_EQ(turn1[0]->ids.size(), 40u);
    if (mode == 0) answer_ids = turn1[0]->ids;
    EXPECT_EQ(turn1[0]->ids, answer_ids);
    std::vector<int32_t> second = first;
    second.insert(second.end(), answer_ids.begin(), answer_ids.end());  // 61 tokens
    for (int32_t t : Prompt(6, 77)) second.push_back(t);                // 67 tokens
    // The background job runs once nothing waits; wait for its blocks.
    const int32_t want_cached = mode == 2 ? 48 : (mode == 1 ? 16 : 0);
    for (int i = 0; i < 400 && engine.CachedPrefixTokens(second) < want_cached; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(engine.CachedPrefixTokens(second), want_cached);
    EXPECT_EQ(engine.Stats().running, 0);  // the background job is not a running job
    auto turn2 = RunAll(engine, {second}, Greedy(20));
    EXPECT_EQ(turn2[0]->cached, want_cached);
    if (mode == 0) {
      want_ids = turn2[0]->ids;
      want_logprobs = turn2[0]->logprobs;
    }
    ExpectSameResults(turn2[0]->ids, turn2[0]->logprobs, want_ids, want_logprobs, "turn 2");
    for (int i = 0; i < 400 && engine.Stats().kv_used_bytes > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const EngineStats stats = engine.Stats();
    EXPECT_EQ(stats.kv_used_bytes, 0u);
    // Prefix statistics count clients' jobs only.
    EXPECT_EQ(stats.prefix_queried_tokens, 21 + 67);
    EXPECT_EQ(stats.prefix_hit_tokens, want_cached);
  }
}

// A pool far smaller than the jobs' prompt + max_tokens: all are admitted
// (paging needs only their prompts' blocks), the pool runs dry mid-decode,
// the most recent jobs are preempted and recomputed, and every job still
// gives the tokens and log-probs it gives alone (ExpectSameResults).
TEST_F(EngineTest, PreemptedJobsGiveIdenticalResults) {
  constexpr int kJobs = 6;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> alone_ids;
  std::vector<std::vector<float>> alone_logprobs;
  for (int j = 0; j < kJobs; ++j) {
    prompts.push_back(Prompt(5 + 9 * j, 40 + j));
    auto job = Job::Create("alone", prompts.back(), Greedy(40), model_.get(), tokenizer_.get());
    ASSERT_TRUE(job.ok());
    std::vector<int32_t> ids;
    std::vector<float> logprobs;
    ASSERT_TRUE(RunJob(*model_, **job, 512, [&](const TokenEvent& e) {
                  ids.push_back(e.id);
                  logprobs.push_back(e.logprob);
                }).ok());
    alone_ids.push_back(ids);
    alone_logprobs.push_back(logprobs);
  }
  for (bool prefix_cache : {false, true}) {
    SCOPED_TRACE(prefix_cache ? "prefix cache on" : "prefix cache off");
    EngineOptions options;
    options.prefix_cache = prefix_cache;
    options.kv_block_size = 8;
    // 20 blocks of 8: the longest job (50 + 39 positions) fits alone; all
    // six together need 6 * ~10 blocks.
    options.kv_budget_bytes = KvPool::BytesPerBlock(model_->config(), 8, KvType::kF32) * 20;
    int32_t widest_batch = 0;
    options.on_step = [&](int32_t batch_size, const EngineStats&) {
      widest_batch = std::max(widest_batch, batch_size);
    };
    Engine engine(model_.get(), tokenizer_.get(), options);
    auto sinks = RunAll(engine, prompts, Greedy(40));
    for (int j = 0; j < kJobs; ++j) {
      ExpectSameResults(sinks[j]->ids, sinks[j]->logprobs, alone_ids[j], alone_logprobs[j],
                        "job " + std::to_string(j));
      EXPECT_EQ(sinks[j]->summary.completion_tokens, 40);
    }
    const EngineStats stats = engine.Stats();
    EXPECT_GT(stats.preemptions, 0);
    EXPECT_GE(widest_batch, 4);  // reservations of prompt + max_tokens: 1 or 2 at once
    EXPECT_EQ(stats.kv_used_bytes, 0u);
    EXPECT_EQ(stats.running, 0);
    EXPECT_EQ(stats.waiting, 0);
  }
}

TEST_F(EngineTest, CancelFreesKvAndIsIdempotent) {
  Engine engine(model_.get(), tokenizer_.get(), EngineOptions());
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine.Submit("long", Prompt(8, 1), Greedy(200), sink).ok());
  for (int i = 0; i < 200 && engine.Stats().kv_used_bytes == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_GT(engine.Stats().kv_used_bytes, 0u);
  engine.Cancel("long");
  engine.Cancel("long");
  engine.Cancel("never-existed");
  sink->Wait();
  EXPECT_EQ(sink->summary.reason, FinishReason::kCancelled);
  EXPECT_EQ(engine.Stats().kv_used_bytes, 0u);
  EXPECT_EQ(engine.Stats().running, 0);
}

TEST_F(EngineTest, RejectsBadSubmissions) {
  EngineOptions options;
  options.kv_budget_bytes = KvCache::BytesFor(model_->config(), 64, KvType::kF32);
  options.max_waiting = 1;
  options.max_running = 1;
  Engine engine(model_.get(), tokenizer_.get(), options);
  auto sink = std::make_shared<CollectingSink>();
  EXPECT_TRUE(absl::IsInvalidArgument(engine.Submit("a", {}, Greedy(4), sink)));
  EXPECT_TRUE(absl::IsInvalidArgument(engine.Submit("", Prompt(3, 0), Greedy(4), sink)));
  GenerationParams bad = Greedy(4);
  bad.sampling.top_p = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(engine.Submit("a", Prompt(3, 0), bad, sink)));
  EXPECT_TRUE(absl::IsResourceExhausted(engine.Submit("big", Prompt(3, 0), Greedy(100), sink)));
  auto s1 = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine.Submit("x", Prompt(3, 0), Greedy(50), s1).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(engine.Submit("x", Prompt(3, 0), Greedy(4), sink)));
  s1->Wait();
}

TEST_F(EngineTest, CancelWithOwnerSparesAnotherJobWithTheId) {
  Engine engine(model_.get(), tokenizer_.get(), EngineOptions());
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine.Submit("x", Prompt(4, 1), Greedy(30), sink).ok());
  auto stranger = std::make_shared<CollectingSink>();
  engine.Cancel("x", stranger.get());  // not the owner: ignored
  sink->Wait();
  EXPECT_EQ(sink->summary.reason, FinishReason::kLength);
  EXPECT_EQ(sink->ids.size(), 30u);
}

// An exception in a forward fails the jobs of that batch with INTERNAL; in a
// KV allocation, the job being admitted with RESOURCE_EXHAUSTED. Later jobs
// run as if nothing had happened, and no KV bytes leak.
TEST_F(EngineTest, FaultsEndOnlyTheAffectedJobs) {
  std::vector<int32_t> expected;
  {
    auto job = Job::Create("alone", Prompt(6, 3), Greedy(10), model_.get(), tokenizer_.get());
    ASSERT_TRUE(job.ok());
    const auto collect = [&](const TokenEvent& e) { expected.push_back(e.id); };
    ASSERT_TRUE(RunJob(*model_, **job, 512, collect).ok());
  }
  for (const char* spec : {"forward:3", "kv_alloc:1"}) {
    SCOPED_TRACE(spec);
    EngineOptions options;
    options.test_fault = *ParseTestFault(spec);
    Engine engine(model_.get(), tokenizer_.get(), options);
    auto faulted = std::make_shared<CollectingSink>();
    ASSERT_TRUE(engine.Submit("faulted", Prompt(6, 3), Greedy(10), faulted).ok());
    faulted->Wait();
    const bool forward = std::string(spec) == "forward:3";
    EXPECT_EQ(faulted->error.code(), forward ? absl::StatusCode::kInternal
                                             : absl::StatusCode::kResourceExhausted)
        << faulted->error;
    EXPECT_NE(faulted->error.message().find(forward ? "LLORCH_TEST_FAULT" : "out of memory"),
              std::string::npos)
        << faulted->error;
    EXPECT_EQ(faulted->ids.size(), forward ? 2u : 0u);  // forwards 1 and 2 gave tokens
    auto next = std::make_shared<CollectingSink>();
    ASSERT_TRUE(engine.Submit("faulted", Prompt(6, 3), Greedy(10), next).ok());  // id is free
    next->Wait();
    EXPECT_TRUE(next->error.ok()) << next->error;
    EXPECT_EQ(next->ids, expected);
    EXPECT_EQ(engine.Stats().kv_used_bytes, 0u);
    EXPECT_EQ(engine.Stats().running, 0);
  }
}

TEST(EngineFaultsTest, AllocationFailuresAreResourceExhausted) {
  auto status_of = [](auto&& thrower) {
    try {
      thrower();
    } catch (...) {
      return StatusFromCurrentException("doing it");
    }
    return absl::OkStatus();
  };
  const absl::Status bad_alloc = status_of([] { throw std::bad_alloc(); });
  EXPECT_EQ(bad_alloc.code(), absl::StatusCode::kResourceExhausted) << bad_alloc;
  const absl::Status oom =
      status_of([] { TORCH_CHECK_WITH(OutOfMemoryError, false, "no room for 8 GiB"); });
  EXPECT_EQ(oom.code(), absl::StatusCode::kResourceExhausted) << oom;
  EXPECT_NE(oom.message().find("no room for 8 GiB"), std::string::npos) << oom;
  const absl::Status c10 = status_of([] { TORCH_CHECK(false, "shape mismatch"); });
  EXPECT_EQ(c10.code(), absl::StatusCode::kInternal) << c10;
  EXPECT_NE(c10.message().find("doing it failed: shape mismatch"), std::string::npos) << c10;
  EXPECT_EQ(c10.message().find("Exception raised from"), std::string::npos) << c10;  // no backtrace
  const absl::Status other = status_of([] { throw std::runtime_error("boom"); });
  EXPECT_EQ(other.code(), absl::StatusCode::kInternal);
  EXPECT_NE(other.message().find("boom"), std::string::npos);
}

TEST(EngineFaultsTest, ParseTestFaultAcceptsOnlyTheThreeForms) {
  EXPECT_EQ(ParseTestFault("forward:2")->point, TestFault::Point::kForward);
  EXPECT_EQ(ParseTestFault("kv_alloc:7")->nth, 7);
  EXPECT_EQ(ParseTestFault("leak:4096")->point, TestFault::Point::kLeak);
  for (const char* bad : {"", "forward", "forward:0", "forward:x", "disk:1", "leak:-1"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ParseTestFault(bad).status())) << bad;
  }
}

// Without a seed each job draws its own and reports it; that seed replays it.
TEST_F(EngineTest, UnseededJobsReportAReplayableSeed) {
  Engine engine(model_.get(), tokenizer_.get(), EngineOptions());
  GenerationParams sampled = Greedy(16);
  sampled.sampling.temperature = 1.0f;
  auto run = [&](const GenerationParams& params) {
    auto sink = std::make_shared<CollectingSink>();
    EXPECT_TRUE(engine.Submit("s", Prompt(5, 7), params, sink).ok());
    sink->Wait();
    return sink;
  };
  auto first = run(sampled), second = run(sampled);
  EXPECT_NE(first->seed, second->seed);
  EXPECT_NE(first->ids, second->ids);  // 16 draws from a random model's wide distribution
  GenerationParams replay = sampled;
  replay.sampling.seed = first->seed;
  auto replayed = run(replay);
  EXPECT_EQ(replayed->seed, first->seed);
  EXPECT_EQ(replayed->ids, first->ids);
}

}  // namespace
}  // namespace llorch
