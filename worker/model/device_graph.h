// A device step captured once and replayed: CUDA graphs. A decode step of
// the libtorch path launches ~40 kernels a layer, each costing the host a
// few microseconds, more than the kernel's own work at small batches;
// replaying a captured graph launches them all at once. Built on libtorch's
// at::cuda::CUDAGraph where libtorch has CUDA (device_graph_cuda.cc); other
// builds report it unavailable (device_graph_none.cc).
#ifndef LLORCH_WORKER_MODEL_DEVICE_GRAPH_H_
#define LLORCH_WORKER_MODEL_DEVICE_GRAPH_H_

#include <functional>
#include <memory>
#include <utility>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"

namespace llorch {

// The memory pool graphs captured with it share (their temporaries overlap):
// one of them runs at a time, and a graph's output is valid until the next
// replay of any of them. A pool is dropped with its last graph and never
// handed out again.
using DeviceGraphPool = std::pair<unsigned long long, unsigned long long>;

class DeviceGraph {
 public:
  // Whether this build can capture graphs on `device` (CUDA libtorch, a
  // CUDA device).
  static bool Available(c10::Device device);
  // A fresh pool id (libtorch's graph_pool_handle).
  static DeviceGraphPool NewPool();

  // Runs `step` once on a side stream (first-use work: library handles,
  // workspaces), then captures it. `step` reads only device tensors whose
  // storage stays where it is (the replay reads the same addresses), makes
  // no host copies and no host syncs, and returns its result; running it
  // twice must leave the same state as once. Allocates in `pool`, which
  // must have a live graph or be new.
  static absl::StatusOr<std::unique_ptr<DeviceGraph>> Capture(
      c10::Device device, DeviceGraphPool pool, const std::function<at::Tensor()>& step);

  virtual ~DeviceGraph() = default;
  // Launches the captured work on the current stream; returns the tensor the
  // captured step returned, its contents those of this replay.
  virtual const at::Tensor& Replay() = 0;
};

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_DEVICE_GRAPH_H_
