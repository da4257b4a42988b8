#include "worker/convert/spm_vocab.h"

#include <dlfcn.h>

#include <cstdlib>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/tokenizer/spm_shim/spm_shim.h"

namespace llorch {
namespace {

// The shim's functions, resolved once.
struct Shim {
  decltype(&llorch_spm_load) load;
  decltype(&llorch_spm_free) free;
  decltype(&llorch_spm_size) size;
  decltype(&llorch_spm_piece) piece;
  decltype(&llorch_spm_score) score;
  decltype(&llorch_spm_type) type;
  decltype(&llorch_spm_bos_id) bos_id;
  decltype(&llorch_spm_eos_id) eos_id;
  decltype(&llorch_spm_unk_id) unk_id;
  decltype(&llorch_spm_pad_id) pad_id;
  decltype(&llorch_spm_adds_dummy_prefix) adds_dummy_prefix;
};

absl::StatusOr<const Shim*> LoadShim() {
  static absl::StatusOr<const Shim*>* shim = [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("LLORCH_SPM_SHIM")) candidates.push_back(env);
#ifdef LLORCH_SPM_SHIM_PATH
    candidates.push_back(LLORCH_SPM_SHIM_PATH);
#endif
    candidates.push_back("libllorch_spm_shim.so");
    std::string errors;
    for (const std::string& path : candidates) {
      // DEEPBIND: the shim's libsentencepiece resolves its own bundled
      // protobuf first, not the process's.
      void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (lib == nullptr) {
        errors += absl::StrCat(" ", dlerror(), ";");
        continue;
      }
      auto* s = new Shim();
#define LLORCH_SYM(field, name) s->field = reinterpret_cast<decltype(s->field)>(dlsym(lib, #name))
      LLORCH_SYM(load, llorch_spm_load);
      LLORCH_SYM(free, llorch_spm_free);
      LLORCH_SYM(size, llorch_spm_size);
      LLORCH_SYM(piece, llorch_spm_piece);
      LLORCH_SYM(score, llorch_spm_score);
      LLORCH_SYM(type, llorch_spm_type);
      LLORCH_SYM(bos_id, llorch_spm_bos_id);
      LLORCH_SYM(eos_id, llorch_spm_eos_id);
      LLORCH_SYM(unk_id, llorch_spm_unk_id);
      LLORCH_SYM(pad_id, llorch_spm_pad_id);
      LLORCH_SYM(adds_dummy_prefix, llorch_spm_adds_dummy_prefix);
#undef LLORCH_SYM
      if (!s->load || !s->free || !s->size || !s->piece || !s->score || !s->type || !s->bos_id ||
          !s->eos_id || !s->unk_id || !s->pad_id || !s->adds_dummy_prefix) {
        errors += absl::StrCat(" ", path, ": missing symbols;");
        delete s;
        continue;
      }
      return new absl::StatusOr<const Shim*>(s);
    }
    return new absl::StatusOr<const Shim*>(absl::FailedPreconditionError(
        absl::StrCat("cannot load the sentencepiece shim (set LLORCH_SPM_SHIM):", errors)));
  }();
  return *shim;
}

}  // namespace

absl::Status AddSentencePieceMetadata(const std::string& model_path, int64_t vocab_size,
                                      std::map<std::string, GgufValue>* metadata) {
  absl::StatusOr<const Shim*> shim = LoadShim();
  if (!shim.ok()) return shim.status();
  const Shim& s = **shim;
  char error[512] = {0};
  std::unique_ptr<void, decltype(s.free)> handle(s.load(model_path.c_str(), error, sizeof(error)),
                                                 s.free);
  if (handle == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(model_path, ": ", error));
  }
  // Padding to the embedding's rows makes one string per id: a config.json
  // claiming 2^24 rows took 7 GB before the mismatch was found.
  constexpr int64_t kMaxVocabSize = int64_t{1} << 20;
  if (vocab_size > kMaxVocabSize) {
    return absl::InvalidArgumentError(absl::StrCat(model_path, ": vocab_size ", vocab_size,
                                                   " is implausible (more than ", kMaxVocabSize,
                                                   ")"));
  }
  const int64_t pieces = s.size(handle.get());
  if (vocab_size > 0 && pieces > vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(model_path, ": ", pieces,
                                                   " pieces but the embedding has ", vocab_size,
                                                   " rows"));
  }
  const int64_t n = vocab_size > 0 ? vocab_size : pieces;
  GgufValue tokens, scores, types;
  tokens.type = scores.type = types.type = GgufValueType::kArray;
  tokens.array_type = GgufValueType::kString;
  scores.array_type = GgufValueType::kFloat32;
  types.array_type = GgufValueType::kInt32;
  for (int64_t id = 0; id < n; ++id) {
    GgufValue text;
    text.type = GgufValueType::kString;
    GgufValue score;
    score.type = GgufValueType::kFloat32;
    int type = 5;  // unused padding up to the embedding rows
    if (id < pieces) {
      text.s = s.piece(handle.get(), static_cast<int>(id));
      score.f = s.score(handle.get(), static_cast<int>(id));
      type = s.type(handle.get(), static_cast<int>(id));
    } else {
      text.s = absl::StrCat("[PAD", id, "]");
    }
    tokens.array.push_back(std::move(text));
    scores.array.push_back(score);
    types.array.push_back(GgufInt(GgufValueType::kInt32, type));
  }
  std::map<std::string, GgufValue>& m = *metadata;
  m["tokenizer.ggml.model"] = GgufString("llama");
  m["tokenizer.ggml.tokens"] = std::move(tokens);
  m["tokenizer.ggml.scores"] = std::move(scores);
  m["tokenizer.ggml.token_type"] = std::move(types);
  const std::pair<const char*, int> ids[] = {
      {"tokenizer.ggml.bos_token_id", s.bos_id(handle.get())},
      {"tokenizer.ggml.eos_token_id", s.eos_id(handle.get())},
      {"tokenizer.ggml.unknown_token_id", s.unk_id(handle.get())},
      {"tokenizer.ggml.padding_token_id", s.pad_id(handle.get())}};
  for (const auto& [key, id] : ids) {
    if (id >= 0) m[key] = GgufInt(GgufValueType::kUint32, id);
  }
  m["tokenizer.ggml.add_space_prefix"] =
      GgufInt(GgufValueType::kBool, s.adds_dummy_prefix(handle.get()));
  m["tokenizer.ggml.add_bos_token"] = GgufInt(GgufValueType::kBool, 1);
  return absl::OkStatus();
}

}  // namespace llorch
