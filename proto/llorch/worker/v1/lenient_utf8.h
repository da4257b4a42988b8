// Included by the generated worker.grpc.pb.h (proto/CMakeLists.txt): a
// request with invalid UTF-8 in a string, or bytes that are no request at
// all, reaches the handler, which names the field (common/grpc/lenient_utf8.h).
#ifndef LLORCH_PROTO_LLORCH_WORKER_V1_LENIENT_UTF8_H_
#define LLORCH_PROTO_LLORCH_WORKER_V1_LENIENT_UTF8_H_

#include "common/grpc/lenient_utf8.h"
#include "llorch/worker/v1/worker.pb.h"

LLORCH_LENIENT_UTF8_REQUEST(llorch::worker::v1::ExecuteRequest)
LLORCH_LENIENT_UTF8_REQUEST(llorch::worker::v1::CancelRequest)
LLORCH_LENIENT_UTF8_REQUEST(llorch::worker::v1::InfoRequest)

#endif  // LLORCH_PROTO_LLORCH_WORKER_V1_LENIENT_UTF8_H_
