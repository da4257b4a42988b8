// One Generate call: the server stream to the client, and the job the
// scheduler core places. Each dispatch starts an attempt, a client stream
// to the worker's Execute; its events are relayed as they arrive (Started is
// held back until the first token, so a retry on another worker is not seen
// by the client). The client's cancellation or deadline cancels the attempt
// (the worker frees the job's KV cache before its next step); the attempt's
// end is reported to the core, which retries, or not.
#ifndef LLORCH_SERVICES_SCHEDULER_GENERATE_CALL_H_
#define LLORCH_SERVICES_SCHEDULER_GENERATE_CALL_H_

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "llorch/v1/scheduler.grpc.pb.h"
#include "llorch/worker/v1/worker.grpc.pb.h"
#include "scheduler/scheduler_core.h"
#include "services/scheduler/scheduler_metrics.h"

namespace llorch {

struct GenerateCallOptions {
  scheduler::SchedulerCore* core = nullptr;
  SchedulerMetrics* metrics = nullptr;  // optional
  // Events read from the worker but not yet written to the client: at this
  // many the scheduler stops reading the worker's stream until the client
  // catches up, so HTTP/2 flow control slows the worker and memory stays
  // bounded; a client that stops reading is then cut off by the worker's own
  // --max_stream_buffer_events (its job cancelled, KV freed).
  size_t max_buffered_events = 64;
};

class Attempt;

class GenerateCall final : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                           public scheduler::JobHandle {
 public:
  // Starts a checked request: submits its job to the core. The reactor owns
  // itself until OnDone.
  static grpc::ServerWriteReactor<v1::GenerateResponse>* Start(
      const GenerateCallOptions& options, grpc::CallbackServerContext* context,
      const v1::GenerateRequest& request, std::string job_id);

  // A reactor that only ends the call with `status` (a refused request).
  static grpc::ServerWriteReactor<v1::GenerateResponse>* Refuse(const grpc::Status& status);

  // grpc::ServerWriteReactor.
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  // scheduler::JobHandle (core thread).
  void Dispatch(const std::string& address, std::shared_ptr<scheduler::WorkerStub> stub,
                int attempt) override;
  void Reject(const absl::Status& status) override;
  void CancelQueued() override;
  void CancelRunning() override;
  const worker::v1::ExecuteRequest* PrefixProbeRequest() const override { return &execute_; }

  // From the current attempt (gRPC threads). False: stop reading until
  // Attempt::Resume (the client is behind).
  bool OnWorkerEvent(const worker::v1::ExecuteEvent& event);
  void OnAttemptDone(const grpc::Status& status);

  GenerateCall(const GenerateCallOptions& options, grpc::CallbackServerContext* context,
               const v1::GenerateRequest& request, std::string job_id);

 private:
  using Clock = std::chrono::steady_clock;

  // Under mu_: queue events for the client.
  void QueueStarted();
  void QueueFinished(const worker::v1::Finished& finished);
  // Ends the stream with `status` once queued events are written; the
  // first end wins. `outcome` is the metrics label.
  void End(grpc::Status status, const std::string& outcome);
  void EndLocked(grpc::Status status, const std::string& outcome);
  void Pump();
  // Under mu_: the attempt to resume now, if it was paused and the client
  // caught up (or the call is over); the caller resumes it outside mu_.
  std::shared_ptr<Attempt> TakePausedAttempt(bool force);
  // Under mu_: what the core hears of an ended attempt.
  void ReportAttemptEnd(const absl::Status& worker_failure, bool retry);

  const GenerateCallOptions options_;
  grpc::CallbackServerContext* const context_;
  const std::string job_id_;
  const std::string model_;
  const worker::v1::ExecuteRequest execute_;
  const Clock::time_point received_;
  // Keeps the call alive until OnDone (the core and attempts hold it too).
  std::shared_ptr<GenerateCall> self_;

  std::mutex mu_;
  std::shared_ptr<Attempt> attempt_;  // the running attempt, if any
  std::string address_;               // its worker
  std::shared_ptr<scheduler::WorkerStub> stub_;
  int retries_ = 0;
  Clock::time_point dispatched_;
  std::optional<worker::v1::Started> worker_started_;
  int32_t tokens_relayed_ = 0;
  Clock::time_point first_token_;
  bool relay_finished_ = false;  // the worker's Finished was queued
  std::string finish_outcome_;
  bool reading_paused_ = false;  // the attempt waits for Resume

  std::deque<v1::GenerateResponse> pending_;
  v1::GenerateResponse current_;
  bool writing_ = false;
  bool broken_ = false;  // cancelled, deadline passed, or a write failed
  bool ended_ = false;
  bool finish_called_ = false;
  grpc::Status final_status_;
};

}  // namespace llorch

#endif  // LLORCH_SERVICES_SCHEDULER_GENERATE_CALL_H_
