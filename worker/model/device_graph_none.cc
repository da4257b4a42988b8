// DeviceGraph where libtorch has no CUDA: never available.
#include "absl/status/status.h"
#include "worker/model/device_graph.h"

namespace llorch {

bool DeviceGraph::Available(c10::Device) { return false; }

DeviceGraphPool DeviceGraph::NewPool() { return {0, 0}; }

absl::StatusOr<std::unique_ptr<DeviceGraph>> DeviceGraph::Capture(
    c10::Device, DeviceGraphPool, const std::function<at::Tensor()>&) {
  return absl::UnimplementedError("this build's libtorch has no CUDA graphs");
}

}  // namespace llorch
