// Fused element-wise steps of a decode step on CUDA, each one kernel where
// libtorch's ops take several (a residual add and transformers' RMSNorm: 8;
// SiLU-gated product: 2), in the same roundings as those ops:
//   sum = T(x + delta)
//   out = T(float(weight) * float(T(float(sum) * rsqrt(mean(float(sum)^2) + eps))))
//   act = T(float(T(silu(float(gate)))) * float(up))
// Only the mean's summation order differs from libtorch's reduction.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "worker/model/cuda/element.cuh"
#include "worker/model/cuda/kernels.h"

namespace llorch::cuda_kernels {
namespace {

constexpr int kNormThreads = 256;
constexpr int kActThreads = 256;

// The sum over the block's threads, returned to every thread.
__device__ float BlockSum(float v) {
  __shared__ float warp_sums[kNormThreads / 32];
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = lane < kNormThreads / 32 ? warp_sums[lane] : 0.0f;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
  return v;
}

// One block per row of [rows, hidden]; delta and sum null for a norm alone.
template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    AddRmsNormKernel(const T* __restrict__ x, const T* __restrict__ delta,
                     const T* __restrict__ weight, T* __restrict__ sum, T* __restrict__ out,
                     int64_t hidden, float eps) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * hidden;
  float squares = 0.0f;
  for (int64_t i = threadIdx.x; i < hidden; i += kNormThreads) {
    float s = ToFloat(x[base + i]);
    if (delta != nullptr) {
      const T rounded = FromFloat<T>(s + ToFloat(delta[base + i]));
      sum[base + i] = rounded;
      s = ToFloat(rounded);
    }
    squares += s * s;
  }
  // Times 1 / hidden, as libtorch's mean (its reduction's factor).
  const float inv = rsqrtf(BlockSum(squares) * (1.0f / static_cast<float>(hidden)) + eps);
  for (int64_t i = threadIdx.x; i < hidden; i += kNormThreads) {
    // The sum again rather than read back: `sum` is written by this kernel,
    // and restrict pointers let its loads go through the read-only cache.
    float s = ToFloat(x[base + i]);
    if (delta != nullptr) s = Round<T>(s + ToFloat(delta[base + i]));
    const float y = Round<T>(s * inv);
    out[base + i] = FromFloat<T>(ToFloat(weight[i]) * y);
  }
}

// gate_up: [rows, 2 * ffn] (gate | up) -> out: [rows, ffn].
template <typename T>
__global__ void __launch_bounds__(kActThreads)
    SiluGatedKernel(const T* __restrict__ gate_up, T* __restrict__ out, int64_t rows,
                    int64_t ffn) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * kActThreads + threadIdx.x;
  if (index >= rows * ffn) return;
  const int64_t row = index / ffn, i = index % ffn;
  const float gate = ToFloat(gate_up[row * 2 * ffn + i]);
  const float up = ToFloat(gate_up[row * 2 * ffn + ffn + i]);
  const float silu = Round<T>(gate / (1.0f + expf(-gate)));
  out[index] = FromFloat<T>(silu * up);
}

template <typename T>
cudaError_t LaunchNorm(const void* x, const void* delta, const void* weight, void* sum, void* out,
                       int64_t rows, int64_t hidden, float eps, cudaStream_t stream) {
  AddRmsNormKernel<T><<<static_cast<unsigned>(rows), kNormThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(delta), static_cast<const T*>(weight),
      static_cast<T*>(sum), static_cast<T*>(out), hidden, eps);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchSilu(const void* gate_up, void* out, int64_t rows, int64_t ffn,
                       cudaStream_t stream) {
  const int64_t blocks = (rows * ffn + kActThreads - 1) / kActThreads;
  SiluGatedKernel<T><<<static_cast<unsigned>(blocks), kActThreads, 0, stream>>>(
      static_cast<const T*>(gate_up), static_cast<T*>(out), rows, ffn);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchAddRmsNorm(ElementType type, const void* x, const void* delta,
                             const void* weight, void* sum, void* out, int64_t rows,
                             int64_t hidden, float eps, cudaStream_t stream) {
  if (rows < 1 || rows > 0x7FFFFFFF || hidden < 1 || (delta != nullptr) != (sum != nullptr)) {
    return cudaErrorInvalidValue;
  }
  return type == ElementType::kBf16
             ? LaunchNorm<__nv_bfloat16>(x, delta, weight, sum, out, rows, hidden, eps, stream)
             : LaunchNorm<__half>(x, delta, weight, sum, out, rows, hidden, eps, stream);
}

cudaError_t LaunchSiluGated(ElementType type, const void* gate_up, void* out, int64_t rows,
                            int64_t ffn, cudaStream_t stream) {
  if (rows < 1 || ffn < 1 || (rows * ffn + kActThreads - 1) / kActThreads > 0x7FFFFFFF) {
    return cudaErrorInvalidValue;
  }
  return type == ElementType::kBf16 ? LaunchSilu<__nv_bfloat16>(gate_up, out, rows, ffn, stream)
                                    : LaunchSilu<__half>(gate_up, out, rows, ffn, stream);
}

}  // namespace llorch::cuda_kernels
