// llorch: the local command line. Subcommands:
//   run       generate from a prompt (text or ids), streaming tokens
//   score     teacher-forced log-probs at every position of a token sequence
//   generate  the same, streamed from a running llorch-worker over gRPC
//   bench-serve  aggregate throughput of a worker at several concurrencies
//   convert   a Hugging Face directory to a GGUF file llama.cpp loads
//   inspect   model metadata as JSON
//   tokenize  prompt text to ids as JSON
// Errors: one line on stderr, exit code 2.
#include <ATen/Parallel.h>
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <atomic>
#include <mutex>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "services/worker/worker_client.h"
#include "worker/convert/convert.h"
#include "worker/convert/hf_checkpoint.h"
#include "worker/engine/job.h"
#include "worker/engine/served_model.h"
#include "worker/gguf/gguf.h"
#include "worker/model/llama_model.h"
#include "worker/model/model_config.h"
#include "worker/sampling/sampler.h"
#include "worker/tokenizer/tokenizer.h"

namespace llorch {
namespace {

using json = nlohmann::json;

constexpr char kUsage[] =
    "usage: llorch run --model PATH (--prompt TEXT | --prompt-ids 1,2,3 |\n"
    "          [--system TEXT] --chat [ROLE:]TEXT...) [--max-tokens N]\n"
    "          [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--repetition-penalty R]\n"
    "          [--seed S] [--stop STR]... [--stop-id ID]... [--ignore-eos] [--logprobs K]\n"
    "          [--threads N] [--device cpu|cuda|mps] [--format text|jsonl]\n"
    "          [--gelu auto|exact|ggml] [--ggml-variant auto|avx2|avx512]\n"
    "          (PATH: a GGUF file or a Hugging Face model directory; --ggml-variant: whose float\n"
    "          order the CPU path follows, default LLORCH_GGML_VARIANT or what ggml picks here)\n"
    "       llorch score --model PATH --prompt-ids 1,2,3 [--logprobs K] [--logits] [--one-token]\n"
    "          [--threads N]   teacher-forced log-probs (and raw logits) at every position\n"
    "       llorch bench --model PATH [--prompt-tokens P] [--gen-tokens G] [--reps R] [--threads N]\n"
    "       llorch generate --worker HOST:PORT (--prompt TEXT | --prompt-ids 1,2,3 |\n"
    "          [--system TEXT] --chat [ROLE:]TEXT...) [sampling flags\n"
    "          as for run] [--job-id ID] [--timeout SECONDS] [--format text|jsonl]\n"
    "       llorch bench-serve --worker HOST:PORT [--streams 1,2,4,8,16] [--gen-tokens G]\n"
    "          [--requests R]   aggregate tok/s per number of concurrent streams\n"
    "       llorch convert --model HF_DIR --out FILE.gguf [--type f32|f16|q8_0]\n"
    "       llorch inspect --model PATH\n"
    "       llorch tokenize --model PATH --text TEXT [--no-bos]\n";

std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Parsed command line: repeated flags keep every value.
struct Args {
  std::string command;
  std::map<std::string, std::vector<std::string>> values;
  bool Has(const std::string& flag) const { return values.count(flag) > 0; }
  std::string Get(const std::string& flag, const std::string& fallback = "") const {
    auto it = values.find(flag);
    return it == values.end() ? fallback : it->second.back();
  }
};

absl::StatusOr<Args> ParseArgs(int argc, char** argv) {
  static const std::map<std::string, bool> kFlags = {
      // flag -> takes a value
      {"--model", true},       {"--prompt", true},        {"--prompt-ids", true},
      {"--max-tokens", true},  {"--temperature", true},   {"--top-k", true},
      {"--top-p", true},       {"--min-p", true},         {"--repetition-penalty", true},
      {"--seed", true},        {"--stop", true},          {"--stop-id", true},
      {"--logprobs", true},    {"--threads", true},       {"--device", true},
      {"--format", true},      {"--text", true},          {"--no-bos", false},
      {"--ignore-eos", false}, {"--prefill-chunk", true}, {"--prompt-tokens", true},
      {"--gen-tokens", true},  {"--reps", true},          {"--worker", true},
      {"--job-id", true},      {"--timeout", true},       {"--streams", true},
      {"--requests", true},    {"--gelu", true},          {"--logits", false},      {"--one-token", false},
      {"--out", true},         {"--type", true},          {"--ggml-variant", true},
      {"--chat", true},        {"--system", true},
  };
  if (argc < 2) return absl::InvalidArgumentError("missing command");
  Args args;
  args.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    auto it = kFlags.find(flag);
    if (it == kFlags.end()) return absl::InvalidArgumentError(absl::StrCat("unknown flag ", flag));
    if (!it->second) {
      args.values[flag].push_back("1");
      continue;
    }
    if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(flag, " needs a value"));
    args.values[flag].push_back(argv[++i]);
  }
  return args;
}

template <typename T>
absl::Status ParseNumber(const Args& args, const std::string& flag, T* out) {
  if (!args.Has(flag)) return absl::OkStatus();
  const std::string text = args.Get(flag);
  bool ok;
  if constexpr (std::is_floating_point_v<T>) {
    double v;
    ok = absl::SimpleAtod(text, &v);
    *out = static_cast<T>(v);
  } else {
    int64_t v;
    ok = absl::SimpleAtoi(text, &v);
    *out = static_cast<T>(v);
  }
  if (!ok) return absl::InvalidArgumentError(absl::StrCat(flag, ": not a number: '", text, "'"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text, const std::string& flag) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": not a token id: '", part, "'"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<ServedModel> Load(const Args& args, bool weights, bool need_tokenizer = true) {
  if (!args.Has("--model")) return absl::InvalidArgumentError("--model is required");
  absl::StatusOr<ServedModel> served;
  if (!weights) {
    served = LoadServedModel(args.Get("--model"), nullptr);
  } else {
    int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (absl::Status s = ParseNumber(args, "--threads", &threads); !s.ok()) return s;
    if (threads < 1) return absl::InvalidArgumentError("--threads must be at least 1");
    at::set_num_threads(threads);
    LoadOptions options;
    options.device = args.Get("--device", "cpu");
    const std::string gelu = args.Get("--gelu", "auto");
    if (gelu == "exact") {
      options.gelu = LoadOptions::Gelu::kExact;
    } else if (gelu == "ggml") {
      options.gelu = LoadOptions::Gelu::kGgmlF16;
    } else if (gelu != "auto") {
      return absl::InvalidArgumentError(absl::StrCat("--gelu must be auto, exact or ggml, got ", gelu));
    }
    if (const std::string variant = args.Get("--ggml-variant", "auto"); variant != "auto") {
      absl::StatusOr<GgmlVariant> parsed = ParseGgmlVariant(variant);
      if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat("--ggml-variant: ", parsed.status().message()));
      options.ggml_variant = *parsed;
    }
    served = LoadServedModel(args.Get("--model"), &options);
  }
  if (served.ok() && need_tokenizer && served->tokenizer == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        args.Get("--model"), ": no tokenizer in the model directory (only `score` works without one)"));
  }
  return served;
}

// --chat "role:text" (repeatable) after an optional --system TEXT; a --chat
// without "role:" is a user message.
absl::StatusOr<std::vector<ChatMessage>> ChatMessages(const Args& args) {
  std::vector<ChatMessage> messages;
  if (args.Has("--system")) messages.push_back({"system", args.Get("--system")});
  if (!args.Has("--chat")) return messages;
  for (const std::string& turn : args.values.at("--chat")) {
    const size_t colon = turn.find(':');
    const std::string role = colon == std::string::npos ? "" : turn.substr(0, colon);
    const bool named = !role.empty() && role.find_first_of(" \n") == std::string::npos;
    messages.push_back(named ? ChatMessage{role, turn.substr(colon + 1)}
                             : ChatMessage{"user", turn});
  }
  return messages;
}

absl::Status CheckOnePrompt(const Args& args) {
  const int forms = args.Has("--prompt") + args.Has("--prompt-ids") +
                    (args.Has("--chat") || args.Has("--system"));
  if (forms != 1) {
    return absl::InvalidArgumentError(
        "give exactly one of --prompt, --prompt-ids and --chat (with optional --system)");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const Args& args, const ServedModel& served) {
  if (absl::Status s = CheckOnePrompt(args); !s.ok()) return s;
  if (args.Has("--prompt-ids")) return ParseIds(args.Get("--prompt-ids"), "--prompt-ids");
  if (args.Has("--prompt")) {
    return served.tokenizer->Encode(args.Get("--prompt"), /*add_special=*/true,
                                    /*parse_special=*/true);
  }
  absl::StatusOr<std::vector<ChatMessage>> messages = ChatMessages(args);
  if (!messages.ok()) return messages.status();
  return ChatPromptIds(served, *messages, /*add_generation_prompt=*/true);
}

json TopLogProbsJson(const std::vector<std::pair<int32_t, float>>& top) {
  json out = json::array();
  for (const auto& [id, lp] : top) out.push_back({id, lp});
  return out;
}

absl::StatusOr<GenerationParams> ParseGenerationParams(const Args& args) {
  GenerationParams params;
  // Defaults as llama.cpp's: a sensible demo out of the box.
  params.sampling.temperature = 0.8f;
  params.sampling.top_k = 40;
  params.sampling.top_p = 0.95f;
  params.sampling.min_p = 0.05f;
  params.sampling.seed = std::random_device{}();
  for (absl::Status s : {ParseNumber(args, "--max-tokens", &params.max_tokens),
                         ParseNumber(args, "--temperature", &params.sampling.temperature),
                         ParseNumber(args, "--top-k", &params.sampling.top_k),
                         ParseNumber(args, "--top-p", &params.sampling.top_p),
                         ParseNumber(args, "--min-p", &params.sampling.min_p),
                         ParseNumber(args, "--repetition-penalty",
                                     &params.sampling.repetition_penalty),
                         ParseNumber(args, "--seed", &params.sampling.seed),
                         ParseNumber(args, "--logprobs", &params.top_logprobs)}) {
    if (!s.ok()) return s;
  }
  if (args.Has("--stop")) params.stop_strings = args.values.at("--stop");
  if (args.Has("--stop-id")) {
    for (const std::string& v : args.values.at("--stop-id")) {
      absl::StatusOr<std::vector<int32_t>> ids = ParseIds(v, "--stop-id");
      if (!ids.ok()) return ids.status();
      params.stop_ids.insert(params.stop_ids.end(), ids->begin(), ids->end());
    }
  }
  params.ignore_eos = args.Has("--ignore-eos");
  return params;
}

absl::Status Run(const Args& args) {
  absl::StatusOr<GenerationParams> parsed = ParseGenerationParams(args);
  if (!parsed.ok()) return parsed.status();
  const GenerationParams& params = *parsed;
  const std::string format = args.Get("--format", "text");
  if (format != "text" && format != "jsonl") {
    return absl::InvalidArgumentError(absl::StrCat("--format must be text or jsonl, got ", format));
  }
  int64_t prefill_chunk = 512;
  if (absl::Status s = ParseNumber(args, "--prefill-chunk", &prefill_chunk); !s.ok()) return s;
  if (prefill_chunk < 1) return absl::InvalidArgumentError("--prefill-chunk must be at least 1");

  absl::StatusOr<ServedModel> loaded = Load(args, /*weights=*/true);
  if (!loaded.ok()) return loaded.status();
  absl::StatusOr<std::vector<int32_t>> prompt = PromptIds(args, *loaded);
  if (!prompt.ok()) return prompt.status();
  if (absl::Status s = WarmUp(*loaded->model); !s.ok()) return s;

  absl::StatusOr<std::unique_ptr<Job>> job =
      Job::Create("cli", *prompt, params, loaded->model.get(), loaded->tokenizer.get());
  if (!job.ok()) return job.status();
  const bool jsonl = format == "jsonl";
  absl::Status status = RunJob(*loaded->model, **job, prefill_chunk, [&](const TokenEvent& e) {
    if (jsonl) {
      json line = {{"event", "token"}, {"index", e.index}, {"id", e.id},
                   {"text", e.text},   {"logprob", e.logprob}};
      if (params.top_logprobs > 0) line["top_logprobs"] = TopLogProbsJson(e.top_logprobs);
      std::cout << Dump(line) << "\n" << std::flush;
    } else {
      std::cout << e.text << std::flush;
    }
  });
  if (!status.ok()) return status;
  if (jsonl) {
    json done = {{"event", "finished"},
                 {"reason", FinishReasonName((*job)->finish_reason())},
                 {"prompt_tokens", (*job)->prompt_tokens()},
                 {"completion_tokens", (*job)->completion_tokens()},
                 {"ttft_ms", (*job)->ttft_ms()},
                 {"decode_tokens_per_s", (*job)->decode_tokens_per_s()},
                 {"kv_cache_bytes", (*job)->cache()->num_bytes()}};
    std::cout << Dump(done) << "\n";
  } else {
    std::cout << "\n";
    std::cerr << absl::StrCat("[", (*job)->prompt_tokens(), " prompt tokens, ",
                              (*job)->completion_tokens(), " generated, finished: ",
                              FinishReasonName((*job)->finish_reason()), ", ttft ",
                              static_cast<int>((*job)->ttft_ms()), " ms, ",
                              static_cast<int>((*job)->decode_tokens_per_s() * 10) / 10.0,
                              " tok/s]")
              << std::endl;
  }
  return absl::OkStatus();
}

absl::Status Score(const Args& args) {
  int32_t top = 5;
  if (absl::Status s = ParseNumber(args, "--logprobs", &top); !s.ok()) return s;
  if (!args.Has("--prompt-ids")) return absl::InvalidArgumentError("--prompt-ids is required");
  absl::StatusOr<std::vector<int32_t>> ids = ParseIds(args.Get("--prompt-ids"), "--prompt-ids");
  if (!ids.ok()) return ids.status();
  absl::StatusOr<ServedModel> loaded = Load(args, /*weights=*/true, /*need_tokenizer=*/false);
  if (!loaded.ok()) return loaded.status();
  const LlamaModel& model = *loaded->model;
  const int64_t n = static_cast<int64_t>(ids->size());
  if (n == 0) return absl::InvalidArgumentError("--prompt-ids is empty");
  if (n > loaded->config.context_length) {
    return absl::InvalidArgumentError(absl::StrCat("--prompt-ids: ", n,
                                                   " tokens exceed the context length ",
                                                   loaded->config.context_length));
  }
  std::unique_ptr<KvCache> cache = model.NewCache(n);
  const int32_t vocab = static_cast<int32_t>(loaded->config.vocab_size);
  // --one-token: one forward per position, summed as generated tokens are
  // (llama.cpp's one-token order); otherwise prompt chunks.
  const bool one_token = args.Has("--one-token");
  const int64_t chunk = one_token ? 1 : 256;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t count = std::min(chunk, n - begin);
    absl::StatusOr<at::Tensor> logits = model.Forward(
        absl::MakeConstSpan(*ids).subspan(begin, count), begin, cache.get(), true, one_token);
    if (!logits.ok()) return logits.status();
    for (int64_t r = 0; r < count; ++r) {
      const int64_t pos = begin + r;
      const float* row = logits->data_ptr<float>() + r * vocab;
      json line = {{"pos", pos}, {"id", (*ids)[pos]},
                   {"top_logprobs", TopLogProbsJson(TopLogProbs(row, vocab, top))}};
      line["next_logprob"] = pos + 1 < n ? json(LogProbOf(row, vocab, (*ids)[pos + 1])) : json();
      if (args.Has("--logits")) line["logits"] = std::vector<float>(row, row + vocab);
      std::cout << Dump(line) << "\n";
    }
  }
  return absl::OkStatus();
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// Prompt and decode throughput on random prompt ids, greedy, EOS ignored;
// the same measurement tools/bench/llamacpp_bench makes for llama.cpp.
absl::Status Bench(const Args& args) {
  int32_t prompt_tokens = 512, gen_tokens = 128, reps = 3;
  for (absl::Status s : {ParseNumber(args, "--prompt-tokens", &prompt_tokens),
                         ParseNumber(args, "--gen-tokens", &gen_tokens),
                         ParseNumber(args, "--reps", &reps)}) {
    if (!s.ok()) return s;
  }
  if (prompt_tokens < 1 || gen_tokens < 2 || reps < 1) {
    return absl::InvalidArgumentError("need --prompt-tokens >= 1, --gen-tokens >= 2, --reps >= 1");
  }
  const auto load_start = std::chrono::steady_clock::now();
  absl::StatusOr<ServedModel> loaded = Load(args, /*weights=*/true);
  if (!loaded.ok()) return loaded.status();
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  const LlamaModel& model = *loaded->model;
  if (absl::Status s = WarmUp(model); !s.ok()) return s;
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(loaded->config.vocab_size) - 1);
  std::vector<double> prompt_rates, decode_rates;
  for (int32_t rep = 0; rep < reps; ++rep) {
    std::vector<int32_t> prompt(prompt_tokens);
    for (int32_t& id : prompt) id = dist(rng);
    GenerationParams params;
    params.max_tokens = gen_tokens;
    params.ignore_eos = true;
    params.sampling.temperature = 0;
    absl::StatusOr<std::unique_ptr<Job>> job =
        Job::Create("bench", prompt, params, &model, loaded->tokenizer.get());
    if (!job.ok()) return job.status();
    if (absl::Status s = RunJob(model, **job, 512, [](const TokenEvent&) {}); !s.ok()) return s;
    prompt_rates.push_back(prompt_tokens / ((*job)->ttft_ms() / 1000.0));
    decode_rates.push_back((*job)->decode_tokens_per_s());
  }
  json out = {{"engine", "llorch"},
              {"model", args.Get("--model")},
              {"n_params", model.num_parameters()},
              {"threads", at::get_num_threads()},
              {"prompt_tokens", prompt_tokens},
              {"gen_tokens", gen_tokens},
              {"reps", reps},
              {"load_s", load_s},
              {"prompt_tok_s", Median(prompt_rates)},
              {"decode_tok_s", Median(decode_rates)},
              {"prompt_tok_s_best", *std::max_element(prompt_rates.begin(), prompt_rates.end())},
              {"decode_tok_s_best", *std::max_element(decode_rates.begin(), decode_rates.end())},
              {"prompt_tok_s_all", prompt_rates},
              {"decode_tok_s_all", decode_rates}};
  std::cout << Dump(out) << "\n";
  return absl::OkStatus();
}

// ---- Client commands: talk to a running llorch-worker. ----

worker::v1::ExecuteRequest ToExecuteRequest(const std::string& job_id,
                                            const GenerationParams& params) {
  worker::v1::ExecuteRequest request;
  request.set_job_id(job_id);
  worker::v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_temperature(params.sampling.temperature);
  sampling->set_top_k(params.sampling.top_k);
  sampling->set_top_p(params.sampling.top_p);
  sampling->set_min_p(params.sampling.min_p);
  sampling->set_repetition_penalty(params.sampling.repetition_penalty);
  sampling->set_seed(params.sampling.seed);
  request.set_max_tokens(params.max_tokens);
  for (const std::string& stop : params.stop_strings) request.add_stop(stop);
  for (int32_t id : params.stop_ids) request.add_stop_token_ids(id);
  request.set_logprobs(params.top_logprobs);
  request.set_ignore_eos(params.ignore_eos);
  return request;
}

std::unique_ptr<worker::v1::Worker::Stub> WorkerStub(const std::string& address) {
  return worker::v1::Worker::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

std::string NewJobId() {
  return absl::StrCat("cli-", getpid(), "-", std::random_device{}());
}

absl::Status Generate(const Args& args) {
  if (!args.Has("--worker")) return absl::InvalidArgumentError("--worker is required");
  absl::StatusOr<GenerationParams> params = ParseGenerationParams(args);
  if (!params.ok()) return params.status();
  const std::string format = args.Get("--format", "text");
  if (format != "text" && format != "jsonl") {
    return absl::InvalidArgumentError(absl::StrCat("--format must be text or jsonl, got ", format));
  }
  double timeout_s = 600;
  if (absl::Status s = ParseNumber(args, "--timeout", &timeout_s); !s.ok()) return s;
  worker::v1::ExecuteRequest request = ToExecuteRequest(args.Get("--job-id", NewJobId()), *params);
  if (absl::Status s = CheckOnePrompt(args); !s.ok()) return s;
  if (args.Has("--prompt")) {
    request.set_text(args.Get("--prompt"));
  } else if (!args.Has("--prompt-ids")) {
    absl::StatusOr<std::vector<ChatMessage>> messages = ChatMessages(args);
    if (!messages.ok()) return messages.status();
    for (const ChatMessage& m : *messages) {
      worker::v1::ChatMessage* out = request.mutable_messages()->add_messages();
      out->set_role(m.role);
      out->set_content(m.content);
    }
  } else {
    absl::StatusOr<std::vector<int32_t>> ids = ParseIds(args.Get("--prompt-ids"), "--prompt-ids");
    if (!ids.ok()) return ids.status();
    for (int32_t id : *ids) request.mutable_token_ids()->add_ids(id);
  }
  std::unique_ptr<worker::v1::Worker::Stub> stub = WorkerStub(args.Get("--worker"));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  const bool jsonl = format == "jsonl";
  ExecuteResult result = ExecuteToEnd(*stub, request, &context, [&](const auto& event) {
    if (!event.has_token()) return;
    const worker::v1::Token& t = event.token();
    if (jsonl) {
      json line = {{"event", "token"}, {"index", t.index()}, {"id", t.id()},
                   {"text", t.text()},  {"logprob", t.logprob()}};
      if (t.top_logprobs_size() > 0) {
        json top = json::array();
        for (const auto& alt : t.top_logprobs()) top.push_back({alt.id(), alt.logprob()});
        line["top_logprobs"] = top;
      }
      std::cout << Dump(line) << "\n" << std::flush;
    } else {
      std::cout << t.text() << std::flush;
    }
  });
  if (!result.status.ok()) {
    if (!jsonl && !result.tokens.empty()) std::cout << "\n";
    return absl::Status(static_cast<absl::StatusCode>(result.status.error_code()),
                        absl::StrCat(args.Get("--worker"), ": ", result.status.error_message()));
  }
  if (!result.finished.has_value()) return absl::InternalError("stream ended without Finished");
  const worker::v1::Finished& f = *result.finished;
  const std::string reason(absl::StripPrefix(
      absl::AsciiStrToLower(worker::v1::FinishReason_Name(f.reason())), "finish_reason_"));
  if (jsonl) {
    json done = {{"event", "finished"},
                 {"reason", reason},
                 {"prompt_tokens", f.prompt_tokens()},
                 {"completion_tokens", f.completion_tokens()},
                 {"ttft_ms", f.ttft_seconds() * 1000},
                 {"decode_tokens_per_s", f.decode_tokens_per_second()}};
    std::cout << Dump(done) << "\n";
  } else {
    std::cout << "\n";
    std::cerr << absl::StrCat("[", f.prompt_tokens(), " prompt tokens, ", f.completion_tokens(),
                              " generated, finished: ", reason, ", ttft ",
                              static_cast<int>(f.ttft_seconds() * 1000), " ms, ",
                              static_cast<int>(f.decode_tokens_per_second() * 10) / 10.0,
                              " tok/s]")
              << std::endl;
  }
  return absl::OkStatus();
}

// Aggregate generated tokens per second with N streams in flight, each
// stream issuing requests back to back, against one stream in the same run.
absl::Status BenchServe(const Args& args) {
  if (!args.Has("--worker")) return absl::InvalidArgumentError("--worker is required");
  std::vector<int> streams = {1, 2, 4, 8, 16};
  if (args.Has("--streams")) {
    absl::StatusOr<std::vector<int32_t>> parsed = ParseIds(args.Get("--streams"), "--streams");
    if (!parsed.ok()) return parsed.status();
    streams.assign(parsed->begin(), parsed->end());
  }
  int gen_tokens = 64, requests_per_stream = 2;
  if (absl::Status s = ParseNumber(args, "--gen-tokens", &gen_tokens); !s.ok()) return s;
  if (absl::Status s = ParseNumber(args, "--requests", &requests_per_stream); !s.ok()) return s;
  std::unique_ptr<worker::v1::Worker::Stub> stub = WorkerStub(args.Get("--worker"));
  {
    grpc::ClientContext context;
    worker::v1::InfoResponse info;
    grpc::Status status = stub->Info(&context, worker::v1::InfoRequest(), &info);
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat(args.Get("--worker"), ": ", status.error_message()));
    }
    std::cout << "model " << info.model() << " (" << info.dtype() << ") on " << info.device()
              << ", max batch " << info.max_batch() << ", " << gen_tokens
              << " generated tokens per request, " << requests_per_stream
              << " requests per stream\n\n";
  }
  const std::vector<std::string> prompts = {
      "Write a short story about a lighthouse keeper.", "Explain how a bicycle works.",
      "List some facts about the moon.", "Describe a busy market in the morning."};
  std::cout << "| streams | aggregate tok/s | per-stream tok/s | mean TTFT ms | vs 1 stream |\n"
               "|--:|--:|--:|--:|--:|\n";
  double baseline = 0;
  for (int n : streams) {
    std::atomic<int64_t> tokens{0};
    std::atomic<int> failures{0};
    std::mutex mu;
    double ttft_sum = 0;
    int ttft_count = 0;
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < n; ++t) {
      threads.emplace_back([&, t] {
        for (int r = 0; r < requests_per_stream; ++r) {
          GenerationParams params;
          params.sampling.temperature = 0;
          params.max_tokens = gen_tokens;
          params.ignore_eos = true;
          worker::v1::ExecuteRequest request =
              ToExecuteRequest(absl::StrCat(NewJobId(), "-", t, "-", r), params);
          request.set_text(prompts[(t + r) % prompts.size()]);
          grpc::ClientContext context;
          ExecuteResult result = ExecuteToEnd(*stub, request, &context);
          if (!result.status.ok() || !result.finished) {
            failures++;
            continue;
          }
          tokens += result.finished->completion_tokens();
          std::lock_guard<std::mutex> lock(mu);
          ttft_sum += result.finished->ttft_seconds() * 1000;
          ttft_count++;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (failures > 0) return absl::InternalError(absl::StrCat(failures.load(), " requests failed"));
    const double rate = tokens / seconds;
    if (baseline == 0) baseline = rate;
    std::printf("| %d | %.1f | %.1f | %.0f | %.2fx |\n", n, rate, rate / n,
                ttft_count ? ttft_sum / ttft_count : 0.0, rate / baseline);
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

absl::Status Convert(const Args& args) {
  if (!args.Has("--model") || !args.Has("--out")) {
    return absl::InvalidArgumentError("--model and --out are required");
  }
  absl::StatusOr<ConvertType> type = ParseConvertType(args.Get("--type", "f16"));
  if (!type.ok()) return type.status();
  const std::string source = args.Get("--model");
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf =
      IsDirectory(source) ? OpenHfCheckpoint(source) : GgufFile::Open(source);
  if (!gguf.ok()) return gguf.status();
  // Refuse what the engine could not load.
  if (absl::StatusOr<ModelConfig> config = ModelConfigFromGguf(**gguf); !config.ok()) {
    return config.status();
  }
  if (absl::Status s = ConvertToGguf(**gguf, *type, args.Get("--out")); !s.ok()) return s;
  std::cerr << "llorch: wrote " << args.Get("--out") << "\n";
  return absl::OkStatus();
}

absl::Status Inspect(const Args& args) {
  absl::StatusOr<ServedModel> loaded = Load(args, /*weights=*/false);
  if (!loaded.ok()) return loaded.status();
  const ModelConfig& c = loaded->config;
  int64_t num_parameters = 0;
  std::map<std::string, int> tensor_types;
  for (const GgufTensorInfo& t : loaded->gguf->tensors()) {
    num_parameters += t.num_elements();
    tensor_types[GgmlTypeName(t.type)] += 1;
  }
  const VocabData& vocab = loaded->tokenizer->vocab();
  std::string variant_source;
  absl::StatusOr<GgmlVariant> variant = GgmlVariantFromEnvironment(&variant_source);
  if (!variant.ok()) return variant.status();
  json out = {{"file", loaded->gguf->path()},
              {"gguf_version", loaded->gguf->version()},
              {"architecture", c.architecture},
              {"name", c.name},
              {"parameters", num_parameters},
              {"layers", c.num_layers},
              {"hidden_size", c.hidden_size},
              {"heads", c.num_heads},
              {"kv_heads", c.num_kv_heads},
              {"head_dim", c.head_dim},
              {"ffn_size", c.ffn_size},
              {"vocab_size", c.vocab_size},
              {"context_length", c.context_length},
              {"rope_freq_base", c.rope_freq_base},
              {"rope_dim", c.rope_dim},
              {"norm", c.norm == NormType::kRms ? "rms" : "layer"},
              {"norm_eps", c.norm_eps},
              {"rope_type", c.rope_type == RopeType::kAdjacent ? "adjacent" : "halves"},
              {"ffn", c.ffn == FfnType::kSiluGated ? "silu-gated" : "gelu"},
              {"parallel_residual", c.parallel_residual},
              {"sliding_window", c.sliding_window},
              {"tied_embeddings", c.tied_embeddings},
              {"tokenizer", vocab.model == "llama" ? "sentencepiece-bpe" : "byte-level-bpe"},
              {"tokenizer_pre", vocab.pre},
              {"tensor_types", tensor_types},
              {"bos_id", vocab.bos_id},
              {"eos_id", vocab.eos_id},
              {"eog_ids", vocab.eog_ids},
              {"add_bos", vocab.add_bos},
              // The float order llorch's CPU path follows here (ggml_ops.h).
              {"ggml_variant", GgmlVariantName(*variant)},
              {"ggml_variant_source", variant_source}};
  std::cout << out.dump(2) << "\n";
  return absl::OkStatus();
}

absl::Status Tokenize(const Args& args) {
  if (!args.Has("--text")) return absl::InvalidArgumentError("--text is required");
  absl::StatusOr<ServedModel> loaded = Load(args, /*weights=*/false);
  if (!loaded.ok()) return loaded.status();
  std::vector<int32_t> ids = loaded->tokenizer->Encode(
      args.Get("--text"), /*add_special=*/!args.Has("--no-bos"), /*parse_special=*/true);
  std::cout << json(ids).dump() << "\n";
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  absl::StatusOr<Args> args = ParseArgs(argc, argv);
  absl::Status status;
  if (!args.ok()) {
    status = args.status();
  } else if (args->command == "run") {
    status = Run(*args);
  } else if (args->command == "score") {
    status = Score(*args);
  } else if (args->command == "bench") {
    status = Bench(*args);
  } else if (args->command == "generate") {
    status = Generate(*args);
  } else if (args->command == "bench-serve") {
    status = BenchServe(*args);
  } else if (args->command == "convert") {
    status = Convert(*args);
  } else if (args->command == "inspect") {
    status = Inspect(*args);
  } else if (args->command == "tokenize") {
    status = Tokenize(*args);
  } else if (args->command == "-h" || args->command == "--help" || args->command == "help") {
    std::cout << kUsage;
    return 0;
  } else {
    status = absl::InvalidArgumentError(absl::StrCat("unknown command '", args->command, "'"));
  }
  if (!status.ok()) {
    std::string message(status.message());
    for (char& ch : message) if (ch == '\n') ch = ' ';
    if (!args.ok()) message += " (see llorch --help)";
    std::cerr << "llorch: " << message << "\n";
    return 2;
  }
  return 0;
}

}  // namespace
}  // namespace llorch

int main(int argc, char** argv) {
  try {
    return llorch::Main(argc, argv);
  } catch (const std::exception& e) {
    // libtorch reports allocation failures and the like by exception.
    std::string message = e.what();
    message = message.substr(0, message.find('\n'));
    std::cerr << "llorch: internal error: " << message << "\n";
    return 2;
  }
}
