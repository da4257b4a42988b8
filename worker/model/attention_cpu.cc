#include "worker/model/attention_cpu.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace llorch {

void CausalAttention(const AttentionShape& shape, const float* q, int64_t n, int64_t pos,
                     const float* keys, const float* values, float scale, float* out,
                     const ParallelFor& parallel_for) {
  const int64_t heads = shape.heads, head_dim = shape.head_dim;
  const int64_t group = shape.heads / shape.kv_heads;
  // One task per (query row, head); each is computed the same way whatever
  // n is and whichever thread runs it.
  parallel_for(0, n * heads, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task / heads, h = task % heads;
      const int64_t last = pos + i;  // keys first..last are visible
      const int64_t first = shape.window > 0 ? std::max<int64_t>(0, last - shape.window + 1) : 0;
      const int64_t visible = last - first + 1;
      const float* query = q + (i * heads + h) * head_dim;                        // [head_dim]
      const float* k = keys + ((h / group) * shape.capacity + first) * head_dim;    // [visible, head_dim]
      const float* v = values + ((h / group) * shape.capacity + first) * head_dim;  // [visible, head_dim]
      float* o = out + i * heads * head_dim + h * head_dim;                        // [head_dim]
      scores.resize(visible);
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < visible; ++j) {
        const float* key = k + j * head_dim;
        float dot = 0.0f;
        for (int64_t d = 0; d < head_dim; ++d) dot += query[d] * key[d];
        scores[j] = dot * scale;
        max_score = std::max(max_score, scores[j]);
      }
      float total = 0.0f;
      for (int64_t j = 0; j < visible; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        total += scores[j];
      }
      const float inv_total = 1.0f / total;
      std::fill(o, o + head_dim, 0.0f);
      for (int64_t j = 0; j < visible; ++j) {
        const float weight = scores[j] * inv_total;
        const float* value = v + j * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) o[d] += weight * value[d];
      }
    }
  });
}

}  // namespace llorch
