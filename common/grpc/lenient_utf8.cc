#include "common/grpc/lenient_utf8.h"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/unknown_field_set.h>

namespace llorch {
namespace {

namespace pb = google::protobuf;

// MarkUnparsed's unknown field: the largest field number there is.
constexpr int kUnparsedField = (1 << 29) - 1;

void StringsToBytes(pb::DescriptorProto* message) {
  for (pb::FieldDescriptorProto& field : *message->mutable_field()) {
    if (field.type() == pb::FieldDescriptorProto::TYPE_STRING) {
      field.set_type(pb::FieldDescriptorProto::TYPE_BYTES);
    }
  }
  for (pb::DescriptorProto& nested : *message->mutable_nested_type()) StringsToBytes(&nested);
}

// The message's file (and its imports) again, with bytes for strings, in a
// pool of its own; one per file, made once.
class BytesTwins {
 public:
  const pb::Message* Prototype(const pb::Descriptor* descriptor) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!Add(descriptor->file())) return nullptr;
    const pb::Descriptor* twin = pool_.FindMessageTypeByName(descriptor->full_name());
    return twin == nullptr ? nullptr : factory_.GetPrototype(twin);
  }

 private:
  bool Add(const pb::FileDescriptor* file) {
    if (pool_.FindFileByName(file->name()) != nullptr) return true;
    for (int i = 0; i < file->dependency_count(); ++i) {
      if (!Add(file->dependency(i))) return false;
    }
    pb::FileDescriptorProto proto;
    file->CopyTo(&proto);
    for (pb::DescriptorProto& message : *proto.mutable_message_type()) StringsToBytes(&message);
    return pool_.BuildFile(proto) != nullptr;
  }

  std::mutex mu_;
  pb::DescriptorPool pool_;
  pb::DynamicMessageFactory factory_{&pool_};
};

void CopyField(const pb::Message& from, const pb::FieldDescriptor* from_field, pb::Message* to);

// Same field numbers and shapes; strings are set through reflection, which
// does not check UTF-8.
void CopyMessage(const pb::Message& from, pb::Message* to) {
  std::vector<const pb::FieldDescriptor*> fields;
  from.GetReflection()->ListFields(from, &fields);
  for (const pb::FieldDescriptor* field : fields) CopyField(from, field, to);
  to->GetReflection()->MutableUnknownFields(to)->MergeFrom(
      from.GetReflection()->GetUnknownFields(from));
}

void CopyField(const pb::Message& from, const pb::FieldDescriptor* f, pb::Message* to) {
  const pb::Reflection* in = from.GetReflection();
  const pb::Reflection* out = to->GetReflection();
  const pb::FieldDescriptor* t = to->GetDescriptor()->FindFieldByNumber(f->number());
  if (t == nullptr) return;
  const int count = f->is_repeated() ? in->FieldSize(from, f) : 1;
  for (int i = 0; i < count; ++i) {
    const bool rep = f->is_repeated();
    switch (f->cpp_type()) {
#define LLORCH_COPY(CPP, Name)                                                          \
  case pb::FieldDescriptor::CPP:                                                        \
    if (rep) {                                                                          \
      out->Add##Name(to, t, in->GetRepeated##Name(from, f, i));                         \
    } else {                                                                            \
      out->Set##Name(to, t, in->Get##Name(from, f));                                    \
    }                                                                                   \
    break;
      LLORCH_COPY(CPPTYPE_INT32, Int32)
      LLORCH_COPY(CPPTYPE_INT64, Int64)
      LLORCH_COPY(CPPTYPE_UINT32, UInt32)
      LLORCH_COPY(CPPTYPE_UINT64, UInt64)
      LLORCH_COPY(CPPTYPE_DOUBLE, Double)
      LLORCH_COPY(CPPTYPE_FLOAT, Float)
      LLORCH_COPY(CPPTYPE_BOOL, Bool)
      LLORCH_COPY(CPPTYPE_ENUM, EnumValue)
      LLORCH_COPY(CPPTYPE_STRING, String)
#undef LLORCH_COPY
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        if (rep) {
          CopyMessage(in->GetRepeatedMessage(from, f, i), out->AddMessage(to, t));
        } else {
          CopyMessage(in->GetMessage(from, f), out->MutableMessage(to, t));
        }
        break;
    }
  }
}

}  // namespace

grpc::Status DeserializeAllowingInvalidUtf8(grpc::ByteBuffer* buffer, pb::Message* message) {
  if (buffer == nullptr) return grpc::Status(grpc::StatusCode::INTERNAL, "No payload");
  grpc::Slice slice;
  const grpc::Status dumped = buffer->TrySingleSlice(&slice).ok()
                                  ? grpc::Status::OK
                                  : buffer->DumpToSingleSlice(&slice);
  buffer->Clear();
  if (!dumped.ok()) return dumped;
  const void* data = slice.begin();
  const int size = static_cast<int>(slice.size());
  message->Clear();
  if (message->ParseFromArray(data, size)) return grpc::Status::OK;  // the usual case
  static BytesTwins* twins = new BytesTwins();
  const pb::Message* prototype = twins->Prototype(message->GetDescriptor());
  std::unique_ptr<pb::Message> twin(prototype == nullptr ? nullptr : prototype->New());
  if (twin == nullptr || !twin->ParseFromArray(data, size)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the request is not a " + message->GetDescriptor()->full_name());
  }
  message->Clear();
  CopyMessage(*twin, message);
  return grpc::Status::OK;
}

void MarkUnparsed(pb::Message* message, const std::string& why) {
  message->Clear();
  message->GetReflection()->MutableUnknownFields(message)->AddLengthDelimited(kUnparsedField,
                                                                               why);
}

std::string UnparsedRequest(const pb::Message& message) {
  const pb::UnknownFieldSet& unknown = message.GetReflection()->GetUnknownFields(message);
  for (int i = 0; i < unknown.field_count(); ++i) {
    const pb::UnknownField& field = unknown.field(i);
    if (field.number() == kUnparsedField &&
        field.type() == pb::UnknownField::TYPE_LENGTH_DELIMITED) {
      return field.length_delimited();
    }
  }
  return "";
}

}  // namespace llorch
