// The 16-bit element types of llorch's CUDA kernels (BF16, F16) to and from
// F32, rounding to nearest even as libtorch's casts do.
#ifndef LLORCH_WORKER_MODEL_CUDA_ELEMENT_CUH_
#define LLORCH_WORKER_MODEL_CUDA_ELEMENT_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace llorch::cuda_kernels {

__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half FromFloat(float v) { return __float2half_rn(v); }

// Rounded to T and back: the value a T tensor holds.
template <typename T>
__device__ __forceinline__ float Round(float v) { return ToFloat(FromFloat<T>(v)); }

}  // namespace llorch::cuda_kernels

#endif  // LLORCH_WORKER_MODEL_CUDA_ELEMENT_CUH_
