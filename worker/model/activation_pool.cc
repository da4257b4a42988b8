#include "worker/model/activation_pool.h"

#include <sanitizer/asan_interface.h>
#include <sys/mman.h>

#include <map>
#include <mutex>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace llorch {
namespace {

// Mappings are whole pages; rounding to 64 KiB lets near sizes share buffers.
constexpr size_t kGranuleBytes = size_t{64} << 10;

}  // namespace

struct ActivationPool::State {
  struct FreeBuffer {
    void* data;
    bool used;  // taken or given back since the last EndStep
  };
  mutable std::mutex mu;
  std::multimap<size_t, FreeBuffer> free;  // by capacity
  size_t mapped = 0;
  bool closed = false;  // the pool is gone: buffers given back are unmapped

  void Unmap(void* data, size_t capacity) {
    ASAN_UNPOISON_MEMORY_REGION(data, capacity);
    ::munmap(data, capacity);
    mapped -= capacity;
  }
};

ActivationPool::ActivationPool() : state_(std::make_shared<State>()) {}

ActivationPool::~ActivationPool() {
  std::lock_guard<std::mutex> lock(state_->mu);
  for (const auto& [capacity, buffer] : state_->free) state_->Unmap(buffer.data, capacity);
  state_->free.clear();
  state_->closed = true;
}

at::Tensor ActivationPool::Empty(at::IntArrayRef sizes, at::ScalarType type) {
  const at::TensorOptions options = at::TensorOptions().dtype(type);
  int64_t numel = 1;
  for (const int64_t size : sizes) numel *= size;
  const size_t bytes = static_cast<size_t>(numel) * c10::elementSize(type);
  if (bytes < kMinPooledBytes) return at::empty(sizes, options);

  void* data = nullptr;
  size_t capacity = 0;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    // The smallest free buffer that fits, unless it would waste over half.
    const auto fit = state_->free.lower_bound(bytes);
    if (fit != state_->free.end() && fit->first <= 2 * bytes) {
      capacity = fit->first;
      data = fit->second.data;
      state_->free.erase(fit);
    }
  }
  if (data == nullptr) {
    capacity = (bytes + kGranuleBytes - 1) / kGranuleBytes * kGranuleBytes;
    data = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK(data != MAP_FAILED, "activation pool: cannot map ", capacity, " bytes");
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->mapped += capacity;
  }
  // Under AddressSanitizer only the tensor's bytes are addressable: a read
  // past them or of a given-back buffer is reported as for heap blocks.
  ASAN_UNPOISON_MEMORY_REGION(data, bytes);
  ASAN_POISON_MEMORY_REGION(static_cast<char*>(data) + bytes, capacity - bytes);
  std::shared_ptr<State> state = state_;
  return at::from_blob(
      data, sizes,
      [state = std::move(state), capacity](void* given_back) {
        ASAN_POISON_MEMORY_REGION(given_back, capacity);
        std::lock_guard<std::mutex> lock(state->mu);
        if (state->closed) {
          state->Unmap(given_back, capacity);
        } else {
          state->free.emplace(capacity, State::FreeBuffer{given_back, /*used=*/true});
        }
      },
      options);
}

void ActivationPool::EndStep() {
  std::lock_guard<std::mutex> lock(state_->mu);
  for (auto it = state_->free.begin(); it != state_->free.end();) {
    if (it->second.used) {
      it->second.used = false;
      ++it;
    } else {
      state_->Unmap(it->second.data, it->first);
      it = state_->free.erase(it);
    }
  }
}

size_t ActivationPool::mapped_bytes() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->mapped;
}

size_t ActivationPool::free_bytes() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  size_t bytes = 0;
  for (const auto& [capacity, buffer] : state_->free) bytes += capacity;
  return bytes;
}

}  // namespace llorch
