// A decode step's attention on CUDA in two kernels where libtorch's ops take
// ~25 a layer (RoPE's casts, products and concatenation, the pool writes,
// the gathers, the scores, mask, softmax and the weighted sum):
//  1. RopeAndWrite: rotates each job's query and key heads (the first
//     rope_dim dimensions: halves, or adjacent pairs) as LlamaModel::Rope's
//     ops round them, T(T(x0 c) - T(x1 s)) and T(T(x0 s) + T(x1 c)), writes
//     the key and the value into the job's new pool row and the query to q.
//  2. DecodeAttention: per job and KV head, the scores of its query heads
//     against the positions it sees (t <= pos, the last `window` of them if
//     set) as transformers' ops round them, T(T(q.k) * (1 / sqrt(head_dim))), a
//     softmax in F32, each probability rounded to T, and the F32 sum of
//     probability times value rounded to T.
// Only summation orders differ from libtorch's.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "worker/model/cuda/element.cuh"
#include "worker/model/cuda/kernels.h"

namespace llorch::cuda_kernels {
namespace {

constexpr int kRopeThreads = 256;
constexpr int kAttentionThreads = 128;
constexpr int kAttentionWarps = kAttentionThreads / 32;

// One block per job b. qkv row: [q heads | k heads | v heads] x head_dim.
template <typename T>
__global__ void __launch_bounds__(kRopeThreads)
    RopeAndWriteKernel(const T* __restrict__ qkv, const T* __restrict__ cos,
                       const T* __restrict__ sin, const int64_t* __restrict__ write_slots,
                       T* __restrict__ q, T* __restrict__ k_pool, T* __restrict__ v_pool,
                       RopeShape shape) {
  const int64_t b = blockIdx.x;
  const int64_t head_dim = shape.head_dim, half = shape.rope_dim / 2;
  const int64_t q_dim = shape.heads * head_dim, kv_dim = shape.kv_heads * head_dim;
  const T* row = qkv + b * (q_dim + 2 * kv_dim);
  const int64_t slot = write_slots[b];
  for (int64_t idx = threadIdx.x; idx < q_dim + kv_dim; idx += kRopeThreads) {
    const int64_t head = idx / head_dim, d = idx % head_dim;
    const T* x = row + head * head_dim;
    float value;
    if (d < shape.rope_dim) {
      const bool first = shape.adjacent ? d % 2 == 0 : d < half;
      const int64_t i = shape.adjacent ? d / 2 : d % half;
      const float x0 = ToFloat(shape.adjacent ? x[2 * i] : x[i]);
      const float x1 = ToFloat(shape.adjacent ? x[2 * i + 1] : x[i + half]);
      const float c = ToFloat(cos[b * half + i]), s = ToFloat(sin[b * half + i]);
      value = first ? Round<T>(Round<T>(x0 * c) - Round<T>(x1 * s))
                    : Round<T>(Round<T>(x0 * s) + Round<T>(x1 * c));
    } else {
      value = ToFloat(x[d]);
    }
    if (head < shape.heads) {
      q[b * q_dim + idx] = FromFloat<T>(value);
    } else {
      const int64_t kv_head = head - shape.heads;
      k_pool[(kv_head * shape.slots + slot) * head_dim + d] = FromFloat<T>(value);
    }
  }
  for (int64_t idx = threadIdx.x; idx < kv_dim; idx += kRopeThreads) {
    const int64_t kv_head = idx / head_dim, d = idx % head_dim;
    v_pool[(kv_head * shape.slots + slot) * head_dim + d] = row[q_dim + kv_dim + idx];
  }
}

// The block's maximum / sum of v (every thread gets it). scratch: 32 floats.
template <bool kMax>
__device__ float BlockReduce(float v, float* scratch) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other = __shfl_xor_sync(0xFFFFFFFFu, v, offset);
    v = kMax ? fmaxf(v, other) : v + other;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch free (an earlier reduction's readers are done)
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < kAttentionThreads / 32 ? scratch[lane] : (kMax ? -INFINITY : 0.0f);
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other = __shfl_xor_sync(0xFFFFFFFFu, v, offset);
    v = kMax ? fmaxf(v, other) : v + other;
  }
  return v;
}

// One block per (job b, KV head h). Dynamic shared memory: the group's
// queries in F32 (group x head_dim), its scores (group x positions), then
// each warp's partial sums of the values (kAttentionWarps x group x head_dim).
template <typename T>
__global__ void __launch_bounds__(kAttentionThreads)
    DecodeAttentionKernel(const T* __restrict__ q, const T* __restrict__ k_pool,
                          const T* __restrict__ v_pool, const int64_t* __restrict__ read_slots,
                          const int64_t* __restrict__ pos, T* __restrict__ out,
                          AttentionShape shape) {
  extern __shared__ float shared[];
  __shared__ float scratch[32];  // within kAttentionStaticSharedBytes
  const int64_t b = blockIdx.x / shape.kv_heads, h = blockIdx.x % shape.kv_heads;
  const int64_t head_dim = shape.head_dim, group = shape.heads / shape.kv_heads;
  const int64_t positions = shape.positions;
  float* queries = shared;                     // [group, head_dim]
  float* scores = shared + group * head_dim;   // [group, positions]
  const T* q_group = q + (b * shape.heads + h * group) * head_dim;
  for (int64_t i = threadIdx.x; i < group * head_dim; i += kAttentionThreads) {
    queries[i] = ToFloat(q_group[i]);
  }
  const int64_t last = pos[b];
  const int64_t first = shape.window > 0 && last - shape.window + 1 > 0 ? last - shape.window + 1 : 0;
  const T* keys = k_pool + h * shape.slots * head_dim;
  const T* values = v_pool + h * shape.slots * head_dim;
  const int64_t* slots = read_slots + b * positions;
  __syncthreads();
  // Scores, one warp per position (its lanes along the key row, which they
  // read together): T(T(q.k) * (1 / sqrt(head_dim))), as libtorch divides
  // by a scalar (times its inverse).
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float inv_sqrt_head_dim = 1.0f / shape.sqrt_head_dim;
  for (int64_t t = first + warp; t <= last; t += kAttentionWarps) {
    const T* key = keys + slots[t] * head_dim;
    for (int64_t g = 0; g < group; ++g) {
      float dot = 0.0f;
      for (int64_t d = lane; d < head_dim; d += 32) {
        dot = fmaf(queries[g * head_dim + d], ToFloat(key[d]), dot);
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        dot += __shfl_xor_sync(0xFFFFFFFFu, dot, offset);
      }
      if (lane == 0) scores[g * positions + t] = Round<T>(Round<T>(dot) * inv_sqrt_head_dim);
    }
  }
  __syncthreads();
  // Per query head: softmax in F32 over [first, last], each probability
  // rounded to T (libtorch's .to before the product with the values).
  for (int64_t g = 0; g < group; ++g) {
    float* row = scores + g * positions;
    float local_max = -INFINITY;
    for (int64_t t = first + threadIdx.x; t <= last; t += kAttentionThreads) {
      local_max = fmaxf(local_max, row[t]);
    }
    const float row_max = BlockReduce<true>(local_max, scratch);
    float local_sum = 0.0f;
    for (int64_t t = first + threadIdx.x; t <= last; t += kAttentionThreads) {
      const float e = expf(row[t] - row_max);
      row[t] = e;
      local_sum += e;
    }
    const float row_sum = BlockReduce<false>(local_sum, scratch);
    for (int64_t t = first + threadIdx.x; t <= last; t += kAttentionThreads) {
      row[t] = Round<T>(row[t] / row_sum);
    }
  }
  __syncthreads();
  // out[g, d] = T(sum over t of p[g, t] * v_t[d]): warp w sums the
  // positions t = first + w (mod kAttentionWarps), its lanes along the value
  // row; the warps' partial sums are then added in warp order.
  float* partial = scores + group * positions;  // [kAttentionWarps, group, head_dim]
  for (int64_t g = 0; g < group; ++g) {
    const float* p = scores + g * positions;
    for (int64_t d = lane; d < head_dim; d += 32) {
      float acc = 0.0f;
      for (int64_t t = first + warp; t <= last; t += kAttentionWarps) {
        acc = fmaf(p[t], ToFloat(values[slots[t] * head_dim + d]), acc);
      }
      partial[(warp * group + g) * head_dim + d] = acc;
    }
  }
  __syncthreads();
  T* out_group = out + (b * shape.heads + h * group) * head_dim;
  for (int64_t i = threadIdx.x; i < group * head_dim; i += kAttentionThreads) {
    float acc = partial[i];
    for (int w = 1; w < kAttentionWarps; ++w) acc += partial[w * group * head_dim + i];
    out_group[i] = FromFloat<T>(acc);
  }
}

template <typename T>
cudaError_t LaunchRope(const void* qkv, const void* cos, const void* sin,
                       const int64_t* write_slots, void* q, void* k_pool, void* v_pool,
                       int64_t jobs, const RopeShape& shape, cudaStream_t stream) {
  RopeAndWriteKernel<T><<<static_cast<unsigned>(jobs), kRopeThreads, 0, stream>>>(
      static_cast<const T*>(qkv), static_cast<const T*>(cos), static_cast<const T*>(sin),
      write_slots, static_cast<T*>(q), static_cast<T*>(k_pool), static_cast<T*>(v_pool), shape);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchAttention(const void* q, const void* k_pool, const void* v_pool,
                            const int64_t* read_slots, const int64_t* pos, void* out,
                            int64_t jobs, const AttentionShape& shape, cudaStream_t stream) {
  const size_t bytes = AttentionSharedBytes(shape);
  // Past the default 48 KiB a kernel must ask for its dynamic shared memory,
  // on each device (once per size; the warm-up before a graph's capture asks
  // first).
  constexpr int kMaxDevices = 64;
  static thread_local size_t allowed[kMaxDevices] = {};
  int device = 0;
  if (const cudaError_t error = cudaGetDevice(&device); error != cudaSuccess) return error;
  if (device < 0 || device >= kMaxDevices) return cudaErrorInvalidDevice;
  if (bytes > 48 * 1024 && bytes > allowed[device]) {
    const cudaError_t error = cudaFuncSetAttribute(
        DecodeAttentionKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(bytes));
    if (error != cudaSuccess) return error;
    allowed[device] = bytes;
  }
  DecodeAttentionKernel<T><<<static_cast<unsigned>(jobs * shape.kv_heads), kAttentionThreads,
                             bytes, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k_pool), static_cast<const T*>(v_pool),
      read_slots, pos, static_cast<T*>(out), shape);
  return cudaGetLastError();
}

}  // namespace

size_t AttentionSharedBytes(const AttentionShape& shape) {
  const int64_t group = shape.heads / shape.kv_heads;
  return static_cast<size_t>(group * (shape.head_dim + shape.positions) +
                             kAttentionWarps * group * shape.head_dim) *
         sizeof(float);
}

cudaError_t LaunchRopeAndWrite(ElementType type, const void* qkv, const void* cos,
                               const void* sin, const int64_t* write_slots, void* q,
                               void* k_pool, void* v_pool, int64_t jobs, const RopeShape& shape,
                               cudaStream_t stream) {
  if (jobs < 1 || jobs > 0x7FFFFFFF || shape.heads < 1 || shape.kv_heads < 1 ||
      shape.rope_dim % 2 != 0 || shape.rope_dim > shape.head_dim || shape.slots < 1) {
    return cudaErrorInvalidValue;
  }
  return type == ElementType::kBf16
             ? LaunchRope<__nv_bfloat16>(qkv, cos, sin, write_slots, q, k_pool, v_pool, jobs,
                                         shape, stream)
             : LaunchRope<__half>(qkv, cos, sin, write_slots, q, k_pool, v_pool, jobs, shape,
                                  stream);
}

cudaError_t LaunchDecodeAttention(ElementType type, const void* q, const void* k_pool,
                                  const void* v_pool, const int64_t* read_slots,
                                  const int64_t* pos, void* out, int64_t jobs,
                                  const AttentionShape& shape, cudaStream_t stream) {
  if (jobs < 1 || shape.kv_heads < 1 || shape.heads % shape.kv_heads != 0 ||
      jobs * shape.kv_heads > 0x7FFFFFFF || shape.positions < 1) {
    return cudaErrorInvalidValue;
  }
  return type == ElementType::kBf16
             ? LaunchAttention<__nv_bfloat16>(q, k_pool, v_pool, read_slots, pos, out, jobs,
                                              shape, stream)
             : LaunchAttention<__half>(q, k_pool, v_pool, read_slots, pos, out, jobs, shape,
                                       stream);
}

}  // namespace llorch::cuda_kernels
