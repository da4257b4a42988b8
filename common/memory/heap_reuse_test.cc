#include "common/memory/heap_reuse.h"

#include <sys/resource.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"

namespace llorch::memory {
namespace {

int64_t MinorFaults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// Faults while a block of `bytes` is allocated, written whole and freed.
int64_t FaultsOfOneBlock(size_t bytes) {
  const int64_t before = MinorFaults();
  void* block = std::malloc(bytes);
  EXPECT_NE(block, nullptr);
  std::memset(block, 1, bytes);
  // Read back through a volatile, so that the writes are not dropped.
  EXPECT_EQ(static_cast<volatile unsigned char*>(block)[bytes - 1], 1);
  std::free(block);
  return MinorFaults() - before;
}

// A 40 MiB block, above glibc's largest dynamic mmap threshold (32 MiB):
// by default each one is a fresh mapping whose 10,240 pages fault in. Once
// the thresholds are set, the second one reuses the first one's pages.
TEST(KeepLargeBlocksInHeap, ASecondLargeBlockReusesTheFirstOnesPages) {
  ASSERT_TRUE(KeepLargeBlocksInHeap().ok());
  constexpr size_t kBytes = size_t{40} << 20;
  const int64_t first = FaultsOfOneBlock(kBytes);
  const int64_t second = FaultsOfOneBlock(kBytes);
  EXPECT_GT(first, 5000) << "the first block's pages are new";
  EXPECT_LT(second, 100) << "the second block took the heap's freed pages";
}

TEST(KeepLargeBlocksInHeap, RefusesThresholdsOutOfRange) {
  EXPECT_EQ(KeepLargeBlocksInHeap(-1, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KeepLargeBlocksInHeap(0, int64_t{1} << 40).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llorch::memory
