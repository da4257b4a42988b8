#include "worker/model/float_gemm_avx512.h"

#include <algorithm>

#include "worker/model/cpu_isa.h"

#if defined(__x86_64__) && defined(__AVX512F__)
#define LLORCH_FLOAT_GEMM_AVX512 1
#include <immintrin.h>
#endif

// Compiled with -ffp-contract=off: only the fma intrinsics written here fuse.

namespace llorch {
namespace float_gemm_avx512 {

#ifdef LLORCH_FLOAT_GEMM_AVX512
namespace {

constexpr int kTileRows = 12;

// T activation rows against the panel; masks select the panel's live columns.
template <int T>
__attribute__((noinline))  // keeps the 24 accumulators in registers
void Tile(const float* panel, int64_t depth, const float* x, int64_t in, float* out,
          int64_t rows, __mmask16 mask0, __mmask16 mask1, bool first) {
  __m512 acc[T][2];
#pragma GCC unroll 12
  for (int t = 0; t < T; ++t) {
    if (first) {
      acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    } else {
      acc[t][0] = _mm512_maskz_loadu_ps(mask0, out + t * rows);
      acc[t][1] = _mm512_maskz_loadu_ps(mask1, out + t * rows + 16);
    }
  }
  for (int64_t k = 0; k < depth; ++k) {
    const __m512 w0 = _mm512_load_ps(panel + k * kPanel);
    const __m512 w1 = _mm512_load_ps(panel + k * kPanel + 16);
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t) {
      const __m512 xt = _mm512_set1_ps(x[t * in + k]);
      acc[t][0] = _mm512_fmadd_ps(xt, w0, acc[t][0]);
      acc[t][1] = _mm512_fmadd_ps(xt, w1, acc[t][1]);
    }
  }
#pragma GCC unroll 12
  for (int t = 0; t < T; ++t) {
    _mm512_mask_storeu_ps(out + t * rows, mask0, acc[t][0]);
    _mm512_mask_storeu_ps(out + t * rows + 16, mask1, acc[t][1]);
  }
}

template <int T>
void TileOf(const float* panel, int64_t depth, const float* x, int64_t in, float* out,
            int64_t rows, __mmask16 mask0, __mmask16 mask1, bool first) {
  Tile<T>(panel, depth, x, in, out, rows, mask0, mask1, first);
}

using TileFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t,
                        __mmask16, __mmask16, bool);
constexpr TileFn kTiles[kTileRows + 1] = {
    nullptr,   &TileOf<1>, &TileOf<2>, &TileOf<3>,  &TileOf<4>,  &TileOf<5>, &TileOf<6>,
    &TileOf<7>, &TileOf<8>, &TileOf<9>, &TileOf<10>, &TileOf<11>, &TileOf<12>};

__mmask16 LowBits(int count) {
  return count >= 16 ? static_cast<__mmask16>(0xFFFF)
                     : static_cast<__mmask16>((1u << std::max(count, 0)) - 1);
}

}  // namespace

bool Supported() {
  static const bool supported =
      CpuIsaAllowed(CpuIsa::kAvx512) && __builtin_cpu_supports("avx512f");
  return supported;
}

void PanelTimesRows(const float* panel, int64_t depth, const float* x, int64_t in, int64_t n,
                    float* out, int64_t rows, int cols, bool first) {
  const __mmask16 mask0 = LowBits(cols), mask1 = LowBits(cols - 16);
  for (int64_t t = 0; t < n; t += kTileRows) {
    const int count = static_cast<int>(std::min<int64_t>(kTileRows, n - t));
    kTiles[count](panel, depth, x + t * in, in, out + t * rows, rows, mask0, mask1, first);
  }
}

#else  // !LLORCH_FLOAT_GEMM_AVX512

bool Supported() { return false; }
void PanelTimesRows(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t, int,
                    bool) {}

#endif  // LLORCH_FLOAT_GEMM_AVX512

}  // namespace float_gemm_avx512
}  // namespace llorch
