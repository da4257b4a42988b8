#include "services/scheduler/generate_call.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/grpc/status.h"
#include "services/scheduler/generate_request.h"

namespace llorch {
namespace {

namespace wv1 = worker::v1;

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::string CodeName(grpc::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(static_cast<absl::StatusCode>(code)));
}

std::string FinishOutcome(wv1::FinishReason reason) {
  switch (reason) {
    case wv1::FINISH_REASON_EOS: return "eos";
    case wv1::FINISH_REASON_LENGTH: return "length";
    case wv1::FINISH_REASON_STOP: return "stop";
    case wv1::FINISH_REASON_CANCELLED: return "cancelled";
    default: break;
  }
  return "unspecified";
}

// A worker that died, was killed, or is draining: the job may run elsewhere
// if nothing reached the client yet.
bool WorkerFailed(const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) return true;
  // A connection torn down mid-stream can surface as these.
  return (status.error_code() == grpc::StatusCode::INTERNAL ||
          status.error_code() == grpc::StatusCode::UNKNOWN) &&
         (absl::StrContains(status.error_message(), "RST_STREAM") ||
          absl::StrContains(status.error_message(), "Stream removed") ||
          absl::StrContains(status.error_message(), "Socket closed"));
}

}  // namespace

// One Execute stream to a worker. Owns itself (self_) until OnDone; the
// call holds it meanwhile so that it can cancel it. Reads go on from
// OnReadDone while the call keeps up, else from Resume, outside the
// reactions: hence the hold, released when the stream has ended.
class Attempt final : public grpc::ClientReadReactor<wv1::ExecuteEvent> {
 public:
  Attempt(std::shared_ptr<GenerateCall> call, std::shared_ptr<scheduler::WorkerStub> stub)
      : call_(std::move(call)), stub_(std::move(stub)) {}

  void Go(std::shared_ptr<Attempt> self, const wv1::ExecuteRequest* request,
          std::chrono::system_clock::time_point deadline) {
    self_ = std::move(self);
    context_.set_deadline(deadline);  // the client's deadline bounds the worker's call
    stub_->async()->Execute(&context_, request, this);
    AddHold();
    StartRead(&event_);
    StartCall();
  }

  void Cancel() { context_.TryCancel(); }
  // The call caught up: read on.
  void Resume() { StartRead(&event_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      RemoveHold();  // the stream ended: nothing will read again
      return;
    }
    if (call_->OnWorkerEvent(event_)) StartRead(&event_);
  }

  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<Attempt> keep = std::move(self_);
    call_->OnAttemptDone(status);
    call_.reset();
  }

 private:
  std::shared_ptr<GenerateCall> call_;
  std::shared_ptr<scheduler::WorkerStub> stub_;
  std::shared_ptr<Attempt> self_;
  grpc::ClientContext context_;
  wv1::ExecuteEvent event_;
};

GenerateCall::GenerateCall(const GenerateCallOptions& options,
                           grpc::CallbackServerContext* context,
                           const v1::GenerateRequest& request, std::string job_id)
    : options_(options),
      context_(context),
      job_id_(std::move(job_id)),
      model_(request.model()),
      execute_(ToExecuteRequest(request, job_id_)),
      received_(Clock::now()) {}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateCall::Start(
    const GenerateCallOptions& options, grpc::CallbackServerContext* context,
    const v1::GenerateRequest& request, std::string job_id) {
  auto call = std::make_shared<GenerateCall>(options, context, request, std::move(job_id));
  call->self_ = call;
  options.core->Submit(call->job_id_, call->model_, call);
  return call.get();
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateCall::Refuse(const grpc::Status& status) {
  class Refusal final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
   public:
    explicit Refusal(const grpc::Status& status) { Finish(status); }
    void OnDone() override { delete this; }
  };
  return new Refusal(status);
}

void GenerateCall::Dispatch(const std::string& address,
                            std::shared_ptr<scheduler::WorkerStub> stub, int attempt) {
  std::shared_ptr<Attempt> started;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_ || ended_) {
      // The client left while the job was being placed.
      options_.core->AttemptEnded(job_id_, address, absl::OkStatus(), /*retry=*/false);
      return;
    }
    address_ = address;
    stub_ = stub;
    retries_ = attempt;
    dispatched_ = Clock::now();
    worker_started_.reset();
    started = attempt_ = std::make_shared<Attempt>(self_, std::move(stub));
  }
  started->Go(started, &execute_, context_->deadline());
}

void GenerateCall::Reject(const absl::Status& status) {
  End(ToGrpcStatus(status), CodeName(static_cast<grpc::StatusCode>(status.code())));
}

void GenerateCall::CancelQueued() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wv1::Finished finished;
    finished.set_reason(wv1::FINISH_REASON_CANCELLED);
    QueueFinished(finished);
    EndLocked(grpc::Status::OK, "cancelled");
  }
  Pump();
}

// The worker's stream then ends with Finished{CANCELLED}, relayed as usual.
void GenerateCall::CancelRunning() {
  struct CancelRpc {
    grpc::ClientContext context;
    wv1::CancelRequest request;
    wv1::CancelResponse response;
  };
  std::shared_ptr<scheduler::WorkerStub> stub;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stub = stub_;
  }
  if (stub == nullptr) return;
  auto rpc = std::make_shared<CancelRpc>();
  rpc->request.set_job_id(job_id_);
  rpc->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  stub->async()->Cancel(&rpc->context, &rpc->request, &rpc->response,
                        [rpc, stub](grpc::Status) {});
}

void GenerateCall::QueueStarted() {
  v1::GenerateResponse event;
  v1::Started* started = event.mutable_started();
  started->set_job_id(job_id_);
  started->set_model(model_);
  started->set_worker(address_);
  started->set_retries(retries_);
  if (worker_started_) {
    started->set_prompt_tokens(worker_started_->prompt_tokens());
    started->set_seed(worker_started_->seed());
    started->set_cached_prompt_tokens(worker_started_->cached_prompt_tokens());
  }
  pending_.push_back(std::move(event));
}

void GenerateCall::QueueFinished(const wv1::Finished& in) {
  v1::GenerateResponse event;
  v1::Finished* out = event.mutable_finished();
  out->set_reason(static_cast<v1::FinishReason>(in.reason()));
  out->set_prompt_tokens(in.prompt_tokens());
  out->set_completion_tokens(in.completion_tokens());
  out->set_decode_tokens_per_second(in.decode_tokens_per_second());
  if (tokens_relayed_ > 0) out->set_ttft_seconds(Seconds(first_token_ - received_));
  if (dispatched_ != Clock::time_point()) {
    out->set_queue_seconds(Seconds(dispatched_ - received_) + in.queue_seconds());
  }
  pending_.push_back(std::move(event));
}

bool GenerateCall::OnWorkerEvent(const wv1::ExecuteEvent& event) {
  bool keep_reading = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_ || ended_) return true;  // read to the end: the stream is being cancelled
    switch (event.event_case()) {
      case wv1::ExecuteEvent::kStarted:
        worker_started_ = event.started();  // sent with the first token
        return true;
      case wv1::ExecuteEvent::kToken: {
        const Clock::time_point now = Clock::now();
        if (tokens_relayed_++ == 0) {
          first_token_ = now;
          QueueStarted();
          if (options_.metrics) options_.metrics->time_to_first_token.Observe(Seconds(now - received_));
        }
        const wv1::Token& in = event.token();
        v1::GenerateResponse out;
        v1::Token* token = out.mutable_token();
        token->set_index(in.index());
        token->set_id(in.id());
        token->set_text(in.text());
        token->set_logprob(in.logprob());
        for (const wv1::TopLogprob& alt : in.top_logprobs()) {
          v1::TopLogprob* top = token->add_top_logprobs();
          top->set_id(alt.id());
          top->set_logprob(alt.logprob());
        }
        pending_.push_back(std::move(out));
        if (options_.metrics) options_.metrics->relayed_tokens.Increment();
        break;
      }
      case wv1::ExecuteEvent::kFinished:
        if (tokens_relayed_ == 0) QueueStarted();
        QueueFinished(event.finished());
        relay_finished_ = true;
        finish_outcome_ = FinishOutcome(event.finished().reason());
        break;
      case wv1::ExecuteEvent::EVENT_NOT_SET:
        return true;
    }
    reading_paused_ = pending_.size() >= options_.max_buffered_events;
    keep_reading = !reading_paused_;
  }
  Pump();
  return keep_reading;
}

void GenerateCall::OnAttemptDone(const grpc::Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    attempt_.reset();
    reading_paused_ = false;
    if (relay_finished_) {
      EndLocked(grpc::Status::OK, finish_outcome_);
      ReportAttemptEnd(absl::OkStatus(), false);
    } else if (broken_) {
      EndLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled"), "cancelled");
      ReportAttemptEnd(absl::OkStatus(), false);
    } else if (status.ok()) {
      EndLocked(grpc::Status(grpc::StatusCode::INTERNAL,
                             absl::StrCat("worker ", address_, " ended the stream without Finished")),
                "internal");
      ReportAttemptEnd(absl::OkStatus(), false);
    } else if (WorkerFailed(status)) {
      const absl::Status failure = absl::UnavailableError(
          absl::StrCat("worker ", address_, ": ", status.error_message()));
      if (tokens_relayed_ == 0) {
        ReportAttemptEnd(failure, /*retry=*/true);  // the core dispatches again, or rejects
      } else {
        const int32_t prompt_tokens = worker_started_ ? worker_started_->prompt_tokens() : 0;
        context_->AddTrailingMetadata("llorch-prompt-tokens", std::to_string(prompt_tokens));
        context_->AddTrailingMetadata("llorch-completion-tokens", std::to_string(tokens_relayed_));
        EndLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                               absl::StrCat("worker ", address_, " failed after ", tokens_relayed_,
                                            " tokens (prompt_tokens ", prompt_tokens,
                                            ", completion_tokens ", tokens_relayed_,
                                            "): ", status.error_message())),
                  "unavailable");
        ReportAttemptEnd(failure, false);
      }
    } else {
      // The worker's own verdict (INVALID_ARGUMENT for a token id outside
      // the vocabulary, ...): the client's.
      EndLocked(status, CodeName(status.error_code()));
      ReportAttemptEnd(absl::OkStatus(), false);
    }
  }
  Pump();
}

void GenerateCall::ReportAttemptEnd(const absl::Status& worker_failure, bool retry) {
  options_.core->AttemptEnded(job_id_, address_, worker_failure, retry);
}

void GenerateCall::OnCancel() {
  std::shared_ptr<Attempt> attempt;
  std::shared_ptr<Attempt> paused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    broken_ = true;
    attempt = attempt_;
    paused = TakePausedAttempt(/*force=*/true);
    if (attempt == nullptr) {
      // Queued (or between attempts): the core forgets it; we end here.
      EndLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled"), "cancelled");
    }
  }
  if (attempt != nullptr) {
    attempt->Cancel();  // its OnDone reports to the core
    if (paused != nullptr) paused->Resume();  // so that its read fails and it ends
  } else {
    options_.core->Withdraw(job_id_);
  }
  Pump();
}

void GenerateCall::OnWriteDone(bool ok) {
  std::shared_ptr<Attempt> paused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) broken_ = true;  // the call is gone; OnCancel follows
    paused = TakePausedAttempt(/*force=*/broken_);
  }
  if (paused != nullptr) paused->Resume();
  Pump();
}

std::shared_ptr<Attempt> GenerateCall::TakePausedAttempt(bool force) {
  if (!reading_paused_ || attempt_ == nullptr) return nullptr;
  if (!force && pending_.size() > options_.max_buffered_events / 2) return nullptr;
  reading_paused_ = false;
  return attempt_;
}

void GenerateCall::OnDone() {
  if (options_.metrics) options_.metrics->request_duration.Observe(Seconds(Clock::now() - received_));
  self_.reset();  // may delete this: touch nothing after
}

void GenerateCall::End(grpc::Status status, const std::string& outcome) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    EndLocked(std::move(status), outcome);
  }
  Pump();
}

void GenerateCall::EndLocked(grpc::Status status, const std::string& outcome) {
  if (ended_) return;
  ended_ = true;
  final_status_ = std::move(status);
  if (options_.metrics) {
    // A name no worker serves is the client's to choose: no label for it.
    const bool unknown = final_status_.error_code() == grpc::StatusCode::NOT_FOUND;
    options_.metrics->CountRequest(unknown ? "" : model_, outcome);
  }
}

// Starts the next write, or finishes the call; one write in flight at a
// time, gRPC calls outside the lock (as the worker's reactor does).
void GenerateCall::Pump() {
  enum { kNothing, kWrite, kFinish } action = kNothing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (writing_ || finish_called_) return;
    if (broken_) pending_.clear();
    if (!pending_.empty()) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      writing_ = true;
      action = kWrite;
    } else if (ended_) {
      finish_called_ = true;
      action = kFinish;
    }
  }
  if (action == kWrite) {
    StartWrite(&current_);
  } else if (action == kFinish) {
    Finish(final_status_);
  }
}

}  // namespace llorch
