#include "common/memory/heap_reuse.h"

#include <limits>

#include "absl/strings/str_cat.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace llorch::memory {

absl::Status KeepLargeBlocksInHeap(int64_t mmap_threshold_bytes, int64_t trim_threshold_bytes) {
  if (mmap_threshold_bytes < 0 || trim_threshold_bytes < 0 ||
      mmap_threshold_bytes > std::numeric_limits<int>::max() ||
      trim_threshold_bytes > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("heap thresholds out of range: mmap ",
                                                   mmap_threshold_bytes, ", trim ",
                                                   trim_threshold_bytes));
  }
#if defined(__GLIBC__)
  // A fixed mmap threshold also ends glibc's raising of it as blocks are freed.
  if (mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap_threshold_bytes)) != 1 ||
      mallopt(M_TRIM_THRESHOLD, static_cast<int>(trim_threshold_bytes)) != 1) {
    return absl::InternalError("mallopt refused the heap thresholds");
  }
  return absl::OkStatus();
#else
  return absl::UnimplementedError("heap thresholds: not glibc");
#endif
}

}  // namespace llorch::memory
