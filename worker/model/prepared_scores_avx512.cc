#include "worker/model/prepared_scores.h"

#include "worker/model/cpu_isa.h"

#if defined(__x86_64__) && defined(__AVX512F__)
#include <immintrin.h>
#define LLORCH_PREPARED_SCORES_AVX512 1
#endif

// Compiled with -mavx512f and -ffp-contract=off.

namespace llorch {
namespace prepared_scores_avx512 {

#ifdef LLORCH_PREPARED_SCORES_AVX512
namespace {

struct Keys16 {
  using Vec = __m512;
  static constexpr int kWidth = 16;
  static Vec Zero() { return _mm512_setzero_ps(); }
  static Vec Load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec Set1(float x) { return _mm512_set1_ps(x); }
  static Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
};

}  // namespace

bool Supported() {
  static const bool supported =
      CpuIsaAllowed(CpuIsa::kAvx512) && __builtin_cpu_supports("avx512f");
  return supported;
}

void Scores(int lanes, const float* keys_t, const float* queries, int64_t query_stride, int count,
            const int64_t* first, const int64_t* last, int64_t head_dim, float scale,
            float* scratch, int64_t scratch_stride, float* max_scores) {
  if (lanes == 16) {
    prepared_scores::Scores<Keys16, 16>(keys_t, queries, query_stride, count, first, last,
                                        head_dim, scale, scratch, scratch_stride, max_scores);
  } else {
    prepared_scores::Scores<Keys16, 8>(keys_t, queries, query_stride, count, first, last,
                                       head_dim, scale, scratch, scratch_stride, max_scores);
  }
}

#else  // !LLORCH_PREPARED_SCORES_AVX512

bool Supported() { return false; }
void Scores(int, const float*, const float*, int64_t, int, const int64_t*, const int64_t*,
            int64_t, float, float*, int64_t, float*) {}

#endif

}  // namespace prepared_scores_avx512
}  // namespace llorch
