// Only sentencepiece headers here (they clash with Abseil's).
#include "worker/tokenizer/spm_shim/spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

sentencepiece::SentencePieceProcessor* Get(void* handle) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

}  // namespace

extern "C" {

void* llorch_spm_load(const char* path, char* error, size_t error_size) {
  auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = processor->Load(path);
  if (!status.ok()) {
    if (error_size > 0) {
      std::strncpy(error, status.ToString().c_str(), error_size - 1);
      error[error_size - 1] = '\0';
    }
    return nullptr;
  }
  return processor.release();
}

void llorch_spm_free(void* handle) { delete Get(handle); }
int llorch_spm_size(void* handle) { return Get(handle)->GetPieceSize(); }
const char* llorch_spm_piece(void* handle, int id) { return Get(handle)->IdToPiece(id).c_str(); }
float llorch_spm_score(void* handle, int id) { return Get(handle)->GetScore(id); }

int llorch_spm_type(void* handle, int id) {
  sentencepiece::SentencePieceProcessor* p = Get(handle);
  if (p->IsUnknown(id)) return 2;
  if (p->IsControl(id)) return 3;
  if (p->IsUnused(id)) return 5;
  if (p->IsByte(id)) return 6;
  return 1;
}

int llorch_spm_bos_id(void* handle) { return Get(handle)->bos_id(); }
int llorch_spm_eos_id(void* handle) { return Get(handle)->eos_id(); }
int llorch_spm_unk_id(void* handle) { return Get(handle)->unk_id(); }
int llorch_spm_pad_id(void* handle) { return Get(handle)->pad_id(); }

int llorch_spm_adds_dummy_prefix(void* handle) {
  std::vector<std::string> pieces;
  if (!Get(handle)->Encode("x", &pieces).ok() || pieces.empty()) return 0;
  return pieces[0].rfind("\xe2\x96\x81", 0) == 0 ? 1 : 0;
}

int llorch_spm_encode(void* handle, const char* text, size_t size, int* ids, int capacity) {
  std::vector<int> out;
  if (!Get(handle)->Encode(std::string(text, size), &out).ok()) return -1;
  for (int i = 0; i < static_cast<int>(out.size()) && i < capacity; ++i) ids[i] = out[i];
  return static_cast<int>(out.size());
}

}  // extern "C"
