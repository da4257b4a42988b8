// Included by the generated scheduler.grpc.pb.h (proto/CMakeLists.txt): a
// request with invalid UTF-8 in a string, or bytes that are no request at
// all, reaches the handler, which names the field (common/grpc/lenient_utf8.h).
#ifndef LLORCH_PROTO_LLORCH_V1_LENIENT_UTF8_H_
#define LLORCH_PROTO_LLORCH_V1_LENIENT_UTF8_H_

#include "common/grpc/lenient_utf8.h"
#include "llorch/v1/scheduler.pb.h"

LLORCH_LENIENT_UTF8_REQUEST(llorch::v1::GenerateRequest)
LLORCH_LENIENT_UTF8_REQUEST(llorch::v1::CancelRequest)
LLORCH_LENIENT_UTF8_REQUEST(llorch::v1::ListModelsRequest)
LLORCH_LENIENT_UTF8_REQUEST(llorch::v1::ListWorkersRequest)
LLORCH_LENIENT_UTF8_REQUEST(llorch::v1::RegisterWorkerRequest)

#endif  // LLORCH_PROTO_LLORCH_V1_LENIENT_UTF8_H_
