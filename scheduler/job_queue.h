// A model's bounded wait queue (storage only): jobs that wait for a worker
// slot, oldest first. Retried jobs go back to the front past the bound (they
// were admitted already). The scheduler core owns one per model.
#ifndef LLORCH_SCHEDULER_JOB_QUEUE_H_
#define LLORCH_SCHEDULER_JOB_QUEUE_H_

#include <chrono>
#include <cstddef>
#include <deque>
#include <string>
#include <vector>

namespace llorch::scheduler {

class JobQueue {
 public:
  using Clock = std::chrono::steady_clock;

  explicit JobQueue(size_t max_size) : max_size_(max_size) {}

  // False (and nothing queued) when max_size jobs wait already.
  bool Push(const std::string& job_id, Clock::time_point now);
  // A job that must run before the others (a retry); ignores the bound and
  // keeps its first enqueue time.
  void PushFront(const std::string& job_id, Clock::time_point enqueued);
  bool Remove(const std::string& job_id);
  // Removes and returns the jobs queued before `now - max_wait`.
  std::vector<std::string> TakeExpired(Clock::time_point now, Clock::duration max_wait);

  struct Entry {
    std::string job_id;
    Clock::time_point enqueued;
  };
  const std::deque<Entry>& entries() const { return entries_; }
  // Removes the entry at `index` (< size()); placement may skip jobs it
  // cannot place, so it is not always the front.
  Entry Take(size_t index);
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  size_t max_size() const { return max_size_; }

 private:
  size_t max_size_;
  std::deque<Entry> entries_;
};

}  // namespace llorch::scheduler

#endif  // LLORCH_SCHEDULER_JOB_QUEUE_H_
