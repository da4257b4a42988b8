// llorch's CUDA kernels for decode steps (decode_gemv.cu, decode_fused.cu),
// in plain CUDA runtime types, no libtorch: device_kernels_cuda.cc wraps
// them for tensors. Every launch goes on `stream` (capturable in a CUDA
// graph) and returns the launch's error (cudaErrorInvalidValue for shapes
// it does not take). Tensors are row-major, contiguous, of one `type`.
#ifndef LLORCH_WORKER_MODEL_CUDA_KERNELS_H_
#define LLORCH_WORKER_MODEL_CUDA_KERNELS_H_

#include <cuda_runtime_api.h>

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

}  // namespace llorch::cuda_kernels

#endif  // LLORCH_WORKER_MODEL_CUDA_KERNELS_H_
