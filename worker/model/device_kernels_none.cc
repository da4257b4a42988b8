// Builds without llorch's CUDA kernels: none available.
#include <c10/util/Exception.h>

#include "worker/model/device_kernels.h"

namespace llorch {

bool DeviceKernelsAvailable(c10::Device) { return false; }

bool DeviceLinearSupports(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  return false;
}

namespace {
[[noreturn]] void NotBuilt() {
  TORCH_CHECK(false, "llorch was built without its CUDA kernels (-DLLORCH_CUDA_KERNELS=ON)");
}
}  // namespace

at::Tensor DeviceLinear(const at::Tensor&, const at::Tensor&, const at::Tensor&) { NotBuilt(); }

bool DeviceAddRmsNormSupports(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  return false;
}

std::pair<at::Tensor, at::Tensor> DeviceAddRmsNorm(const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, double) {
  NotBuilt();
}

bool DeviceSiluGatedSupports(const at::Tensor&) { return false; }

at::Tensor DeviceSiluGated(const at::Tensor&) { NotBuilt(); }

bool DeviceDecodeAttentionSupports(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   int64_t, const DecodeHeads&) {
  return false;
}

at::Tensor DeviceDecodeAttention(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 at::Tensor&, at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const at::Tensor&, int64_t, const DecodeHeads&) {
  NotBuilt();
}

}  // namespace llorch
