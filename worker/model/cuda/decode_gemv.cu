// Matrix-vector products of a decode step on CUDA: y[m, n] = x[m, k] . w[n, k]^T
// (+ bias[n]) for a few activation rows (m <= 8: the jobs of a step) and a
// 16-bit weight matrix (BF16 or F16) that is read once per step. cuBLAS ran
// TinyLlama's products at 45% of the H200's copy bandwidth at one row
// (docs/gpu.md); a step is bound by reading the weights, so each weight byte
// is loaded once, 16 bytes a lane, and every activation row meets it in
// registers.
//
// One warp per output row: lane j takes the row's 16-byte chunks j, j + 32,
// ... (8 elements each), multiplies them with the same chunks of every
// activation row (from L1: x is a few KiB), accumulates in F32, and the warp
// sums its 32 partial sums; lane 0 adds the bias and rounds once to the
// output type (as cuBLAS's epilogue does).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "worker/model/cuda/element.cuh"
#include "worker/model/cuda/kernels.h"

namespace llorch::cuda_kernels {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kUnroll = 4;  // 16-byte weight loads in flight per lane

// 8 elements packed in 16 bytes, widened to F32.
__device__ __forceinline__ void Widen8(const uint4& v, __nv_bfloat16, float out[8]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(words[i] << 16);              // low half: element 2i
    out[2 * i + 1] = __uint_as_float(words[i] & 0xFFFF0000u);  // high half: 2i + 1
  }
}

__device__ __forceinline__ void Widen8(const uint4& v, __half, float out[8]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 pair;
    *reinterpret_cast<uint32_t*>(&pair) = words[i];
    const float2 f = __half22float2(pair);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}


// w: [n, k], x: [M, k], bias: [n] or null, y: [M, n]; k % 8 == 0, 16-byte
// aligned rows.
template <typename T, int M>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    DecodeGemvKernel(const T* __restrict__ w, const T* __restrict__ x,
                     const T* __restrict__ bias, T* __restrict__ y, int64_t n, int64_t k) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;
  const int64_t chunks = k / 8;  // 16-byte chunks of a row
  const uint4* w_row = reinterpret_cast<const uint4*>(w) + row * chunks;
  const uint4* x_rows = reinterpret_cast<const uint4*>(x);
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
#pragma unroll kUnroll
  for (int64_t c = lane; c < chunks; c += 32) {
    float wf[8];
    Widen8(__ldcs(w_row + c), T(), wf);  // streamed: read once a step
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float xf[8];
      Widen8(x_rows[m * chunks + c], T(), xf);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[m] = fmaf(wf[i], xf[i], acc[m]);
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      acc[m] += __shfl_xor_sync(0xFFFFFFFFu, acc[m], offset);
    }
  }
  if (lane == 0) {
    const float b = bias != nullptr ? ToFloat(bias[row]) : 0.0f;
#pragma unroll
    for (int m = 0; m < M; ++m) y[m * n + row] = FromFloat<T>(acc[m] + b);
  }
}

template <typename T, int M>
cudaError_t Launch(const void* w, const void* x, const void* bias, void* y, int64_t n, int64_t k,
                   cudaStream_t stream) {
  const int64_t blocks = (n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  DecodeGemvKernel<T, M><<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(
      static_cast<const T*>(w), static_cast<const T*>(x), static_cast<const T*>(bias),
      static_cast<T*>(y), n, k);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchOf(int64_t m, const void* w, const void* x, const void* bias, void* y,
                     int64_t n, int64_t k, cudaStream_t stream) {
  switch (m) {
    case 1: return Launch<T, 1>(w, x, bias, y, n, k, stream);
    case 2: return Launch<T, 2>(w, x, bias, y, n, k, stream);
    case 3: return Launch<T, 3>(w, x, bias, y, n, k, stream);
    case 4: return Launch<T, 4>(w, x, bias, y, n, k, stream);
    case 5: return Launch<T, 5>(w, x, bias, y, n, k, stream);
    case 6: return Launch<T, 6>(w, x, bias, y, n, k, stream);
    case 7: return Launch<T, 7>(w, x, bias, y, n, k, stream);
    case 8: return Launch<T, 8>(w, x, bias, y, n, k, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t LaunchDecodeGemv(ElementType type, const void* w, const void* x, const void* bias,
                             void* y, int64_t m, int64_t n, int64_t k, cudaStream_t stream) {
  if (m < 1 || m > kMaxGemvRows || n < 1 || k < 8 || k % 8 != 0) return cudaErrorInvalidValue;
  if (n > static_cast<int64_t>(kWarpsPerBlock) * 0x7FFFFFFF) return cudaErrorInvalidValue;
  return type == ElementType::kBf16 ? LaunchOf<__nv_bfloat16>(m, w, x, bias, y, n, k, stream)
                                 : LaunchOf<__half>(m, w, x, bias, y, n, k, stream);
}

}  // namespace llorch::cuda_kernels
