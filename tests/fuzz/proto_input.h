// Fuzz bytes -> a request message, parsed exactly as the gRPC servers parse
// it: through the gRPC serialisation traits that the request type's
// LLORCH_LENIENT_UTF8_REQUEST declares (proto/llorch/*/lenient_utf8.h), so
// string fields may hold invalid UTF-8.
#ifndef LLORCH_TESTS_FUZZ_PROTO_INPUT_H_
#define LLORCH_TESTS_FUZZ_PROTO_INPUT_H_

#include <google/protobuf/stubs/logging.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <cstddef>
#include <cstdint>

#include "llorch/v1/lenient_utf8.h"         // NOLINT: the traits of GenerateRequest
#include "llorch/worker/v1/lenient_utf8.h"  // NOLINT: the traits of ExecuteRequest
#include "tests/fuzz/fuzz_support.h"

namespace llorch::fuzz {

// protobuf logs every string field with invalid UTF-8 it refuses; quiet.
inline void QuietProtobuf() { google::protobuf::SetLogHandler(nullptr); }

// False when the server would not call its handler with the message.
template <typename Request>
bool ParseRequest(const uint8_t* data, size_t size, Request* message) {
  grpc::Slice slice(data, size);
  grpc::ByteBuffer buffer(&slice, 1);
  const grpc::Status status = grpc::SerializationTraits<Request>::Deserialize(&buffer, message);
  LLORCH_FUZZ_CHECK(status.ok() || status.error_code() == grpc::StatusCode::INVALID_ARGUMENT,
                    status.error_message());
  return status.ok();
}

}  // namespace llorch::fuzz

#endif  // LLORCH_TESTS_FUZZ_PROTO_INPUT_H_
