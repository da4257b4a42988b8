// Only sentencepiece headers here (they clash with Abseil's).
#include "worker/tokenizer/spm_shim/spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

struct Model {
  sentencepiece::SentencePieceProcessor processor;
  std::vector<int> types;  // each piece's ModelProto type (GGUF uses the same numbers)
};

Model* M(void* handle) { return static_cast<Model*>(handle); }
sentencepiece::SentencePieceProcessor* Get(void* handle) { return &M(handle)->processor; }

// Minimal protobuf wire reading: the header exposes no piece types (user-
// defined pieces in particular), and the ModelProto classes cannot be used
// next to another protobuf, so the types are read from the serialized model:
// ModelProto.pieces = 1 (repeated SentencePiece), SentencePiece.type = 3.
bool ReadVarint(const std::string& b, size_t* pos, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *pos < b.size(); shift += 7) {
    const uint8_t byte = static_cast<uint8_t>(b[(*pos)++]);
    *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// Calls on_field(number, wire_type, begin, end) for each field of `b`
// (begin/end: the payload of length-delimited fields, the varint value in
// begin for varints). False on malformed input.
template <typename F>
bool ForEachField(const std::string& b, F on_field) {
  size_t pos = 0;
  while (pos < b.size()) {
    uint64_t key = 0, value = 0;
    if (!ReadVarint(b, &pos, &key)) return false;
    const int wire = static_cast<int>(key & 7);
    const uint64_t number = key >> 3;
    if (wire == 0) {
      if (!ReadVarint(b, &pos, &value)) return false;
      on_field(number, wire, static_cast<size_t>(value), 0);
    } else if (wire == 1 || wire == 5) {
      pos += wire == 1 ? 8 : 4;
    } else if (wire == 2) {
      if (!ReadVarint(b, &pos, &value) || value > b.size() - pos) return false;
      on_field(number, wire, pos, pos + static_cast<size_t>(value));
      pos += static_cast<size_t>(value);
    } else {
      return false;
    }
  }
  return pos == b.size();
}

std::vector<int> PieceTypes(const std::string& serialized) {
  std::vector<int> types;
  ForEachField(serialized, [&](uint64_t number, int wire, size_t begin, size_t end) {
    if (number != 1 || wire != 2) return;
    int type = 1;  // NORMAL, the proto default
    ForEachField(serialized.substr(begin, end - begin),
                 [&](uint64_t field, int field_wire, size_t value, size_t) {
                   if (field == 3 && field_wire == 0) type = static_cast<int>(value);
                 });
    types.push_back(type);
  });
  return types;
}

}  // namespace

extern "C" {

void* llorch_spm_load(const char* path, char* error, size_t error_size) {
  auto model = std::make_unique<Model>();
  const auto status = model->processor.Load(path);
  std::string message = status.ok() ? "" : status.ToString();
  if (status.ok()) {
    model->types = PieceTypes(std::string(model->processor.serialized_model_proto()));
    if (static_cast<int>(model->types.size()) != model->processor.GetPieceSize()) {
      message = "cannot read the piece types of the model";
    }
  }
  if (!message.empty()) {
    if (error_size > 0) {
      std::strncpy(error, message.c_str(), error_size - 1);
      error[error_size - 1] = '\0';
    }
    return nullptr;
  }
  return model.release();
}

void llorch_spm_free(void* handle) { delete M(handle); }
int llorch_spm_size(void* handle) { return Get(handle)->GetPieceSize(); }
const char* llorch_spm_piece(void* handle, int id) { return Get(handle)->IdToPiece(id).c_str(); }
float llorch_spm_score(void* handle, int id) { return Get(handle)->GetScore(id); }

int llorch_spm_type(void* handle, int id) { return M(handle)->types.at(id); }

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
