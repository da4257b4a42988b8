// The core with real probes: in-process gRPC servers answer Info as workers
// do; jobs are fakes that record what the core tells them.
#include "scheduler/scheduler_core.h"

#include <gtest/gtest.h>

#include <chrono>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

namespace llorch::scheduler {
namespace {

namespace wv1 = worker::v1;
using std::chrono::milliseconds;

// Answers Info with a model name and a batch size, and MatchPrefix with
// set_cached() tokens (after set_match_delay(); UNIMPLEMENTED when < 0).
class FakeWorker final : public wv1::Worker::CallbackService {
 public:
  FakeWorker(std::string model, int max_batch) : model_(std::move(model)), max_batch_(max_batch) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~FakeWorker() override { server_->Shutdown(); }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context, const wv1::InfoRequest*,
                                 wv1::InfoResponse* response) override {
    response->set_model(model_);
    response->set_max_batch(max_batch_);
    response->set_kv_capacity_bytes(1 << 20);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* MatchPrefix(grpc::CallbackServerContext* context,
                                        const wv1::ExecuteRequest* request,
                                        wv1::MatchPrefixResponse* response) override {
    ++match_calls_;
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (cached_ < 0) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "no MatchPrefix"));
      return reactor;
    }
    std::this_thread::sleep_for(milliseconds(match_delay_ms_.load()));
    response->set_prompt_tokens(100);
    response->set_cached_prompt_tokens(cached_);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  void set_cached(int cached) { cached_ = cached; }
  void set_match_delay(milliseconds delay) { match_delay_ms_ = static_cast<int>(delay.count()); }
  int match_calls() const { return match_calls_; }

 private:
  std::string model_;
  int max_batch_;
  std::atomic<int> cached_{0};
  std::atomic<int> match_calls_{0};
  std::atomic<int> match_delay_ms_{0};
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// What the core told one job, in order.
class FakeJob final : public JobHandle {
 public:
  void Dispatch(const std::string& address, std::shared_ptr<WorkerStub>, int attempt) override {
    Record("dispatch " + address + " " + std::to_string(attempt));
  }
  void Reject(const absl::Status& status) override {
    Record("reject " + std::string(absl::StatusCodeToString(status.code())));
  }
  void CancelQueued() override { Record("cancel queued"); }
  void CancelRunning() override { Record("cancel running"); }
  const wv1::ExecuteRequest* PrefixProbeRequest() const override {
    return probe_ ? &request_ : nullptr;
  }
  void set_probe(bool probe) { probe_ = probe; }

  // Waits for the n-th event (0-based) and returns it ("" on timeout).
  std::string Event(size_t n, milliseconds timeout = milliseconds(5000)) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return events_.size() > n; });
    return events_.size() > n ? events_[n] : "";
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_.size();
  }

 private:
  void Record(std::string event) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(event));
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> events_;
  bool probe_ = true;
  wv1::ExecuteRequest request_;
};

std::shared_ptr<WorkerStub> MakeStub(const std::string& address, const std::string&) {
  return wv1::Worker::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

CoreOptions FastOptions() {
  CoreOptions options;
  options.probe_interval = milliseconds(50);
  options.probe_timeout = milliseconds(500);
  options.dns_refresh = milliseconds(50);
  options.make_stub = MakeStub;
  return options;
}

CoreSnapshot Snapshot(SchedulerCore& core) {
  std::promise<CoreSnapshot> promise;
  core.Snapshot([&](CoreSnapshot s) { promise.set_value(std::move(s)); });
  return promise.get_future().get();
}

// Polls the core until `done(snapshot)` or 5 s.
bool WaitFor(SchedulerCore& core, const std::function<bool(const CoreSnapshot&)>& done) {
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < deadline) {
    if (done(Snapshot(core))) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return false;
}

bool AllUp(const CoreSnapshot& s, size_t n) {
  size_t up = 0;
  for (const WorkerRecord& w : s.workers) up += w.state == WorkerState::kUp;
  return s.workers.size() == n && up == n;
}

std::string Addresses(const CoreSnapshot& s) {
  std::string out;
  for (const WorkerRecord& w : s.workers) out += w.address + "(" + WorkerSourceName(w.source) + ") ";
  return out;
}

TEST(SchedulerCoreTest, DnsNameAddsEveryAddressAndFollowsChanges) {
  FakeWorker a("m", 4), b("m", 4), c("m", 4);
  std::mutex mu;
  std::vector<std::string> resolved = {a.address(), b.address()};
  CoreOptions options = FastOptions();
  options.resolve = [&](const std::string& host, const std::string& port) {
    EXPECT_EQ(host, "workers.test");
    EXPECT_EQ(port, "50061");
    std::lock_guard<std::mutex> lock(mu);
    return resolved;
  };
  SchedulerCore core(options);
  core.AddWorkerEntries({"workers.test:50061"});
  core.Start();
  ASSERT_TRUE(WaitFor(core, [](const CoreSnapshot& s) { return AllUp(s, 2); }))
      << Addresses(Snapshot(core));
  for (const WorkerRecord& w : Snapshot(core).workers) {
    EXPECT_EQ(w.source, WorkerSource::kDns);
    EXPECT_EQ(w.dns_name, "workers.test:50061");
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    resolved = {a.address(), c.address()};  // a pod replaced
  }
  ASSERT_TRUE(WaitFor(core, [&](const CoreSnapshot& s) {
    return AllUp(s, 2) && Addresses(s).find(c.address()) != std::string::npos;
  })) << Addresses(Snapshot(core));
  EXPECT_EQ(Addresses(Snapshot(core)).find(b.address()), std::string::npos);
}

TEST(SchedulerCoreTest, SpreadsThenQueuesThenFillsTheFreedSlot) {
  FakeWorker a("m", 1), b("m", 1);
  SchedulerCore core(FastOptions());
  core.AddWorkerEntries({a.address(), b.address()});
  core.Start();
  ASSERT_TRUE(WaitFor(core, [](const CoreSnapshot& s) { return AllUp(s, 2); }));
  auto j1 = std::make_shared<FakeJob>(), j2 = std::make_shared<FakeJob>(),
       j3 = std::make_shared<FakeJob>();
  core.Submit("j1", "m", j1);
  core.Submit("j2", "m", j2);
  core.Submit("j3", "m", j3);
  const std::string first = j1->Event(0), second = j2->Event(0);
  EXPECT_EQ(first.rfind("dispatch ", 0), 0u) << first;
  EXPECT_EQ(second.rfind("dispatch ", 0), 0u) << second;
  EXPECT_NE(first, second);  // one slot each: both workers
  EXPECT_EQ(Snapshot(core).queued["m"], 1u);
  EXPECT_EQ(j3->count(), 0u);
  const std::string j1_worker = first.substr(9, first.rfind(' ') - 9);
  core.AttemptEnded("j1", j1_worker, absl::OkStatus(), /*retry=*/false);
  EXPECT_EQ(j3->Event(0), "dispatch " + j1_worker + " 0");
  EXPECT_EQ(Snapshot(core).queued["m"], 0u);
}

TEST(SchedulerCoreTest, RefusesWhatItCannotQueue) {
  FakeWorker a("m", 1);
  CoreOptions options = FastOptions();
  options.max_queue = 1;
  SchedulerCore core(options);
  core.AddWorkerEntries({a.address()});
  core.Start();
  ASSERT_TRUE(WaitFor(core, [](const CoreSnapshot& s) { return AllUp(s, 1); }));
  auto running = std::make_shared<FakeJob>(), queued = std::make_shared<FakeJob>(),
       refused = std::make_shared<FakeJob>(), unknown = std::make_shared<FakeJob>(),
       duplicate = std::make_shared<FakeJob>();
  core.Submit("running", "m", running);
  core.Submit("queued", "m", queued);
  core.Submit("refused", "m", refused);
  core.Submit("unknown", "no-such-model", unknown);
  core.Submit("running", "m", duplicate);
  EXPECT_EQ(running->Event(0), "dispatch " + a.address() + " 0");
  EXPECT_EQ(refused->Event(0), "reject RESOURCE_EXHAUSTED");
  EXPECT_EQ(unknown->Event(0), "reject NOT_FOUND");
  EXPECT_EQ(duplicate->Event(0), "reject ALREADY_EXISTS");
  EXPECT_EQ(queued->count(), 0u);
  // No queue is kept for a name nobody serves.
  EXPECT_EQ(Snapshot(core).queued.count("no-such-model"), 0u);
  core.Cancel("queued");
  EXPECT_EQ(queued->Event(0), "cancel queued");
  core.Cancel("running");
  EXPECT_EQ(running->Event(1), "cancel running");
}

TEST(SchedulerCoreTest, QueueWaitIsBounded) {
  FakeWorker a("m", 1);
  CoreOptions options = FastOptions();
  options.probe_interval = milliseconds(1000);  // expiry must not wait for a probe round
  options.max_queue_wait = milliseconds(150);
  SchedulerCore core(options);
  core.AddWorkerEntries({a.address()});
  core.Start();
  ASSERT_TRUE(WaitFor(core, [](const CoreSnapshot& s) { return AllUp(s, 1); }));
  auto running = std::make_shared<FakeJob>(), waiting = std::make_shared<FakeJob>();
  core.Submit("running", "m", running);
  ASSERT_EQ(running->Event(0).rfind("dispatch", 0), 0u);
  const auto start = Clock::now();
  core.Submit("waiting", "m", waiting);
  EXPECT_EQ(waiting->Event(0), "reject RESOURCE_EXHAUSTED");
  const double waited = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_GE(waited, 0.14);
  EXPECT_LT(waited, 0.6);
}

TEST(SchedulerCoreTest, RetriesOnAnotherWorkerThenGivesUp) {
  FakeWorker a("m", 4), b("m", 4);
  CoreOptions options = FastOptions();
  options.max_retries = 1;
  options.probe_interval = milliseconds(2000);  // keep the failed workers down meanwhile
  SchedulerCore core(options);
  core.AddWorkerEntries({a.address(), b.address()});
  core.Start();
  ASSERT_TRUE(WaitFor(core, [](const CoreSnapshot& s) { return AllUp(s, 2); }));
  auto job = std::make_shared<FakeJob>();
  core.Submit("job", "m", job);
  const std::string first = job->Event(0);
  const std::string w1 = first.substr(9, first.rfind(' ') - 9);
  const std::string w2 = w1 == a.address() ? b.address() : a.address();
  core.AttemptEnded("job", w1, absl::UnavailableError("connection reset"), /*retry=*/true);
  EXPECT_EQ(job->Event(1), "dispatch " + w2 + " 1");
  for (const WorkerRecord& w : Snapshot(core).workers) {
    EXPECT_EQ(w.state, w.address == w1 ? WorkerState::kDown : WorkerState::kUp) << w.address;
  }
  core.AttemptEnded("job", w2, absl::UnavailableError("connection reset"), /*retry=*/true);
  EXPECT_EQ(job->Event(2), "reject UNAVAILABLE");
  // Both answer probes, so both come back.
  ASSERT_TRUE(WaitFor(core, [](const CoreSnapshot& s) { return AllUp(s, 2); }));
}

// ---- Cache-aware placement (issue 15). ----

std::string DispatchedTo(FakeJob& job) {
  const std::string event = job.Event(0);
  if (event.rfind("dispatch ", 0) != 0) return event;
  return event.substr(9, event.rfind(' ') - 9);
}

// Two idle workers: load alone would alternate; the one holding the prompt's
// prefix gets every job (within --placement_max_imbalance).
TEST(SchedulerCoreTest, CacheAwarePlacementFollowsThePrefix) {
  FakeWorker a("m", 8), b("m", 8);
  const bool a_first = a.address() < b.address();
  FakeWorker& holder = a_first ? b : a;  // loses every tie on load
  FakeWorker& other = a_first ? a : b;
  holder.set_cached(64);
  other.set_cached(0);
  SchedulerCore core(FastOptions());
  core.AddWorkerEntries({a.address(), b.address()});
  core.Start();
  ASSERT_TRUE(WaitFor(core, [](const CoreSnapshot& s) { return AllUp(s, 2); }));
  for (int i = 0; i < 3; ++i) {
    auto job = std::make_shared<FakeJob>();
    const std::string id = "j" + std::to_string(i);
    core.Submit(id, "m", job);
    EXPECT_EQ(DispatchedTo(*job), holder.address()) << i;
    core.AttemptEnded(id, holder.address(), absl::OkStatus(), /*retry=*/false);
  }
  EXPECT_EQ(holder.match_calls(), 3);
  EXPECT_EQ(other.match_calls(), 3);
  // Least-loaded placement asks nobody and alternates.
  CoreOptions options = FastOptions();
  options.placement.policy = PlacementPolicy::kLeastLoaded;
  SchedulerCore plain(options);
  plain.AddWorkerEntries({a.address(), b.address()});
  plain.Start();
  ASSERT_TRUE(WaitFor(plain, [](const CoreSnapshot& s) { return AllUp(s, 2); }));
  std::vector<std::string> placed;
  for (int i = 0; i < 2; ++i) {
    auto job = std::make_shared<FakeJob>();
    const std::string id = "p" + std::to_string(i);
    plain.Submit(id, "m", job);
    placed.push_back(DispatchedTo(*job));
    plain.AttemptEnded(id, placed.back(), absl::OkStatus(), /*retry=*/false);
  }
  EXPECT_NE(placed[0], placed[1]);
  EXPECT_EQ(holder.match_calls(), 3);
}

// A worker that answers MatchPrefix late or not at all costs a job at most
// --prefix_probe_timeout, and counts as holding nothing.
TEST(SchedulerCoreTest, SlowOrMissingPrefixAnswersOnlyDelayUpToTheTimeout) {
  FakeWorker a("m", 8), b("m", 8);
  a.set_cached(64);
  a.set_match_delay(milliseconds(1500));  // past the deadline
  b.set_cached(-1);                        // UNIMPLEMENTED (an older worker)
  CoreOptions options = FastOptions();
  options.prefix_probe_timeout = milliseconds(200);
  SchedulerCore core(options);
  core.AddWorkerEntries({a.address(), b.address()});
  core.Start();
  ASSERT_TRUE(WaitFor(core, [](const CoreSnapshot& s) { return AllUp(s, 2); }));
  auto job = std::make_shared<FakeJob>();
  const auto start = Clock::now();
  core.Submit("slow", "m", job);
  const std::string placed = DispatchedTo(*job);
  const double waited = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_TRUE(placed == a.address() || placed == b.address()) << placed;
  EXPECT_GE(waited, 0.15);
  EXPECT_LT(waited, 1.0);
  // A job without a request to probe is placed at once.
  auto plain = std::make_shared<FakeJob>();
  plain->set_probe(false);
  const auto plain_start = Clock::now();
  core.Submit("plain", "m", plain);
  EXPECT_EQ(DispatchedTo(*plain).rfind("127.0.0.1:", 0), 0u);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - plain_start).count(), 0.15);
}

}  // namespace
}  // namespace llorch::scheduler
