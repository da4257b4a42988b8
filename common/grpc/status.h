// The one place where absl::Status meets grpc::Status. The canonical codes
// are numbered alike in both libraries.
#ifndef LLORCH_COMMON_GRPC_STATUS_H_
#define LLORCH_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace llorch {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace llorch

#endif  // LLORCH_COMMON_GRPC_STATUS_H_
