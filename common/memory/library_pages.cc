#include "common/memory/library_pages.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace llorch::memory {
namespace {

// One mapping of smaps: its header line and the fields the choice needs.
struct Mapping {
  uintptr_t begin = 0;
  uintptr_t end = 0;
  std::string perms;  // "r-xp"
  std::string path;
  int64_t rss_kib = 0;
  int64_t anonymous_kib = 0;
};

bool ParseHeader(const std::string& line, Mapping* mapping) {
  std::istringstream in(line);
  std::string range, offset, device, inode;
  if (!(in >> range >> mapping->perms >> offset >> device >> inode)) return false;
  const size_t dash = range.find('-');
  if (dash == std::string::npos || mapping->perms.size() != 4) return false;
  unsigned long long begin = 0, end = 0;
  if (!absl::SimpleHexAtoi(range.substr(0, dash), &begin) ||
      !absl::SimpleHexAtoi(range.substr(dash + 1), &end)) {
    return false;
  }
  mapping->begin = begin;
  mapping->end = end;
  std::getline(in >> std::ws, mapping->path);
  return true;
}

// "Rss:   1234 kB" -> sets the field it names to 1234.
void ParseField(const std::string& line, Mapping* mapping) {
  std::istringstream in(line);
  std::string name;
  int64_t kib = 0;
  if (!(in >> name >> kib)) return;
  if (name == "Rss:") mapping->rss_kib = kib;
  if (name == "Anonymous:") mapping->anonymous_kib = kib;
}

absl::StatusOr<std::vector<Mapping>> ReadSmaps(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::UnavailableError(absl::StrCat("cannot read ", path));
  std::vector<Mapping> mappings;
  std::string line;
  while (std::getline(in, line)) {
    Mapping header;
    // A header starts "begin-end perms"; a field line "Name: value".
    const size_t space = line.find(' ');
    if (space != std::string::npos && line[space - 1] != ':' && ParseHeader(line, &header)) {
      mappings.push_back(header);
    } else if (!mappings.empty()) {
      ParseField(line, &mappings.back());
    }
  }
  return mappings;
}

// Only the file's own pages: unmapping them loses nothing, since the next
// access reads the same bytes from the page cache. A writable mapping or one
// holding copied-on-write (anonymous) pages, as relocations are, is left alone.
bool IsCleanLibraryMapping(const Mapping& mapping) {
  return mapping.perms[1] == '-' && mapping.perms[3] == 'p' &&
         absl::StrContains(mapping.path, ".so") && mapping.path[0] == '/' &&
         mapping.rss_kib > 0 && mapping.anonymous_kib == 0;
}

}  // namespace

absl::StatusOr<ReleasedPages> ReleaseLibraryPages(const std::string& smaps_path) {
  absl::StatusOr<std::vector<Mapping>> mappings = ReadSmaps(smaps_path);
  if (!mappings.ok()) return mappings.status();
  ReleasedPages released;
  for (const Mapping& mapping : *mappings) {
    if (!IsCleanLibraryMapping(mapping)) continue;
    // Advice only: a failure leaves the pages resident, nothing else.
    if (::madvise(reinterpret_cast<void*>(mapping.begin), mapping.end - mapping.begin,
                  MADV_DONTNEED) != 0) {
      continue;
    }
    ++released.num_mappings;
    released.num_bytes += mapping.rss_kib * 1024;
  }
  return released;
}

absl::StatusOr<int64_t> StatusBytes(const std::string& pid, absl::string_view key) {
  const std::string path = absl::StrCat("/proc/", pid, "/status");
  std::ifstream in(path);
  if (!in) return absl::UnavailableError(absl::StrCat("cannot read ", path));
  const std::string prefix = absl::StrCat(key, ":");
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, prefix)) continue;
    std::istringstream value(line.substr(prefix.size()));  // "   N kB"
    int64_t kib = 0;
    if (value >> kib) return kib * 1024;
  }
  return absl::NotFoundError(absl::StrCat("no ", key, " in ", path));
}

int ExitSkippingLibraryDestructors(int exit_code) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return exit_code;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return exit_code;
#endif
#endif
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  _exit(exit_code);
}

}  // namespace llorch::memory
