#include "tools/llorch/soak_workload.h"

#include <algorithm>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tools/llorch/bench_serve_client.h"

namespace llorch {
namespace tool {
namespace {

// Draws in [0, 100).
int Percent(std::mt19937_64& rng) { return static_cast<int>(rng() % 100); }
int Uniform(std::mt19937_64& rng, int lo, int hi) {  // [lo, hi]
  return lo + static_cast<int>(rng() % static_cast<uint64_t>(hi - lo + 1));
}

void SetPrompt(std::mt19937_64& rng, int64_t index, int max_words, v1::GenerateRequest* request) {
  static constexpr int kWords[] = {1, 8, 32, 128, 300};
  const int kind = Percent(rng);
  if (kind < 60) {
    request->set_text(BenchPrompt(static_cast<int>(index), std::min(kWords[rng() % 5], max_words)));
  } else if (kind < 80) {
    v1::ChatMessages* chat = request->mutable_messages();
    if (rng() % 2 == 0) {
      v1::ChatMessage* system = chat->add_messages();
      system->set_role("system");
      system->set_content("You are a helpful assistant.");
    }
    const int turns = Uniform(rng, 1, 3);
    for (int turn = 0; turn < turns; ++turn) {
      v1::ChatMessage* user = chat->add_messages();
      user->set_role("user");
      user->set_content(BenchPrompt(static_cast<int>(index * 7 + turn), Uniform(rng, 2, 40)));
      if (turn + 1 < turns) {
        v1::ChatMessage* assistant = chat->add_messages();
        assistant->set_role("assistant");
        assistant->set_content(BenchPrompt(static_cast<int>(index * 13 + turn), 6));
      }
    }
  } else {
    const int num_tokens = Uniform(rng, 1, 64);
    for (int i = 0; i < num_tokens; ++i) request->mutable_token_ids()->add_ids(Uniform(rng, 3, 250));
  }
}

void SetSampling(std::mt19937_64& rng, v1::GenerateRequest* request) {
  v1::SamplingParams* sampling = request->mutable_sampling();
  const int kind = Percent(rng);
  if (kind < 40) {
    sampling->set_temperature(0);
  } else if (kind < 70) {
    sampling->set_temperature(0.8f);
    sampling->set_top_p(0.95f);
    sampling->set_seed(rng());
  } else if (kind < 85) {
    sampling->set_temperature(1.2f);
    sampling->set_top_k(20);
    sampling->set_min_p(0.05f);
    sampling->set_repetition_penalty(1.1f);
  } else {
    request->clear_sampling();  // the defaults, a seed of the worker's choosing
  }
}

}  // namespace

const char* SoakActionName(SoakAction action) {
  switch (action) {
    case SoakAction::kComplete: return "complete";
    case SoakAction::kCancelRpc: return "cancel";
    case SoakAction::kDisconnect: return "disconnect";
    case SoakAction::kDeadline: return "deadline";
  }
  return "?";
}

SoakCase MakeSoakCase(const SoakMix& mix, int64_t index) {
  std::mt19937_64 rng(mix.seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(index));
  SoakCase c;
  v1::GenerateRequest& request = c.request;
  request.set_model(mix.model);
  request.set_job_id(absl::StrCat("soak-", mix.seed, "-", index));
  SetPrompt(rng, index, mix.max_prompt_words, &request);
  SetSampling(rng, &request);
  request.set_max_tokens(Uniform(rng, 1, mix.max_tokens));
  if (Percent(rng) < 15) {
    request.add_stop(".");
    request.add_stop("\n\n");
  }
  if (Percent(rng) < 10) request.set_ignore_eos(true);
  if (Percent(rng) < 10) request.set_logprobs(Uniform(rng, 0, 3));
  const int action = Percent(rng);
  if (action < 70) {
    c.action = SoakAction::kComplete;
  } else if (action < 80) {
    c.action = SoakAction::kCancelRpc;
  } else if (action < 90) {
    c.action = SoakAction::kDisconnect;
  } else {
    c.action = SoakAction::kDeadline;
  }
  c.act_after_tokens = Uniform(rng, 0, 4);
  c.deadline_ms = Uniform(rng, 20, 500);
  return c;
}

SoakCase MakeWarmUpCase(const SoakMix& mix, int64_t index) {
  SoakCase c;
  v1::GenerateRequest& request = c.request;
  request.set_model(mix.model);
  request.set_job_id(absl::StrCat("soak-", mix.seed, "-warmup-", index));
  // Prompt indices past the mix's (its chat turns use up to 13 x index + 2).
  request.set_text(BenchPrompt(static_cast<int>(1000000 + index), mix.max_prompt_words));
  request.mutable_sampling()->set_temperature(0.8f);
  request.mutable_sampling()->set_top_p(0.95f);
  request.mutable_sampling()->set_seed(static_cast<uint64_t>(index) + 1);
  request.set_max_tokens(mix.max_tokens);
  request.set_ignore_eos(true);
  request.set_logprobs(3);
  c.action = SoakAction::kComplete;
  return c;
}

namespace {

// A stream that ended with OK must carry a Finished that agrees with it.
std::optional<std::string> WhyInconsistent(const SoakCase& c, const SoakOutcome& o) {
  if (!o.finished.has_value()) return "OK without Finished";
  // Started comes with the first token: a job cancelled before it has none.
  const bool cancelled_early =
      o.finished->reason() == v1::FINISH_REASON_CANCELLED && o.tokens == 0;
  if (!o.started && !cancelled_early) return "OK without Started";
  if (o.finished->completion_tokens() != o.tokens) {
    return absl::StrCat("Finished counts ", o.finished->completion_tokens(), " tokens, ", o.tokens,
                        " came");
  }
  if (o.tokens > c.request.max_tokens()) return "more tokens than max_tokens";
  const v1::FinishReason reason = o.finished->reason();
  if (reason == v1::FINISH_REASON_LENGTH && o.tokens != c.request.max_tokens()) {
    return "reason length before max_tokens";
  }
  if (reason == v1::FINISH_REASON_UNSPECIFIED) return "no finish reason";
  if (reason == v1::FINISH_REASON_CANCELLED && c.action != SoakAction::kCancelRpc) {
    return "cancelled without a Cancel";
  }
  return std::nullopt;
}

SoakVerdict Lost(std::string why) { return {SoakVerdict::Kind::kLost, std::move(why)}; }
SoakVerdict Expected(std::string label) { return {SoakVerdict::Kind::kExpected, std::move(label)}; }

}  // namespace

SoakVerdict JudgeSoak(const SoakCase& c, const SoakOutcome& o) {
  if (o.safety_deadline_hit) return Lost("hang (no end within the client's limit)");
  if (o.code == grpc::StatusCode::OK) {
    if (std::optional<std::string> why = WhyInconsistent(c, o)) return Lost(*why);
    return Expected(o.finished->reason() == v1::FINISH_REASON_CANCELLED ? "cancelled" : "ok");
  }
  if (c.action == SoakAction::kDisconnect && o.code == grpc::StatusCode::CANCELLED) {
    return Expected("disconnected");
  }
  if (c.action == SoakAction::kDeadline && o.code == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return Expected("deadline");
  }
  if (o.code == grpc::StatusCode::UNKNOWN && o.message.empty()) {
    return Lost("UNKNOWN without a message");
  }
  return {SoakVerdict::Kind::kFailure,
          absl::StatusCodeToString(static_cast<absl::StatusCode>(o.code))};
}

}  // namespace tool
}  // namespace llorch
