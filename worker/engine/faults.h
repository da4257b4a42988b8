// Failures inside the engine: exceptions from libtorch or the allocator
// become statuses for the affected jobs only, and a test-only hook injects
// such failures so that tests can prove the worker serves on.
#ifndef LLORCH_WORKER_ENGINE_FAULTS_H_
#define LLORCH_WORKER_ENGINE_FAULTS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llorch {

// For use inside a catch block: the status for the exception being handled.
// Allocation failures (std::bad_alloc, c10::OutOfMemoryError) are
// ResourceExhausted, since the worker may recover once memory is freed;
// anything else is Internal. The message starts with `what` and keeps the
// exception's text (libtorch's without its backtrace).
absl::Status StatusFromCurrentException(absl::string_view what);

// TEST ONLY. Compiled in always and inert unless the environment variable
// LLORCH_TEST_FAULT is set: "forward:N" makes the engine's Nth model forward
// throw c10::Error, "kv_alloc:N" its Nth KV cache allocation throw
// std::bad_alloc (N counts from 1 over the engine's life; warm-up is not
// counted), "leak:N" every KV cache allocation leak N bytes of touched heap
// (so that `llorch soak` can show it catches a per-request leak). Never set
// it in production.
struct TestFault {
  enum class Point { kNone, kForward, kKvAlloc, kLeak };
  Point point = Point::kNone;
  int64_t nth = 0;  // kLeak: bytes per job
};

// "forward:N" | "kv_alloc:N" | "leak:N" (N >= 1); InvalidArgument otherwise.
absl::StatusOr<TestFault> ParseTestFault(absl::string_view spec);

// LLORCH_TEST_FAULT, read once per process. Unset gives Point::kNone; a
// malformed value is reported on stderr and ignored.
const TestFault& TestFaultFromEnv();

// Throws as described above when `point` is the fault's point and `*count`,
// incremented here, reaches its N; leaks at every kKvAlloc point under "leak:N".
void MaybeInjectFault(const TestFault& fault, TestFault::Point point, int64_t* count);

}  // namespace llorch

#endif  // LLORCH_WORKER_ENGINE_FAULTS_H_
