// The engine: one thread owns the model's compute and every job's state;
// other threads talk to it through a queue (TGI/vLLM style). KV memory is a
// pool of blocks (BlockManager): a job is admitted when its prompt's blocks
// fit (those of a cached prefix are mapped, not computed) and grows block
// by block; when the pool runs dry mid-decode, the most recently admitted
// job gives its blocks back and is recomputed later, its stream unbroken.
// Each step runs one forward over a batch mixing prefill chunks (bounded
// tokens per step) and one decode token for every running job, and delivers
// events. Sinks run outside the engine's lock, so a sink may call Cancel.
// An exception in a forward or an admission ends only the jobs it touched
// (see faults.h); the engine serves on.
#ifndef LLORCH_WORKER_ENGINE_ENGINE_H_
#define LLORCH_WORKER_ENGINE_ENGINE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/engine/block_manager.h"
#include "worker/engine/faults.h"
#include "worker/engine/job.h"
#include "worker/engine/model_runner.h"
#include "worker/model/llama_model.h"
#include "worker/tokenizer/tokenizer.h"

namespace llorch {

struct EngineStats {
  int32_t running = 0;
  int32_t waiting = 0;  // queued, and preempted jobs waiting to be recomputed
  size_t kv_used_bytes = 0;    // blocks referenced by jobs
  size_t kv_budget_bytes = 0;  // the pool
  int32_t kv_blocks_total = 0;
  int32_t kv_blocks_used = 0;
  int32_t kv_blocks_cached = 0;  // unreferenced, kept for their prefix
  int32_t kv_block_size = 0;
  // Since the engine started: jobs preempted for KV memory; prompt tokens
  // looked up in the prefix cache and those found there.
  int64_t preemptions = 0;
  int64_t prefix_queried_tokens = 0;
  int64_t prefix_hit_tokens = 0;
};

struct EngineOptions {
  // KV memory of all jobs together: a pool of blocks of kv_block_size
  // positions, allocated when the engine starts.
  size_t kv_budget_bytes = size_t{1} << 30;
  int32_t kv_block_size = 16;
  // Full blocks outlive their jobs and are mapped by later jobs whose
  // sequences start with the same tokens.
  bool prefix_cache = true;
  // With prefix_cache: once a job ends (not cancelled), its prompt and
  // answer are computed again as prompt rows by a background job, when no
  // other job waits, so that the next turn of a chat maps the answer's
  // blocks too (a generated row is computed in one-token order, the same
  // token in a later prompt in batch order: only prompt rows are shared).
  // The background job is invisible in Stats() and gives way (ends) when
  // KV memory runs short.
  bool cache_answers = false;
  int32_t max_running = 16;                 // jobs decoding together (batch size)
  int32_t max_waiting = 256;                // jobs queued beyond free batch slots
  int64_t max_prefill_tokens_per_step = 512;
  // Admission reserves blocks for prompt + max_tokens up front, as before
  // paging (no preemption ever). For comparisons (tools/bench-kv.sh).
  bool reserve_whole_jobs = false;
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
  int32_t cached_prompt_tokens = 0;  // found in the prefix cache, not computed
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
  // Leading prompt tokens whose blocks the prefix cache held after the last
  // step (whole blocks, never the last token): what a job with this prompt
  // would find, for placement. Any thread; by block hashes.
  int32_t CachedPrefixTokens(const std::vector<int32_t>& prompt) const;
  const EngineOptions& options() const { return options_; }

 private:
  struct Request {
    std::string job_id;
    std::vector<int32_t> prompt;
    GenerationParams params;
    std::shared_ptr<JobSink> sink;
    bool background = false;  // an answer recomputed for the prefix cache
  };
  // KV blocks set aside for a job being admitted: cached blocks of its
  // prefix (already computed) followed by fresh ones.
  struct Reservation {
    std::vector<BlockId> blocks;
    int32_t num_cached = 0;  // leading blocks found in the prefix cache
    BlockManager::ChainLink chain;
  };
  struct Running {
    std::unique_ptr<Job> job;
    std::shared_ptr<JobSink> sink;
    int32_t num_chained = 0;        // full blocks matched or registered
    BlockManager::ChainLink chain;  // the content they end with
    bool background = false;
  };
  struct Cancellation {
    std::string job_id;
    const JobSink* owner = nullptr;  // null: whichever job has the id
    bool Matches(const std::string& id, const JobSink* sink) const {
      return id == job_id && (owner == nullptr || owner == sink);
    }
  };

  // Engine thread. The Take* ones run with mu_ held and only move state;
  // the others call sinks, taking mu_ only briefly.
  void Loop();
  std::vector<Request> TakeCancelledWaiting(const std::vector<Cancellation>& cancelled);
  void FinishCancelled(const std::vector<Cancellation>& cancelled);
  void ResumePreempted();  // preempted jobs go before new ones
  std::vector<std::pair<Request, Reservation>> TakeAdmissible();
  // Maps the longest cached prefix of `tokens` (whose first `num_prompt`
  // are prompt rows) and allocates blocks for the rest, up to `max_positions`
  // with reserve_whole_jobs; nullopt (nothing held) when they do not fit
  // beside the running jobs.
  std::optional<Reservation> Reserve(const std::vector<int32_t>& tokens, int32_t num_prompt,
                                     int64_t max_positions);
  void Start(Request request, Reservation reservation);
  // Gives each decoding job room for its next token, preempting the most
  // recently admitted jobs when the pool runs dry.
  void GrowForDecode();
  void Preempt(Running& running);
  int32_t Step();  // returns the batch size
  void RegisterFullBlocks(Running& running);  // into the prefix cache
  void ReleaseBlocks(const KvCache& cache);
  // `is_running`: in running_ (not preempted), counted in running_count_.
  void Finish(Running& running, const absl::Status& error, bool is_running = true);
  void PublishStats();  // the block manager's counts, for Stats()
  // cache_answers: queues the ended job's sequence for a background job.
  void QueueAnswer(const Running& running);
  // Under mu_: admits the oldest queued answer when nothing else waits (or
  // drops it when it does not fit now).
  std::optional<std::pair<Request, Reservation>> TakeBackgroundAnswer();
  // Ends the running background job, if any, to free its blocks; true if
  // there was one.
  bool EndBackgroundJob();

  const LlamaModel* model_;
  const Tokenizer* tokenizer_;
  const EngineOptions options_;
  ModelRunner runner_;            // engine thread only
  std::unique_ptr<KvPool> pool_;  // the tensors; blocks_ says who owns which block
  BlockManager blocks_;           // engine thread only
  const size_t block_bytes_;
  const uint64_t root_hash_;  // blocks_.Root().hash, for any thread

  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool draining_ = false;
  std::deque<Request> waiting_;                     // guarded by mu_
  std::vector<Cancellation> cancelled_;             // guarded by mu_
  std::map<std::string, const JobSink*> live_ids_;  // waiting or running; guarded by mu_
  std::vector<Running> running_;    // engine thread only, in admission order
  std::deque<Running> preempted_;   // engine thread only, next to resume first
  int32_t running_count_ = 0;       // running or being started; guarded by mu_
  std::deque<Request> answers_;     // cache_answers: sequences to recompute; guarded by mu_
  int32_t background_running_ = 0;  // 0 or 1, within running_count_; guarded by mu_
  EngineStats stats_;               // block counts and totals; guarded by mu_
  // The registered blocks' hashes (with their counts: distinct blocks may
  // collide) as of the last step, for CachedPrefixTokens; guarded by mu_.
  absl::flat_hash_map<uint64_t, int32_t> registered_hashes_;
  std::vector<BlockManager::HashEvent> hash_events_;  // engine thread; reused
  int64_t kv_allocations_ = 0;    // engine thread; for test_fault
  std::thread thread_;
};

}  // namespace llorch

#endif  // LLORCH_WORKER_ENGINE_ENGINE_H_
