// llorch's CUDA kernels (worker/model/cuda/) on libtorch's tensors and its
// current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

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

// The shared memory a block may ask for on `device` (read once a device).
size_t MaxSharedBytesPerBlock(int device) {
  static std::mutex mutex;
  static std::map<int, size_t> bytes_of;
  std::lock_guard<std::mutex> lock(mutex);
  auto [it, added] = bytes_of.try_emplace(device, 0);
  if (added) {
    int value = 0;
    if (cudaDeviceGetAttribute(&value, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) ==
        cudaSuccess) {
      it->second = static_cast<size_t>(value);
    }
  }
  return it->second;
}

void Check(cudaError_t error, const char* what) {
  TORCH_CHECK(error == cudaSuccess, what, ": ", cudaGetErrorString(error));
}

}  // namespace

bool DeviceKernelsAvailable(c10::Device device) {
  // Built for sm_80 and sm_90 (and their PTX): Ampere or newer.
  if (!device.is_cuda()) return false;
  int major = 0;
  const int index = device.has_index() ? device.index() : 0;
  return cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index) ==
             cudaSuccess &&
         major >= 8;
}

bool DeviceLinearSupports(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const at::ScalarType type = weight.scalar_type();
  if (!x.is_cuda() || x.device() != weight.device()) return false;
  if (type != at::kBFloat16 && type != at::kHalf) return false;
  if (x.scalar_type() != type || x.dim() != 2 || weight.dim() != 2) return false;
  const int64_t m = x.size(0), k = x.size(1);
  if (m < 1 || m > cuda_kernels::kMaxGemvRows || k < 8 || k % 8 != 0 || weight.size(0) < 1 ||
      weight.size(1) != k) {
    return false;
  }
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
  const c10::cuda::CUDAGuard guard(x.device());  // launches go to the current device
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
  const c10::cuda::CUDAGuard guard(x.device());
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
  const c10::cuda::CUDAGuard guard(gate_up.device());
  const int64_t rows = gate_up.size(0), ffn = gate_up.size(1) / 2;
  at::Tensor out = at::empty({rows, ffn}, gate_up.options());  // [rows, ffn]
  Check(cuda_kernels::LaunchSiluGated(TypeOf(gate_up), gate_up.data_ptr(), out.data_ptr(), rows,
                                      ffn, StreamOf(gate_up)),
        "DeviceSiluGated");
  return out;
}

bool DeviceDecodeAttentionSupports(const at::Tensor& qkv, const at::Tensor& k_pool,
                                   const at::Tensor& v_pool, int64_t positions,
                                   const DecodeHeads& heads) {
  if (!Is16BitCuda(qkv) || !Is16BitCuda(k_pool) || !Is16BitCuda(v_pool) || qkv.dim() != 2) {
    return false;
  }
  if (k_pool.scalar_type() != qkv.scalar_type() || v_pool.scalar_type() != qkv.scalar_type() ||
      k_pool.device() != qkv.device() || v_pool.device() != qkv.device()) {
    return false;
  }
  if (heads.kv_heads < 1 || heads.heads % heads.kv_heads != 0 || heads.rope_dim % 2 != 0 ||
      heads.rope_dim > heads.head_dim || positions < 1 ||
      qkv.size(1) != (heads.heads + 2 * heads.kv_heads) * heads.head_dim) {
    return false;
  }
  const std::vector<int64_t> pool_shape = {heads.kv_heads, k_pool.size(1), heads.head_dim};
  if (k_pool.sizes() != pool_shape || v_pool.sizes() != k_pool.sizes()) return false;
  cuda_kernels::AttentionShape shape;
  shape.heads = heads.heads;
  shape.kv_heads = heads.kv_heads;
  shape.head_dim = heads.head_dim;
  shape.positions = positions;
  return cuda_kernels::AttentionSharedBytes(shape) + cuda_kernels::kAttentionStaticSharedBytes <=
         MaxSharedBytesPerBlock(qkv.device().index());
}

at::Tensor DeviceDecodeAttention(const at::Tensor& qkv, const at::Tensor& cos,
                                 const at::Tensor& sin, at::Tensor& k_pool, at::Tensor& v_pool,
                                 const at::Tensor& write_slots, const at::Tensor& read_slots,
                                 const at::Tensor& pos, int64_t positions,
                                 const DecodeHeads& heads) {
  TORCH_CHECK(DeviceDecodeAttentionSupports(qkv, k_pool, v_pool, positions, heads),
              "DeviceDecodeAttention: unsupported operands");
  const c10::cuda::CUDAGuard guard(qkv.device());
  const int64_t jobs = qkv.size(0), slots = k_pool.size(1);
  const at::Tensor c = cos.to(qkv.scalar_type()).contiguous();  // [jobs, rope_dim / 2]
  const at::Tensor s = sin.to(qkv.scalar_type()).contiguous();
  TORCH_CHECK(c.dim() == 2 && c.size(0) == jobs && c.size(1) == heads.rope_dim / 2 &&
                  c.device() == qkv.device() && s.sizes() == c.sizes() &&
                  s.device() == qkv.device(),
              "DeviceDecodeAttention: cos and sin must be [jobs, rope_dim / 2] on the device");
  const auto device_int64 = [&](const at::Tensor& t, int64_t n, const char* what) {
    TORCH_CHECK(t.device() == qkv.device() && t.scalar_type() == at::kLong &&
                    t.is_contiguous() && t.numel() == n,
                "DeviceDecodeAttention: ", what, " must be ", n, " int64 on the device");
    return t.data_ptr<int64_t>();
  };
  const int64_t* write = device_int64(write_slots, jobs, "write_slots");
  const int64_t* read = device_int64(read_slots, jobs * positions, "read_slots");
  const int64_t* positions_of = device_int64(pos, jobs, "pos");
  at::Tensor q = at::empty({jobs, heads.heads, heads.head_dim}, qkv.options());
  at::Tensor out = at::empty({jobs, heads.heads * heads.head_dim}, qkv.options());
  cuda_kernels::RopeShape rope;
  rope.heads = heads.heads;
  rope.kv_heads = heads.kv_heads;
  rope.head_dim = heads.head_dim;
  rope.rope_dim = heads.rope_dim;
  rope.adjacent = heads.adjacent;
  rope.slots = slots;
  Check(cuda_kernels::LaunchRopeAndWrite(TypeOf(qkv), qkv.data_ptr(), c.data_ptr(), s.data_ptr(),
                                         write, q.data_ptr(), k_pool.data_ptr(),
                                         v_pool.data_ptr(), jobs, rope, StreamOf(qkv)),
        "DeviceDecodeAttention (RoPE and pool write)");
  cuda_kernels::AttentionShape shape;
  shape.heads = heads.heads;
  shape.kv_heads = heads.kv_heads;
  shape.head_dim = heads.head_dim;
  shape.slots = slots;
  shape.positions = positions;
  shape.window = heads.window;
  shape.sqrt_head_dim = static_cast<float>(std::sqrt(static_cast<double>(heads.head_dim)));
  Check(cuda_kernels::LaunchDecodeAttention(TypeOf(qkv), q.data_ptr(), k_pool.data_ptr(),
                                            v_pool.data_ptr(), read, positions_of,
                                            out.data_ptr(), jobs, shape, StreamOf(qkv)),
        "DeviceDecodeAttention");
  return out;
}

}  // namespace llorch
