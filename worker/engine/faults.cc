#include "worker/engine/faults.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <new>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace llorch {

absl::Status StatusFromCurrentException(absl::string_view what) {
  try {
    throw;
  } catch (const c10::OutOfMemoryError& e) {  // before c10::Error, its base
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": out of memory: ", e.what_without_backtrace()));
  } catch (const std::bad_alloc& e) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory (", e.what(), ")"));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, " failed: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, " failed: ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, " failed: unknown exception"));
  }
}

absl::StatusOr<TestFault> ParseTestFault(absl::string_view spec) {
  TestFault fault;
  absl::string_view rest = spec;
  if (absl::ConsumePrefix(&rest, "forward:")) {
    fault.point = TestFault::Point::kForward;
  } else if (absl::ConsumePrefix(&rest, "kv_alloc:")) {
    fault.point = TestFault::Point::kKvAlloc;
  } else if (absl::ConsumePrefix(&rest, "leak:")) {
    fault.point = TestFault::Point::kLeak;
  }
  if (fault.point == TestFault::Point::kNone || !absl::SimpleAtoi(rest, &fault.nth) ||
      fault.nth < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LLORCH_TEST_FAULT must be forward:N, kv_alloc:N or leak:N with N >= 1, got '", spec, "'"));
  }
  return fault;
}

const TestFault& TestFaultFromEnv() {
  static const TestFault fault = [] {
    const char* spec = std::getenv("LLORCH_TEST_FAULT");
    if (spec == nullptr || *spec == '\0') return TestFault();
    absl::StatusOr<TestFault> parsed = ParseTestFault(spec);
    if (!parsed.ok()) {
      std::cerr << "llorch: ignoring " << parsed.status().message() << std::endl;
      return TestFault();
    }
    std::cerr << "llorch: TEST ONLY: LLORCH_TEST_FAULT=" << spec << " is set" << std::endl;
    return *parsed;
  }();
  return fault;
}

void MaybeInjectFault(const TestFault& fault, TestFault::Point point, int64_t* count) {
  if (fault.point == TestFault::Point::kLeak && point == TestFault::Point::kKvAlloc) {
    char* leaked = new char[fault.nth];
    std::memset(leaked, 1, fault.nth);               // touched, so resident
    asm volatile("" : : "r"(leaked) : "memory");     // kept: the compiler may not elide it
    return;                                          // and never freed: that is the fault
  }
  if (fault.point != point || ++*count != fault.nth) return;
  if (point == TestFault::Point::kKvAlloc) throw std::bad_alloc();
  TORCH_CHECK(false, "LLORCH_TEST_FAULT: injected failure of model forward ", fault.nth);
}

}  // namespace llorch
