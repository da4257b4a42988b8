// Requests whose string fields hold invalid UTF-8 reach the handlers, which
// refuse them with INVALID_ARGUMENT naming the field.
//
// protobuf (3.21) rejects invalid UTF-8 in proto3 `string` fields while
// parsing, before any handler runs, and gRPC then answers UNIMPLEMENTED with
// no message: a client cannot tell what was wrong. A request type declared
// with LLORCH_LENIENT_UTF8_REQUEST (in a header the generated .grpc.pb.h
// includes: protoc's additional_header_includes) parses as usual, and only
// when that fails retries with every string field read as bytes.
#ifndef LLORCH_COMMON_GRPC_LENIENT_UTF8_H_
#define LLORCH_COMMON_GRPC_LENIENT_UTF8_H_

#include <google/protobuf/message.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

namespace llorch {

// Parses `buffer` into `message` (a generated message); strings may hold
// any bytes. INVALID_ARGUMENT when the bytes are not the message at all.
grpc::Status DeserializeAllowingInvalidUtf8(grpc::ByteBuffer* buffer,
                                            google::protobuf::Message* message);

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
      return ::llorch::DeserializeAllowingInvalidUtf8(buffer, static_cast<Type*>(msg));    \
    }                                                                                      \
  };                                                                                       \
  }

#endif  // LLORCH_COMMON_GRPC_LENIENT_UTF8_H_
