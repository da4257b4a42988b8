#include "worker/model/decode_graphs.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <utility>

namespace llorch {

absl::StatusOr<at::Tensor> DecodeGraphs::Run(const Shape& shape, absl::Span<const int64_t> host,
                                             const Step& step) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!capture_error_.ok()) return capture_error_;
  const at::Tensor host_inputs = at::from_blob(const_cast<int64_t*>(host.data()),
                                               {static_cast<int64_t>(host.size())}, at::kLong);
  auto it = graphs_.find(shape);
  if (it != graphs_.end()) {
    it->second.inputs.copy_(host_inputs);  // on the stream the replay follows
    return it->second.graph->Replay();
  }
  if (graphs_.size() >= max_graphs_) {
    graphs_.clear();
    pool_ = DeviceGraph::NewPool();
  }
  Graph graph;
  graph.inputs = host_inputs.to(device_, /*non_blocking=*/false, /*copy=*/true);
  const at::Tensor inputs = graph.inputs;
  absl::StatusOr<std::unique_ptr<DeviceGraph>> captured =
      DeviceGraph::Capture(device_, pool_, [&] { return step(inputs); });
  if (!captured.ok()) {
    // Not retried: the same step would fail the same way every time.
    capture_error_ = captured.status();
    std::fprintf(stderr, "decode steps run without CUDA graphs: %s\n",
                 capture_error_.ToString().c_str());
    return capture_error_;
  }
  graph.graph = std::move(*captured);
  // The capture recorded the work without running it.
  const at::Tensor& output = graph.graph->Replay();
  graphs_.emplace(shape, std::move(graph));
  return output;
}

bool DecodeGraphs::ok() const {
  std::lock_guard<std::mutex> lock(mu_);
  return capture_error_.ok();
}

}  // namespace llorch
