#include "worker/model/float_gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "worker/model/float_gemm_avx512.h"
#include "worker/model/float_matmul.h"  // WidenToFloat, WidenRowToFloat, FloatMatmulSupports

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LLORCH_FLOAT_GEMM_AVX2 1
#include <immintrin.h>

#include "worker/model/avx2_helpers.h"
#endif

namespace llorch {
namespace {

// Weights are packed a panel at a time: kPanel weight rows x kDepth columns,
// k-major (16 KiB, in L1), and every register tile of kTileRows activation
// rows sweeps it (12 of the 16 AVX2 registers accumulate). Between depth
// blocks an output's running sum waits in `out` (stored and reloaded
// exactly), so its fma chain still runs k = 0 .. in - 1 in order.
constexpr int kPanel = 16;
constexpr int kTileRows = 6;
constexpr int64_t kDepth = 256;

void CheckArguments(GgmlType type, int64_t rows, int64_t in, int64_t n) {
  if (!FloatMatmulSupports(type) || rows < 0 || in < 0 || n < 0) {
    std::fprintf(stderr, "FloatGemm: unsupported type %d or bad sizes rows=%lld in=%lld n=%lld\n",
                 static_cast<int>(type), static_cast<long long>(rows),
                 static_cast<long long>(in), static_cast<long long>(n));
    std::abort();
  }
}

size_t ElementBytes(GgmlType type) { return type == GgmlType::kF32 ? 4 : 2; }

// Weight rows [r0, r0 + count) as F32 rows: in place for F32, else widened
// (exactly) into `buffer`.
const float* WeightRowsF32(GgmlType type, const void* weight, int64_t r0, int64_t count,
                           int64_t in, std::vector<float>* buffer) {
  const auto* bytes = static_cast<const uint8_t*>(weight) + r0 * in * ElementBytes(type);
  if (type == GgmlType::kF32) return reinterpret_cast<const float*>(bytes);
  buffer->resize(static_cast<size_t>(count * in));
  WidenToFloat(type, bytes, count * in, buffer->data());
  return buffer->data();
}

#ifdef LLORCH_FLOAT_GEMM_AVX2

// r[i] <- column i of the 8 x 8 block whose rows are r[0..7].
inline void Transpose8x8(__m256* r) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 0-3, then 4-7
    __m256* v = u + 4 * h;
    const __m256* w = t + 4 * h;
    v[0] = _mm256_shuffle_ps(w[0], w[2], _MM_SHUFFLE(1, 0, 1, 0));
    v[1] = _mm256_shuffle_ps(w[0], w[2], _MM_SHUFFLE(3, 2, 3, 2));
    v[2] = _mm256_shuffle_ps(w[1], w[3], _MM_SHUFFLE(1, 0, 1, 0));
    v[3] = _mm256_shuffle_ps(w[1], w[3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// panel[k * width + c] = weight row r0 + c, column k0 + k, widened to F32;
// zero for rows past `count`. Eight rows by eight columns at a time through
// registers: the element-by-element copy of the strided panel took a fifth
// of a 256-row prompt product.
void PackPanel(GgmlType type, const void* weight, int64_t in, int64_t r0, int count, int64_t k0,
               int64_t depth, float* panel, int width = kPanel) {
  const size_t row_bytes = static_cast<size_t>(in) * ElementBytes(type);
  const auto* base = static_cast<const uint8_t*>(weight) + r0 * row_bytes;
  const int64_t whole = depth & ~int64_t{7};
  for (int c0 = 0; c0 < width; c0 += 8) {
    const int live = std::clamp(count - c0, 0, 8);  // weight rows present in this block
    const void* rows[8];
    for (int i = 0; i < live; ++i) rows[i] = base + (c0 + i) * row_bytes;
    for (int64_t k = 0; k < whole; k += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) {
        r[i] = i < live ? avx2::Load8AsFloat(type, rows[i], k0 + k) : _mm256_setzero_ps();
      }
      Transpose8x8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(panel + (k + i) * width + c0, r[i]);
    }
    const int64_t tail = depth - whole;  // under 8 columns, one row at a time
    for (int i = 0; tail > 0 && i < 8; ++i) {
      float widened[8] = {};
      if (i < live) {
        const auto* row = static_cast<const uint8_t*>(rows[i]);
        WidenRowToFloat(type, row + (k0 + whole) * ElementBytes(type), tail, widened);
      }
      for (int64_t k = 0; k < tail; ++k) panel[(whole + k) * width + c0 + i] = widened[k];
    }
  }
}

// T activation rows (x, row-major with stride `in`, at the block's first
// column) times a packed panel: out[t * rows + c] for c < cols, continuing
// the sums already there unless `first`.
template <int T>
void Tile(const float* panel, int64_t depth, const float* x, int64_t in, float* out, int64_t rows,
          int cols, bool first) {
  // Loops over t are unrolled so that the accumulators stay in registers.
  alignas(32) float edge[T][kPanel];  // a partial panel's outputs
  __m256 acc[T][2];
#pragma GCC unroll 6
  for (int t = 0; t < T; ++t) {
    if (first) {
      acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    } else if (cols == kPanel) {
      acc[t][0] = _mm256_loadu_ps(out + t * rows);
      acc[t][1] = _mm256_loadu_ps(out + t * rows + 8);
    } else {
      for (int c = 0; c < kPanel; ++c) edge[t][c] = c < cols ? out[t * rows + c] : 0.0f;
      acc[t][0] = _mm256_load_ps(edge[t]);
      acc[t][1] = _mm256_load_ps(edge[t] + 8);
    }
  }
  for (int64_t k = 0; k < depth; ++k) {
    const __m256 w0 = _mm256_load_ps(panel + k * kPanel);
    const __m256 w1 = _mm256_load_ps(panel + k * kPanel + 8);
#pragma GCC unroll 6
    for (int t = 0; t < T; ++t) {
      const __m256 xt = _mm256_broadcast_ss(x + t * in + k);
      acc[t][0] = _mm256_fmadd_ps(xt, w0, acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(xt, w1, acc[t][1]);
    }
  }
#pragma GCC unroll 6
  for (int t = 0; t < T; ++t) {
    if (cols == kPanel) {
      _mm256_storeu_ps(out + t * rows, acc[t][0]);
      _mm256_storeu_ps(out + t * rows + 8, acc[t][1]);
    } else {
      _mm256_store_ps(edge[t], acc[t][0]);
      _mm256_store_ps(edge[t] + 8, acc[t][1]);
      for (int c = 0; c < cols; ++c) out[t * rows + c] = edge[t][c];
    }
  }
}

// Prompts of up to kFewRows rows: packing a panel costs more than the
// products it serves (the 11264 x 2048 F32 gate/up took 15 ms for 1 row or
// 8 rows, against 2.7 ms for FloatMatmul's one pass). Instead the
// activation rows are transposed once per call, in groups of 8 * kX
// (xt[k * 8 * kX + t], zero past n), and an output's chain runs
// k = 0 .. in - 1 in lane t of one register: the panels' order, so the same
// bits. kR weight rows at a time, held in cache while every group passes:
// kR broadcasts and kX loads feed kR * kX fused multiply-adds per k.
constexpr int64_t kFewRows = 64;

// Rows j < R of w (`in` floats apart) against one group of xt; writes
// out[t * rows + j] for t < count.
template <int R, int kX>
__attribute__((noinline))  // inlined, GCC spilled the accumulators to the stack
void FewRowsTile(const float* w, int64_t in, const float* xt, int64_t count,
                 float* out, int64_t rows) {
  __m256 acc[R][kX];
  // Loops over j and c are unrolled so that the accumulators stay in registers.
#pragma GCC unroll 8
  for (int j = 0; j < R; ++j) {
#pragma GCC unroll 2
    for (int c = 0; c < kX; ++c) acc[j][c] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < in; ++k) {
    __m256 xv[kX];
#pragma GCC unroll 2
    for (int c = 0; c < kX; ++c) xv[c] = _mm256_load_ps(xt + k * 8 * kX + 8 * c);
#pragma GCC unroll 8
    for (int j = 0; j < R; ++j) {
      const __m256 wk = _mm256_broadcast_ss(w + j * in + k);
#pragma GCC unroll 2
      for (int c = 0; c < kX; ++c) acc[j][c] = _mm256_fmadd_ps(wk, xv[c], acc[j][c]);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < R; ++j) {
    alignas(32) float lanes[8 * kX];
#pragma GCC unroll 2
    for (int c = 0; c < kX; ++c) _mm256_store_ps(lanes + 8 * c, acc[j][c]);
    for (int64_t t = 0; t < count; ++t) out[t * rows + j] = lanes[t];
  }
}

// Weight rows [r0, r1) against all n rows, transposed in xt.
template <int kX>
void FewRowsRange(GgmlType type, const void* weight, int64_t in, int64_t r0, int64_t r1,
                  const float* xt, int64_t n, float* out, int64_t rows,
                  std::vector<float>* widened) {
  constexpr int kR = kX == 1 ? 8 : 6;  // accumulators + kX + 1 of the 16 registers
  constexpr int64_t kWidth = 8 * kX;
  for (int64_t r = r0; r < r1;) {
    const int64_t tile = std::min<int64_t>(kR, r1 - r);
    const float* w = static_cast<const float*>(weight) + r * in;
    if (type != GgmlType::kF32) {  // widened once for every group
      widened->resize(static_cast<size_t>(tile * in));
      WidenRowToFloat(type, static_cast<const uint16_t*>(weight) + r * in, tile * in,
                      widened->data());
      w = widened->data();
    }
    for (int64_t t = 0; t < n; t += kWidth) {
      const float* group = xt + t * in;
      const int64_t count = std::min(kWidth, n - t);
      float* o = out + t * rows + r;
      if (tile == kR) {
        FewRowsTile<kR, kX>(w, in, group, count, o, rows);
      } else {
        for (int64_t j = 0; j < tile; ++j) {
          FewRowsTile<1, kX>(w + j * in, in, group, count, o + j, rows);
        }
      }
    }
    r += tile;
  }
}

void FewRows(GgmlType type, const void* weight, int64_t rows, int64_t in, const float* x,
             int64_t n, float* out, const ParallelFor& parallel_for) {
  const int64_t width = n <= 8 ? 8 : 16;  // lanes of xt per k
  const int64_t groups = (n + width - 1) / width;
  thread_local std::vector<float> storage;
  storage.assign(static_cast<size_t>(groups * width * in + 8), 0.0f);
  float* xt = storage.data() + (8 - reinterpret_cast<uintptr_t>(storage.data()) / 4 % 8) % 8;
  for (int64_t t = 0; t < n; ++t) {
    float* group = xt + t / width * width * in;
    for (int64_t k = 0; k < in; ++k) group[k * width + t % width] = x[t * in + k];
  }
  constexpr int64_t kRowsPerTask = 48;  // whole tiles of 8 and of 6 rows
  parallel_for(0, (rows + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t b, int64_t e) {
    std::vector<float> widened;
    const int64_t r0 = b * kRowsPerTask, r1 = std::min(rows, e * kRowsPerTask);
    if (width == 8) {
      FewRowsRange<1>(type, weight, in, r0, r1, xt, n, out, rows, &widened);
    } else {
      FewRowsRange<2>(type, weight, in, r0, r1, xt, n, out, rows, &widened);
    }
  });
}

void TileAnyRows(int count, const float* panel, int64_t depth, const float* x, int64_t in,
                 float* out, int64_t rows, int cols, bool first) {
  switch (count) {
    case 1: Tile<1>(panel, depth, x, in, out, rows, cols, first); break;
    case 2: Tile<2>(panel, depth, x, in, out, rows, cols, first); break;
    case 3: Tile<3>(panel, depth, x, in, out, rows, cols, first); break;
    case 4: Tile<4>(panel, depth, x, in, out, rows, cols, first); break;
    case 5: Tile<5>(panel, depth, x, in, out, rows, cols, first); break;
    default: Tile<6>(panel, depth, x, in, out, rows, cols, first); break;
  }
}

// n activation rows times a packed kPanel-wide panel, kTileRows at a time
// (the signature of float_gemm_avx512::PanelTimesRows).
void PanelTimesRowsAvx2(const float* panel, int64_t depth, const float* x, int64_t in, int64_t n,
                        float* out, int64_t rows, int cols, bool first) {
  for (int64_t t = 0; t < n; t += kTileRows) {
    const int count = static_cast<int>(std::min<int64_t>(kTileRows, n - t));
    TileAnyRows(count, panel, depth, x + t * in, in, out + t * rows, rows, cols, first);
  }
}

// Asks for the weight rows [r0, r0 + count), columns [k0, k0 + depth), to
// be brought into the L2 cache.
void PrefetchPanel(GgmlType type, const void* weight, int64_t in, int64_t r0, int64_t count,
                   int64_t k0, int64_t depth) {
  const int64_t element = static_cast<int64_t>(ElementBytes(type));
  const auto* first = static_cast<const uint8_t*>(weight) + (r0 * in + k0) * element;
  for (int64_t r = 0; r < count; ++r) {
    const uint8_t* row = first + r * in * element;
    for (int64_t b = 0; b < depth * element; b += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(row + b), _MM_HINT_T1);
    }
  }
}

using PanelKernel = void (*)(const float* panel, int64_t depth, const float* x, int64_t in,
                             int64_t n, float* out, int64_t rows, int cols, bool first);

// The panel loop: weight rows `width` at a time, each depth block packed
// once and swept by all n activation rows with `kernel`.
void Panels(int width, PanelKernel kernel, GgmlType type, const void* weight, int64_t rows,
            int64_t in, const float* x, int64_t n, float* out, const ParallelFor& parallel_for) {
  const int64_t panels = (rows + width - 1) / width;
  parallel_for(0, panels, [&](int64_t p0, int64_t p1) {
    std::vector<float> storage(kDepth * width + 16);
    // 64-byte aligned panel.
    float* panel =
        storage.data() + (16 - reinterpret_cast<uintptr_t>(storage.data()) / 4 % 16) % 16;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t r0 = p * width;
      const int cols = static_cast<int>(std::min<int64_t>(width, rows - r0));
      for (int64_t k0 = 0; k0 < in; k0 += kDepth) {
        const int64_t depth = std::min(kDepth, in - k0);
        PackPanel(type, weight, in, r0, cols, k0, depth, panel, width);
        // The next block's weights asked for while the kernel runs (32 rows
        // of 1 KiB from memory are too many streams for the prefetchers).
        const bool last_block = k0 + kDepth >= in;
        if (!last_block || p + 1 < p1) {
          const int64_t next_r0 = last_block ? r0 + width : r0;
          const int64_t next_k0 = last_block ? 0 : k0 + kDepth;
          PrefetchPanel(type, weight, in, next_r0, std::min<int64_t>(width, rows - next_r0),
                        next_k0, std::min(kDepth, in - next_k0));
        }
        kernel(panel, depth, x + k0, in, n, out + r0, rows, cols, k0 == 0);
      }
    }
  });
}

#endif  // LLORCH_FLOAT_GEMM_AVX2

}  // namespace

namespace float_gemm_internal {

std::atomic<bool> allow_avx512{true};

void AllowAvx512(bool allow) { allow_avx512.store(allow); }

bool UsesAvx512() {
#ifdef LLORCH_FLOAT_GEMM_AVX2
  return allow_avx512.load(std::memory_order_relaxed) && float_gemm_avx512::Supported();
#else
  return false;
#endif
}

bool UsesAvx2() {
#ifdef LLORCH_FLOAT_GEMM_AVX2
  return true;
#else
  return false;
#endif
}

void FloatGemmPortable(GgmlType type, const void* weight, int64_t rows, int64_t in,
                       const float* x, int64_t n, float* out) {
  CheckArguments(type, rows, in, n);
  std::vector<float> widened;
  for (int64_t r = 0; r < rows; ++r) {
    const float* w = WeightRowsF32(type, weight, r, 1, in, &widened);
    for (int64_t t = 0; t < n; ++t) {
      float acc = 0.0f;
      for (int64_t k = 0; k < in; ++k) acc = std::fma(w[k], x[t * in + k], acc);
      out[t * rows + r] = acc;
    }
  }
}

}  // namespace float_gemm_internal

void FloatGemm(GgmlType type, const void* weight, int64_t rows, int64_t in, const float* x,
               int64_t n, float* out, const ParallelFor& parallel_for) {
  CheckArguments(type, rows, in, n);
  if (rows == 0 || n == 0) return;
#ifdef LLORCH_FLOAT_GEMM_AVX2
  if (n <= kFewRows) {
    FewRows(type, weight, rows, in, x, n, out, parallel_for);
    return;
  }
  if (float_gemm_internal::UsesAvx512()) {
    Panels(float_gemm_avx512::kPanel, &float_gemm_avx512::PanelTimesRows, type, weight, rows, in,
           x, n, out, parallel_for);
  } else {
    Panels(kPanel, &PanelTimesRowsAvx2, type, weight, rows, in, x, n, out, parallel_for);
  }
#else
  (void)parallel_for;
  float_gemm_internal::FloatGemmPortable(type, weight, rows, in, x, n, out);
#endif
}

}  // namespace llorch
