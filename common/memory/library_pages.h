// Hands back the pages that loading the shared libraries left resident.
//
// Debian's libtorch_cpu needs 286 shared libraries (OpenCV, ffmpeg, GDAL,
// Qt, ...). Loading them with BIND_NOW and running their static
// initialisers leaves ~100 MiB of their read-only file pages mapped
// into the process before main() runs, most of them never touched again.
// Unmapping them (MADV_DONTNEED on mappings that hold no private copy) keeps
// them in the page cache, where the kernel may drop them; a page that is used
// later faults back in from there.
#ifndef LLORCH_COMMON_MEMORY_LIBRARY_PAGES_H_
#define LLORCH_COMMON_MEMORY_LIBRARY_PAGES_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llorch::memory {

struct ReleasedPages {
  int64_t num_mappings = 0;  // mappings advised
  int64_t num_bytes = 0;     // their resident bytes before the advice
};

// Unmaps the resident pages of every read-only, private, file-backed mapping
// of a shared library ("*.so*") that holds no anonymous (copied-on-write)
// page, read from `smaps_path`. Call it before other threads start (the
// process's own smaps is read once). Fails only when smaps cannot be read.
absl::StatusOr<ReleasedPages> ReleaseLibraryPages(
    const std::string& smaps_path = "/proc/self/smaps");

// A "Key:   N kB" field of /proc/PID/status ("self" for this process), in
// bytes: VmRSS (resident now), VmHWM (peak). NotFound if the field is absent.
absl::StatusOr<int64_t> StatusBytes(const std::string& pid, absl::string_view key);

// The process's resident set now (VmRSS of /proc/self/status), in bytes.
inline absl::StatusOr<int64_t> ResidentBytes() { return StatusBytes("self", "VmRSS"); }

// Ends the process with `exit_code` after flushing stdout and stderr,
// without the static destructors and exit handlers of those libraries:
// running them faults ~40 MiB of their released pages back in (the process's
// peak RSS at exit) and takes ~60 ms. Call it once nothing the program owns
// is left to destroy. Under AddressSanitizer or ThreadSanitizer it returns
// `exit_code` instead, so that their checks at exit run.
int ExitSkippingLibraryDestructors(int exit_code);

}  // namespace llorch::memory

#endif  // LLORCH_COMMON_MEMORY_LIBRARY_PAGES_H_
