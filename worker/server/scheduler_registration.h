// `llorch-worker --scheduler ADDR`: registers the worker with each
// scheduler and keeps it registered. One thread calls
// llorch.v1.Scheduler/RegisterWorker on every scheduler at start and then
// every heartbeat interval (the interval a scheduler answers with, else the
// configured one), each call with its own deadline; a scheduler that
// restarted learns the worker again from the next heartbeat. Logs
// "registered with ADDR as X" on the first success and after a failure,
// and one line per outage ("lost scheduler ADDR: reason", or "cannot
// register with scheduler ADDR: reason" before any success).
#ifndef LLORCH_WORKER_SERVER_SCHEDULER_REGISTRATION_H_
#define LLORCH_WORKER_SERVER_SCHEDULER_REGISTRATION_H_

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "llorch/v1/scheduler.grpc.pb.h"

namespace llorch {

struct SchedulerRegistrationOptions {
  std::vector<std::string> schedulers;  // host:port of each
  // RegisterWorkerRequest.address: the host:port schedulers should call;
  // ":PORT" lets each use the address the registration came from.
  std::string advertise_address;
  std::string model;  // the served model name
  absl::Duration heartbeat_interval = absl::Seconds(1);
  absl::Duration rpc_timeout = absl::Seconds(1);  // deadline of each call
  // For the channels to the schedulers (MakeChannelCredentials); null is
  // plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Sent with each call as `authorization: Bearer TOKEN` (a scheduler with
  // --auth_tokens_file and no --tls_ca asks workers for one); empty: none.
  std::string token;
  std::function<void(const std::string&)> log;  // one line per call; may be empty
};

class SchedulerRegistration {
 public:
  explicit SchedulerRegistration(SchedulerRegistrationOptions options);
  ~SchedulerRegistration();  // Stop()
  SchedulerRegistration(const SchedulerRegistration&) = delete;
  SchedulerRegistration& operator=(const SchedulerRegistration&) = delete;

  // Starts the thread; the first registration is sent at once. Once only.
  void Start();
  // Ends the thread (calls in flight are cancelled) and joins it. Idempotent.
  void Stop();

 private:
  enum class State { kNever, kRegistered, kDown };
  struct Target {
    std::string address;
    std::unique_ptr<v1::Scheduler::Stub> stub;
    State state = State::kNever;
    std::string registered_as;
    absl::Duration interval;  // the scheduler's, else the option's
    std::chrono::steady_clock::time_point next;  // when the next heartbeat is due
  };

  struct Call;  // scheduler_registration.cc

  void Run();
  // Heartbeats to `due` in parallel; returns when every call has ended.
  void Round(const std::vector<Target*>& due);
  // One call per target, with deadline, token and request filled in.
  std::vector<std::unique_ptr<Call>> MakeCalls(const std::vector<Target*>& due) const;
  // Starts `calls` (already in in_flight_), waits for all of them, clears
  // in_flight_ and returns whether Stop was called meanwhile.
  bool SendAndWait(const std::vector<std::unique_ptr<Call>>& calls);
  // Update `target` after a successful or failed heartbeat, logging changes.
  void OnRegistered(Target& target, const v1::RegisterWorkerResponse& response);
  void OnFailed(Target& target, const grpc::Status& status);
  void Log(const std::string& line) const;

  const SchedulerRegistrationOptions options_;
  std::vector<Target> targets_;  // touched by the thread only

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::vector<grpc::ClientContext*> in_flight_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace llorch

#endif  // LLORCH_WORKER_SERVER_SCHEDULER_REGISTRATION_H_
