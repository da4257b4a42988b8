// tokenize_tool (--model F.gguf | --tokenizer-dir DIR) --in strings.json
//               [--out result.json] [--no-bos] [--no-special]
// DIR: a folder with a Hugging Face tokenizer.json (and tokenizer_config.json).
// Tokenizes each string of a JSON array with the GGUF file's vocabulary and
// writes {"ids": [[...], ...], "decoded": [...], "eog_ids": [...]} (decoded:
// Decode(ids, render_special=false), invalid UTF-8 replaced by U+FFFD).
// --no-bos: add_special=false. --no-special: parse_special=false.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/convert/hf_tokenizer.h"
#include "worker/gguf/gguf.h"
#include "worker/tokenizer/tokenizer.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: tokenize_tool (--model F.gguf | --tokenizer-dir DIR) --in strings.json "
               "[--out F.json] "
               "[--no-bos] [--no-special]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, tokenizer_dir, in_path, out_path;
  bool add_special = true;
  bool parse_special = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model" && i + 1 < argc) {
      model_path = argv[++i];
    } else if (arg == "--tokenizer-dir" && i + 1 < argc) {
      tokenizer_dir = argv[++i];
    } else if (arg == "--in" && i + 1 < argc) {
      in_path = argv[++i];
    } else if (arg == "--out" && i + 1 < argc) {
      out_path = argv[++i];
    } else if (arg == "--no-bos") {
      add_special = false;
    } else if (arg == "--no-special") {
      parse_special = false;
    } else {
      return Usage();
    }
  }
  if (model_path.empty() == tokenizer_dir.empty() || in_path.empty()) return Usage();

  absl::StatusOr<std::unique_ptr<llorch::GgufFile>> gguf;
  if (!model_path.empty()) {
    gguf = llorch::GgufFile::Open(model_path);
  } else {
    std::map<std::string, llorch::GgufValue> metadata;
    absl::Status s = llorch::AddHfTokenizerMetadata(tokenizer_dir, 0, &metadata);
    if (!s.ok()) gguf = s;
    else gguf = llorch::GgufFile::FromParts(tokenizer_dir, std::move(metadata), {}, {});
  }
  if (!gguf.ok()) {
    std::cerr << gguf.status().ToString() << "\n";
    return 1;
  }
  auto vocab = llorch::VocabFromGguf(**gguf);
  if (!vocab.ok()) {
    std::cerr << vocab.status().ToString() << "\n";
    return 1;
  }
  auto tokenizer = llorch::Tokenizer::Create(*std::move(vocab));
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status().ToString() << "\n";
    return 1;
  }

  nlohmann::json strings;
  try {
    std::ifstream in(in_path);
    if (!in) {
      std::cerr << in_path << ": cannot open\n";
      return 1;
    }
    strings = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    std::cerr << in_path << ": " << e.what() << "\n";
    return 1;
  }
  if (!strings.is_array()) {
    std::cerr << in_path << ": expected a JSON array of strings\n";
    return 1;
  }

  nlohmann::json ids = nlohmann::json::array();
  nlohmann::json decoded = nlohmann::json::array();
  for (const auto& item : strings) {
    if (!item.is_string()) {
      std::cerr << in_path << ": expected a JSON array of strings\n";
      return 1;
    }
    const std::vector<int32_t> tokens =
        (*tokenizer)->Encode(item.get<std::string>(), add_special, parse_special);
    ids.push_back(tokens);
    decoded.push_back((*tokenizer)->Decode(tokens, /*render_special=*/false));
  }
  nlohmann::json result = {{"ids", ids}, {"decoded", decoded},
                           {"eog_ids", (*tokenizer)->vocab().eog_ids}};
  const std::string text =
      result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (out_path.empty()) {
    std::cout << text;
  } else {
    std::ofstream out(out_path);
    out << text;
    if (!out) {
      std::cerr << out_path << ": cannot write\n";
      return 1;
    }
  }
  return 0;
}
