// The machine's memory read bandwidth as a decode step sees it: N threads
// each stream through their own slice of a buffer far larger than the caches
// (summing it, so nothing is optimised away), best of --reps passes.
// tools/bench-local.sh prints memory-bound decode (F32, F16, BF16) as a share
// of this figure, measured in the same run with the same threads.
//   read_bandwidth [--threads N] [--mib M] [--reps R]  ->  {"read_gb_s": x, ...}
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

// Sums 32-byte loads with four independent accumulators (one load per add,
// so the loads, not the adds, bound the loop). `bytes` is a multiple of 128.
__attribute__((target("avx2"))) uint64_t SumSlice(const uint8_t* data, size_t bytes) {
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                    _mm256_setzero_si256()};
  for (size_t i = 0; i < bytes; i += 128) {
    for (int k = 0; k < 4; ++k) {
      acc[k] = _mm256_add_epi64(
          acc[k], _mm256_load_si256(reinterpret_cast<const __m256i*>(data + i + 32 * k)));
    }
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]),
                                      _mm256_add_epi64(acc[2], acc[3])));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

// Runs fn(thread index) on `threads` threads and waits for them.
template <typename Fn>
void OnThreads(int threads, Fn fn) {
  std::vector<std::thread> team;
  for (int t = 0; t < threads; ++t) team.emplace_back(fn, t);
  for (std::thread& thread : team) thread.join();
}

int Usage() {
  std::fprintf(stderr, "usage: read_bandwidth [--threads N] [--mib M] [--reps R]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  size_t mib = 2048;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return Usage();
    const long value = std::strtol(argv[++i], nullptr, 10);
    if (value <= 0) return Usage();
    if (flag == "--threads") {
      threads = static_cast<int>(value);
    } else if (flag == "--mib") {
      mib = static_cast<size_t>(value);
    } else if (flag == "--reps") {
      reps = static_cast<int>(value);
    } else {
      return Usage();
    }
  }
  threads = std::max(threads, 1);
  const size_t slice = (mib << 20) / threads / 128 * 128;
  const size_t total = slice * threads;
  auto* data = static_cast<uint8_t*>(std::aligned_alloc(4096, total));
  if (data == nullptr) {
    std::fprintf(stderr, "read_bandwidth: cannot allocate %zu MiB\n", mib);
    return 1;
  }
  // Each thread writes the pages it will read (first touch places them).
  OnThreads(threads, [&](int t) { std::memset(data + t * slice, t + 1, slice); });

  std::vector<uint64_t> sums(threads);
  double best_seconds = 1e30;
  for (int rep = 0; rep < reps; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    OnThreads(threads, [&](int t) { sums[t] = SumSlice(data + t * slice, slice); });
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    best_seconds = std::min(best_seconds, elapsed.count());
  }
  uint64_t check = 0;
  for (uint64_t sum : sums) check += sum;
  std::free(data);
  std::printf("{\"read_gb_s\": %.2f, \"threads\": %d, \"mib\": %zu, \"reps\": %d, \"check\": %llu}\n",
              total / best_seconds / 1e9, threads, total >> 20, reps,
              static_cast<unsigned long long>(check));
  return 0;
}
