#include "common/memory/library_pages.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <iostream>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace llorch::memory {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kPages = 64;

// A file of kPages pages, page i filled with byte i, named like a library.
std::string WriteFile(const std::string& name) {
  const std::string path =
      std::string(::testing::TempDir()) + "/" + std::to_string(::getpid()) + "-" + name;
  std::ofstream out(path, std::ios::binary);
  for (size_t i = 0; i < kPages; ++i) out << std::string(kPage, static_cast<char>(i));
  return path;
}

// The resident KiB of the mapping that starts at `begin`, from smaps.
int64_t MappingRssKib(const void* begin) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool in_mapping = false;
  char start[32];
  std::snprintf(start, sizeof(start), "%lx-", reinterpret_cast<unsigned long>(begin));
  while (std::getline(in, line)) {
    if (line.rfind(start, 0) == 0) in_mapping = true;
    if (in_mapping && line.rfind("Rss:", 0) == 0) return std::atoll(line.c_str() + 4);
  }
  return -1;
}

uint8_t* Map(const std::string& path, int prot) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  void* map = ::mmap(nullptr, kPages * kPage, prot, MAP_PRIVATE, fd, 0);
  ::close(fd);
  EXPECT_NE(map, MAP_FAILED);
  return static_cast<uint8_t*>(map);
}

int64_t SumPages(const uint8_t* map) {
  int64_t sum = 0;
  for (size_t i = 0; i < kPages; ++i) sum += map[i * kPage];
  return sum;
}

TEST(ReleaseLibraryPages, UnmapsCleanLibraryPagesThatReadBackTheSame) {
  const uint8_t* map = Map(WriteFile("libclean.so.1"), PROT_READ);
  const int64_t sum = SumPages(map);
  ASSERT_EQ(sum, kPages * (kPages - 1) / 2);
  ASSERT_EQ(MappingRssKib(map), static_cast<int64_t>(kPages * kPage / 1024));

  absl::StatusOr<ReleasedPages> released = ReleaseLibraryPages();
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_GE(released->num_mappings, 1);
  EXPECT_GE(released->num_bytes, static_cast<int64_t>(kPages * kPage));
  EXPECT_EQ(MappingRssKib(map), 0);
  EXPECT_EQ(SumPages(map), sum);  // faulted back in from the file
  ::munmap(const_cast<uint8_t*>(map), kPages * kPage);
}

TEST(ReleaseLibraryPages, KeepsCopiedOnWritePages) {
  // A private mapping written to (as relocations are) holds anonymous
  // copies that the file does not have: they must survive.
  uint8_t* map = Map(WriteFile("libwritten.so.1"), PROT_READ | PROT_WRITE);
  for (size_t i = 0; i < kPages; ++i) map[i * kPage] = 0xAB;
  ASSERT_EQ(::mprotect(map, kPages * kPage, PROT_READ), 0);  // read-only, as RELRO is

  ASSERT_TRUE(ReleaseLibraryPages().ok());
  for (size_t i = 0; i < kPages; ++i) ASSERT_EQ(map[i * kPage], 0xAB) << "page " << i;
  ::munmap(map, kPages * kPage);
}

TEST(ReleaseLibraryPages, LeavesOtherFilesMapped) {
  const uint8_t* map = Map(WriteFile("model.gguf"), PROT_READ);
  ASSERT_EQ(SumPages(map), kPages * (kPages - 1) / 2);
  ASSERT_TRUE(ReleaseLibraryPages().ok());
  EXPECT_EQ(MappingRssKib(map), static_cast<int64_t>(kPages * kPage / 1024));
  ::munmap(const_cast<uint8_t*>(map), kPages * kPage);
}

TEST(ReleaseLibraryPages, LowersTheResidentSetOfThisProcess) {
  // The test binary's own libraries (libstdc++, libc, gtest's) were touched
  // while it started; after the advice the process still runs.
  ASSERT_TRUE(ReleaseLibraryPages().ok());
  absl::StatusOr<int64_t> after = ResidentBytes();
  ASSERT_TRUE(after.ok());
  EXPECT_GT(*after, 0);
  std::ostringstream text;
  text << 1.5 << std::string("x");  // libstdc++ pages fault back in
  EXPECT_EQ(text.str(), "1.5x");
}

TEST(ReleaseLibraryPages, ReportsAnUnreadableSmaps) {
  EXPECT_FALSE(ReleaseLibraryPages("/nonexistent/smaps").ok());
}

TEST(ExitSkippingLibraryDestructors, FlushesOutputAndSkipsExitHandlers) {
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    close(pipe_fds[0]);
    std::atexit([] { std::printf("exit handler ran"); });
    std::printf("printf ");  // buffered: stdout is a pipe
    std::cout << "cout";
    const int code = ExitSkippingLibraryDestructors(3);
    std::exit(code);  // only reached under a sanitizer
  }
  close(pipe_fds[1]);
  std::string output;
  char buffer[256];
  for (ssize_t n; (n = read(pipe_fds[0], buffer, sizeof(buffer))) > 0;) output.append(buffer, n);
  close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LLORCH_UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define LLORCH_UNDER_SANITIZER 1
#endif
#endif
#ifdef LLORCH_UNDER_SANITIZER
  EXPECT_EQ(output, "printf coutexit handler ran");
#else
  EXPECT_EQ(output, "printf cout");
#endif
}

}  // namespace
}  // namespace llorch::memory
