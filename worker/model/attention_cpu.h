// Causal attention on the CPU, computed one query row at a time in a fixed
// order. A row's result depends only on that row's query and the keys and
// values it sees, never on how many rows share the call: a prompt prefilled
// in any chunking, or a job decoded alone or in a batch, gives bit-identical
// outputs. (With 8-bit activation rounding downstream, the last-bit
// differences of shape-dependent GEMMs flip roundings and change tokens.)
#ifndef LLORCH_WORKER_MODEL_ATTENTION_CPU_H_
#define LLORCH_WORKER_MODEL_ATTENTION_CPU_H_

#include <cstdint>

#include "worker/model/ggml_ops.h"
#include "worker/model/quant_matmul.h"

namespace llorch {

struct AttentionShape {
  int64_t heads = 0;
  int64_t kv_heads = 0;   // query head h reads KV head h / (heads / kv_heads)
  int64_t head_dim = 0;
  int64_t capacity = 0;   // cache rows per KV head
  int64_t window = 0;     // > 0: a query sees only the last `window` keys (itself included)
  // Paged cache: position j is row block_table[j / block_size] * block_size
  // + j % block_size. Null: position j is row j.
  const int32_t* block_table = nullptr;
  int64_t block_size = 0;
  KvElement element = KvElement::kF32;  // of keys and values
};

// q: [n, heads, head_dim]; keys, values: [kv_heads, capacity, head_dim] with
// the rows of positions [0, pos + n) filled; query row i sits at pos + i and sees keys
// 0..pos + i (or the last `window` of them). out: [n, heads * head_dim]. All contiguous float32.
// `decode`: the rows are generated tokens, summed in llama.cpp's one-token
// order (GgmlAttendRow); prompt rows use its batch order. `variant`: whose
// register width sets those orders. Rows attended without a prepared head go
// to `parallel_for` in at least `min_tasks` tasks where there are that many
// heads (query heads that share a KV head are attended together, up to 4).
void CausalAttention(const AttentionShape& shape, const float* q, int64_t n, int64_t pos,
                     const void* keys, const void* values, float scale, bool decode,
                     GgmlVariant variant, float* out, const ParallelFor& parallel_for = SerialFor,
                     int64_t min_tasks = 1);

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_ATTENTION_CPU_H_
