// The worker's request checks (services/worker/execute_request.h): fuzz
// bytes parsed as a llorch.worker.v1.ExecuteRequest the way the gRPC server
// parses it, then turned into a job's prompt and parameters against a fixed
// model loaded once: SmolLM2's tokenizer and chat template
// ($LLORCH_DEFAULT_MODEL; without it a built-in vocabulary and a ChatML
// template). No weights: the engine's own checks are not reached.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "llorch/worker/v1/worker.pb.h"
#include "services/worker/execute_request.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/proto_input.h"
#include "worker/engine/served_model.h"

namespace llorch {
namespace fuzz {
namespace {

constexpr char kChatMl[] =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

ServedModel* served = nullptr;

void LoadModel() {
  served = new ServedModel();
  std::vector<FixedTokenizer> tokenizers = LoadFixedTokenizers("gpt2");
  FixedTokenizer* chosen = &tokenizers.front();
  for (FixedTokenizer& t : tokenizers) {
    if (t.name == "smollm2") chosen = &t;
  }
  served->gguf = std::move(chosen->gguf);
  served->tokenizer = std::move(chosen->tokenizer);
  served->name = chosen->name;
  std::string source = kChatMl;
  if (served->gguf != nullptr) {
    if (auto s = served->gguf->GetString("tokenizer.chat_template"); s.ok()) source = *s;
  }
  const VocabData& vocab = served->tokenizer->vocab();
  auto text_of = [&](int32_t id) {
    return id >= 0 && id < served->tokenizer->vocab_size() ? vocab.tokens[id] : std::string();
  };
  absl::StatusOr<ChatTemplate> chat_template =
      ChatTemplate::Create(source, text_of(vocab.bos_id), text_of(vocab.eos_id));
  if (!chat_template.ok()) Fail(chat_template.status().ToString());
  served->chat_template = *std::move(chat_template);
  std::fprintf(stderr, "llorch-fuzz: model %s with its chat template\n", served->name.c_str());
}

}  // namespace
}  // namespace fuzz
}  // namespace llorch

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  llorch::fuzz::QuietProtobuf();
  llorch::fuzz::LoadModel();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llorch;
  worker::v1::ExecuteRequest request;
  if (!fuzz::ParseRequest(data, size, &request)) return 0;
  absl::StatusOr<JobRequest> job = ToJobRequest(request, *fuzz::served);
  if (!job.ok()) {
    LLORCH_FUZZ_CHECK(absl::IsInvalidArgument(job.status()), job.status().ToString());
    return 0;
  }
  LLORCH_FUZZ_CHECK(job->job_id == request.job_id(), "job_id");
  // Token ids and messages are refused here when they give no ids; a text
  // of characters the vocabulary cannot encode (SmolLM2 lacks a few control
  // bytes) encodes to none, which the engine refuses ("prompt is empty").
  LLORCH_FUZZ_CHECK(!job->prompt.empty() || request.has_text(), "empty prompt accepted");
  if (request.prompt_case() != worker::v1::ExecuteRequest::kTokenIds) {
    for (int32_t id : job->prompt) {
      LLORCH_FUZZ_CHECK(id >= 0 && id < fuzz::served->tokenizer->vocab_size(),
                        absl::StrCat("prompt id ", id));
    }
  }
  LLORCH_FUZZ_CHECK(job->params.stop_strings.size() == static_cast<size_t>(request.stop_size()),
                    "stop");
  LLORCH_FUZZ_CHECK(job->params.max_tokens == (request.max_tokens() != 0 ? request.max_tokens()
                                                                          : GenerationParams().max_tokens),
                    "max_tokens");
  return 0;
}
