// Included by the generated scheduler.grpc.pb.h (proto/CMakeLists.txt): a
// GenerateRequest with invalid UTF-8 in a string reaches the handler, which
// names the field (common/grpc/lenient_utf8.h).
#ifndef LLORCH_PROTO_LLORCH_V1_LENIENT_UTF8_H_
#define LLORCH_PROTO_LLORCH_V1_LENIENT_UTF8_H_

#include "common/grpc/lenient_utf8.h"
#include "llorch/v1/scheduler.pb.h"

LLORCH_LENIENT_UTF8_REQUEST(llorch::v1::GenerateRequest)

#endif  // LLORCH_PROTO_LLORCH_V1_LENIENT_UTF8_H_
