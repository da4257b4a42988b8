#include "worker/model/attention_cpu.h"

#include <algorithm>
#include <vector>

#include "worker/model/ggml_ops.h"

namespace llorch {

void CausalAttention(const AttentionShape& shape, const float* q, int64_t n, int64_t pos,
                     const void* keys, const void* values, float scale, bool decode,
                     GgmlVariant variant, float* out, const ParallelFor& parallel_for,
                     int64_t min_tasks) {
  const int64_t heads = shape.heads, head_dim = shape.head_dim;
  const int64_t group = shape.heads / shape.kv_heads;
  const int64_t head_bytes =  // one KV head's rows
      shape.capacity * head_dim * (shape.element == KvElement::kF32 ? 4 : 2);
  // Prompt rows: each KV head's keys and values widened (and the keys
  // transposed) once for all the rows that read it; the same bits as
  // GgmlAttendRow (ggml_ops.h).
  // (Up to 128 MiB of prepared keys and values: past that, as at 16k
  // positions of 8 KV heads of 128, the rows read the cache as it is.)
  constexpr int64_t kMaxPreparedBytes = int64_t{128} << 20;
  const int64_t prepared_bytes = shape.kv_heads * (pos + n) * head_dim * 2 * int64_t{4};
  if (!decode && n * group >= 2 && GgmlPreparedAttentionSupports(head_dim) &&
      prepared_bytes <= kMaxPreparedBytes) {
    // Reused across layers and calls. The lambdas below use this reference:
    // naming the thread_local there would give each thread its own vector.
    thread_local std::vector<GgmlPreparedKv> prepared_here;
    std::vector<GgmlPreparedKv>& prepared = prepared_here;
    prepared.resize(shape.kv_heads);
    parallel_for(0, shape.kv_heads, [&](int64_t begin, int64_t end) {
      for (int64_t kv = begin; kv < end; ++kv) {
        GgmlPrepareKv(static_cast<const uint8_t*>(keys) + kv * head_bytes,
                      static_cast<const uint8_t*>(values) + kv * head_bytes, shape.element,
                      head_dim, pos + n, shape.block_table, shape.block_size, &prepared[kv], /*width=*/0, variant);
      }
    });
    // Tasks: kRows consecutive query rows of one head, which share its keys
    // while they are in cache.
    constexpr int64_t kRows = 8;
    const int64_t row_blocks = (n + kRows - 1) / kRows;
    parallel_for(0, heads * row_blocks, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch;
      int64_t first[kRows], last[kRows];
      for (int64_t task = begin; task < end; ++task) {
        const int64_t h = task / row_blocks, i0 = task % row_blocks * kRows;
        const int count = static_cast<int>(std::min(kRows, n - i0));
        for (int r = 0; r < count; ++r) {
          last[r] = pos + i0 + r;
          first[r] = shape.window > 0 ? std::max<int64_t>(0, last[r] - shape.window + 1) : 0;
        }
        const int64_t scratch_stride = last[count - 1] + 1;
        scratch.resize(count * scratch_stride);
        GgmlAttendPromptRows(q + (i0 * heads + h) * head_dim, heads * head_dim, count, first,
                             last, prepared[h / group], head_dim, scale, variant, scratch.data(),
                             scratch_stride, out + i0 * heads * head_dim + h * head_dim,
                             heads * head_dim);
      }
    });
    return;
  }
  // One task per (query row, KV head, run of the query heads that read it):
  // each head is computed the same way whatever n is, however heads are
  // grouped and whichever thread runs it, in llama.cpp's order (ggml_ops.h).
  // Up to 4 heads a task (their key and value rows loaded once), fewer while
  // that leaves under min_tasks tasks.
  const int64_t rows_of_kv = n * shape.kv_heads;
  int64_t runs = (group + 3) / 4;  // per KV head
  while (runs < group && rows_of_kv * runs < min_tasks) ++runs;
  const int64_t run_heads = (group + runs - 1) / runs;
  runs = (group + run_heads - 1) / run_heads;
  parallel_for(0, rows_of_kv * runs, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task / (shape.kv_heads * runs), kv = task / runs % shape.kv_heads;
      const int64_t h0 = kv * group + task % runs * run_heads;  // first query head
      const int count = static_cast<int>(std::min(run_heads, (kv + 1) * group - h0));
      const int64_t last = pos + i;  // keys first..last are visible
      const int64_t first = shape.window > 0 ? std::max<int64_t>(0, last - shape.window + 1) : 0;
      scratch.resize(count * (last + 1));
      GgmlAttendHeads(q + (i * heads + h0) * head_dim, count,
                      static_cast<const uint8_t*>(keys) + kv * head_bytes,
                      static_cast<const uint8_t*>(values) + kv * head_bytes, shape.element,
                      head_dim, first, last, scale, decode, variant, scratch.data(), last + 1,
                      out + (i * heads + h0) * head_dim, shape.block_table, shape.block_size);
    }
  });
}

}  // namespace llorch
