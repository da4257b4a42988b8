// The engine: one thread owns the model's compute and every job's state;
// other threads talk to it through a queue (TGI/vLLM style). Each step it
// admits waiting jobs that fit the KV budget (allocating their caches), then
// runs one forward over a batch mixing prefill chunks (bounded tokens per
// step) and one decode token for every running job, and delivers events.
// Sinks and KV allocation run outside the engine's lock, so a sink may call
// Cancel. An exception in a forward or an allocation ends only the jobs it
// touched (see faults.h); the engine serves on.
#ifndef LLORCH_WORKER_ENGINE_ENGINE_H_
#define LLORCH_WORKER_ENGINE_ENGINE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/engine/faults.h"
#include "worker/engine/job.h"
#include "worker/model/llama_model.h"
#include "worker/tokenizer/tokenizer.h"

namespace llorch {

struct EngineStats {
  int32_t running = 0;
  int32_t waiting = 0;
  size_t kv_used_bytes = 0;
  size_t kv_budget_bytes = 0;
};

struct EngineOptions {
  size_t kv_budget_bytes = size_t{1} << 30;  // KV memory of all running jobs together
  int32_t max_running = 16;                 // jobs decoding together (batch size)
  int32_t max_waiting = 256;                // jobs queued beyond free batch slots
  int64_t max_prefill_tokens_per_step = 512;
  // Called on the engine thread after every loop turn (admissions,
  // cancellations and at most one forward): `batch_size` is the number of
  // jobs in that forward, 0 when none ran. For metrics; must not block.
  std::function<void(int32_t batch_size, const EngineStats& stats)> on_step;
  TestFault test_fault = TestFaultFromEnv();  // test only; inert by default
};

struct JobSummary {
  FinishReason reason = FinishReason::kNone;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  double ttft_ms = 0;
  double decode_tokens_per_s = 0;
};

struct JobStart {
  int32_t prompt_tokens = 0;
  uint64_t seed = 0;  // the one the job samples with (Job::seed)
};

// Receives one job's events on the engine thread, in order and outside the
// engine's lock: must not block, may call Engine::Cancel.
class JobSink {
 public:
  virtual ~JobSink() = default;
  virtual void OnStarted(const JobStart& start) = 0;       // admitted, KV allocated
  virtual void OnToken(const TokenEvent& event) = 0;
  virtual void OnFinished(const JobSummary& summary) = 0;  // last call, also on cancel
  virtual void OnError(const absl::Status& status) = 0;    // last call instead of OnFinished
};

class Engine {
 public:
  Engine(const LlamaModel* model, const Tokenizer* tokenizer, EngineOptions options);
  ~Engine();  // cancels every job and joins the thread
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a job. Errors (nothing queued, sink not called): InvalidArgument
  // (parameters, prompt), AlreadyExists (a live job has this id),
  // ResourceExhausted (the job can never fit the KV budget, or the wait queue
  // is full), Unavailable (shutting down).
  absl::Status Submit(std::string job_id, std::vector<int32_t> prompt, GenerationParams params,
                      std::shared_ptr<JobSink> sink);
  // Idempotent; unknown or finished ids are ignored. The job's sink gets
  // OnFinished(kCancelled) and its KV memory is freed before the next step.
  // With `owner`, only the job submitted with that sink is cancelled, never
  // a later or earlier job that reuses the id.
  void Cancel(const std::string& job_id, const JobSink* owner = nullptr);
  // Cancels every waiting and running job, as Cancel does for each.
  void CancelAll();
  // Draining: from now on Submit fails with Unavailable; queued and running
  // jobs go on. Idempotent.
  void StopAccepting();
  EngineStats Stats() const;
  const EngineOptions& options() const { return options_; }

 private:
  struct Request {
    std::string job_id;
    std::vector<int32_t> prompt;
    GenerationParams params;
    std::shared_ptr<JobSink> sink;
    size_t kv_bytes = 0;
  };
  struct Running {
    std::unique_ptr<Job> job;
    std::shared_ptr<JobSink> sink;
    size_t kv_bytes = 0;
  };
  struct Cancellation {
    std::string job_id;
    const JobSink* owner = nullptr;  // null: whichever job has the id
    bool Matches(const std::string& id, const JobSink* sink) const {
      return id == job_id && (owner == nullptr || owner == sink);
    }
  };

  // Engine thread. The Take* ones run with mu_ held and only move state;
  // the others call sinks or allocate, taking mu_ only briefly.
  void Loop();
  std::vector<Request> TakeCancelledWaiting(const std::vector<Cancellation>& cancelled);
  void FinishCancelledRunning(const std::vector<Cancellation>& cancelled);
  std::vector<Request> TakeAdmissible();  // reserves their KV bytes and batch slots
  void Start(Request request);            // allocates the job's KV cache
  int32_t Step();                         // returns the batch size
  absl::StatusOr<at::Tensor> Forward(const std::vector<ForwardItem>& items);
  void Finish(Running& running, const absl::Status& error);

  const LlamaModel* model_;
  const Tokenizer* tokenizer_;
  const EngineOptions options_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool draining_ = false;
  std::deque<Request> waiting_;                     // guarded by mu_
  std::vector<Cancellation> cancelled_;             // guarded by mu_
  std::map<std::string, const JobSink*> live_ids_;  // waiting or running; guarded by mu_
  std::vector<Running> running_;  // engine thread only (counts mirrored below)
  int32_t running_count_ = 0;     // running or being started; guarded by mu_
  size_t kv_used_bytes_ = 0;      // including reservations; guarded by mu_
  int64_t forwards_ = 0, kv_allocations_ = 0;  // engine thread; for test_fault
  std::thread thread_;
};

}  // namespace llorch

#endif  // LLORCH_WORKER_ENGINE_ENGINE_H_
