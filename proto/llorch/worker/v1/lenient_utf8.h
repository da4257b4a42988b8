// Included by the generated worker.grpc.pb.h (proto/CMakeLists.txt): an
// ExecuteRequest with invalid UTF-8 in a string reaches the handler, which
// names the field (common/grpc/lenient_utf8.h).
#ifndef LLORCH_PROTO_LLORCH_WORKER_V1_LENIENT_UTF8_H_
#define LLORCH_PROTO_LLORCH_WORKER_V1_LENIENT_UTF8_H_

#include "common/grpc/lenient_utf8.h"
#include "llorch/worker/v1/worker.pb.h"

LLORCH_LENIENT_UTF8_REQUEST(llorch::worker::v1::ExecuteRequest)

#endif  // LLORCH_PROTO_LLORCH_WORKER_V1_LENIENT_UTF8_H_
