#include "worker/model/attention_cpu.h"

#include <algorithm>
#include <vector>

#include "worker/model/ggml_ops.h"

namespace llorch {

void CausalAttention(const AttentionShape& shape, const float* q, int64_t n, int64_t pos,
                     const void* keys, const void* values, float scale, bool decode,
                     GgmlVariant variant, float* out, const ParallelFor& parallel_for) {
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
                      head_dim, pos + n, shape.block_table, shape.block_size, &prepared[kv]);
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
  // One task per (query row, head); each is computed the same way whatever
  // n is and whichever thread runs it, in llama.cpp's order (ggml_ops.h).
  parallel_for(0, n * heads, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task / heads, h = task % heads;
      const int64_t last = pos + i;  // keys first..last are visible
      const int64_t first = shape.window > 0 ? std::max<int64_t>(0, last - shape.window + 1) : 0;
      const float* query = q + (i * heads + h) * head_dim;            // [head_dim]
      const void* k = static_cast<const uint8_t*>(keys) + (h / group) * head_bytes;
      const void* v = static_cast<const uint8_t*>(values) + (h / group) * head_bytes;
      scratch.resize(last + 1);
      GgmlAttendRow(query, k, v, shape.element, head_dim, first, last, scale, decode, variant,
                    scratch.data(), out + i * heads * head_dim + h * head_dim, shape.block_table,
                    shape.block_size);
    }
  });
}

}  // namespace llorch
