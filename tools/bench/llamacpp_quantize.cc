// Quantises a GGUF with llama.cpp's own quantiser (llama_model_quantize from
// the prebuilt libllama of node-llama-cpp), every matrix to one type: the
// quantised test models are written by the peer we compare against.
//   llamacpp_quantize IN.gguf OUT.gguf q8_0|q4_0|q4_1|q4_k|q5_k|q6_k
#include <cstdio>
#include <cstring>
#include <string>

#include "llama.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s IN.gguf OUT.gguf q8_0|q4_0|q4_1|q4_k|q5_k|q6_k\n", argv[0]);
    return 2;
  }
  const std::string type = argv[3];
  llama_ftype ftype;
  if (type == "q8_0") {
    ftype = LLAMA_FTYPE_MOSTLY_Q8_0;
  } else if (type == "q4_0") {
    ftype = LLAMA_FTYPE_MOSTLY_Q4_0;
  } else if (type == "q4_1") {
    ftype = LLAMA_FTYPE_MOSTLY_Q4_1;
  } else if (type == "q4_k") {
    ftype = LLAMA_FTYPE_MOSTLY_Q4_K_S;
  } else if (type == "q5_k") {
    ftype = LLAMA_FTYPE_MOSTLY_Q5_K_S;
  } else if (type == "q6_k") {
    ftype = LLAMA_FTYPE_MOSTLY_Q6_K;
  } else {
    std::fprintf(stderr, "llamacpp_quantize: unknown type %s\n", type.c_str());
    return 2;
  }
  llama_backend_init();
  llama_model_quantize_params params = llama_model_quantize_default_params();
  params.ftype = ftype;
  params.pure = true;  // every matrix in the one type, embeddings and output included
  params.nthread = 2;
  const uint32_t rc = llama_model_quantize(argv[1], argv[2], &params);
  llama_backend_free();
  if (rc != 0) {
    std::fprintf(stderr, "llamacpp_quantize: llama_model_quantize failed (%u)\n", rc);
    return 1;
  }
  return 0;
}
