// llama.cpp's text for token ids: what its server streams, token by token
// (common_token_to_piece = llama_token_to_piece with lstrip 0), through the C
// API of the prebuilt libllama that node-llama-cpp ships. The reference for
// llorch's streamed text (tests/conformance/streamed_text_test.py). Built by
// build-llamacpp-tool.sh, outside the main CMake build.
//
//   llamacpp_pieces --model M.gguf [--special]    (vocabulary only, no weights)
//
// stdin: one line of comma-separated ids per sequence. stdout: one JSON line
// per input line, {"pieces":["<hex>", ...]} with each piece's bytes in hex
// (pieces need not be UTF-8 on their own). --special renders control tokens.

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "llama.h"

#ifndef LLAMACPP_LIB_DIR
#define LLAMACPP_LIB_DIR ""
#endif

namespace {

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "llamacpp_pieces: %s\n", message.c_str());
  std::exit(1);
}

std::vector<llama_token> ParseIds(const std::string& line) {
  std::vector<llama_token> ids;
  size_t start = 0;
  while (start < line.size()) {
    size_t comma = line.find(',', start);
    if (comma == std::string::npos) comma = line.size();
    const std::string field = line.substr(start, comma - start);
    char* end = nullptr;
    const long id = std::strtol(field.c_str(), &end, 10);
    if (field.empty() || *end != '\0' || id < 0) Fail("bad id '" + field + "'");
    ids.push_back(static_cast<llama_token>(id));
    start = comma + 1;
  }
  return ids;
}

std::string Piece(const llama_vocab* vocab, llama_token id, bool special) {
  std::string piece(64, '\0');
  int n = llama_token_to_piece(vocab, id, piece.data(), piece.size(), /*lstrip=*/0, special);
  if (n < 0) {
    piece.resize(-n);
    n = llama_token_to_piece(vocab, id, piece.data(), piece.size(), 0, special);
  }
  piece.resize(n);
  return piece;
}

std::string Hex(const std::string& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path;
  bool special = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model" && i + 1 < argc) {
      model_path = argv[++i];
    } else if (arg == "--special") {
      special = true;
    } else {
      Fail("usage: llamacpp_pieces --model M.gguf [--special] < ids");
    }
  }
  if (model_path.empty()) Fail("--model is required");
  llama_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
  if (*LLAMACPP_LIB_DIR) {
    ggml_backend_load_all_from_path(LLAMACPP_LIB_DIR);
  } else {
    ggml_backend_load_all();
  }
  llama_backend_init();
  llama_model_params params = llama_model_default_params();
  params.vocab_only = true;
  llama_model* model = llama_model_load_from_file(model_path.c_str(), params);
  if (model == nullptr) Fail("cannot load " + model_path);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int n_vocab = llama_vocab_n_tokens(vocab);
  std::string line;
  while (std::getline(std::cin, line)) {
    std::string out = "{\"pieces\":[";
    bool first = true;
    for (llama_token id : ParseIds(line)) {
      if (id >= n_vocab) Fail("id " + std::to_string(id) + " outside the vocabulary");
      out += first ? "\"" : ",\"";
      out += Hex(Piece(vocab, id, special)) + "\"";
      first = false;
    }
    std::printf("%s]}\n", out.c_str());
    std::fflush(stdout);
  }
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
