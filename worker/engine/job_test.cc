// Per-job state, including the regression test for the bug of the system we
// replace: its model held one KV cache, so a 2-token warm-up left state that
// broke the next 5-token prompt ("cannot broadcast [5, 5] to [1, 32, 5, 7]").
#include "worker/engine/job.h"

#include <ATen/Parallel.h>

#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "worker/gguf/gguf.h"
#include "worker/model/test_models.h"

namespace llorch {
namespace {

constexpr int64_t kPrefillChunk = 3;

class JobTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Loads a fresh model and tokenizer; each test decides about warm-up.
  void SetUp() override {
    at::set_num_threads(2);
    auto gguf = GgufFile::Open(TestModelPath(GetParam()));
    ASSERT_TRUE(gguf.ok()) << gguf.status();
    auto vocab = VocabFromGguf(**gguf);
    ASSERT_TRUE(vocab.ok()) << vocab.status();
    auto tokenizer = Tokenizer::Create(std::move(*vocab));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer);
    auto model = LlamaModel::Load(**gguf, LoadOptions());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
  }

  std::unique_ptr<Job> NewJob(const std::vector<int32_t>& prompt, int32_t max_tokens,
                              float temperature = 0.0f, uint64_t seed = 0) {
    GenerationParams params;
    params.max_tokens = max_tokens;
    params.ignore_eos = true;
    params.sampling.temperature = temperature;
    params.sampling.seed = seed;
    auto job = Job::Create("test", prompt, params, model_.get(), tokenizer_.get());
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? std::move(*job) : nullptr;
  }

  std::vector<int32_t> RunAlone(const std::vector<int32_t>& prompt, int32_t max_tokens,
                                float temperature = 0.0f, uint64_t seed = 0) {
    std::vector<int32_t> out;
    auto job = NewJob(prompt, max_tokens, temperature, seed);
    // Prefill in chunks of 3, as the interleaved run below does: the same
    // shapes give bit-identical arithmetic, so any difference is shared state.
    absl::Status status =
        RunJob(*model_, *job, kPrefillChunk, [&](const TokenEvent& e) { out.push_back(e.id); });
    EXPECT_TRUE(status.ok()) << status;
    return out;
  }

  std::vector<int32_t> Prompt(int n, int offset) const {
    std::vector<int32_t> prompt;
    for (int i = 0; i < n; ++i) prompt.push_back((offset + 97 * i) % model_->config().vocab_size);
    return prompt;
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<LlamaModel> model_;
};

TEST_P(JobTest, WarmUpThenFiveTokenPrompt) {
  const std::vector<int32_t> prompt = Prompt(5, 11);
  const std::vector<int32_t> cold = RunAlone(prompt, 8);
  ASSERT_EQ(cold.size(), 8u);
  ASSERT_TRUE(WarmUp(*model_).ok());  // writes 2 tokens into its own cache
  EXPECT_EQ(RunAlone(prompt, 8), cold);
}

TEST_P(JobTest, InterleavedJobsMatchJobsAlone) {
  const std::vector<int32_t> prompt_a = Prompt(5, 3);
  const std::vector<int32_t> prompt_b = Prompt(13, 1000);
  const std::vector<int32_t> alone_a = RunAlone(prompt_a, 10);
  const std::vector<int32_t> alone_b = RunAlone(prompt_b, 10);

  auto a = NewJob(prompt_a, 10);
  auto b = NewJob(prompt_b, 10);
  std::vector<int32_t> out_a, out_b;
  // Step the two jobs alternately, one forward each, prefill in chunks of 3.
  while (!a->finished() || !b->finished()) {
    for (auto [job, out] : {std::pair{a.get(), &out_a}, std::pair{b.get(), &out_b}}) {
      if (job->finished()) continue;
      auto logits = model_->Forward(job->NextInput(kPrefillChunk), job->next_pos(), job->cache(),
                                    false, job->decoding());
      ASSERT_TRUE(logits.ok()) << logits.status();
      if (job->ready_to_sample()) out->push_back(job->Accept(logits->data_ptr<float>()).id);
    }
  }
  EXPECT_EQ(out_a, alone_a);
  EXPECT_EQ(out_b, alone_b);
}

// Jobs drawing together over the threads (ChooseAll, as the engine and
// `llorch bench` batch them) give each job the tokens and log-probabilities
// it draws alone, sampled with its own seed.
TEST_P(JobTest, ChoosingTogetherGivesEachJobsOwnDraws) {
  constexpr int kJobs = 5, kTokens = 6;
  std::vector<std::vector<TokenEvent>> alone(kJobs);
  for (int i = 0; i < kJobs; ++i) {
    auto job = NewJob(Prompt(4 + i, 7 * i), kTokens, 0.9f, 100 + i);
    ASSERT_TRUE(RunJob(*model_, *job, kPrefillChunk, [&](const TokenEvent& e) {
                  alone[i].push_back(e);
                }).ok());
  }
  std::vector<std::unique_ptr<Job>> jobs;
  std::vector<Job*> job_ptrs;
  for (int i = 0; i < kJobs; ++i) {
    jobs.push_back(NewJob(Prompt(4 + i, 7 * i), kTokens, 0.9f, 100 + i));
    job_ptrs.push_back(jobs.back().get());
  }
  for (int step = 0; step < kTokens; ++step) {
    // Each job's forward alone (its chunks as RunJob takes them), then the
    // draws of all of them together.
    std::vector<at::Tensor> logits(kJobs);
    std::vector<const float*> rows;
    for (int i = 0; i < kJobs; ++i) {
      Job& job = *jobs[i];
      while (true) {
        auto out = model_->Forward(job.NextInput(kPrefillChunk), job.next_pos(), job.cache(),
                                   false, job.decoding());
        ASSERT_TRUE(out.ok()) << out.status();
        logits[i] = *out;
        if (job.ready_to_sample()) break;
      }
      rows.push_back(logits[i].data_ptr<float>());
    }
    std::vector<std::exception_ptr> errors;
    std::vector<TokenChoice> choices = ChooseAll(job_ptrs, rows, &errors);
    for (int i = 0; i < kJobs; ++i) {
      ASSERT_EQ(errors[i], nullptr);
      const TokenEvent event = jobs[i]->Accept(std::move(choices[i]));
      EXPECT_EQ(event.id, alone[i][step].id) << "job " << i << " token " << step;
      EXPECT_EQ(event.logprob, alone[i][step].logprob) << "job " << i << " token " << step;
      EXPECT_EQ(event.text, alone[i][step].text) << "job " << i << " token " << step;
    }
  }
}

TEST_P(JobTest, SameSeedSameTokens) {
  const std::vector<int32_t> prompt = Prompt(6, 5);
  const auto first = RunAlone(prompt, 12, 1.0f, 1234);
  EXPECT_EQ(RunAlone(prompt, 12, 1.0f, 1234), first);
}

TEST_P(JobTest, FinishesWithLengthAtMaxTokens) {
  auto job = NewJob(Prompt(4, 9), 3);
  std::vector<TokenEvent> events;
  ASSERT_TRUE(RunJob(*model_, *job, 512, [&](const TokenEvent& e) { events.push_back(e); }).ok());
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events.back().finish, FinishReason::kLength);
  EXPECT_EQ(job->completion_tokens(), 3);
}

TEST_P(JobTest, StopsAtTheContextLimit) {
  const int64_t context = model_->config().context_length;
  if (context > 512) GTEST_SKIP() << "context too long for a quick test";
  auto job = NewJob(Prompt(static_cast<int>(context) - 2, 1), 100);
  std::vector<TokenEvent> events;
  ASSERT_TRUE(RunJob(*model_, *job, 512, [&](const TokenEvent& e) { events.push_back(e); }).ok());
  EXPECT_EQ(job->finish_reason(), FinishReason::kLength);
  EXPECT_EQ(static_cast<int64_t>(events.size()), 3);  // positions context-2, context-1, then full
}

TEST_P(JobTest, RejectsBadRequests) {
  GenerationParams params;
  EXPECT_FALSE(Job::Create("x", {}, params, model_.get(), tokenizer_.get()).ok());
  EXPECT_FALSE(Job::Create("x", {static_cast<int32_t>(model_->config().vocab_size)}, params,
                           model_.get(), tokenizer_.get()).ok());
  std::vector<int32_t> too_long(model_->config().context_length, 1);
  EXPECT_FALSE(Job::Create("x", too_long, params, model_.get(), tokenizer_.get()).ok());
  params.max_tokens = 0;
  EXPECT_FALSE(Job::Create("x", {1}, params, model_.get(), tokenizer_.get()).ok());
}

INSTANTIATE_TEST_SUITE_P(Models, JobTest, ::testing::Values("tiny-f32-gqa", "smollm2"));

}  // namespace
}  // namespace llorch
