// Keeps a step's large activation buffers in the heap from one op to the next.
//
// glibc serves each allocation above its mmap threshold (128 KiB at start,
// raised to the size of each large block freed, at most 32 MiB) with a fresh
// mapping, and gives the heap's top back to the kernel past its trim
// threshold. A model's ops allocate their outputs anew (libtorch tensors,
// [512, 11264] floats for a TinyLlama prompt's gate and up), so they came back
// as fresh zero pages again and again: 1.24 million page faults (4.7 GiB of
// page clearing) in three 512-token prompts of TinyLlama Q5_K, a fifth of the
// prompt's time. Freed blocks below `mmap_threshold_bytes` now stay in the
// heap for the next op, and the heap keeps up to `trim_threshold_bytes` of
// free memory at its top: the process holds its peak of activations, as
// llama.cpp holds its compute buffers. Larger blocks (weights, KV pools) are
// still mapped and returned when freed. The model's own op outputs have since
// moved to worker/model/activation_pool.h (in this heap they fragmented it);
// the rest (libtorch's temporaries, loaders' buffers) still lands here.
#ifndef LLORCH_COMMON_MEMORY_HEAP_REUSE_H_
#define LLORCH_COMMON_MEMORY_HEAP_REUSE_H_

#include <cstdint>

#include "absl/status/status.h"

namespace llorch::memory {

inline constexpr int64_t kHeapMmapThresholdBytes = int64_t{128} << 20;
inline constexpr int64_t kHeapTrimThresholdBytes = int64_t{512} << 20;

// Sets glibc's thresholds (mallopt); call once at the start of main(), before
// other threads allocate. Unimplemented where the C library is not glibc.
absl::Status KeepLargeBlocksInHeap(int64_t mmap_threshold_bytes = kHeapMmapThresholdBytes,
                                   int64_t trim_threshold_bytes = kHeapTrimThresholdBytes);

}  // namespace llorch::memory

#endif  // LLORCH_COMMON_MEMORY_HEAP_REUSE_H_
