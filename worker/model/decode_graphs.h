// The libtorch path's decode steps as CUDA graphs (DeviceGraph), one per
// shape: (pool, jobs, positions). A step's inputs travel in one int64 tensor
// whose storage the graph reads; each replay first copies the step's host
// inputs into it. Graphs are captured on first use of a shape and kept, all
// in one memory pool (one step runs at a time; its logits are read before
// the next); beyond `max_graphs` every graph is dropped with its pool and
// capture starts again in a fresh one (libtorch cannot reuse a pool whose
// graphs are gone).
#ifndef LLORCH_WORKER_MODEL_DECODE_GRAPHS_H_
#define LLORCH_WORKER_MODEL_DECODE_GRAPHS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/model/device_graph.h"

namespace llorch {

class DecodeGraphs {
 public:
  // (pool id, jobs, positions): what fixes a decode step's addresses and shapes.
  using Shape = std::tuple<uint64_t, int64_t, int64_t>;
  // The step on the device: reads `inputs` ([host size] int64), returns logits.
  using Step = std::function<at::Tensor(const at::Tensor& inputs)>;

  DecodeGraphs(c10::Device device, size_t max_graphs)
      : device_(device), max_graphs_(max_graphs), pool_(DeviceGraph::NewPool()) {}

  // Runs `step` for these inputs through the graph of `shape` (captured now
  // if new): the step's output on the device, valid until the next Run.
  // An error if capture failed (the caller runs the step itself); after a
  // failed capture every call returns that error.
  absl::StatusOr<at::Tensor> Run(const Shape& shape, absl::Span<const int64_t> host,
                                 const Step& step);
  // False once a capture has failed (every step then runs without graphs).
  bool ok() const;

 private:
  struct Graph {
    at::Tensor inputs;  // [host size] int64 on the device, read by the graph
    std::unique_ptr<DeviceGraph> graph;
  };
  const c10::Device device_;
  const size_t max_graphs_;
  mutable std::mutex mu_;
  DeviceGraphPool pool_;
  std::map<Shape, Graph> graphs_;
  absl::Status capture_error_;
};

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_DECODE_GRAPHS_H_
