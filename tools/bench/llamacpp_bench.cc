// Times llama.cpp on the CPU through its C API (the prebuilt libllama that
// node-llama-cpp ships), without node's own threads disturbing the numbers:
// prompt processing (P tokens in one batch) and greedy decode (G tokens,
// batch 1). Prints one JSON line: medians over --reps, the best rep (the
// least disturbed on a shared machine) and every rep. Built by build-llamacpp-bench.sh, outside
// the main CMake build.
//
//   llamacpp_bench --model M.gguf [--threads 2] [--prompt 512] [--gen 128]
//                  [--reps 3] [--flash-attn auto|on|off] [--seed 1]
//                  [--kv-type f32|f16|bf16|q8_0] [--lib-dir DIR] [--cpu-variant NAME]
// --cpu-variant NAME loads exactly libggml-cpu-NAME.so from the library
// directory (say haswell, the AVX2 one, on an AVX-512 machine: tools/bench-local.sh
// --avx2); without it ggml picks the best-scoring variant for this CPU.
// --kv-type sets the KV cache's element type (llama.cpp's own default is f16;
// tools/bench-local.sh passes the same type to llorch, so both hold the same cache).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "llama.h"

#ifndef LLAMACPP_LIB_DIR
#define LLAMACPP_LIB_DIR ""
#endif

namespace {

struct Options {
  std::string model;
  std::string lib_dir = LLAMACPP_LIB_DIR;
  std::string cpu_variant;  // empty: ggml's pick
  int threads = 2;
  int prompt_tokens = 512;
  int gen_tokens = 128;
  int reps = 3;
  std::string flash_attn = "auto";
  std::string kv_type = "f16";
  unsigned seed = 1;
};

// GGML type of a --kv-type name.
ggml_type KvType(const std::string& name) {
  if (name == "f32") return GGML_TYPE_F32;
  if (name == "f16") return GGML_TYPE_F16;
  if (name == "bf16") return GGML_TYPE_BF16;
  if (name == "q8_0") return GGML_TYPE_Q8_0;
  std::fprintf(stderr, "llamacpp_bench: --kv-type must be f32, f16, bf16 or q8_0, got '%s'\n",
               name.c_str());
  std::exit(1);
}

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "llamacpp_bench: %s\n", message.c_str());
  std::exit(1);
}

int PositiveInt(const char* flag, const char* text) {
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value <= 0 || value > (1 << 24)) {
    Fail(std::string(flag) + " must be a positive integer, got '" + text + "'");
  }
  return static_cast<int>(value);
}

Options ParseArgs(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Fail("missing value after " + flag);
    const char* value = argv[++i];
    if (flag == "--model") options.model = value;
    else if (flag == "--lib-dir") options.lib_dir = value;
    else if (flag == "--cpu-variant") options.cpu_variant = value;
    else if (flag == "--threads") options.threads = PositiveInt("--threads", value);
    else if (flag == "--prompt") options.prompt_tokens = PositiveInt("--prompt", value);
    else if (flag == "--gen") options.gen_tokens = PositiveInt("--gen", value);
    else if (flag == "--reps") options.reps = PositiveInt("--reps", value);
    else if (flag == "--seed") options.seed = PositiveInt("--seed", value);
    else if (flag == "--flash-attn") options.flash_attn = value;
    else if (flag == "--kv-type") options.kv_type = value;
    else Fail("unknown flag " + flag);
  }
  if (options.model.empty()) Fail("--model is required");
  if (!options.cpu_variant.empty() && options.lib_dir.empty()) {
    Fail("--cpu-variant needs --lib-dir");
  }
  KvType(options.kv_type);  // fails on an unknown name
  if (options.flash_attn != "auto" && options.flash_attn != "on" &&
      options.flash_attn != "off") {
    Fail("--flash-attn must be auto, on or off, got '" + options.flash_attn + "'");
  }
  return options;
}

// Quiet llama.cpp's logging except errors, which go to stderr.
void LogErrorsOnly(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

std::string JsonArray(const std::vector<double>& values) {
  std::string out = "[";
  char buffer[32];
  for (size_t i = 0; i < values.size(); ++i) {
    std::snprintf(buffer, sizeof(buffer), "%s%.2f", i ? "," : "", values[i]);
    out += buffer;
  }
  return out + "]";
}

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

void Decode(llama_context* ctx, std::vector<llama_token>& tokens) {
  const int rc = llama_decode(ctx, llama_batch_get_one(tokens.data(), tokens.size()));
  if (rc != 0) Fail("llama_decode failed with " + std::to_string(rc));
  llama_synchronize(ctx);
}

llama_token Argmax(const float* logits, int32_t n_vocab) {
  return static_cast<llama_token>(std::max_element(logits, logits + n_vocab) - logits);
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = ParseArgs(argc, argv);
  llama_log_set(LogErrorsOnly, nullptr);
  // The prebuilt ggml picks its CPU variant (haswell, zen4, ...) at run time
  // from libggml-cpu-*.so files in the library directory.
  if (!options.cpu_variant.empty()) {
    const std::string path = options.lib_dir + "/libggml-cpu-" + options.cpu_variant + ".so";
    // Null for a variant whose instructions this CPU lacks (score 0).
    if (ggml_backend_load(path.c_str()) == nullptr) Fail("cannot load " + path);
  } else if (!options.lib_dir.empty()) {
    ggml_backend_load_all_from_path(options.lib_dir.c_str());
  } else {
    ggml_backend_load_all();
  }
  llama_backend_init();

  llama_model_params model_params = llama_model_default_params();
  model_params.n_gpu_layers = 0;
  model_params.load_mode = LLAMA_LOAD_MODE_MMAP;
  const auto load_start = std::chrono::steady_clock::now();
  llama_model* model =
      llama_model_load_from_file(options.model.c_str(), model_params);
  if (model == nullptr) Fail("cannot load model " + options.model);
  const double load_s = SecondsSince(load_start);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);

  llama_context_params context_params = llama_context_default_params();
  context_params.n_ctx = options.prompt_tokens + options.gen_tokens;
  context_params.n_batch = options.prompt_tokens;
  context_params.n_ubatch = options.prompt_tokens;
  context_params.n_seq_max = 1;
  context_params.n_threads = options.threads;
  context_params.n_threads_batch = options.threads;
  context_params.no_perf = true;
  context_params.type_k = KvType(options.kv_type);
  context_params.type_v = KvType(options.kv_type);
  context_params.flash_attn_type =
      options.flash_attn == "on"    ? LLAMA_FLASH_ATTN_TYPE_ENABLED
      : options.flash_attn == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                    : LLAMA_FLASH_ATTN_TYPE_AUTO;
  llama_context* ctx = llama_init_from_model(model, context_params);
  if (ctx == nullptr) Fail("cannot create a context");
  llama_memory_t memory = llama_get_memory(ctx);

  // Random ids as llama-bench does (BOS first when the model adds one): the
  // cost of a forward pass does not depend on which ids they are.
  std::mt19937 rng(options.seed);
  std::uniform_int_distribution<llama_token> random_id(0, n_vocab - 1);
  std::vector<llama_token> prompt(options.prompt_tokens);
  for (llama_token& id : prompt) id = random_id(rng);
  if (llama_vocab_get_add_bos(vocab)) prompt[0] = llama_vocab_bos(vocab);

  // Warm-up: pages in the mmapped weights and spins up the thread pool.
  {
    std::vector<llama_token> warm(prompt.begin(),
                                  prompt.begin() + std::min(16, options.prompt_tokens));
    Decode(ctx, warm);
    std::vector<llama_token> one = {Argmax(llama_get_logits_ith(ctx, -1), n_vocab)};
    Decode(ctx, one);
    llama_memory_clear(memory, true);
  }

  std::vector<double> prompt_tok_s;
  std::vector<double> decode_tok_s;
  for (int rep = 0; rep < options.reps; ++rep) {
    llama_memory_clear(memory, true);
    auto start = std::chrono::steady_clock::now();
    Decode(ctx, prompt);
    prompt_tok_s.push_back(options.prompt_tokens / SecondsSince(start));

    // Decode continues after the prompt, as in serving.
    std::vector<llama_token> next = {Argmax(llama_get_logits_ith(ctx, -1), n_vocab)};
    start = std::chrono::steady_clock::now();
    for (int i = 0; i < options.gen_tokens; ++i) {
      Decode(ctx, next);
      next[0] = Argmax(llama_get_logits_ith(ctx, -1), n_vocab);
    }
    decode_tok_s.push_back(options.gen_tokens / SecondsSince(start));
  }

  char description[256];
  llama_model_desc(model, description, sizeof(description));
  std::printf(
      "{\"engine\":\"llama.cpp\",\"model\":%s,\"model_desc\":%s,"
      "\"model_bytes\":%llu,\"n_params\":%llu,\"threads\":%d,"
      "\"flash_attn\":%s,\"kv_type\":%s,\"prompt_tokens\":%d,\"gen_tokens\":%d,\"reps\":%d,"
      "\"load_s\":%.3f,\"prompt_tok_s\":%.2f,\"decode_tok_s\":%.2f,"
      "\"prompt_tok_s_best\":%.2f,\"decode_tok_s_best\":%.2f,"
      "\"prompt_tok_s_all\":%s,\"decode_tok_s_all\":%s,\"system_info\":%s}\n",
      JsonString(options.model).c_str(), JsonString(description).c_str(),
      static_cast<unsigned long long>(llama_model_size(model)),
      static_cast<unsigned long long>(llama_model_n_params(model)),
      options.threads, JsonString(options.flash_attn).c_str(),
      JsonString(options.kv_type).c_str(), options.prompt_tokens, options.gen_tokens, options.reps, load_s,
      Median(prompt_tok_s), Median(decode_tok_s),
      *std::max_element(prompt_tok_s.begin(), prompt_tok_s.end()),
      *std::max_element(decode_tok_s.begin(), decode_tok_s.end()), JsonArray(prompt_tok_s).c_str(),
      JsonArray(decode_tok_s).c_str(),
      JsonString(llama_print_system_info()).c_str());

  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
