// Teacher-forced scoring of a token sequence by llama.cpp on the CPU through
// its C API (the prebuilt libllama that node-llama-cpp ships), with the choice
// of which prebuilt CPU variant (libggml-cpu-haswell.so, -zen4.so, -x64.so,
// ...) does the math. Used to measure llama.cpp's own numerical noise floor
// across builds (tools/bench/variant_noise.py). Built by
// build-llamacpp-score.sh, outside the main CMake build.
//
//   llamacpp_score --model M.gguf --ids 1,2,3 [--batch] [--ubatch 512]
//                  [--threads 2] [--lib-dir DIR] [--cpu-variant NAME] [--logits]
//                  [--dump DIR]
//
// --cpu-variant NAME loads exactly DIR/libggml-cpu-NAME.so (an error if this
// CPU lacks its instructions); without it ggml picks the best-scoring variant
// in DIR, as node-llama-cpp does. F32 KV cache, no flash attention, no GPU.
// Without --batch each token is its own llama_decode (as in generation); with
// --batch the whole sequence is one llama_batch split into --ubatch-sized
// micro-batches (512 = llama.cpp's and node-llama-cpp's default).
//
// Output (stdout): one JSON line describing the loaded backend, then one JSON
// line per position i: the argmax of the logits after ids[0..i] and the
// log-softmax (in double) of ids[i+1] ("next_logprob", null at the last).

#include <link.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#ifndef LLAMACPP_LIB_DIR
#define LLAMACPP_LIB_DIR ""
#endif

namespace {

struct Options {
  std::string model;
  std::string lib_dir = LLAMACPP_LIB_DIR;
  std::string cpu_variant;  // empty: the best variant ggml scores for this CPU
  std::vector<llama_token> ids;
  int threads = 2;
  int ubatch = 512;
  bool batch = false;
  bool extra_bufts = true;  // --no-extra-bufts: weights stay in plain CPU buffers (no AMX, no repacking)
  bool logits = false;   // --logits: also print the raw logits (%.9g: float round trip)
  std::string dump_dir;  // --dump: every F32 graph node, as computed, into this folder
};

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "llamacpp_score: %s\n", message.c_str());
  std::exit(1);
}

long ParseLong(const char* flag, const std::string& text, long min, long max) {
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < min || value > max) {
    Fail(std::string(flag) + " expects an integer in [" + std::to_string(min) + ", " +
         std::to_string(max) + "], got '" + text + "'");
  }
  return value;
}

std::vector<llama_token> ParseIds(const std::string& text) {
  std::vector<llama_token> ids;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    ids.push_back(static_cast<llama_token>(
        ParseLong("--ids", text.substr(start, comma - start), 0, 1L << 30)));
    start = comma + 1;
  }
  return ids;
}

Options ParseArgs(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--batch") {
      options.batch = true;
      continue;
    }
    if (flag == "--logits") {
      options.logits = true;
      continue;
    }
    if (flag == "--no-extra-bufts") {
      options.extra_bufts = false;
      continue;
    }
    if (i + 1 >= argc) Fail("missing value after " + flag);
    const char* value = argv[++i];
    if (flag == "--model") options.model = value;
    else if (flag == "--lib-dir") options.lib_dir = value;
    else if (flag == "--cpu-variant") options.cpu_variant = value;
    else if (flag == "--ids") options.ids = ParseIds(value);
    else if (flag == "--threads") options.threads = ParseLong("--threads", value, 1, 1024);
    else if (flag == "--ubatch") options.ubatch = ParseLong("--ubatch", value, 1, 1 << 20);
    else if (flag == "--dump") options.dump_dir = value;
    else Fail("unknown flag " + flag);
  }
  if (options.model.empty()) Fail("--model is required");
  if (options.ids.size() < 2) Fail("--ids needs at least two token ids");
  if (!options.cpu_variant.empty() && options.lib_dir.empty()) {
    Fail("--cpu-variant needs --lib-dir");
  }
  return options;
}

void LogErrorsOnly(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
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

// The libggml-cpu-*.so files actually mapped into this process: the ground
// truth of which variant computes, whatever loaded it.
std::vector<std::string> LoadedCpuVariantFiles() {
  std::vector<std::string> files;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        const char* name = info->dlpi_name;
        if (name != nullptr && std::strstr(name, "libggml-cpu") != nullptr) {
          static_cast<std::vector<std::string>*>(data)->push_back(name);
        }
        return 0;
      },
      &files);
  return files;
}

// "name=value" features of every registered backend (the CPU one lists the
// instruction sets its variant was compiled for).
std::string BackendsJson() {
  std::string out = "[";
  for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
    ggml_backend_reg_t reg = ggml_backend_reg_get(i);
    out += std::string(i ? "," : "") + "{\"name\":" + JsonString(ggml_backend_reg_name(reg)) +
           ",\"features\":[";
    auto get_features = reinterpret_cast<ggml_backend_get_features_t>(
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features"));
    if (get_features != nullptr) {
      bool first = true;
      for (ggml_backend_feature* f = get_features(reg); f->name != nullptr; ++f) {
        out += std::string(first ? "" : ",") + JsonString(std::string(f->name) + "=" + f->value);
        first = false;
      }
    }
    out += "]}";
  }
  return out + "]";
}

void LoadCpuBackend(const Options& options) {
  if (!options.cpu_variant.empty()) {
    const std::string path = options.lib_dir + "/libggml-cpu-" + options.cpu_variant + ".so";
    // ggml_backend_load refuses (returns null) a variant whose score is 0,
    // i.e. whose instructions this CPU lacks.
    if (ggml_backend_load(path.c_str()) == nullptr) {
      Fail("cannot load " + path + " (missing, or this CPU lacks its instruction set)");
    }
  } else if (!options.lib_dir.empty()) {
    ggml_backend_load_all_from_path(options.lib_dir.c_str());
  } else {
    ggml_backend_load_all();
  }
  if (ggml_backend_reg_by_name("CPU") == nullptr) Fail("no CPU backend got loaded");
}

// --dump: each contiguous F32 node of the graph, in execution order, as
// DIR/NNNN.bin (raw little-endian floats) plus one line of DIR/index.jsonl
// (name, op, shape ne0..ne3). For locating where two implementations first
// differ, op by op.
struct Dumper {
  std::string dir;
  int count = 0;
  FILE* index = nullptr;
};

bool DumpNode(ggml_tensor* t, bool ask, void* user_data) {
  if (ask) return t->type == GGML_TYPE_F32 && ggml_is_contiguous(t);
  auto* dumper = static_cast<Dumper*>(user_data);
  std::vector<float> data(ggml_nelements(t));
  ggml_backend_tensor_get(t, data.data(), 0, ggml_nbytes(t));
  char file[32];
  std::snprintf(file, sizeof(file), "%04d.bin", dumper->count);
  FILE* out = std::fopen((dumper->dir + "/" + file).c_str(), "wb");
  if (out == nullptr) Fail("cannot write " + dumper->dir + "/" + file);
  std::fwrite(data.data(), sizeof(float), data.size(), out);
  std::fclose(out);
  std::fprintf(dumper->index, "{\"file\":\"%s\",\"name\":%s,\"op\":\"%s\",\"ne\":[%lld,%lld,%lld,%lld]}\n",
               file, JsonString(t->name).c_str(), ggml_op_desc(t),
               (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
  ++dumper->count;
  return true;
}

// log-softmax of logits[target] computed in double.
double LogProb(const float* logits, int32_t n_vocab, llama_token target) {
  const double max_logit = *std::max_element(logits, logits + n_vocab);
  double sum = 0.0;
  for (int32_t v = 0; v < n_vocab; ++v) sum += std::exp(double(logits[v]) - max_logit);
  return double(logits[target]) - max_logit - std::log(sum);
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = ParseArgs(argc, argv);
  llama_log_set(LogErrorsOnly, nullptr);
  LoadCpuBackend(options);
  llama_backend_init();

  llama_model_params model_params = llama_model_default_params();
  model_params.n_gpu_layers = 0;
  model_params.use_extra_bufts = options.extra_bufts;
  llama_model* model = llama_model_load_from_file(options.model.c_str(), model_params);
  if (model == nullptr) Fail("cannot load model " + options.model);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);
  for (llama_token id : options.ids) {
    if (id >= n_vocab) Fail("token id " + std::to_string(id) + " >= vocabulary size " +
                            std::to_string(n_vocab));
  }

  const int n = static_cast<int>(options.ids.size());
  llama_context_params context_params = llama_context_default_params();
  context_params.n_ctx = (n + 255) / 256 * 256;
  context_params.n_batch = options.batch ? n : 1;
  context_params.n_ubatch = options.batch ? std::min(n, options.ubatch) : 1;
  context_params.n_seq_max = 1;
  context_params.n_threads = options.threads;
  context_params.n_threads_batch = options.threads;
  context_params.type_k = GGML_TYPE_F32;
  context_params.type_v = GGML_TYPE_F32;
  context_params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  context_params.no_perf = true;
  Dumper dumper;
  if (!options.dump_dir.empty()) {
    dumper.dir = options.dump_dir;
    dumper.index = std::fopen((dumper.dir + "/index.jsonl").c_str(), "w");
    if (dumper.index == nullptr) Fail("cannot write " + dumper.dir + "/index.jsonl");
    context_params.cb_eval = DumpNode;
    context_params.cb_eval_user_data = &dumper;
  }
  llama_context* ctx = llama_init_from_model(model, context_params);
  if (ctx == nullptr) Fail("cannot create a context");

  std::string variant_files = "[";
  for (const std::string& file : LoadedCpuVariantFiles()) {
    variant_files += (variant_files.size() > 1 ? "," : "") + JsonString(file);
  }
  variant_files += "]";
  std::printf(
      "{\"cpu_variant_requested\":%s,\"cpu_variant_files\":%s,\"backends\":%s,"
      "\"system_info\":%s,\"mode\":\"%s\",\"ubatch\":%d,\"threads\":%d,\"n_tokens\":%d}\n",
      JsonString(options.cpu_variant.empty() ? "best" : options.cpu_variant).c_str(),
      variant_files.c_str(), BackendsJson().c_str(), JsonString(llama_print_system_info()).c_str(),
      options.batch ? "batch" : "seq", options.batch ? context_params.n_ubatch : 1,
      options.threads, n);

  auto print_position = [&](int pos, const float* logits) {
    if (logits == nullptr) Fail("no logits at position " + std::to_string(pos));
    const llama_token argmax =
        static_cast<llama_token>(std::max_element(logits, logits + n_vocab) - logits);
    std::string next = "null";
    if (pos + 1 < n) {
      char buffer[64];
      std::snprintf(buffer, sizeof(buffer), "%.9f", LogProb(logits, n_vocab, options.ids[pos + 1]));
      next = buffer;
    }
    std::printf("{\"pos\":%d,\"id\":%d,\"argmax\":%d,\"next_logprob\":%s", pos,
                options.ids[pos], argmax, next.c_str());
    if (options.logits) {
      std::printf(",\"logits\":[");
      for (int32_t v = 0; v < n_vocab; ++v) std::printf(v ? ",%.9g" : "%.9g", logits[v]);
      std::printf("]");
    }
    std::printf("}\n");
  };

  if (options.batch) {
    llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; ++i) {
      batch.token[i] = options.ids[i];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = true;
    }
    batch.n_tokens = n;
    if (const int rc = llama_decode(ctx, batch); rc != 0) {
      Fail("llama_decode failed with " + std::to_string(rc));
    }
    for (int i = 0; i < n; ++i) print_position(i, llama_get_logits_ith(ctx, i));
    llama_batch_free(batch);
  } else {
    for (int i = 0; i < n; ++i) {
      llama_token token = options.ids[i];
      if (const int rc = llama_decode(ctx, llama_batch_get_one(&token, 1)); rc != 0) {
        Fail("llama_decode failed with " + std::to_string(rc) + " at position " +
             std::to_string(i));
      }
      print_position(i, llama_get_logits_ith(ctx, -1));
    }
  }

  if (dumper.index != nullptr) std::fclose(dumper.index);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
