#include "worker/server/scheduler_registration.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/grpc/bearer_tokens.h"

namespace llorch {
namespace {

using Clock = std::chrono::steady_clock;

constexpr absl::Duration kMinInterval = absl::Milliseconds(100);
constexpr absl::Duration kMaxInterval = absl::Minutes(5);

std::string Reason(const grpc::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                      ": ", status.error_message());
}

// Channels reconnect within about one interval after a scheduler comes
// back (gRPC's default backoff grows to two minutes).
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           std::shared_ptr<grpc::ChannelCredentials> credentials,
                                           absl::Duration interval) {
  if (credentials == nullptr) credentials = grpc::InsecureChannelCredentials();
  const int interval_ms = static_cast<int>(
      absl::ToInt64Milliseconds(std::clamp(interval, kMinInterval, absl::Seconds(10))));
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(interval_ms, 1000));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, std::max(interval_ms, 1000));
  return grpc::CreateCustomChannel(address, credentials, args);
}

}  // namespace

SchedulerRegistration::SchedulerRegistration(SchedulerRegistrationOptions options)
    : options_(std::move(options)) {
  const absl::Duration interval =
      std::clamp(options_.heartbeat_interval, kMinInterval, kMaxInterval);
  for (const std::string& address : options_.schedulers) {
    Target target;
    target.address = address;
    target.stub = v1::Scheduler::NewStub(MakeChannel(address, options_.credentials, interval));
    target.interval = interval;
    target.next = Clock::now();
    targets_.push_back(std::move(target));
  }
}

SchedulerRegistration::~SchedulerRegistration() { Stop(); }

void SchedulerRegistration::Start() {
  if (targets_.empty() || thread_.joinable()) return;
  thread_ = std::thread([this] { Run(); });
}

void SchedulerRegistration::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (grpc::ClientContext* context : in_flight_) context->TryCancel();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void SchedulerRegistration::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

void SchedulerRegistration::Run() {
  while (true) {
    const Clock::time_point now = Clock::now();
    std::vector<Target*> due;
    for (Target& target : targets_) {
      if (target.next <= now) due.push_back(&target);
    }
    if (!due.empty()) Round(due);
    Clock::time_point next = Clock::time_point::max();
    for (const Target& target : targets_) next = std::min(next, target.next);
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_until(lock, next, [this] { return stopping_; })) return;
  }
}

// One RegisterWorker call of a round and its outcome.
struct SchedulerRegistration::Call {
  Target* target;
  Clock::time_point sent;
  grpc::ClientContext context;
  v1::RegisterWorkerRequest request;
  v1::RegisterWorkerResponse response;
  grpc::Status status;
};

std::vector<std::unique_ptr<SchedulerRegistration::Call>> SchedulerRegistration::MakeCalls(
    const std::vector<Target*>& due) const {
  std::vector<std::unique_ptr<Call>> calls;
  for (Target* target : due) {
    auto call = std::make_unique<Call>();
    call->target = target;
    call->context.set_deadline(std::chrono::system_clock::now() +
                               absl::ToChronoMilliseconds(options_.rpc_timeout));
    if (!options_.token.empty()) {
      call->context.AddMetadata("authorization", BearerAuthorization(options_.token));
    }
    call->request.set_address(options_.advertise_address);
    call->request.set_model(options_.model);
    calls.push_back(std::move(call));
  }
  return calls;
}

bool SchedulerRegistration::SendAndWait(const std::vector<std::unique_ptr<Call>>& calls) {
  size_t done = 0;  // guarded by mu_
  for (auto& call : calls) {
    Call* c = call.get();
    c->sent = Clock::now();
    // The callback may run on this thread or a gRPC one; it only takes mu_.
    c->target->stub->async()->RegisterWorker(&c->context, &c->request, &c->response,
                                             [this, c, &done](grpc::Status status) {
                                               std::lock_guard<std::mutex> lock(mu_);
                                               c->status = std::move(status);
                                               ++done;
                                               cv_.notify_all();
                                             });
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done == calls.size(); });
  in_flight_.clear();
  return stopping_;
}

void SchedulerRegistration::OnRegistered(Target& target,
                                         const v1::RegisterWorkerResponse& response) {
  const double seconds = response.heartbeat_interval_seconds();
  target.interval = seconds > 0
                        ? std::clamp(absl::Seconds(seconds), kMinInterval, kMaxInterval)
                        : std::clamp(options_.heartbeat_interval, kMinInterval, kMaxInterval);
  const std::string as =
      response.address().empty() ? options_.advertise_address : response.address();
  if (target.state != State::kRegistered || as != target.registered_as) {
    Log(absl::StrCat("registered with ", target.address, " as ", as, " (heartbeat every ",
                     absl::FormatDuration(target.interval), ")"));
  }
  target.state = State::kRegistered;
  target.registered_as = as;
}

void SchedulerRegistration::OnFailed(Target& target, const grpc::Status& status) {
  target.interval = std::clamp(options_.heartbeat_interval, kMinInterval, kMaxInterval);
  if (target.state == State::kRegistered) {
    Log(absl::StrCat("lost scheduler ", target.address, ": ", Reason(status)));
  } else if (target.state == State::kNever) {
    Log(absl::StrCat("cannot register with scheduler ", target.address, ": ", Reason(status),
                     " (retrying every ", absl::FormatDuration(target.interval), ")"));
  }
  target.state = State::kDown;
}

void SchedulerRegistration::Round(const std::vector<Target*>& due) {
  std::vector<std::unique_ptr<Call>> calls = MakeCalls(due);
  {
    // Registered before the calls start, so Stop can cancel them (a
    // context cancelled before its call cancels the call as it starts).
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    for (auto& call : calls) in_flight_.push_back(&call->context);
  }
  const bool stopping = SendAndWait(calls);
  for (auto& call : calls) {
    Target& target = *call->target;
    if (call->status.ok()) {
      OnRegistered(target, call->response);
    } else if (!stopping) {
      OnFailed(target, call->status);  // after Stop, failures are our own cancellations
    }
    target.next = call->sent + absl::ToChronoNanoseconds(target.interval);
  }
}

}  // namespace llorch
