// Buffers for a CPU step's activations, kept from op to op and step to step.
//
// A prompt's ops allocate outputs of a handful of sizes again and again (22
// layers x [512, 11264] floats for a TinyLlama prompt's gate and up). From
// glibc's heap, kept there so that they do not fault in anew
// (common/memory/heap_reuse.h), they fragmented it: after one 512-token
// TinyLlama Q8_0 prompt the heap held 80-130 MiB free beside ~73 MiB of live
// activations, a little more after each prompt. The pool maps its buffers
// itself and hands a freed one to the next request it fits (the smallest that
// does, at most twice the request); EndStep() unmaps what a step left unused.
// What it holds is then about the largest step's live set.
//
// Thread-safe. Tensors it returned may outlive it.
#ifndef LLORCH_WORKER_MODEL_ACTIVATION_POOL_H_
#define LLORCH_WORKER_MODEL_ACTIVATION_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include <ATen/core/Tensor.h>

namespace llorch {

class ActivationPool {
 public:
  // Smaller requests are at::empty's (glibc's bins serve them without harm).
  static constexpr size_t kMinPooledBytes = size_t{256} << 10;

  ActivationPool();
  ~ActivationPool();
  ActivationPool(const ActivationPool&) = delete;
  ActivationPool& operator=(const ActivationPool&) = delete;

  // An uninitialised contiguous CPU tensor of `sizes` in `type`.
  at::Tensor Empty(at::IntArrayRef sizes, at::ScalarType type = at::kFloat);

  // Unmaps the free buffers that no Empty() took, and none was given back,
  // since the previous EndStep().
  void EndStep();

  // Bytes mapped: in use and free.
  size_t mapped_bytes() const;
  size_t free_bytes() const;

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with the deleters of live tensors
};

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_ACTIVATION_POOL_H_
