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
// kSteps: head_dim / (4 * kLanes) as a constant (the loop unrolled), or 0
// for `steps` at run time.
template <class K, int kLanes, int kSteps>
static inline typename K::Vec FoldedLane(const float* kt, const float* query, int64_t steps,
                                         int l) {
  using Vec = typename K::Vec;
  constexpr int kWidth = K::kWidth;
  if constexpr (kSteps > 0) steps = kSteps;
  Vec acc[4] = {K::Zero(), K::Zero(), K::Zero(), K::Zero()};
#pragma GCC unroll 4
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
template <class K, int kLanes, int kSteps>
static inline typename K::Vec KeySums(const float* kt, const float* query, int64_t head_dim) {
  using Vec = typename K::Vec;
  const int64_t steps = head_dim / (4 * kLanes);
  Vec e[4];
  if constexpr (kLanes == 16) {
    // ReduceAdd16: quarter_i = f_i + f_(i + 8), eighth_i = quarter_i +
    // quarter_(i + 4), then (e0 + e2) + (e1 + e3).
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      e[i] = K::Add(K::Add(FoldedLane<K, 16, kSteps>(kt, query, steps, i),
                           FoldedLane<K, 16, kSteps>(kt, query, steps, i + 8)),
                    K::Add(FoldedLane<K, 16, kSteps>(kt, query, steps, i + 4),
                           FoldedLane<K, 16, kSteps>(kt, query, steps, i + 12)));
    }
    return K::Add(K::Add(e[0], e[2]), K::Add(e[1], e[3]));
  } else {
    // HaddReduce8: t_i = f_i + f_(i + 4), then (t0 + t1) + (t2 + t3).
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      e[i] = K::Add(FoldedLane<K, 8, kSteps>(kt, query, steps, i),
                    FoldedLane<K, 8, kSteps>(kt, query, steps, i + 4));
    }
    return K::Add(K::Add(e[0], e[1]), K::Add(e[2], e[3]));
  }
}

// Scores (sum * scale, as AttendRow) for rows r < count: query r at
// queries + r * query_stride over keys first[r]..last[r], into
// scratch[r * scratch_stride + j]; max_scores[r] their maximum, taken in
// increasing j as std::max does. Key blocks outer, rows inner: a block stays
// in L1 while every row takes it (one row at a time streamed the whole head
// from L2 per row).
template <class K, int kLanes, int kSteps>
static inline void ScoresWith(const float* keys_t, const float* queries, int64_t query_stride,
                              int count, const int64_t* first, const int64_t* last,
                              int64_t head_dim, float scale, float* scratch,
                              int64_t scratch_stride, float* max_scores) {
  constexpr int kWidth = K::kWidth;
  int64_t lo = first[0], hi = last[0];
  for (int r = 0; r < count; ++r) {
    lo = lo < first[r] ? lo : first[r];
    hi = hi > last[r] ? hi : last[r];
    max_scores[r] = -__builtin_inff();
  }
  alignas(64) float sums[kWidth];
  for (int64_t b = lo / kWidth; b * kWidth <= hi; ++b) {
    const float* block = keys_t + b * head_dim * kWidth;
    for (int r = 0; r < count; ++r) {
      if (b * kWidth > last[r] || b * kWidth + kWidth - 1 < first[r]) continue;
      K::Store(sums, K::Mul(KeySums<K, kLanes, kSteps>(block, queries + r * query_stride,
                                                       head_dim),
                            K::Set1(scale)));
      float* row_scratch = scratch + r * scratch_stride;
      float max_score = max_scores[r];
      for (int l = 0; l < kWidth; ++l) {
        const int64_t j = b * kWidth + l;
        if (j < first[r] || j > last[r]) continue;
        row_scratch[j] = sums[l];
        max_score = max_score < sums[l] ? sums[l] : max_score;
      }
      max_scores[r] = max_score;
    }
  }
}

// ScoresWith with constant steps for head sizes 64, 128 and 256 (per
// kLanes), run-time steps for other multiples of 64.
template <class K, int kLanes>
static inline void Scores(const float* keys_t, const float* queries, int64_t query_stride,
                          int count, const int64_t* first, const int64_t* last, int64_t head_dim,
                          float scale, float* scratch, int64_t scratch_stride,
                          float* max_scores) {
  switch (head_dim / (4 * kLanes)) {
    case 1:
      return ScoresWith<K, kLanes, 1>(keys_t, queries, query_stride, count, first, last,
                                      head_dim, scale, scratch, scratch_stride, max_scores);
    case 2:
      return ScoresWith<K, kLanes, 2>(keys_t, queries, query_stride, count, first, last,
                                      head_dim, scale, scratch, scratch_stride, max_scores);
    case 4:
      return ScoresWith<K, kLanes, 4>(keys_t, queries, query_stride, count, first, last,
                                      head_dim, scale, scratch, scratch_stride, max_scores);
    default:
      return ScoresWith<K, kLanes, 0>(keys_t, queries, query_stride, count, first, last,
                                      head_dim, scale, scratch, scratch_stride, max_scores);
  }
}

}  // namespace prepared_scores

// 16 keys per register, in prepared_scores_avx512.cc (compiled for
// AVX-512F): call Scores only where Supported().
namespace prepared_scores_avx512 {
bool Supported();
// prepared_scores::Scores with kLanes = `lanes` (8 or 16).
void Scores(int lanes, const float* keys_t, const float* queries, int64_t query_stride, int count,
            const int64_t* first, const int64_t* last, int64_t head_dim, float scale,
            float* scratch, int64_t scratch_stride, float* max_scores);
}  // namespace prepared_scores_avx512

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_PREPARED_SCORES_H_
