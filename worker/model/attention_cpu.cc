#include "worker/model/attention_cpu.h"

#include <algorithm>
#include <vector>

#include "worker/model/ggml_ops.h"

namespace llorch {

void CausalAttention(const AttentionShape& shape, const float* q, int64_t n, int64_t pos,
                     const float* keys, const float* values, float scale, bool decode,
                     GgmlVariant variant, float* out, const ParallelFor& parallel_for) {
  const int64_t heads = shape.heads, head_dim = shape.head_dim;
  const int64_t group = shape.heads / shape.kv_heads;
  // One task per (query row, head); each is computed the same way whatever
  // n is and whichever thread runs it, in llama.cpp's order (ggml_ops.h).
  parallel_for(0, n * heads, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task / heads, h = task % heads;
      const int64_t last = pos + i;  // keys first..last are visible
      const int64_t first = shape.window > 0 ? std::max<int64_t>(0, last - shape.window + 1) : 0;
      const float* query = q + (i * heads + h) * head_dim;            // [head_dim]
      const float* k = keys + (h / group) * shape.capacity * head_dim;    // [capacity, head_dim]
      const float* v = values + (h / group) * shape.capacity * head_dim;  // [capacity, head_dim]
      scratch.resize(last + 1);
      GgmlAttendRow(query, k, v, head_dim, first, last, scale, decode, variant, scratch.data(),
                    out + i * heads * head_dim + h * head_dim, shape.block_table,
                    shape.block_size);
    }
  });
}

}  // namespace llorch
