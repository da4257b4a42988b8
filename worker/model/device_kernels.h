// llorch's own device kernels for the decode step, where the build has them
// (-DLLORCH_CUDA_KERNELS=ON on a libtorch with CUDA: device_kernels_cuda.cc
// over worker/model/cuda/); other builds report them unavailable
// (device_kernels_none.cc) and the step keeps libtorch's ops.
#ifndef LLORCH_WORKER_MODEL_DEVICE_KERNELS_H_
#define LLORCH_WORKER_MODEL_DEVICE_KERNELS_H_

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <utility>

namespace llorch {

// Whether this build has the kernels for `device` (a CUDA device).
bool DeviceKernelsAvailable(c10::Device device);

// Whether DeviceLinear takes x: [m, k] against weight: [n, k] (and bias [n]
// or undefined): 16-bit (BF16 or F16) tensors of one type on one CUDA
// device, contiguous, 1 <= m <= 8, k % 8 == 0, 16-byte aligned.
bool DeviceLinearSupports(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// x . weight^T (+ bias): [m, n], accumulated in F32 and rounded once (as
// at::linear's cuBLAS product), each weight byte read once (decode_gemv.cu).
// Requires DeviceLinearSupports; launches on the current stream.
at::Tensor DeviceLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// Whether DeviceAddRmsNorm takes x: [rows, hidden], delta (same, or
// undefined) and weight: [hidden]: 16-bit tensors of one type on one CUDA
// device, contiguous.
bool DeviceAddRmsNormSupports(const at::Tensor& x, const at::Tensor& delta,
                              const at::Tensor& weight);

// One kernel for `x + delta` (where delta is defined; x itself otherwise)
// and transformers' RMSNorm of it times weight, each op rounded as
// libtorch's: returns {sum (undefined without delta), normed}.
std::pair<at::Tensor, at::Tensor> DeviceAddRmsNorm(const at::Tensor& x, const at::Tensor& delta,
                                                   const at::Tensor& weight, double eps);

// Whether DeviceSiluGated takes gate_up: [rows, 2 * ffn], 16-bit, on a CUDA
// device, contiguous.
bool DeviceSiluGatedSupports(const at::Tensor& gate_up);

// silu(gate) * up: [rows, ffn] from gate_up = [gate | up], in one kernel,
// each op rounded as libtorch's.
at::Tensor DeviceSiluGated(const at::Tensor& gate_up);

// A decode step's heads, as DeviceDecodeAttention reads them.
struct DecodeHeads {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  int64_t rope_dim = 0;   // the first rope_dim dimensions of each head rotate
  bool adjacent = false;  // rotated pairs (2i, 2i + 1); else (i, i + rope_dim / 2)
  int64_t window = 0;     // sliding window (0: none)
};

// Whether DeviceDecodeAttention takes a step of qkv: [jobs, (heads + 2
// kv_heads) head_dim] over k_pool, v_pool: [kv_heads, slots, head_dim] with
// `positions` columns of pool rows: 16-bit tensors of one type on one CUDA
// device, contiguous, and the scores' shared memory within the kernel's
// limit.
bool DeviceDecodeAttentionSupports(const at::Tensor& qkv, const at::Tensor& k_pool,
                                   const at::Tensor& v_pool, int64_t positions,
                                   const DecodeHeads& heads);

// A decode step's attention in two kernels: each job's query and key heads
// rotated by cos, sin ([jobs, rope_dim / 2], the type), its key and value
// written to pool row write_slots[job], then its query heads attending over
// pool rows read_slots[job, 0 .. pos[job]] (int64 on the device: [jobs],
// [jobs * positions], [jobs]) as transformers' eager attention rounds.
// Returns [jobs, heads * head_dim].
at::Tensor DeviceDecodeAttention(const at::Tensor& qkv, const at::Tensor& cos,
                                 const at::Tensor& sin, at::Tensor& k_pool, at::Tensor& v_pool,
                                 const at::Tensor& write_slots, const at::Tensor& read_slots,
                                 const at::Tensor& pos, int64_t positions,
                                 const DecodeHeads& heads);

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_DEVICE_KERNELS_H_
