// Runs the model's batched forward for the engine: the one place where a
// forward's exceptions become statuses (faults.h) and where the test-only
// forward fault is injected. Weights are shared and immutable; each item
// brings its own KV cache.
#ifndef LLORCH_WORKER_ENGINE_MODEL_RUNNER_H_
#define LLORCH_WORKER_ENGINE_MODEL_RUNNER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/faults.h"
#include "worker/model/llama_model.h"

namespace llorch {

class ModelRunner {
 public:
  ModelRunner(const LlamaModel* model, const TestFault& test_fault)
      : model_(model), test_fault_(test_fault) {}

  // The logits rows of every item (LlamaModel::ForwardBatch); an exception
  // (libtorch, allocation, an injected fault) is an error for this batch only.
  absl::StatusOr<at::Tensor> Run(const std::vector<ForwardItem>& items);

  const LlamaModel& model() const { return *model_; }

 private:
  const LlamaModel* model_;
  const TestFault test_fault_;
  int64_t forwards_ = 0;  // for test_fault_
};

}  // namespace llorch

#endif  // LLORCH_WORKER_ENGINE_MODEL_RUNNER_H_
