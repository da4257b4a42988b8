#include "tests/fuzz/fuzz_support.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "worker/tokenizer/utf8.h"

namespace llorch::fuzz {

void Fail(absl::string_view message) {
  std::fputs("==llorch-fuzz== invariant broken: ", stderr);
  std::fwrite(message.data(), 1, message.size(), stderr);
  std::fputs("\n", stderr);
  std::abort();
}

const std::string& BytesAsFile(const uint8_t* data, size_t size) {
  static const int fd = [] {
    const int fd = memfd_create("llorch-fuzz-input", MFD_CLOEXEC);
    if (fd < 0) Fail(absl::StrCat("memfd_create: ", std::strerror(errno)));
    return fd;
  }();
  static const std::string* path = new std::string(absl::StrCat("/proc/self/fd/", fd));
  if (ftruncate(fd, 0) != 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) {
    Fail(absl::StrCat("ftruncate: ", std::strerror(errno)));
  }
  size_t done = 0;
  while (done < size) {
    const ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) Fail(absl::StrCat("pwrite: ", std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return *path;
}

namespace {

const std::string* scratch_dir = nullptr;

// The scratch directory's files are flat (WriteFile); removed at exit.
void RemoveScratchDir() {
  if (scratch_dir == nullptr) return;
  if (DIR* d = opendir(scratch_dir->c_str())) {
    while (const dirent* entry = readdir(d)) {
      const std::string name = entry->d_name;
      if (name != "." && name != "..") unlink((*scratch_dir + "/" + name).c_str());
    }
    closedir(d);
  }
  rmdir(scratch_dir->c_str());
}

}  // namespace

const std::string& ScratchDir() {
  static const std::string* dir = [] {
    struct stat st;
    const char* base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : nullptr;
    if (base == nullptr) base = std::getenv("TMPDIR");
    if (base == nullptr) base = "/tmp";
    std::string pattern = absl::StrCat(base, "/llorch-fuzz-XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr) Fail(absl::StrCat("mkdtemp: ", std::strerror(errno)));
    auto* path = new std::string(pattern);
    std::atexit([] { RemoveScratchDir(); });
    return path;
  }();
  scratch_dir = dir;
  return *dir;
}

void WriteFile(const std::string& path, absl::string_view data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) Fail(absl::StrCat("cannot write ", path));
  if (!data.empty() && std::fwrite(data.data(), 1, data.size(), f) != data.size()) {
    Fail(absl::StrCat("cannot write ", path));
  }
  std::fclose(f);
}

std::vector<absl::string_view> SplitParts(absl::string_view input, size_t max_parts,
                                          absl::string_view separator) {
  std::vector<absl::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    const size_t at = input.find(separator);
    if (at == absl::string_view::npos) break;
    parts.push_back(input.substr(0, at));
    input.remove_prefix(at + separator.size());
  }
  parts.push_back(input);
  return parts;
}

namespace {

std::string VocabDir() {
  if (const char* dir = std::getenv("LLORCH_FUZZ_VOCAB_DIR")) return dir;
  return absl::StrCat(LLORCH_SHARED_DIR, "/testdata/vocab");
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// A few tokens and merges, enough to exercise every path of the tokenizer.
VocabData BuiltInVocab(const std::string& model) {
  VocabData vocab;
  vocab.model = model;
  auto add = [&](std::string text, TokenType type, float score) {
    vocab.tokens.push_back(std::move(text));
    vocab.token_types.push_back(type);
    vocab.scores.push_back(score);
  };
  if (model == "gpt2") {
    vocab.pre = "gpt-2";
    for (int b = 0; b < 256; ++b) add(utf8::ByteToUnicode(static_cast<uint8_t>(b)), TokenType::kNormal, 0);
    const std::string space = utf8::ByteToUnicode(' ');
    for (const char* merge : {"h e", "l l", "he ll", "hell o", "G t", "w o", "wo r", "wor ld"}) {
      std::string m = merge;
      if (m[0] == 'G') m = space + m.substr(1);
      vocab.merges.push_back(m);
      const size_t sp = m.find(' ');
      add(m.substr(0, sp) + m.substr(sp + 1), TokenType::kNormal, 0);
    }
    add("<|endoftext|>", TokenType::kControl, 0);
    add("<|user|>", TokenType::kUserDefined, 0);
    vocab.bos_id = vocab.eos_id = static_cast<int32_t>(vocab.tokens.size()) - 2;
    vocab.eog_ids = {vocab.eos_id};
    vocab.add_space_prefix = false;
  } else {
    add("<unk>", TokenType::kUnknown, 0);
    add("<s>", TokenType::kControl, 0);
    add("</s>", TokenType::kControl, 0);
    char hex[8];
    for (int b = 0; b < 256; ++b) {
      std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
      add(hex, TokenType::kByte, 0);
    }
    float score = -1;
    for (const char* piece : {"\xe2\x96\x81", "\xe2\x96\x81h", "he", "ll", "llo", "\xe2\x96\x81he",
                              "\xe2\x96\x81hello", "wor", "ld", "world", "\xc3\xa9"}) {
      add(piece, TokenType::kNormal, score--);
    }
    add("<|user|>", TokenType::kUserDefined, 0);
    vocab.unk_id = 0;
    vocab.bos_id = 1;
    vocab.eos_id = 2;
    vocab.eog_ids = {2};
    vocab.add_bos = true;
  }
  return vocab;
}

}  // namespace

std::vector<FixedTokenizer> LoadFixedTokenizers(const std::string& model) {
  std::vector<std::pair<std::string, std::string>> files;  // name, path
  const std::string dir = VocabDir();
  if (model == "gpt2") {
    for (const char* name : {"gpt-2", "llama-bpe", "qwen2"}) {
      files.emplace_back(name, absl::StrCat(dir, "/ggml-vocab-", name, ".gguf"));
    }
    const char* smollm2 = std::getenv("LLORCH_DEFAULT_MODEL");
    if (smollm2 != nullptr) files.emplace_back("smollm2", smollm2);
  } else {
    for (const char* name : {"llama-spm", "phi-3"}) {
      files.emplace_back(name, absl::StrCat(dir, "/ggml-vocab-", name, ".gguf"));
    }
  }
  std::vector<FixedTokenizer> out;
  for (const auto& [name, path] : files) {
    if (!Exists(path)) {
      std::fprintf(stderr, "llorch-fuzz: no %s (%s); not used\n", name.c_str(), path.c_str());
      continue;
    }
    absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Open(path);
    if (!gguf.ok()) Fail(absl::StrCat(path, ": ", gguf.status().ToString()));
    absl::StatusOr<VocabData> vocab = VocabFromGguf(**gguf);
    if (!vocab.ok()) Fail(absl::StrCat(path, ": ", vocab.status().ToString()));
    if (vocab->model != model) Fail(absl::StrCat(path, ": tokenizer model ", vocab->model));
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Create(*std::move(vocab));
    if (!tokenizer.ok()) Fail(absl::StrCat(path, ": ", tokenizer.status().ToString()));
    out.push_back({name, *std::move(gguf), *std::move(tokenizer)});
  }
  if (out.empty()) {
    std::fprintf(stderr, "llorch-fuzz: no %s vocabulary file; a built-in one is used\n",
                 model.c_str());
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Create(BuiltInVocab(model));
    if (!tokenizer.ok()) Fail(tokenizer.status().ToString());
    out.push_back({"built-in", nullptr, *std::move(tokenizer)});
  }
  std::fprintf(stderr, "llorch-fuzz: %s vocabularies:", model.c_str());
  for (const FixedTokenizer& t : out) std::fprintf(stderr, " %s", t.name.c_str());
  std::fprintf(stderr, "\n");
  return out;
}

namespace {

bool IsValidUtf8(absl::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const int n = utf8::CheckSequence(text, pos);
    if (n <= 0) return false;
    pos += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

void ExerciseTokenizer(const Tokenizer& tokenizer, absl::string_view text, bool add_special,
                       bool parse_special) {
  const std::vector<int32_t> ids = tokenizer.Encode(text, add_special, parse_special);
  for (int32_t id : ids) {
    LLORCH_FUZZ_CHECK(id >= 0 && id < tokenizer.vocab_size(),
                      absl::StrCat("Encode gave id ", id, " of ", tokenizer.vocab_size()));
    (void)tokenizer.IsEog(id);
    (void)tokenizer.IsControl(id);
  }
  const std::string decoded = tokenizer.Decode(ids, /*render_special=*/false);
  (void)tokenizer.Decode(ids, /*render_special=*/true);

  // Streaming: the concatenated pieces plus Flush() equal Decode (see
  // IncrementalDetokenizer in tokenizer.h), and every piece is whole UTF-8.
  IncrementalDetokenizer stream(&tokenizer);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = stream.Push(id);
    LLORCH_FUZZ_CHECK(IsValidUtf8(piece), "IncrementalDetokenizer emitted invalid UTF-8");
    streamed += piece;
  }
  const std::string tail = stream.Flush();
  LLORCH_FUZZ_CHECK(IsValidUtf8(tail), "IncrementalDetokenizer::Flush emitted invalid UTF-8");
  streamed += tail;
  if (IsValidUtf8(decoded)) {
    LLORCH_FUZZ_CHECK(streamed == decoded,
                      absl::StrCat("streamed \"", absl::CHexEscape(streamed), "\" != decoded \"",
                                   absl::CHexEscape(decoded), "\""));
  }
}

}  // namespace llorch::fuzz
