#include "worker/engine/engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/model/kv_cache.h"

namespace llorch {

Engine::Engine(const LlamaModel* model, const Tokenizer* tokenizer, EngineOptions options)
    : model_(model), tokenizer_(tokenizer), options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

absl::Status Engine::Submit(std::string job_id, std::vector<int32_t> prompt,
                            GenerationParams params, std::shared_ptr<JobSink> sink) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id is empty");
  const ModelConfig& config = model_->config();
  if (absl::Status s = Job::Validate(prompt, params, config); !s.ok()) return s;
  const size_t kv_bytes = KvCache::BytesFor(
      config, Job::CacheCapacity(config, static_cast<int64_t>(prompt.size()), params.max_tokens),
      model_->kv_type());
  if (kv_bytes > options_.kv_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "job ", job_id, " needs ", kv_bytes, " bytes of KV cache, more than the budget of ",
        options_.kv_budget_bytes));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || draining_) {
      return absl::UnavailableError("worker is draining and accepts no new jobs");
    }
    if (live_ids_.count(job_id)) {
      return absl::AlreadyExistsError(absl::StrCat("job_id '", job_id, "' is already live"));
    }
    // Jobs that the next step admits into free batch slots do not count as
    // waiting (approximately: the KV budget may still hold them back).
    const int32_t free_slots = std::max(0, options_.max_running - running_count_);
    if (static_cast<int32_t>(waiting_.size()) >= options_.max_waiting + free_slots) {
      return absl::ResourceExhaustedError(
          absl::StrCat("wait queue full (", options_.max_waiting, " jobs)"));
    }
    live_ids_[job_id] = sink.get();
    waiting_.push_back(Request{std::move(job_id), std::move(prompt), std::move(params),
                               std::move(sink), kv_bytes});
  }
  wake_.notify_all();
  return absl::OkStatus();
}

void Engine::Cancel(const std::string& job_id, const JobSink* owner) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto live = live_ids_.find(job_id);
    if (live == live_ids_.end() || (owner != nullptr && live->second != owner)) return;
    cancelled_.push_back(Cancellation{job_id, owner});
  }
  wake_.notify_all();
}

void Engine::CancelAll() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [job_id, owner] : live_ids_) cancelled_.push_back(Cancellation{job_id, owner});
  }
  wake_.notify_all();
}

void Engine::StopAccepting() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return EngineStats{running_count_, static_cast<int32_t>(waiting_.size()), kv_used_bytes_,
                     options_.kv_budget_bytes};
}

void Engine::Loop() {
  while (true) {
    std::vector<Cancellation> cancelled;
    std::vector<Request> dropped;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] {
        return stopping_ || !cancelled_.empty() || !running_.empty() || !waiting_.empty();
      });
      if (stopping_) {
        for (Request& r : waiting_) cancelled_.push_back(Cancellation{r.job_id, nullptr});
        for (Running& r : running_) cancelled_.push_back(Cancellation{r.job->job_id(), nullptr});
      }
      cancelled.swap(cancelled_);
      dropped = TakeCancelledWaiting(cancelled);
    }
    // Cancelled before admission: finished without allocating.
    for (Request& r : dropped) {
      JobSummary summary;
      summary.reason = FinishReason::kCancelled;
      r.sink->OnFinished(summary);
    }
    FinishCancelledRunning(cancelled);
    std::vector<Request> admitted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ && waiting_.empty() && running_.empty()) {
        running_count_ = 0;
        return;
      }
      admitted = TakeAdmissible();
    }
    for (Request& r : admitted) Start(std::move(r));
    const int32_t batch_size = running_.empty() ? 0 : Step();
    if (options_.on_step) options_.on_step(batch_size, Stats());
  }
}

std::vector<Engine::Request> Engine::TakeCancelledWaiting(
    const std::vector<Cancellation>& cancelled) {
  std::vector<Request> dropped;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    const auto matches = [&](const Cancellation& c) {
      return c.Matches(it->job_id, it->sink.get());
    };
    if (std::any_of(cancelled.begin(), cancelled.end(), matches)) {
      live_ids_.erase(it->job_id);
      dropped.push_back(std::move(*it));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  return dropped;
}

// Frees the caches of cancelled running jobs before this turn's admissions.
void Engine::FinishCancelledRunning(const std::vector<Cancellation>& cancelled) {
  for (Running& r : running_) {
    const auto matches = [&](const Cancellation& c) {
      return c.Matches(r.job->job_id(), r.sink.get());
    };
    if (std::any_of(cancelled.begin(), cancelled.end(), matches)) {
      r.job->Cancel();
      Finish(r, absl::OkStatus());
    }
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [](const Running& r) { return r.job == nullptr; }),
                 running_.end());
}

std::vector<Engine::Request> Engine::TakeAdmissible() {
  // First come, first served: the head of the queue waits for room rather
  // than being overtaken by smaller jobs (no starvation). Its KV bytes and
  // batch slot are reserved now, so Stats() and Submit see them while the
  // cache is allocated outside the lock.
  std::vector<Request> admitted;
  while (!waiting_.empty() && running_count_ < options_.max_running &&
         kv_used_bytes_ + waiting_.front().kv_bytes <= options_.kv_budget_bytes) {
    kv_used_bytes_ += waiting_.front().kv_bytes;
    running_count_ += 1;
    admitted.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  return admitted;
}

void Engine::Start(Request request) {
  absl::StatusOr<std::unique_ptr<Job>> job;
  try {
    MaybeInjectFault(options_.test_fault, TestFault::Point::kKvAlloc, &kv_allocations_);
    job = Job::Create(request.job_id, std::move(request.prompt), std::move(request.params),
                      model_, tokenizer_);
  } catch (...) {
    job = StatusFromCurrentException(
        absl::StrCat("allocating the KV cache of job ", request.job_id));
  }
  if (!job.ok()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      kv_used_bytes_ -= request.kv_bytes;
      running_count_ -= 1;
      live_ids_.erase(request.job_id);
    }
    request.sink->OnError(job.status());
    return;
  }
  request.sink->OnStarted(JobStart{(*job)->prompt_tokens(), (*job)->seed()});
  running_.push_back(Running{std::move(*job), std::move(request.sink), request.kv_bytes});
}

absl::StatusOr<at::Tensor> Engine::Forward(const std::vector<ForwardItem>& items) {
  try {
    MaybeInjectFault(options_.test_fault, TestFault::Point::kForward, &forwards_);
    return model_->ForwardBatch(items);
  } catch (...) {
    return StatusFromCurrentException("model forward");
  }
}

int32_t Engine::Step() {
  // Decode tokens first (one per job), then prefill chunks within the
  // per-step token budget, oldest job first.
  std::vector<ForwardItem> items;
  std::vector<size_t> owners;  // index into running_ per item
  int64_t prefill_budget = options_.max_prefill_tokens_per_step;
  for (size_t i = 0; i < running_.size(); ++i) {
    Job& job = *running_[i].job;
    if (!job.decoding()) continue;  // still prefilling
    items.push_back({job.NextInput(1), job.next_pos(), job.cache(), false, /*decode=*/true});
    owners.push_back(i);
  }
  for (size_t i = 0; i < running_.size() && prefill_budget > 0; ++i) {
    Job& job = *running_[i].job;
    if (job.decoding()) continue;
    absl::Span<const int32_t> chunk = job.NextInput(prefill_budget);
    prefill_budget -= static_cast<int64_t>(chunk.size());
    items.push_back({chunk, job.next_pos(), job.cache(), false});
    owners.push_back(i);
  }
  if (items.empty()) return 0;
  absl::StatusOr<at::Tensor> logits = Forward(items);
  if (!logits.ok()) {
    // A batch-level failure fails the jobs in it; others are untouched.
    for (size_t owner : owners) Finish(running_[owner], logits.status());
  } else {
    const int64_t vocab = model_->config().vocab_size;
    for (size_t k = 0; k < owners.size(); ++k) {
      Running& r = running_[owners[k]];
      if (!r.job->ready_to_sample()) continue;  // prefill not done yet
      TokenEvent event;
      try {
        event = r.job->Accept(logits->data_ptr<float>() + k * vocab);
      } catch (...) {
        Finish(r, StatusFromCurrentException("sampling"));
        continue;
      }
      r.sink->OnToken(event);
      if (event.finish != FinishReason::kNone) Finish(r, absl::OkStatus());
    }
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [](const Running& r) { return r.job == nullptr; }),
                 running_.end());
  std::lock_guard<std::mutex> lock(mu_);
  running_count_ = static_cast<int32_t>(running_.size());
  return static_cast<int32_t>(items.size());
}

void Engine::Finish(Running& running, const absl::Status& error) {
  JobSummary summary;
  summary.reason = running.job->finish_reason();
  summary.prompt_tokens = running.job->prompt_tokens();
  summary.completion_tokens = running.job->completion_tokens();
  summary.ttft_ms = running.job->ttft_ms();
  summary.decode_tokens_per_s = running.job->decode_tokens_per_s();
  const std::string job_id = running.job->job_id();
  running.job.reset();  // frees the KV cache before anyone hears the job ended
  {
    std::lock_guard<std::mutex> lock(mu_);
    kv_used_bytes_ -= running.kv_bytes;
    running_count_ -= 1;
    live_ids_.erase(job_id);
  }
  if (error.ok()) {
    running.sink->OnFinished(summary);
  } else {
    running.sink->OnError(error);
  }
}

}  // namespace llorch
