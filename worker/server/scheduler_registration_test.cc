// SchedulerRegistration against a fake llorch.v1.Scheduler in this process:
// what the worker sends, how often, what it logs through outages, and
// mutual TLS with certificates from tests/support/test_certs.h.
#include "worker/server/scheduler_registration.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc/tls.h"
#include "tests/support/test_certs.h"

namespace llorch {
namespace {

// Answers RegisterWorker with the address it registers (the request's, or
// the caller's IP with the request's ":PORT") and `interval_seconds`.
class FakeScheduler final : public v1::Scheduler::CallbackService {
 public:
  explicit FakeScheduler(double interval_seconds) : interval_seconds_(interval_seconds) {}

  grpc::ServerUnaryReactor* RegisterWorker(grpc::CallbackServerContext* context,
                                           const v1::RegisterWorkerRequest* request,
                                           v1::RegisterWorkerResponse* response) override {
    std::string address = request->address();
    if (absl::StartsWith(address, ":")) address = "127.0.0.1" + address;
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(*request);
    }
    response->set_address(address);
    response->set_heartbeat_interval_seconds(interval_seconds_);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  std::vector<v1::RegisterWorkerRequest> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  const double interval_seconds_;
  std::mutex mu_;
  std::vector<v1::RegisterWorkerRequest> requests_;
};

// A server for `service` on 127.0.0.1:port (0: a free one).
std::unique_ptr<grpc::Server> Serve(grpc::Service* service, int* port,
                                    std::shared_ptr<grpc::ServerCredentials> credentials =
                                        grpc::InsecureServerCredentials()) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("127.0.0.1:", *port), credentials, port);
  builder.RegisterService(service);
  return builder.BuildAndStart();
}

bool WaitFor(const std::function<bool()>& condition,
             std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

class Lines {
 public:
  std::function<void(const std::string&)> Sink() {
    return [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu_);
      lines_.push_back(line);
    };
  }
  int Count(const std::string& prefix) {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(std::count_if(lines_.begin(), lines_.end(), [&](const std::string& l) {
      return absl::StartsWith(l, prefix);
    }));
  }
  std::string All() {
    std::lock_guard<std::mutex> lock(mu_);
    return absl::StrJoin(lines_, "\n");
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

SchedulerRegistrationOptions Options(std::vector<std::string> schedulers, Lines& lines,
                                     absl::Duration interval = absl::Milliseconds(100)) {
  SchedulerRegistrationOptions options;
  options.schedulers = std::move(schedulers);
  options.advertise_address = ":50061";
  options.model = "tiny";
  options.heartbeat_interval = interval;
  options.log = lines.Sink();
  return options;
}

TEST(WorkerRegistrationTest, RegistersThenHeartbeats) {
  FakeScheduler scheduler(0);  // no interval of its own: the option's
  int port = 0;
  std::unique_ptr<grpc::Server> server = Serve(&scheduler, &port);
  ASSERT_NE(server, nullptr);
  const std::string address = absl::StrCat("127.0.0.1:", port);
  Lines lines;
  SchedulerRegistration registration(Options({address}, lines));
  registration.Start();
  ASSERT_TRUE(WaitFor([&] { return scheduler.requests().size() >= 4; })) << lines.All();
  registration.Stop();
  for (const v1::RegisterWorkerRequest& request : scheduler.requests()) {
    EXPECT_EQ(request.address(), ":50061");
    EXPECT_EQ(request.model(), "tiny");
  }
  EXPECT_EQ(lines.Count(absl::StrCat("registered with ", address, " as 127.0.0.1:50061")), 1)
      << lines.All();
  EXPECT_EQ(lines.Count("lost"), 0) << lines.All();
  // Stopped means no more heartbeats.
  const size_t sent = scheduler.requests().size();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(scheduler.requests().size(), sent);
  server->Shutdown(std::chrono::system_clock::now());
}

// A scheduler's answer sets the interval: 0.1 s although the option says 1 min.
TEST(WorkerRegistrationTest, FollowsTheSchedulersInterval) {
  FakeScheduler scheduler(0.1);
  int port = 0;
  std::unique_ptr<grpc::Server> server = Serve(&scheduler, &port);
  ASSERT_NE(server, nullptr);
  Lines lines;
  SchedulerRegistration registration(
      Options({absl::StrCat("127.0.0.1:", port)}, lines, absl::Minutes(1)));
  registration.Start();
  EXPECT_TRUE(WaitFor([&] { return scheduler.requests().size() >= 3; }, std::chrono::seconds(5)))
      << lines.All();
  registration.Stop();
  server->Shutdown(std::chrono::system_clock::now());
}

// One line per outage, then registered again when the scheduler is back
// (on the same port, as a restarted scheduler would be).
TEST(WorkerRegistrationTest, LogsAnOutageOnceAndRegistersAgain) {
  auto scheduler = std::make_unique<FakeScheduler>(0);
  int port = 0;
  std::unique_ptr<grpc::Server> server = Serve(scheduler.get(), &port);
  ASSERT_NE(server, nullptr);
  const std::string address = absl::StrCat("127.0.0.1:", port);
  Lines lines;
  SchedulerRegistration registration(Options({address}, lines));
  registration.Start();
  ASSERT_TRUE(WaitFor([&] { return lines.Count("registered with") == 1; })) << lines.All();

  server->Shutdown(std::chrono::system_clock::now());
  server.reset();
  ASSERT_TRUE(WaitFor([&] { return lines.Count("lost scheduler " + address + ": ") == 1; }))
      << lines.All();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // several failed heartbeats
  EXPECT_EQ(lines.Count("lost scheduler"), 1) << lines.All();

  scheduler = std::make_unique<FakeScheduler>(0);
  int same_port = port;
  server = Serve(scheduler.get(), &same_port);
  ASSERT_NE(server, nullptr);
  ASSERT_EQ(same_port, port);
  ASSERT_TRUE(WaitFor([&] { return lines.Count("registered with") == 2; })) << lines.All();
  EXPECT_FALSE(scheduler->requests().empty());
  registration.Stop();
  server->Shutdown(std::chrono::system_clock::now());
}

// Several schedulers, one of them never up: the others are not held back,
// the dead one is reported once, and Stop returns at once.
TEST(WorkerRegistrationTest, OneDeadSchedulerDoesNotHoldBackTheOthers) {
  FakeScheduler scheduler(0);
  int port = 0;
  std::unique_ptr<grpc::Server> server = Serve(&scheduler, &port);
  ASSERT_NE(server, nullptr);
  int dead_port = 0;
  {
    FakeScheduler gone(0);
    std::unique_ptr<grpc::Server> closed = Serve(&gone, &dead_port);  // a port nobody holds now
    closed->Shutdown(std::chrono::system_clock::now());
  }
  const std::string dead = absl::StrCat("127.0.0.1:", dead_port);
  Lines lines;
  SchedulerRegistration registration(
      Options({dead, absl::StrCat("127.0.0.1:", port)}, lines));
  registration.Start();
  ASSERT_TRUE(WaitFor([&] { return scheduler.requests().size() >= 4; })) << lines.All();
  EXPECT_EQ(lines.Count("cannot register with scheduler " + dead + ": "), 1) << lines.All();
  EXPECT_EQ(lines.Count("registered with"), 1) << lines.All();
  const auto stop_start = std::chrono::steady_clock::now();
  registration.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - stop_start, std::chrono::milliseconds(500));
  server->Shutdown(std::chrono::system_clock::now());
}

// Mutual TLS both ways: the scheduler requires a client certificate from
// its CA, and the worker shows its own server certificate, verifying the
// scheduler's against its --tls_ca.
TEST(WorkerRegistrationTest, MutualTls) {
  absl::StatusOr<std::string> dir = ::llorch::testing::MakeTempDir("llorch-registration-");
  ASSERT_TRUE(dir.ok()) << dir.status();
  absl::StatusOr<::llorch::testing::TestCerts> certs = ::llorch::testing::WriteTestCerts(*dir);
  ASSERT_TRUE(certs.ok()) << certs.status();
  const TlsFiles files{certs->server_cert, certs->server_key, certs->ca};
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> server_credentials =
      MakeServerCredentials(files, ClientCerts::kRequire);
  ASSERT_TRUE(server_credentials.ok()) << server_credentials.status();
  FakeScheduler scheduler(0);
  int port = 0;
  std::unique_ptr<grpc::Server> server = Serve(&scheduler, &port, *server_credentials);
  ASSERT_NE(server, nullptr);
  const std::string address = absl::StrCat("127.0.0.1:", port);

  // Without a client certificate the scheduler refuses the worker.
  Lines refused_lines;
  SchedulerRegistrationOptions refused_options = Options({address}, refused_lines);
  refused_options.credentials = *MakeChannelCredentials({"", "", certs->ca});
  SchedulerRegistration refused(std::move(refused_options));
  refused.Start();
  ASSERT_TRUE(WaitFor([&] { return refused_lines.Count("cannot register") == 1; }))
      << refused_lines.All();
  refused.Stop();
  EXPECT_TRUE(scheduler.requests().empty());

  Lines lines;
  SchedulerRegistrationOptions options = Options({address}, lines);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(files);
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  options.credentials = *credentials;
  SchedulerRegistration registration(std::move(options));
  registration.Start();
  ASSERT_TRUE(WaitFor([&] { return scheduler.requests().size() >= 2; })) << lines.All();
  EXPECT_EQ(lines.Count("registered with " + address), 1) << lines.All();
  registration.Stop();
  server->Shutdown(std::chrono::system_clock::now());
  std::filesystem::remove_all(*dir);
}

}  // namespace
}  // namespace llorch
