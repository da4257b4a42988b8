// DeviceGraph on libtorch's CUDA graphs (builds whose libtorch has CUDA).
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/model/device_graph.h"

namespace llorch {
namespace {

class CudaGraph : public DeviceGraph {
 public:
  const at::Tensor& Replay() override {
    graph_.replay();
    return output_;
  }

  at::cuda::CUDAGraph graph_;
  at::Tensor output_;
};

}  // namespace

bool DeviceGraph::Available(c10::Device device) { return device.is_cuda(); }

DeviceGraphPool DeviceGraph::NewPool() {
  const at::cuda::MempoolId_t pool = at::cuda::graph_pool_handle();
  return {pool.first, pool.second};
}

absl::StatusOr<std::unique_ptr<DeviceGraph>> DeviceGraph::Capture(
    c10::Device device, DeviceGraphPool pool, const std::function<at::Tensor()>& step) {
  if (!device.is_cuda()) return absl::UnimplementedError("CUDA graphs need a CUDA device");
  try {
    c10::cuda::CUDAGuard device_guard(device);
    // The step's inputs were written on the current stream; the side stream
    // starts after them.
    c10::cuda::getCurrentCUDAStream().synchronize();
    auto graph = std::make_unique<CudaGraph>();
    {
      c10::cuda::CUDAStreamGuard stream_guard(c10::cuda::getStreamFromPool());
      step();  // warm-up: handles and workspaces are made outside the capture
      c10::cuda::getCurrentCUDAStream().synchronize();
      // Thread-local: other threads' CUDA calls (a server's) stay legal.
      graph->graph_.capture_begin({pool.first, pool.second}, cudaStreamCaptureModeThreadLocal);
      try {
        graph->output_ = step();
      } catch (...) {
        // End the broken capture, so the pool's stream is usable again.
        try {
          graph->graph_.capture_end();
        } catch (...) {
        }
        throw;
      }
      graph->graph_.capture_end();
    }
    c10::cuda::device_synchronize();
    return graph;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("CUDA graph capture: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("CUDA graph capture: ", e.what()));
  }
}

}  // namespace llorch
