// Requests whose string fields hold invalid UTF-8 reach the handlers, which
// refuse them with INVALID_ARGUMENT naming the field.
//
// protobuf (3.21) rejects invalid UTF-8 in proto3 `string` fields while
// parsing, before any handler runs, and gRPC then answers UNIMPLEMENTED with
// no message: a client cannot tell what was wrong. A request type declared
// with LLORCH_LENIENT_UTF8_REQUEST (in a header the generated .grpc.pb.h
// includes: protoc's additional_header_includes) parses as usual, and only
// when that fails retries with every string field read as bytes; bytes that
// are not the message at all reach the handler marked (UnparsedRequest), to
// be refused with INVALID_ARGUMENT too.
#ifndef LLORCH_COMMON_GRPC_LENIENT_UTF8_H_
#define LLORCH_COMMON_GRPC_LENIENT_UTF8_H_

#include <string>

#include <google/protobuf/message.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

namespace llorch {

// Parses `buffer` into `message` (a generated message); strings may hold
// any bytes. INVALID_ARGUMENT when the bytes are not the message at all.
grpc::Status DeserializeAllowingInvalidUtf8(grpc::ByteBuffer* buffer,
                                            google::protobuf::Message* message);

// Bytes that are not the message at all: gRPC's callback API would drop the
// parse's status and answer UNIMPLEMENTED with no message, so the request
// reaches the handler empty but for a mark (an unknown field) holding `why`,
// and the handler answers INVALID_ARGUMENT with UnparsedRequest's text.
void MarkUnparsed(google::protobuf::Message* message, const std::string& why);
// Why the request could not be parsed ("the request is not a ..."); "" when
// it was.
std::string UnparsedRequest(const google::protobuf::Message& message);

}  // namespace llorch

// Full specialisation of gRPC's serialisation traits for one request type.
#define LLORCH_LENIENT_UTF8_REQUEST(Type)                                                  \
  namespace grpc {                                                                         \
  template <>                                                                              \
  class SerializationTraits<Type, void> {                                                  \
   public:                                                                                 \
    static Status Serialize(const grpc::protobuf::MessageLite& msg, ByteBuffer* bb,        \
                            bool* own_buffer) {                                            \
      return GenericSerialize<ProtoBufferWriter, Type>(msg, bb, own_buffer);               \
    }                                                                                      \
    static Status Deserialize(ByteBuffer* buffer, grpc::protobuf::MessageLite* msg) {      \
      Type* message = static_cast<Type*>(msg);                                             \
      const Status status = ::llorch::DeserializeAllowingInvalidUtf8(buffer, message);     \
      if (status.error_code() != StatusCode::INVALID_ARGUMENT) return status;              \
      ::llorch::MarkUnparsed(message, status.error_message());                             \
      return Status::OK;                                                                   \
    }                                                                                      \
  };                                                                                       \
  }

#endif  // LLORCH_COMMON_GRPC_LENIENT_UTF8_H_
