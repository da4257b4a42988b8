// llorch's CUDA kernels for decode steps (decode_gemv.cu, decode_fused.cu),
// in plain CUDA runtime types, no libtorch: device_kernels_cuda.cc wraps
// them for tensors. Every launch goes on `stream` (capturable in a CUDA
// graph) and returns the launch's error (cudaErrorInvalidValue for shapes
// it does not take). Tensors are row-major, contiguous, of one `type`.
#ifndef LLORCH_WORKER_MODEL_CUDA_KERNELS_H_
#define LLORCH_WORKER_MODEL_CUDA_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace llorch::cuda_kernels {

enum class ElementType { kBf16, kF16 };

// Most activation rows LaunchDecodeGemv takes (the jobs of a decode step).
inline constexpr int64_t kMaxGemvRows = 8;

// y[m, n] = x[m, k] . w[n, k]^T (+ bias[n] where bias is not null),
// accumulated in F32 and rounded once; 1 <= m <= kMaxGemvRows, k % 8 == 0,
// every pointer 16-byte aligned. Each weight byte is read once.
cudaError_t LaunchDecodeGemv(ElementType type, const void* w, const void* x, const void* bias,
                             void* y, int64_t m, int64_t n, int64_t k, cudaStream_t stream);

// Per row of x: [rows, hidden]: sum = x + delta (where delta and sum are
// not null; both or neither), then out = weight * RMSNorm(sum) in
// transformers' roundings (the norm in F32, rounded, then times weight).
cudaError_t LaunchAddRmsNorm(ElementType type, const void* x, const void* delta,
                             const void* weight, void* sum, void* out, int64_t rows,
                             int64_t hidden, float eps, cudaStream_t stream);

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, ffn + i]: [rows, ffn], each
// op rounded to the type as libtorch's at::silu and product.
cudaError_t LaunchSiluGated(ElementType type, const void* gate_up, void* out, int64_t rows,
                            int64_t ffn, cudaStream_t stream);

// A decode step's heads and the paged KV pool of one layer: keys and values
// [kv_heads, slots, head_dim], of the activations' type.
struct RopeShape {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  int64_t rope_dim = 0;   // the first rope_dim dimensions of a head rotate
  bool adjacent = false;  // pairs (2i, 2i + 1); else (i, i + rope_dim / 2)
  int64_t slots = 0;      // rows of the pool
};

// For each of `jobs` rows of qkv: [jobs, (heads + 2 kv_heads) head_dim]
// (queries | keys | values), cos and sin: [jobs, rope_dim / 2] (of the
// type): q[job] = the rotated query heads ([jobs, heads, head_dim]), the
// rotated key heads and the value heads written to pool row
// write_slots[job] (device int64), each op rounded as LlamaModel::Rope's.
cudaError_t LaunchRopeAndWrite(ElementType type, const void* qkv, const void* cos,
                               const void* sin, const int64_t* write_slots, void* q,
                               void* k_pool, void* v_pool, int64_t jobs, const RopeShape& shape,
                               cudaStream_t stream);

struct AttentionShape {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  int64_t slots = 0;           // rows of the pool
  int64_t positions = 0;       // columns of read_slots
  int64_t window = 0;          // sliding window (0: none)
  float sqrt_head_dim = 1.0f;  // scores are times its inverse (libtorch divides so)
};

// Dynamic shared memory one block of LaunchDecodeAttention uses (beside
// kAttentionStaticSharedBytes of its own); a launch fails where the device
// allows less per block (cudaDevAttrMaxSharedMemoryPerBlockOptin: 227 KiB
// on an H100/H200, 163 KiB on an A100).
size_t AttentionSharedBytes(const AttentionShape& shape);
inline constexpr size_t kAttentionStaticSharedBytes = 1024;

// out[job]: [heads * head_dim] = attention of q[job] ([jobs, heads,
// head_dim]) over the pool rows read_slots[job, 0 .. pos[job]] (device
// int64, [jobs, positions] and [jobs]; the last `window` of them if set):
// scores T(T(q.k) * (1 / sqrt_head_dim)), softmax in F32, probabilities rounded
// to T, their F32 sum with the values rounded to T (transformers' eager
// attention's roundings).
cudaError_t LaunchDecodeAttention(ElementType type, const void* q, const void* k_pool,
                                  const void* v_pool, const int64_t* read_slots,
                                  const int64_t* pos, void* out, int64_t jobs,
                                  const AttentionShape& shape, cudaStream_t stream);

}  // namespace llorch::cuda_kernels

#endif  // LLORCH_WORKER_MODEL_CUDA_KERNELS_H_
