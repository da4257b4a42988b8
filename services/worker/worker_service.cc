#include "services/worker/worker_service.h"

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/grpc/lenient_utf8.h"
#include "common/grpc/status.h"
#include "grpc/health/v1/health.pb.h"
#include "services/worker/execute_request.h"
#include "worker/model/kv_cache.h"
#include "worker/tokenizer/utf8.h"

namespace llorch {
namespace {

namespace v1 = worker::v1;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string OutcomeForError(const absl::Status& status) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(status.code()));
}

// One Execute call. Owns itself: deleted in OnDone, which gRPC calls only
// after Finish, which is called only once the engine has made its last call
// on the sink (or the job was never submitted). So the engine never touches
// a deleted reactor.
class ExecuteReactor final : public grpc::ServerWriteReactor<v1::ExecuteEvent> {
 public:
  ExecuteReactor(const WorkerServiceOptions& options, grpc::CallbackServerContext* context)
      : options_(options), context_(context), start_(Clock::now()) {}

  void Start(const v1::ExecuteRequest& request) {
    absl::StatusOr<JobRequest> job = ToJobRequest(request, *options_.model);
    absl::Status submitted = job.status();
    if (job.ok()) {
      job_id_ = job->job_id;
      sink_ = std::make_shared<Sink>(this);
      submitted = options_.engine->Submit(std::move(job->job_id), std::move(job->prompt),
                                          std::move(job->params), sink_);
    }
    if (!submitted.ok()) {
      sink_.reset();  // no job of ours: nothing to cancel, whatever holds the id
      Fail(submitted);
    }
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) broken_ = true;  // the call is gone; OnCancel follows
    }
    Pump();
  }

  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      broken_ = true;
    }
    CancelJob();
    Pump();
  }

  void OnDone() override { delete this; }

 private:
  // Runs on the engine thread; must not block.
  class Sink final : public JobSink {
   public:
    explicit Sink(ExecuteReactor* reactor) : reactor_(reactor) {}
    void OnStarted(const JobStart& start) override { reactor_->OnStarted(start); }
    void OnToken(const TokenEvent& token) override { reactor_->OnToken(token); }
    void OnFinished(const JobSummary& summary) override { reactor_->OnFinished(summary); }
    void OnError(const absl::Status& status) override { reactor_->Fail(status); }

   private:
    ExecuteReactor* const reactor_;
  };

  // Cancels this call's own job only: the engine matches the sink, so a job
  // that has (or later takes) the same id is never touched, e.g. the live
  // one that made this call's Submit fail with ALREADY_EXISTS.
  void CancelJob() {
    if (sink_ != nullptr) options_.engine->Cancel(job_id_, sink_.get());
  }

  void OnStarted(const JobStart& start) {
    if (options_.metrics) options_.metrics->prompt_tokens.Increment(start.prompt_tokens);
    v1::ExecuteEvent event;
    event.mutable_started()->set_job_id(job_id_);
    event.mutable_started()->set_prompt_tokens(start.prompt_tokens);
    event.mutable_started()->set_seed(start.seed);
    event.mutable_started()->set_cached_prompt_tokens(start.cached_prompt_tokens);
    admitted_ = Clock::now();
    Push(std::move(event));
  }

  void OnToken(const TokenEvent& token) {
    const Clock::time_point now = Clock::now();
    if (WorkerMetrics* m = options_.metrics) {
      m->generated_tokens.Increment();
      if (token.index == 0) {
        m->time_to_first_token.Observe(std::chrono::duration<double>(now - start_).count());
      } else {
        m->inter_token_latency.Observe(std::chrono::duration<double>(now - last_token_).count());
      }
    }
    if (token.index == 0) first_token_ = now;
    last_token_ = now;
    v1::ExecuteEvent event;
    v1::Token* out = event.mutable_token();
    out->set_index(token.index);
    out->set_id(token.id);
    out->set_text(token.text);
    out->set_logprob(token.logprob);
    for (const auto& [id, logprob] : token.top_logprobs) {
      v1::TopLogprob* top = out->add_top_logprobs();
      top->set_id(id);
      top->set_logprob(logprob);
    }
    Push(std::move(event));
  }

  void OnFinished(const JobSummary& summary) {
    v1::ExecuteEvent event;
    v1::Finished* out = event.mutable_finished();
    out->set_reason(ToProtoFinishReason(summary.reason));
    out->set_prompt_tokens(summary.prompt_tokens);
    out->set_completion_tokens(summary.completion_tokens);
    // One TTFT everywhere: from receiving the request, as the metric measures.
    if (summary.completion_tokens > 0) {
      out->set_ttft_seconds(std::chrono::duration<double>(first_token_ - start_).count());
    }
    if (admitted_ != Clock::time_point()) {
      out->set_queue_seconds(std::chrono::duration<double>(admitted_ - start_).count());
    }
    out->set_decode_tokens_per_second(summary.decode_tokens_per_s);
    Push(std::move(event));
    // Events were dropped: the job, cancelled or not, did not reach the client.
    if (Overflowed()) return Fail(NotReading());
    if (WorkerMetrics* m = options_.metrics) {
      const bool deadline_passed =
          summary.reason == FinishReason::kCancelled && context_->deadline() < std::chrono::system_clock::now();
      m->CountRequest(deadline_passed ? "deadline_exceeded" : FinishReasonName(summary.reason));
      m->request_duration.Observe(SecondsSince(start_));
    }
    End(grpc::Status::OK);
  }

  // The job failed or was refused: the stream ends with `status`.
  void Fail(const absl::Status& status) {
    if (options_.metrics) options_.metrics->CountRequest(OutcomeForError(status));
    End(ToGrpcStatus(status));
  }

  absl::Status NotReading() const {
    return absl::ResourceExhaustedError(absl::StrCat(
        "client is not reading the stream: more than ", options_.max_stream_buffer_events,
        " events or ", options_.max_stream_buffer_bytes, " bytes waited; the job was cancelled"));
  }

  bool Overflowed() {
    std::lock_guard<std::mutex> lock(mu_);
    return overflowed_;
  }

  // Queues an event. Past the buffer limits the queue is dropped and the job
  // cancelled (outside mu_: the engine may be the caller, and Cancel locks).
  void Push(v1::ExecuteEvent event) {
    bool overflowed = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (broken_ || overflowed_) return;
      pending_bytes_ += event.ByteSizeLong();
      pending_.push_back(std::move(event));
      if (pending_.size() > options_.max_stream_buffer_events ||
          pending_bytes_ > options_.max_stream_buffer_bytes) {
        overflowed_ = overflowed = true;
        pending_.clear();
        pending_bytes_ = 0;
      }
    }
    if (overflowed) CancelJob();  // its OnFinished ends the stream
    Pump();
  }

  // The last event: the stream finishes with `status` once queued events
  // are written (or at once if the call is broken). Marked ended inside
  // Pump's critical section: once ended_ is visible, a gRPC thread's
  // OnWriteDone may finish the call and OnDone delete `this`, so the engine
  // thread must not touch `this` after releasing the lock (ASan found a
  // use-after-free when End set ended_ and then called Pump separately).
  void End(grpc::Status status) {
    Pump([&] {
      final_status_ = std::move(status);
      ended_ = true;
    });
  }

  // Applies `update` to the state, then starts the next write or finishes
  // the call; one write in flight at a time. The gRPC calls happen outside
  // the lock and are the last use of `this`: after Finish, or after a write
  // that ends an ended stream, OnDone may already be deleting it.
  void Pump(const std::function<void()>& update = nullptr) {
    enum { kNothing, kWrite, kFinish } action = kNothing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (update) update();
      if (writing_ || finish_called_) return;
      if (broken_) {
        pending_.clear();
        pending_bytes_ = 0;
      }
      if (!pending_.empty()) {
        current_ = std::move(pending_.front());
        pending_.pop_front();
        pending_bytes_ -= current_.ByteSizeLong();
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

  const WorkerServiceOptions& options_;
  grpc::CallbackServerContext* const context_;
  const Clock::time_point start_;
  Clock::time_point admitted_;     // Started sent (engine thread)
  Clock::time_point first_token_;  // first Token sent (engine thread)
  Clock::time_point last_token_;  // engine thread
  std::string job_id_;            // set before Submit, then read-only
  // Held until OnDone, so no other job's sink can reuse its address while
  // this call may still cancel by it. Null when nothing was submitted.
  std::shared_ptr<Sink> sink_;

  std::mutex mu_;
  std::deque<v1::ExecuteEvent> pending_;
  size_t pending_bytes_ = 0;  // serialized size of pending_
  v1::ExecuteEvent current_;  // being written
  bool writing_ = false;
  bool broken_ = false;      // cancelled or a write failed: drop further events
  bool overflowed_ = false;  // the client stopped reading: drop further events
  bool ended_ = false;
  bool finish_called_ = false;
  grpc::Status final_status_;
};

const absl::Status& NotReady() {
  static const absl::Status* status =
      new absl::Status(absl::UnavailableError("worker is starting: the model is not loaded yet"));
  return *status;
}

}  // namespace

WorkerService::WorkerService(WorkerServiceOptions options) : options_(std::move(options)) {
  // gRPC's built-in health service does not put grpc.health.v1 into the
  // generated descriptor pool, so reflection (grpcurl) could list it but not
  // resolve it; this reference links our generated health.proto, whose
  // descriptors register themselves.
  grpc::health::v1::HealthCheckRequest::descriptor();
  if (options_.engine != nullptr && options_.model != nullptr) ready_.store(&options_);
}

void WorkerService::SetWorkerId(std::string worker_id) {
  options_.worker_id = std::move(worker_id);  // read by Info only after Attach's release
}

void WorkerService::Attach(Engine* engine, const ServedModel* model) {
  options_.engine = engine;
  options_.model = model;
  ready_.store(&options_, std::memory_order_release);
}

grpc::ServerWriteReactor<v1::ExecuteEvent>* WorkerService::Execute(
    grpc::CallbackServerContext* context, const v1::ExecuteRequest* request) {
  const WorkerServiceOptions* ready = Ready();
  if (ready == nullptr) {
    // A reactor that only finishes.
    class Refusal final : public grpc::ServerWriteReactor<v1::ExecuteEvent> {
     public:
      Refusal() { Finish(ToGrpcStatus(NotReady())); }
      void OnDone() override { delete this; }
    };
    if (options_.metrics) options_.metrics->CountRequest("unavailable");
    return new Refusal();
  }
  auto* reactor = new ExecuteReactor(*ready, context);
  reactor->Start(*request);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::Cancel(grpc::CallbackServerContext* context,
                                                const v1::CancelRequest* request,
                                                v1::CancelResponse* /*response*/) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const WorkerServiceOptions* ready = Ready();
  if (ready == nullptr) {
    reactor->Finish(ToGrpcStatus(NotReady()));
  } else if (std::string unparsed = UnparsedRequest(*request); !unparsed.empty()) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(unparsed)));
  } else if (request->job_id().empty()) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError("job_id is required")));
  } else if (utf8::Sanitize(request->job_id()) != request->job_id()) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError("job_id is not valid UTF-8")));
  } else {
    ready->engine->Cancel(request->job_id());
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::MatchPrefix(grpc::CallbackServerContext* context,
                                                     const v1::ExecuteRequest* request,
                                                     v1::MatchPrefixResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const WorkerServiceOptions* ready = Ready();
  if (ready == nullptr) {
    reactor->Finish(ToGrpcStatus(NotReady()));
    return reactor;
  }
  v1::ExecuteRequest probe = *request;
  if (probe.job_id().empty()) probe.set_job_id("match-prefix");
  absl::StatusOr<JobRequest> job = ToJobRequest(probe, *ready->model);
  if (!job.ok()) {
    reactor->Finish(ToGrpcStatus(job.status()));
    return reactor;
  }
  response->set_prompt_tokens(static_cast<int32_t>(job->prompt.size()));
  response->set_cached_prompt_tokens(ready->engine->CachedPrefixTokens(job->prompt));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::Info(grpc::CallbackServerContext* context,
                                              const v1::InfoRequest* request,
                                              v1::InfoResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const WorkerServiceOptions* ready = Ready();
  if (ready == nullptr) {
    reactor->Finish(ToGrpcStatus(NotReady()));
    return reactor;
  }
  if (std::string unparsed = UnparsedRequest(*request); !unparsed.empty()) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(unparsed)));
    return reactor;
  }
  const ServedModel& model = *ready->model;
  const EngineStats stats = ready->engine->Stats();
  const EngineOptions& engine_options = ready->engine->options();
  response->set_worker_id(options_.worker_id);
  response->set_model(options_.served_model_name.empty() ? model.name
                                                         : options_.served_model_name);
  response->set_model_path(options_.model_path);
  response->set_architecture(model.config.architecture);
  response->set_dtype(model.weight_type);
  response->set_device(options_.device);
  response->set_context_length(model.config.context_length);
  response->set_vocab_size(model.config.vocab_size);
  response->set_kv_capacity_bytes(static_cast<int64_t>(stats.kv_budget_bytes));
  response->set_kv_used_bytes(static_cast<int64_t>(stats.kv_used_bytes));
  response->set_active_jobs(stats.running);
  response->set_waiting_jobs(stats.waiting);
  response->set_max_batch(engine_options.max_running);
  response->set_max_waiting(engine_options.max_waiting);
  response->set_draining(draining_.load(std::memory_order_relaxed));
  if (model.model != nullptr) {
    response->set_weight_bytes(model.model->WeightBytes());
    response->set_kv_bytes_per_token(
        static_cast<int64_t>(KvCache::BytesFor(model.config, 1, model.model->kv_type())));
    response->set_kv_type(KvTypeName(model.model->kv_type()));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace llorch
