// The scores of GgmlAttendPromptRow (ggml_ops.h) over a prepared KV head:
// KeyDot's sums (ggml_vec_dot_f32 in the variant's kLanes-lane order) run
// across keys, one position per lane of a W-wide register, each lane doing
// exactly the steps KeyDot does for its key (four chains of fmas over steps
// of 4 * kLanes dimensions, the fold (0 + 2) + (1 + 3), then ReduceAdd16 or
// HaddReduce8), as vertical adds over transposed keys instead of shuffles
// per key: the same bits, about a third of the instructions.
//
// Templates over a register type K (Zero, Load, Set1, Add, Mul, Fma, Store,
// kWidth), instantiated by ggml_ops.cc (8 keys, AVX2) and
// prepared_scores_avx512.cc (16 keys, AVX-512F). `static`: each file keeps
// its own copy (no weak symbols; see isa_objects_define_no_weak_symbols).
#ifndef LLORCH_WORKER_MODEL_PREPARED_SCORES_H_
#define LLORCH_WORKER_MODEL_PREPARED_SCORES_H_

#include <cstdint>

namespace llorch {
namespace prepared_scores {

// Lane l of KeyDot's folded register for W keys. kt: [head_dim][W].
template <class K, int kLanes>
static inline typename K::Vec FoldedLane(const float* kt, const float* query, int64_t steps,
                                         int l) {
  using Vec = typename K::Vec;
  constexpr int kWidth = K::kWidth;
  Vec acc[4] = {K::Zero(), K::Zero(), K::Zero(), K::Zero()};
  for (int64_t i = 0; i < steps; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const int64_t d = (4 * i + j) * kLanes + l;
      acc[j] = K::Fma(K::Load(kt + d * kWidth), K::Set1(query[d]), acc[j]);
    }
  }
  return K::Add(K::Add(acc[0], acc[2]), K::Add(acc[1], acc[3]));
}

// KeyDot's sums for W keys (head_dim % (4 * kLanes) == 0: no tail).
template <class K, int kLanes>
static inline typename K::Vec KeySums(const float* kt, const float* query, int64_t head_dim) {
  using Vec = typename K::Vec;
  const int64_t steps = head_dim / (4 * kLanes);
  Vec e[4];
  if constexpr (kLanes == 16) {
    // ReduceAdd16: quarter_i = f_i + f_(i + 8), eighth_i = quarter_i +
    // quarter_(i + 4), then (e0 + e2) + (e1 + e3).
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      e[i] = K::Add(K::Add(FoldedLane<K, 16>(kt, query, steps, i),
                           FoldedLane<K, 16>(kt, query, steps, i + 8)),
                    K::Add(FoldedLane<K, 16>(kt, query, steps, i + 4),
                           FoldedLane<K, 16>(kt, query, steps, i + 12)));
    }
    return K::Add(K::Add(e[0], e[2]), K::Add(e[1], e[3]));
  } else {
    // HaddReduce8: t_i = f_i + f_(i + 4), then (t0 + t1) + (t2 + t3).
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      e[i] = K::Add(FoldedLane<K, 8>(kt, query, steps, i),
                    FoldedLane<K, 8>(kt, query, steps, i + 4));
    }
    return K::Add(K::Add(e[0], e[1]), K::Add(e[2], e[3]));
  }
}

// Scores (sum * scale, as AttendRow) of keys first..last into scratch[j];
// returns their maximum, taken in increasing j as std::max does.
template <class K, int kLanes>
static inline float Scores(const float* keys_t, const float* query, int64_t head_dim,
                           int64_t first, int64_t last, float scale, float* scratch) {
  constexpr int kWidth = K::kWidth;
  float max_score = -__builtin_inff();
  alignas(64) float sums[kWidth];
  for (int64_t b = first / kWidth; b * kWidth <= last; ++b) {
    K::Store(sums, K::Mul(KeySums<K, kLanes>(keys_t + b * head_dim * kWidth, query, head_dim),
                          K::Set1(scale)));
    for (int l = 0; l < kWidth; ++l) {
      const int64_t j = b * kWidth + l;
      if (j < first || j > last) continue;
      scratch[j] = sums[l];
      max_score = max_score < sums[l] ? sums[l] : max_score;
    }
  }
  return max_score;
}

}  // namespace prepared_scores

// 16 keys per register, in prepared_scores_avx512.cc (compiled for
// AVX-512F): call Scores only where Supported().
namespace prepared_scores_avx512 {
bool Supported();
// prepared_scores::Scores with kLanes = `lanes` (8 or 16).
float Scores(int lanes, const float* keys_t, const float* query, int64_t head_dim, int64_t first,
             int64_t last, float scale, float* scratch);
}  // namespace prepared_scores_avx512

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_PREPARED_SCORES_H_
