#include "worker/engine/model_runner.h"

namespace llorch {

absl::StatusOr<at::Tensor> ModelRunner::Run(const std::vector<ForwardItem>& items) {
  try {
    MaybeInjectFault(test_fault_, TestFault::Point::kForward, &forwards_);
    return model_->ForwardBatch(items);
  } catch (...) {
    return StatusFromCurrentException("model forward");
  }
}

}  // namespace llorch
