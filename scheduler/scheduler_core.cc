#include "scheduler/scheduler_core.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace llorch::scheduler {
namespace {

namespace wv1 = worker::v1;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// "host:port" / "[v6]:port" -> host, port; false without a port.
bool SplitHostPort(const std::string& entry, std::string* host, std::string* port) {
  const size_t colon = entry.rfind(':');
  if (colon == std::string::npos || colon + 1 == entry.size()) return false;
  *host = entry.substr(0, colon);
  *port = entry.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return !host->empty();
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buffer[16];
  return inet_pton(AF_INET, host.c_str(), buffer) == 1 ||
         inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

std::string JoinHostPort(const std::string& host, const std::string& port) {
  return host.find(':') != std::string::npos ? absl::StrCat("[", host, "]:", port)
                                             : absl::StrCat(host, ":", port);
}

// Every address of `host` in one family: IPv4 if it has any, else IPv6
// (so "localhost" is one worker, not two).
std::vector<std::string> Resolve(const std::string& host, const std::string& port) {
  for (int family : {AF_INET, AF_INET6}) {
    addrinfo hints = {};
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) continue;
    std::vector<std::string> addresses;
    for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
      char text[INET6_ADDRSTRLEN] = {0};
      const void* raw = family == AF_INET
                            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr)
                            : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
      if (inet_ntop(family, raw, text, sizeof(text)) == nullptr) continue;
      addresses.push_back(JoinHostPort(text, port));
    }
    freeaddrinfo(found);
    std::sort(addresses.begin(), addresses.end());
    addresses.erase(std::unique(addresses.begin(), addresses.end()), addresses.end());
    if (!addresses.empty()) return addresses;
  }
  return {};
}

}  // namespace

std::string NewJobId() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("job-%016x", rng());
}

SchedulerCore::SchedulerCore(CoreOptions options) : options_(std::move(options)) {
  if (!options_.resolve) options_.resolve = Resolve;
}

SchedulerCore::~SchedulerCore() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  resolver_wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (resolver_.joinable()) resolver_.join();
  // Probes still in flight hold no pointer to us past this: their callbacks
  // post, and Post drops messages once stopping. Wait them out.
  const auto deadline = Clock::now() +
                        std::max(options_.probe_timeout, options_.prefix_probe_timeout) +
                        std::chrono::seconds(1);
  while (probes_in_flight_.load() > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void SchedulerCore::AddWorkerEntries(const std::vector<std::string>& entries) {
  for (const std::string& entry : entries) {
    std::string host, port;
    if (!SplitHostPort(entry, &host, &port)) continue;  // main checked the syntax
    if (IsIpLiteral(host)) {
      AddWorker(JoinHostPort(host, port), WorkerSource::kFlag, "");
    } else {
      dns_entries_.push_back({host, port});
    }
  }
}

void SchedulerCore::Start() {
  // First resolution before serving, so names are known at once.
  for (const DnsEntry& dns : dns_entries_) {
    const std::string name = JoinHostPort(dns.host, dns.port);
    for (const std::string& address : options_.resolve(dns.host, dns.port)) {
      AddWorker(address, WorkerSource::kDns, name);
    }
  }
  thread_ = std::thread([this] { Loop(); });
  if (!dns_entries_.empty()) resolver_ = std::thread([this] { ResolveLoop(); });
}

void SchedulerCore::Post(std::function<void()> message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    inbox_.push_back(std::move(message));
  }
  wake_.notify_one();
}

void SchedulerCore::Loop() {
  next_probe_ = Clock::now();
  while (true) {
    std::deque<std::function<void()>> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait_until(lock, NextWake(), [this] { return stopping_ || !inbox_.empty(); });
      if (stopping_) break;
      batch.swap(inbox_);
    }
    for (auto& message : batch) message();
    Tick(Clock::now());
  }
  // Nothing is served any more: every live job ends now.
  for (auto& [job_id, job] : jobs_) {
    if (!job.running) job.handle->Reject(absl::UnavailableError("the scheduler is shutting down"));
  }
  jobs_.clear();
}

// The next probe round, or sooner the moment a queued job waited too long.
// Queues are read here outside the core's handlers, but on the core thread.
Clock::time_point SchedulerCore::NextWake() const {
  Clock::time_point wake = next_probe_;
  for (const auto& [model, queue] : queues_) {
    for (const JobQueue::Entry& entry : queue.entries()) {
      wake = std::min(wake, entry.enqueued + options_.max_queue_wait);
    }
  }
  return wake;
}

// Re-resolves --workers names: a headless Service's pods come and go.
void SchedulerCore::ResolveLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!resolver_wake_.wait_for(lock, options_.dns_refresh, [this] { return stopping_; })) {
    lock.unlock();
    for (const DnsEntry& dns : dns_entries_) {
      std::vector<std::string> addresses = options_.resolve(dns.host, dns.port);
      const std::string name = JoinHostPort(dns.host, dns.port);
      Post([this, name, host = dns.host, addresses = std::move(addresses)] {
        // A failed lookup keeps the workers we have (DNS hiccups happen).
        if (addresses.empty()) return;
        std::vector<std::string> before;
        for (const auto& [address, w] : registry_.workers()) {
          if (w.source == WorkerSource::kDns && w.dns_name == name) before.push_back(address);
        }
        const std::vector<std::string> added = registry_.SetDnsAddresses(
            name, addresses,
            [this, &host](const std::string& address) { return options_.make_stub(address, host); });
        if (options_.observer == nullptr) return;
        for (const std::string& address : added) {
          options_.observer->OnWorkerAdded(*registry_.Find(address));
        }
        for (const std::string& address : before) {
          if (registry_.Find(address) == nullptr) options_.observer->OnWorkerRemoved(address);
        }
      });
    }
    lock.lock();
  }
}

void SchedulerCore::AddWorker(const std::string& address, WorkerSource source,
                              const std::string& dns_name) {
  if (registry_.Find(address) != nullptr) {
    registry_.Add(address, source, nullptr, dns_name);  // keeps its stub
    return;
  }
  std::string tls_name;
  if (source == WorkerSource::kDns) {
    std::string port;
    SplitHostPort(dns_name, &tls_name, &port);
  }
  WorkerRecord& added = registry_.Add(address, source, options_.make_stub(address, tls_name), dns_name);
  if (options_.observer) options_.observer->OnWorkerAdded(added);
}

void SchedulerCore::Submit(const std::string& job_id, const std::string& model,
                           std::shared_ptr<JobHandle> job) {
  Post([this, job_id, model, job = std::move(job)]() mutable {
    OnSubmit(job_id, model, std::move(job));
  });
}

void SchedulerCore::OnSubmit(const std::string& job_id, const std::string& model,
                             std::shared_ptr<JobHandle> job) {
  if (jobs_.contains(job_id)) {
    const absl::Status status = absl::AlreadyExistsError(
        absl::StrCat("job_id '", job_id, "' is already a live job"));
    if (options_.observer) options_.observer->OnRejected(model, status);
    job->Reject(status);
    return;
  }
  // An unknown name gets no queue (clients choose names: no growth from them).
  if (queues_.count(model) == 0 && !registry_.AnyUnprobed() &&
      PickWorker(registry_, model, {}, options_.placement).verdict ==
          PlacementVerdict::kUnknownModel) {
    const absl::Status status = absl::NotFoundError(absl::StrCat(
        "no worker serves model '", model, "' (ListModels names the models served)"));
    if (options_.observer) options_.observer->OnRejected(model, status);
    job->Reject(status);
    return;
  }
  JobQueue& queue = QueueOf(model);
  if (!queue.Push(job_id, Clock::now())) {
    const absl::Status status = absl::ResourceExhaustedError(absl::StrCat(
        "the queue of model '", model, "' is full (", queue.max_size(),
        " jobs wait for a worker; --max_queue)"));
    if (options_.observer) options_.observer->OnRejected(model, status);
    job->Reject(status);
    return;
  }
  JobEntry& entry = jobs_[job_id];
  entry.model = model;
  entry.handle = std::move(job);
  entry.submitted = Clock::now();
  StartPrefixProbes(job_id, entry);
  Drain(model);
  ReportQueue(model);
}

void SchedulerCore::Cancel(const std::string& job_id) {
  Post([this, job_id] {
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return;
    if (it->second.running) {
      it->second.handle->CancelRunning();
      return;
    }
    std::shared_ptr<JobHandle> handle = it->second.handle;
    const std::string model = it->second.model;
    QueueOf(model).Remove(job_id);
    jobs_.erase(it);
    handle->CancelQueued();
    ReportQueue(model);
  });
}

void SchedulerCore::Withdraw(const std::string& job_id) {
  Post([this, job_id] {
    auto it = jobs_.find(job_id);
    if (it == jobs_.end() || it->second.running) return;
    const std::string model = it->second.model;
    QueueOf(model).Remove(job_id);
    jobs_.erase(it);
    ReportQueue(model);
  });
}

void SchedulerCore::AttemptEnded(const std::string& job_id, const std::string& address,
                                 const absl::Status& worker_failure, bool retry) {
  Post([this, job_id, address, worker_failure, retry] {
    OnAttemptEnded(job_id, address, worker_failure, retry);
  });
}

void SchedulerCore::OnAttemptEnded(const std::string& job_id, const std::string& address,
                                   const absl::Status& worker_failure, bool retry) {
  registry_.OnJobLeft(address);
  if (!worker_failure.ok()) {
    SetState(address, [&](WorkerRegistry& r) { r.MarkDown(address, worker_failure); });
  }
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  JobEntry& job = it->second;
  const std::string model = job.model;
  if (!retry) {
    jobs_.erase(it);
    Drain(model);
    return;
  }
  job.running = false;
  job.address.clear();
  job.tried.insert(address);
  ++job.attempts;
  if (options_.observer) options_.observer->OnRetry(model, address, worker_failure);
  if (job.attempts > options_.max_retries) {
    RejectJob(job_id, absl::UnavailableError(absl::StrCat(
                          "job failed on ", job.attempts, " workers (--max_retries ",
                          options_.max_retries, "); last: ", address, ": ",
                          worker_failure.message())));
    Drain(model);
    return;
  }
  // First in line: it was admitted long ago.
  QueueOf(model).PushFront(job_id, job.submitted);
  Drain(model);
  ReportQueue(model);
}

void SchedulerCore::RejectJob(const std::string& job_id, const absl::Status& status) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  std::shared_ptr<JobHandle> handle = it->second.handle;
  const std::string model = it->second.model;
  QueueOf(model).Remove(job_id);
  jobs_.erase(it);
  if (options_.observer) options_.observer->OnRejected(model, status);
  handle->Reject(status);
}

void SchedulerCore::Drain(const std::string& model) {
  JobQueue& queue = QueueOf(model);
  size_t index = 0;
  while (index < queue.size()) {
    const std::string job_id = queue.entries()[index].job_id;
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) {  // cannot happen; keep the queue clean anyway
      queue.Take(index);
      continue;
    }
    JobEntry& job = it->second;
    if (AwaitingPrefixProbes(job, Clock::now())) {
      // Its answers come within prefix_probe_timeout; later jobs keep FIFO.
      ReportQueue(model);
      return;
    }
    const Placement placement =
        PickWorker(registry_, model, job.tried, options_.placement, job.prefix_hits);
    switch (placement.verdict) {
      case PlacementVerdict::kPlaced: {
        const JobQueue::Entry taken = queue.Take(index);
        if (options_.observer) {
          options_.observer->OnDispatch(model, placement, Seconds(Clock::now() - taken.enqueued));
        }
        RunOn(job_id, job, placement.address);
        break;
      }
      case PlacementVerdict::kBusy:
        // Every worker is full for this job; later jobs see the same workers
        // unless they tried fewer, which is rare: stop here, keep FIFO.
        ReportQueue(model);
        return;
      case PlacementVerdict::kNoWorkerUp:
        if (registry_.AnyUnprobed()) {
          ++index;  // a worker not probed yet may serve it
          break;
        }
        RejectJob(job_id, absl::UnavailableError(
                              job.tried.empty()
                                  ? absl::StrCat("no worker serving model '", model, "' is up")
                                  : absl::StrCat("no other worker serving model '", model,
                                                 "' is up after ", job.attempts, " failed")));
        break;
      case PlacementVerdict::kUnknownModel:
        if (registry_.AnyUnprobed()) {
          ++index;
          break;
        }
        RejectJob(job_id, absl::NotFoundError(absl::StrCat(
                              "no worker serves model '", model,
                              "' (ListModels names the models served)")));
        break;
    }
  }
  ReportQueue(model);
}

void SchedulerCore::DrainAll() {
  std::vector<std::string> models;
  for (const auto& [model, queue] : queues_) {
    if (!queue.empty()) models.push_back(model);
  }
  for (const std::string& model : models) Drain(model);
}

void SchedulerCore::RunOn(const std::string& job_id, JobEntry& job, const std::string& address) {
  WorkerRecord* worker = registry_.Find(address);
  job.running = true;
  job.address = address;
  registry_.OnDispatched(address, Clock::now());
  job.handle->Dispatch(address, worker->stub, job.attempts);
}

void SchedulerCore::Tick(Clock::time_point now) {
  ExpireQueued(now);
  if (now >= next_probe_) {
    ProbeDue(now);
    next_probe_ = now + options_.probe_interval;
    for (const std::string& address : ForgetSilentWorkers(now)) {
      if (options_.observer) options_.observer->OnWorkerRemoved(address);
    }
  }
}

std::vector<std::string> SchedulerCore::ForgetSilentWorkers(Clock::time_point now) {
  std::vector<std::string> before;
  for (const auto& [address, w] : registry_.workers()) before.push_back(address);
  registry_.ForgetSilent(now, options_.registration_ttl);
  std::vector<std::string> gone;
  for (const std::string& address : before) {
    if (registry_.Find(address) == nullptr) gone.push_back(address);
  }
  return gone;
}

void SchedulerCore::ExpireQueued(Clock::time_point now) {
  for (auto& [model, queue] : queues_) {
    for (const std::string& job_id : queue.TakeExpired(now, options_.max_queue_wait)) {
      RejectJob(job_id, absl::ResourceExhaustedError(absl::StrCat(
                            "waited ", Seconds(options_.max_queue_wait),
                            " s (--max_queue_wait) for a worker of model '", model, "'")));
    }
    ReportQueue(model);
  }
}

void SchedulerCore::ProbeDue(Clock::time_point /*now*/) {
  std::vector<std::string> addresses;
  for (const auto& [address, w] : registry_.workers()) addresses.push_back(address);
  for (const std::string& address : addresses) Probe(*registry_.Find(address));
}

// Info answers with the model and the load; a failure or a deadline marks
// the worker down at once (so a dead or stopped worker is down within
// probe_interval + probe_timeout).
void SchedulerCore::Probe(WorkerRecord& worker) {
  if (worker.probe_in_flight || worker.stub == nullptr || worker.stub->async() == nullptr) return;
  worker.probe_in_flight = true;
  struct Call {
    grpc::ClientContext context;
    wv1::InfoRequest request;
    wv1::InfoResponse response;
  };
  auto call = std::make_shared<Call>();
  call->context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::duration_cast<std::chrono::milliseconds>(
                                 options_.probe_timeout));
  ++probes_in_flight_;
  const std::string address = worker.address;
  worker.stub->async()->Info(&call->context, &call->request, &call->response,
                             [this, call, address](grpc::Status status) {
                               Post([this, call, address, status] {
                                 OnProbeResult(address, status, call->response);
                               });
                               --probes_in_flight_;
                             });
}

void SchedulerCore::OnProbeResult(const std::string& address, const grpc::Status& status,
                                  const wv1::InfoResponse& info) {
  WorkerRecord* worker = registry_.Find(address);
  if (worker == nullptr) return;  // forgotten meanwhile
  worker->probe_in_flight = false;
  if (!status.ok()) {
    SetState(address, [&](WorkerRegistry& r) {
      r.MarkDown(address, absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                                       status.error_message()));
    });
    return;
  }
  SetState(address, [&](WorkerRegistry& r) {
    r.ProbeSucceeded(address, info, Clock::now());
    if (info.draining()) r.MarkDown(address, absl::UnavailableError("draining"));
  });
  DrainAll();
}

// Applies a registry change and tells the observer when the state moved.
void SchedulerCore::SetState(const std::string& address,
                             const std::function<void(WorkerRegistry&)>& change) {
  WorkerRecord* worker = registry_.Find(address);
  if (worker == nullptr) return;
  const WorkerState before = worker->state;
  change(registry_);
  worker = registry_.Find(address);
  if (worker != nullptr && worker->state != before && options_.observer) {
    options_.observer->OnWorkerState(*worker, before);
  }
}

void SchedulerCore::Register(const std::string& address,
                             std::function<void(absl::Status)> done) {
  Post([this, address, done = std::move(done)] { OnRegister(address, done); });
}

void SchedulerCore::OnRegister(const std::string& address,
                               const std::function<void(absl::Status)>& done) {
  const bool known = registry_.Find(address) != nullptr;
  AddWorker(address, WorkerSource::kRegistered, "");
  registry_.Heartbeat(address, Clock::now());
  // A new (or restarted) worker is probed now, not at the next tick.
  WorkerRecord* worker = registry_.Find(address);
  if (!known || worker->state != WorkerState::kUp) Probe(*worker);
  done(absl::OkStatus());
}

// Asks every candidate worker how much of the job's prompt it holds, in
// parallel; each answer is posted back to the core thread.
void SchedulerCore::StartPrefixProbes(const std::string& job_id, JobEntry& job) {
  const wv1::ExecuteRequest* request = job.handle->PrefixProbeRequest();
  if (request == nullptr) return;
  const std::vector<std::string> targets =
      PrefixProbeTargets(registry_, job.model, job.tried, options_.placement);
  if (targets.empty()) return;
  struct Call {
    grpc::ClientContext context;
    wv1::MatchPrefixResponse response;
  };
  job.prefix_probe_round = ++prefix_probe_rounds_;
  job.prefix_probes_due = Clock::now() + options_.prefix_probe_timeout;
  for (const std::string& address : targets) {
    WorkerRecord* worker = registry_.Find(address);
    if (worker == nullptr || worker->stub == nullptr || worker->stub->async() == nullptr) continue;
    auto call = std::make_shared<Call>();
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::duration_cast<std::chrono::microseconds>(
                                   options_.prefix_probe_timeout));
    ++job.prefix_probes_pending;
    ++probes_in_flight_;
    // The handle rides along: it owns `request` until the call is done.
    worker->stub->async()->MatchPrefix(
        &call->context, request, &call->response,
        [this, call, handle = job.handle, job_id, round = job.prefix_probe_round,
         address](grpc::Status status) {
          Post([this, call, job_id, round, address, status] {
            OnPrefixProbeResult(job_id, round, address, status,
                                call->response.cached_prompt_tokens());
          });
          --probes_in_flight_;
        });
  }
}

void SchedulerCore::OnPrefixProbeResult(const std::string& job_id, uint64_t round,
                                        const std::string& address, const grpc::Status& status,
                                        int32_t cached_tokens) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.prefix_probe_round != round ||
      it->second.prefix_probes_pending == 0) {
    return;  // the job ended (maybe its id is live again, as another job)
  }
  JobEntry& job = it->second;
  if (status.ok()) {
    job.prefix_hits[address] = cached_tokens;
  } else {
    ++job.prefix_probes_failed;  // e.g. an older worker without MatchPrefix
  }
  if (--job.prefix_probes_pending > 0) return;
  if (options_.observer) {
    options_.observer->OnPrefixProbes(job.model, Seconds(Clock::now() - job.submitted),
                                      job.prefix_probes_failed);
  }
  if (!job.running) Drain(job.model);
}

bool SchedulerCore::AwaitingPrefixProbes(const JobEntry& job, Clock::time_point now) const {
  return job.prefix_probes_pending > 0 && now < job.prefix_probes_due;
}

void SchedulerCore::Snapshot(std::function<void(CoreSnapshot)> done) {
  Post([this, done = std::move(done)] {
    CoreSnapshot snapshot;
    snapshot.now = Clock::now();
    for (const auto& [address, w] : registry_.workers()) snapshot.workers.push_back(w);
    for (const auto& [model, queue] : queues_) snapshot.queued[model] = queue.size();
    done(std::move(snapshot));
  });
}

JobQueue& SchedulerCore::QueueOf(const std::string& model) {
  auto it = queues_.find(model);
  if (it == queues_.end()) it = queues_.emplace(model, JobQueue(options_.max_queue)).first;
  return it->second;
}

void SchedulerCore::ReportQueue(const std::string& model) {
  if (options_.observer) options_.observer->OnQueueDepth(model, QueueOf(model).size());
}

}  // namespace llorch::scheduler
