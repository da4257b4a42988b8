#include "scheduler/job_queue.h"

#include <algorithm>
#include <cassert>
#include <utility>

namespace llorch::scheduler {

bool JobQueue::Push(const std::string& job_id, Clock::time_point now) {
  if (entries_.size() >= max_size_) return false;
  entries_.push_back({job_id, now});
  return true;
}

void JobQueue::PushFront(const std::string& job_id, Clock::time_point enqueued) {
  // No bound: the job was admitted once; refusing its retry would fail it.
  entries_.push_front({job_id, enqueued});
}

bool JobQueue::Remove(const std::string& job_id) {
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const Entry& entry) { return entry.job_id == job_id; });
  if (it == entries_.end()) return false;
  entries_.erase(it);
  return true;
}

std::vector<std::string> JobQueue::TakeExpired(Clock::time_point now, Clock::duration max_wait) {
  // Retries at the front keep old enqueue times, so the queue is not sorted
  // by time: scan it all, keeping queue order.
  const Clock::time_point deadline = now - max_wait;
  std::vector<std::string> expired;
  std::deque<Entry> kept;
  for (Entry& entry : entries_) {
    if (entry.enqueued < deadline) {
      expired.push_back(std::move(entry.job_id));
    } else {
      kept.push_back(std::move(entry));
    }
  }
  entries_ = std::move(kept);
  return expired;
}

JobQueue::Entry JobQueue::Take(size_t index) {
  assert(index < entries_.size());
  Entry entry = std::move(entries_[index]);
  entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(index));
  return entry;
}

}  // namespace llorch::scheduler
