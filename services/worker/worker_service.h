// gRPC handlers of llorch.worker.v1.Worker: validate, convert, delegate to
// the engine. Each Execute call is a reactor that the engine feeds through a
// JobSink; the call's cancellation (client gone, deadline passed) cancels
// the job so its KV cache is freed before the next engine step, and so does
// a client that stops reading (its stream's buffer is bounded).
#ifndef LLORCH_SERVICES_WORKER_WORKER_SERVICE_H_
#define LLORCH_SERVICES_WORKER_WORKER_SERVICE_H_

#include <atomic>
#include <string>

#include "llorch/worker/v1/worker.grpc.pb.h"
#include "services/worker/worker_metrics.h"
#include "worker/engine/engine.h"
#include "worker/engine/served_model.h"

namespace llorch {

struct WorkerServiceOptions {
  // Null until the model is loaded and warmed up (see Attach): until then
  // every call fails with UNAVAILABLE.
  Engine* engine = nullptr;
  const ServedModel* model = nullptr;
  WorkerMetrics* metrics = nullptr;  // optional
  std::string worker_id;
  // Info.model: the name clients know the model by (--served_model_name);
  // empty: the model's own name.
  std::string served_model_name;
  std::string model_path;
  std::string device;
  // Events queued for one stream that the client has not read yet: beyond
  // either limit the job is cancelled and the stream ends with
  // RESOURCE_EXHAUSTED, so a client that stops reading cannot hold KV memory
  // or grow the queue without bound.
  size_t max_stream_buffer_events = 1024;
  size_t max_stream_buffer_bytes = size_t{1} << 20;
};

class WorkerService final : public worker::v1::Worker::CallbackService {
 public:
  explicit WorkerService(WorkerServiceOptions options);

  // Sets Info's worker_id once the listening port is known; before Attach.
  void SetWorkerId(std::string worker_id);
  // Makes the service answer: called once, after warm-up. Both outlive the
  // server's calls.
  void Attach(Engine* engine, const ServedModel* model);
  // Info reports draining from now on; the engine refuses the new jobs.
  // Thread-safe.
  void SetDraining() { draining_.store(true, std::memory_order_relaxed); }

  grpc::ServerWriteReactor<worker::v1::ExecuteEvent>* Execute(
      grpc::CallbackServerContext* context, const worker::v1::ExecuteRequest* request) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* context,
                                   const worker::v1::CancelRequest* request,
                                   worker::v1::CancelResponse* response) override;
  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const worker::v1::InfoRequest* request,
                                 worker::v1::InfoResponse* response) override;
  grpc::ServerUnaryReactor* MatchPrefix(grpc::CallbackServerContext* context,
                                        const worker::v1::ExecuteRequest* request,
                                        worker::v1::MatchPrefixResponse* response) override;

 private:
  // The options with engine and model set; null before Attach.
  const WorkerServiceOptions* Ready() const { return ready_.load(std::memory_order_acquire); }

  WorkerServiceOptions options_;
  std::atomic<const WorkerServiceOptions*> ready_{nullptr};
  std::atomic<bool> draining_{false};
};

}  // namespace llorch

#endif  // LLORCH_SERVICES_WORKER_WORKER_SERVICE_H_
