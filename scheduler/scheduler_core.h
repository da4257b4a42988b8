// The scheduler's owner thread: it alone holds the worker registry, the
// per-model wait queues and the table of live jobs. gRPC reactors and the
// probes' callbacks post messages to it (Submit, Cancel, AttemptEnded, ...);
// it answers by calling the job's JobHandle. Per-token relaying does not
// pass through here (services/scheduler/generate_call.cc does it), only a
// job's lifecycle: queued -> dispatched -> (retried ->) ended.
#ifndef LLORCH_SCHEDULER_SCHEDULER_CORE_H_
#define LLORCH_SCHEDULER_SCHEDULER_CORE_H_

#include <atomic>
#include <chrono>
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

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "llorch/worker/v1/worker.grpc.pb.h"
#include "scheduler/job_queue.h"
#include "scheduler/placement.h"
#include "scheduler/worker_registry.h"

namespace llorch::scheduler {

using WorkerStub = worker::v1::Worker::StubInterface;

// One Generate call as the core sees it. Every method is called on the core
// thread and must not block.
class JobHandle {
 public:
  virtual ~JobHandle() = default;
  // Run on this worker. `attempt` counts earlier workers that failed it.
  virtual void Dispatch(const std::string& address, std::shared_ptr<WorkerStub> stub,
                        int attempt) = 0;
  // The job will not run (or not again): end the call with `status`.
  virtual void Reject(const absl::Status& status) = 0;
  // Cancel(job_id) while the job waited in the queue: end the stream with
  // Finished{CANCELLED}.
  virtual void CancelQueued() = 0;
  // Cancel(job_id) while the job runs on `address`: ask that worker.
  virtual void CancelRunning() = 0;
  // The request workers' MatchPrefix is asked about (cache-aware placement);
  // null: place on load alone. Must stay valid while the handle lives.
  virtual const worker::v1::ExecuteRequest* PrefixProbeRequest() const { return nullptr; }
};

// Metrics and logs hook in here; called on the core thread.
class CoreObserver {
 public:
  virtual ~CoreObserver() = default;
  virtual void OnWorkerState(const WorkerRecord& worker, WorkerState before) {}
  virtual void OnWorkerAdded(const WorkerRecord& worker) {}
  virtual void OnWorkerRemoved(const std::string& address) {}
  virtual void OnQueueDepth(const std::string& model, size_t depth) {}
  virtual void OnDispatch(const std::string& model, const Placement& placement,
                          double queue_seconds) {}
  // A job's MatchPrefix probes all answered (or timed out) after `seconds`;
  // `failed` of them gave no answer.
  virtual void OnPrefixProbes(const std::string& model, double seconds, int failed) {}
  virtual void OnRetry(const std::string& model, const std::string& address,
                       const absl::Status& why) {}
  // Rejected by the core (queue full, waited too long, no worker, ...).
  virtual void OnRejected(const std::string& model, const absl::Status& status) {}
};

struct CoreOptions {
  size_t max_queue = 256;                          // per model
  Clock::duration max_queue_wait = std::chrono::seconds(60);
  PlacementOptions placement;
  Clock::duration probe_interval = std::chrono::milliseconds(500);
  Clock::duration probe_timeout = std::chrono::seconds(1);
  // Cache-aware placement asks the candidate workers' MatchPrefix when a job
  // arrives; the job waits at most this long for the answers (a worker
  // that did not answer counts as holding nothing).
  Clock::duration prefix_probe_timeout = std::chrono::milliseconds(200);
  Clock::duration dns_refresh = std::chrono::seconds(5);
  // A registered worker gone silent (no heartbeat, probes failing) this long
  // is forgotten.
  Clock::duration registration_ttl = std::chrono::seconds(60);
  int max_retries = 2;
  Clock::duration heartbeat_interval = std::chrono::seconds(1);  // told to workers
  // Makes the stub of a worker's channel (credentials are the caller's).
  std::function<std::shared_ptr<WorkerStub>(const std::string& address,
                                            const std::string& tls_name)>
      make_stub;
  CoreObserver* observer = nullptr;  // optional; outlives the core
  // A --workers name's addresses as "ip:port" (tests replace DNS here);
  // default: getaddrinfo, every IPv4 address, else every IPv6 one.
  std::function<std::vector<std::string>(const std::string& host, const std::string& port)>
      resolve;
};

// What ListModels and ListWorkers show; taken on the core thread.
struct CoreSnapshot {
  std::vector<WorkerRecord> workers;         // ordered by address
  std::map<std::string, size_t> queued;      // model -> jobs in its queue
  Clock::time_point now;
};

class SchedulerCore {
 public:
  explicit SchedulerCore(CoreOptions options);
  ~SchedulerCore();  // stops the threads; live jobs are rejected UNAVAILABLE

  // --workers entries ("host:port"): IP literals are added as they are,
  // names resolved (every IPv4 address, else every IPv6 one) and re-resolved
  // every dns_refresh. Call before Start.
  void AddWorkerEntries(const std::vector<std::string>& entries);
  void Start();

  // The rest is thread-safe: each posts a message to the core thread.
  // ALREADY_EXISTS when job_id is live; else queued or dispatched.
  void Submit(const std::string& job_id, const std::string& model,
              std::shared_ptr<JobHandle> job);
  void Cancel(const std::string& job_id);
  // The client went away while the job waited: forget it (the call ends
  // itself). A dispatched job ends through AttemptEnded instead.
  void Withdraw(const std::string& job_id);
  // The job's attempt on `address` ended. `worker_failure` is not OK when
  // the worker failed as a dead, hung or draining one does (it is marked
  // down until a probe says otherwise). `retry`: no token reached the
  // client, so the job may run elsewhere (else it is over).
  void AttemptEnded(const std::string& job_id, const std::string& address,
                    const absl::Status& worker_failure, bool retry);
  // RegisterWorker: `done` gets the registered address.
  void Register(const std::string& address, std::function<void(absl::Status)> done);
  void Snapshot(std::function<void(CoreSnapshot)> done);

  const CoreOptions& options() const { return options_; }

 private:
  struct JobEntry {
    std::string model;
    std::shared_ptr<JobHandle> handle;
    bool running = false;
    std::string address;  // while running
    int attempts = 0;     // workers that failed it
    absl::flat_hash_set<std::string> tried;
    Clock::time_point submitted;
    // Cache-aware placement: the workers' answers so far, how many are
    // still out (the job is not placed before they are in or overdue).
    PrefixHits prefix_hits;
    uint64_t prefix_probe_round = 0;  // tells a reused job_id's answers apart
    int prefix_probes_pending = 0;
    int prefix_probes_failed = 0;
    Clock::time_point prefix_probes_due;
  };
  struct DnsEntry {
    std::string host;
    std::string port;
  };

  void Post(std::function<void()> message);
  void Loop();
  Clock::time_point NextWake() const;
  void ResolveLoop();

  // Core-thread steps.
  void OnSubmit(const std::string& job_id, const std::string& model,
                std::shared_ptr<JobHandle> job);
  void OnAttemptEnded(const std::string& job_id, const std::string& address,
                      const absl::Status& worker_failure, bool retry);
  void OnRegister(const std::string& address, const std::function<void(absl::Status)>& done);
  void StartPrefixProbes(const std::string& job_id, JobEntry& job);
  void OnPrefixProbeResult(const std::string& job_id, uint64_t round, const std::string& address,
                           const grpc::Status& status, int32_t cached_tokens);
  // Whether the job still waits for MatchPrefix answers.
  bool AwaitingPrefixProbes(const JobEntry& job, Clock::time_point now) const;
  void Tick(Clock::time_point now);
  void ProbeDue(Clock::time_point now);
  void Probe(WorkerRecord& worker);
  void OnProbeResult(const std::string& address, const grpc::Status& status,
                     const worker::v1::InfoResponse& info);
  void SetState(const std::string& address, const std::function<void(WorkerRegistry&)>& change);
  void AddWorker(const std::string& address, WorkerSource source, const std::string& dns_name);
  // Places queued jobs of `model` while workers have free slots.
  void Drain(const std::string& model);
  void DrainAll();
  void ExpireQueued(Clock::time_point now);
  void RunOn(const std::string& job_id, JobEntry& job, const std::string& address);
  void RejectJob(const std::string& job_id, const absl::Status& status);
  JobQueue& QueueOf(const std::string& model);
  void ReportQueue(const std::string& model);
  std::vector<std::string> ForgetSilentWorkers(Clock::time_point now);

  CoreOptions options_;
  std::vector<DnsEntry> dns_entries_;

  std::mutex mu_;  // guards inbox_ and stopping_
  std::condition_variable wake_;
  std::deque<std::function<void()>> inbox_;
  bool stopping_ = false;
  std::thread thread_;
  std::thread resolver_;
  std::condition_variable resolver_wake_;
  std::atomic<int> probes_in_flight_{0};

  // Core thread only.
  WorkerRegistry registry_;
  std::map<std::string, JobQueue> queues_;
  absl::flat_hash_map<std::string, JobEntry> jobs_;
  Clock::time_point next_probe_;
  uint64_t prefix_probe_rounds_ = 0;
};

// "job-" and 16 random hex digits.
std::string NewJobId();

}  // namespace llorch::scheduler

#endif  // LLORCH_SCHEDULER_SCHEDULER_CORE_H_
