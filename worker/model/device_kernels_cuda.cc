// llorch's CUDA kernels (worker/model/cuda/) on libtorch's tensors and its
// current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "worker/model/cuda/kernels.h"
#include "worker/model/device_kernels.h"

namespace llorch {
namespace {

bool Aligned16(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

bool Is16BitCuda(const at::Tensor& t) {
  return t.defined() && t.is_cuda() &&
         (t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf) && t.is_contiguous();
}

cuda_kernels::ElementType TypeOf(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? cuda_kernels::ElementType::kBf16
                                          : cuda_kernels::ElementType::kF16;
}

cudaStream_t StreamOf(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

void Check(cudaError_t error, const char* what) {
  TORCH_CHECK(error == cudaSuccess, what, ": ", cudaGetErrorString(error));
}

}  // namespace

bool DeviceKernelsAvailable(c10::Device device) { return device.is_cuda(); }

bool DeviceLinearSupports(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const at::ScalarType type = weight.scalar_type();
  if (!x.is_cuda() || x.device() != weight.device()) return false;
  if (type != at::kBFloat16 && type != at::kHalf) return false;
  if (x.scalar_type() != type || x.dim() != 2 || weight.dim() != 2) return false;
  const int64_t m = x.size(0), k = x.size(1);
  if (m < 1 || m > cuda_kernels::kMaxGemvRows || k % 8 != 0 || weight.size(1) != k) return false;
  if (!x.is_contiguous() || !weight.is_contiguous() || !Aligned16(x) || !Aligned16(weight)) {
    return false;
  }
  if (bias.defined()) {
    if (bias.scalar_type() != type || bias.device() != x.device() || bias.dim() != 1 ||
        bias.size(0) != weight.size(0) || !bias.is_contiguous()) {
      return false;
    }
  }
  return true;
}

at::Tensor DeviceLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(DeviceLinearSupports(x, weight, bias), "DeviceLinear: unsupported operands");
  const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
  at::Tensor y = at::empty({m, n}, x.options());  // [m, n]
  Check(cuda_kernels::LaunchDecodeGemv(TypeOf(weight), weight.data_ptr(), x.data_ptr(),
                                       bias.defined() ? bias.data_ptr() : nullptr, y.data_ptr(),
                                       m, n, k, StreamOf(x)),
        "DeviceLinear");
  return y;
}

bool DeviceAddRmsNormSupports(const at::Tensor& x, const at::Tensor& delta,
                              const at::Tensor& weight) {
  if (!Is16BitCuda(x) || !Is16BitCuda(weight) || x.dim() != 2 || weight.dim() != 1) return false;
  if (weight.scalar_type() != x.scalar_type() || weight.device() != x.device() ||
      weight.size(0) != x.size(1) || x.size(0) < 1) {
    return false;
  }
  return !delta.defined() || (Is16BitCuda(delta) && delta.scalar_type() == x.scalar_type() &&
                              delta.device() == x.device() && delta.sizes() == x.sizes());
}

std::pair<at::Tensor, at::Tensor> DeviceAddRmsNorm(const at::Tensor& x, const at::Tensor& delta,
                                                   const at::Tensor& weight, double eps) {
  TORCH_CHECK(DeviceAddRmsNormSupports(x, delta, weight), "DeviceAddRmsNorm: unsupported operands");
  at::Tensor sum = delta.defined() ? at::empty_like(x) : at::Tensor();  // [rows, hidden]
  at::Tensor out = at::empty_like(x);                                   // [rows, hidden]
  Check(cuda_kernels::LaunchAddRmsNorm(TypeOf(x), x.data_ptr(),
                                       delta.defined() ? delta.data_ptr() : nullptr,
                                       weight.data_ptr(), sum.defined() ? sum.data_ptr() : nullptr,
                                       out.data_ptr(), x.size(0), x.size(1),
                                       static_cast<float>(eps), StreamOf(x)),
        "DeviceAddRmsNorm");
  return {sum, out};
}

bool DeviceSiluGatedSupports(const at::Tensor& gate_up) {
  return Is16BitCuda(gate_up) && gate_up.dim() == 2 && gate_up.size(0) >= 1 &&
         gate_up.size(1) >= 2 && gate_up.size(1) % 2 == 0;
}

at::Tensor DeviceSiluGated(const at::Tensor& gate_up) {
  TORCH_CHECK(DeviceSiluGatedSupports(gate_up), "DeviceSiluGated: unsupported operand");
  const int64_t rows = gate_up.size(0), ffn = gate_up.size(1) / 2;
  at::Tensor out = at::empty({rows, ffn}, gate_up.options());  // [rows, ffn]
  Check(cuda_kernels::LaunchSiluGated(TypeOf(gate_up), gate_up.data_ptr(), out.data_ptr(), rows,
                                      ffn, StreamOf(gate_up)),
        "DeviceSiluGated");
  return out;
}

}  // namespace llorch
