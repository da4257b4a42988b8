#include "scheduler/worker_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace llorch::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using std::chrono::seconds;

const Clock::time_point kT0{seconds(1000)};

worker::v1::InfoResponse Info(const std::string& model) {
  worker::v1::InfoResponse info;
  info.set_model(model);
  info.set_max_batch(4);
  return info;
}

std::vector<std::string> Addresses(const WorkerRegistry& registry) {
  std::vector<std::string> addresses;
  for (const auto& [address, record] : registry.workers()) addresses.push_back(address);
  return addresses;
}

std::vector<std::string> Addresses(const std::vector<const WorkerRecord*>& records) {
  std::vector<std::string> addresses;
  for (const WorkerRecord* record : records) addresses.push_back(record->address);
  return addresses;
}

// Counts make_stub calls; stubs stay null (no channel needed here).
struct StubMaker {
  std::vector<std::string> made;
  auto Fn() {
    return [this](const std::string& address) {
      made.push_back(address);
      return std::shared_ptr<worker::v1::Worker::StubInterface>();
    };
  }
};

TEST(WorkerRegistryTest, Names) {
  EXPECT_STREQ(WorkerSourceName(WorkerSource::kFlag), "flag");
  EXPECT_STREQ(WorkerSourceName(WorkerSource::kDns), "dns");
  EXPECT_STREQ(WorkerSourceName(WorkerSource::kRegistered), "registered");
  EXPECT_STREQ(WorkerStateName(WorkerState::kUnknown), "unknown");
  EXPECT_STREQ(WorkerStateName(WorkerState::kUp), "up");
  EXPECT_STREQ(WorkerStateName(WorkerState::kDown), "down");
}

TEST(WorkerRegistryTest, AddStartsUnknownWithoutModel) {
  WorkerRegistry registry;
  WorkerRecord& record = registry.Add("w1:1", WorkerSource::kRegistered, nullptr);
  EXPECT_EQ(record.address, "w1:1");
  EXPECT_EQ(record.source, WorkerSource::kRegistered);
  EXPECT_EQ(record.state, WorkerState::kUnknown);
  EXPECT_EQ(record.model(), "");
  EXPECT_TRUE(registry.AnyUnprobed());
  EXPECT_EQ(registry.Find("w1:1"), &record);
  EXPECT_EQ(registry.Find("w2:1"), nullptr);
}

TEST(WorkerRegistryTest, ReAddKeepsStateAndInfo) {
  WorkerRegistry registry;
  registry.Add("w1:1", WorkerSource::kRegistered, nullptr);
  registry.ProbeSucceeded("w1:1", Info("m"), kT0);
  registry.OnDispatched("w1:1", kT0);
  const WorkerRecord& again = registry.Add("w1:1", WorkerSource::kRegistered, nullptr);
  EXPECT_EQ(again.state, WorkerState::kUp);
  EXPECT_EQ(again.model(), "m");
  EXPECT_EQ(again.dispatched_jobs, 1);
  EXPECT_EQ(registry.workers().size(), 1u);
}

TEST(WorkerRegistryTest, FlagEntryIsNeverDowngraded) {
  WorkerRegistry registry;
  registry.Add("w1:1", WorkerSource::kFlag, nullptr);
  registry.Add("w1:1", WorkerSource::kDns, nullptr, "svc");
  registry.Add("w1:1", WorkerSource::kRegistered, nullptr);
  EXPECT_EQ(registry.Find("w1:1")->source, WorkerSource::kFlag);
  EXPECT_EQ(registry.Find("w1:1")->dns_name, "");
  // Nor does DNS dropping the address remove it.
  StubMaker maker;
  registry.SetDnsAddresses("svc", {}, maker.Fn());
  EXPECT_NE(registry.Find("w1:1"), nullptr);
}

TEST(WorkerRegistryTest, RegisteredWorkerFoundByFlagIsRaised) {
  WorkerRegistry registry;
  registry.Add("w1:1", WorkerSource::kRegistered, nullptr);
  registry.Add("w1:1", WorkerSource::kFlag, nullptr);
  EXPECT_EQ(registry.Find("w1:1")->source, WorkerSource::kFlag);
  // A flag worker is not subject to the registration TTL.
  EXPECT_EQ(registry.ForgetSilent(kT0 + seconds(100000), seconds(1)), 0);
}

TEST(WorkerRegistryTest, ProbeAndMarkDown) {
  WorkerRegistry registry;
  registry.Add("w1:1", WorkerSource::kFlag, nullptr);
  registry.MarkDown("w1:1", absl::UnavailableError("connection refused"));
  EXPECT_EQ(registry.Find("w1:1")->state, WorkerState::kDown);
  EXPECT_EQ(registry.Find("w1:1")->last_error, "connection refused");
  EXPECT_FALSE(registry.AnyUnprobed());

  registry.ProbeSucceeded("w1:1", Info("m"), kT0);
  const WorkerRecord& record = *registry.Find("w1:1");
  EXPECT_EQ(record.state, WorkerState::kUp);
  EXPECT_EQ(record.last_seen, kT0);
  EXPECT_EQ(record.last_error, "");
  EXPECT_EQ(record.model(), "m");

  // Down keeps the info, so the model stays known.
  registry.MarkDown("w1:1", absl::DeadlineExceededError("hung"));
  EXPECT_EQ(record.state, WorkerState::kDown);
  EXPECT_EQ(record.model(), "m");
  EXPECT_THAT(Addresses(registry.ForModel("m")), ElementsAre("w1:1"));
}

TEST(WorkerRegistryTest, UnknownAddressesAreIgnored) {
  WorkerRegistry registry;
  registry.ProbeSucceeded("gone:1", Info("m"), kT0);
  registry.MarkDown("gone:1", absl::UnavailableError("x"));
  registry.Heartbeat("gone:1", kT0);
  registry.OnDispatched("gone:1", kT0);
  registry.OnJobLeft("gone:1");
  registry.Remove("gone:1");
  EXPECT_TRUE(registry.workers().empty());
}

TEST(WorkerRegistryTest, DispatchCounters) {
  WorkerRegistry registry;
  registry.Add("w1:1", WorkerSource::kFlag, nullptr);
  registry.OnDispatched("w1:1", kT0);
  registry.OnDispatched("w1:1", kT0 + seconds(1));
  const WorkerRecord& record = *registry.Find("w1:1");
  EXPECT_EQ(record.dispatched_jobs, 2);
  EXPECT_EQ(record.dispatches_total, 2);
  EXPECT_EQ(record.last_dispatch, kT0 + seconds(1));
  registry.OnJobLeft("w1:1");
  registry.OnJobLeft("w1:1");
  registry.OnJobLeft("w1:1");  // never below zero
  EXPECT_EQ(record.dispatched_jobs, 0);
  EXPECT_EQ(record.dispatches_total, 2);
}

TEST(WorkerRegistryTest, ForModelAndModels) {
  WorkerRegistry registry;
  registry.Add("c:1", WorkerSource::kFlag, nullptr);
  registry.Add("a:1", WorkerSource::kFlag, nullptr);
  registry.Add("b:1", WorkerSource::kFlag, nullptr);
  registry.Add("d:1", WorkerSource::kFlag, nullptr);  // never probed
  registry.ProbeSucceeded("c:1", Info("llama"), kT0);
  registry.ProbeSucceeded("a:1", Info("llama"), kT0);
  registry.ProbeSucceeded("b:1", Info("qwen"), kT0);
  registry.MarkDown("a:1", absl::UnavailableError("x"));
  EXPECT_THAT(Addresses(registry.ForModel("llama")), ElementsAre("a:1", "c:1"));
  EXPECT_THAT(registry.ForModel("nope"), IsEmpty());
  EXPECT_THAT(registry.Models(), ElementsAre("llama", "qwen"));
  EXPECT_TRUE(registry.AnyUnprobed());
}

TEST(WorkerRegistryTest, DnsAddsAndRemoves) {
  WorkerRegistry registry;
  StubMaker maker;
  EXPECT_THAT(registry.SetDnsAddresses("svc", {"b:1", "a:1"}, maker.Fn()),
              ElementsAre("a:1", "b:1"));
  EXPECT_THAT(maker.made, ElementsAre("a:1", "b:1"));
  EXPECT_EQ(registry.Find("a:1")->source, WorkerSource::kDns);
  EXPECT_EQ(registry.Find("a:1")->dns_name, "svc");

  // Same answer: nothing new, no stubs made again.
  EXPECT_THAT(registry.SetDnsAddresses("svc", {"a:1", "b:1"}, maker.Fn()), IsEmpty());
  EXPECT_EQ(maker.made.size(), 2u);

  EXPECT_THAT(registry.SetDnsAddresses("svc", {"b:1", "c:1"}, maker.Fn()), ElementsAre("c:1"));
  EXPECT_THAT(Addresses(registry), ElementsAre("b:1", "c:1"));
}

TEST(WorkerRegistryTest, DnsKeepsBusyWorkerUntilIdle) {
  WorkerRegistry registry;
  StubMaker maker;
  registry.SetDnsAddresses("svc", {"a:1", "b:1"}, maker.Fn());
  registry.OnDispatched("a:1", kT0);
  registry.SetDnsAddresses("svc", {"b:1"}, maker.Fn());
  ASSERT_NE(registry.Find("a:1"), nullptr);  // its job still runs there
  EXPECT_TRUE(registry.Find("a:1")->dns_gone);
  EXPECT_FALSE(registry.Find("b:1")->dns_gone);

  registry.OnJobLeft("a:1");
  registry.SetDnsAddresses("svc", {"b:1"}, maker.Fn());
  EXPECT_THAT(Addresses(registry), ElementsAre("b:1"));
}

TEST(WorkerRegistryTest, DnsWorkerBackBeforeIdleServesAgain) {
  WorkerRegistry registry;
  StubMaker maker;
  registry.SetDnsAddresses("svc", {"a:1"}, maker.Fn());
  registry.OnDispatched("a:1", kT0);
  registry.SetDnsAddresses("svc", {}, maker.Fn());
  ASSERT_TRUE(registry.Find("a:1")->dns_gone);
  EXPECT_THAT(registry.SetDnsAddresses("svc", {"a:1"}, maker.Fn()), IsEmpty());
  EXPECT_FALSE(registry.Find("a:1")->dns_gone);
  EXPECT_EQ(maker.made.size(), 1u);
}

TEST(WorkerRegistryTest, DnsNamesAreSeparate) {
  WorkerRegistry registry;
  StubMaker maker;
  registry.SetDnsAddresses("one", {"a:1"}, maker.Fn());
  registry.SetDnsAddresses("two", {"b:1"}, maker.Fn());
  registry.Add("r:1", WorkerSource::kRegistered, nullptr);
  registry.SetDnsAddresses("one", {}, maker.Fn());
  EXPECT_THAT(Addresses(registry), ElementsAre("b:1", "r:1"));
}

TEST(WorkerRegistryTest, ForgetSilentDropsOnlyIdleSilentRegistered) {
  WorkerRegistry registry;
  StubMaker maker;
  const Clock::duration ttl = seconds(30);
  registry.Add("flag:1", WorkerSource::kFlag, nullptr);
  registry.SetDnsAddresses("svc", {"dns:1"}, maker.Fn());
  for (const char* address : {"silent:1", "fresh:1", "busy:1"}) {
    registry.Add(address, WorkerSource::kRegistered, nullptr);
    registry.Heartbeat(address, kT0);
  }
  registry.Heartbeat("fresh:1", kT0 + seconds(50));
  registry.OnDispatched("busy:1", kT0);
  EXPECT_EQ(registry.ForgetSilent(kT0 + seconds(60), ttl), 1);
  EXPECT_THAT(Addresses(registry), ElementsAre("busy:1", "dns:1", "flag:1", "fresh:1"));
  // Busy ones go once idle.
  registry.OnJobLeft("busy:1");
  EXPECT_EQ(registry.ForgetSilent(kT0 + seconds(60), ttl), 1);
  EXPECT_EQ(registry.Find("busy:1"), nullptr);
}

TEST(WorkerRegistryTest, ForgetSilentCountsNeverSeenFromAdd) {
  WorkerRegistry registry;
  WorkerRecord& record = registry.Add("r:1", WorkerSource::kRegistered, nullptr);
  EXPECT_EQ(record.last_seen, Clock::time_point());
  record.added = kT0;  // Add stamps Clock::now(); pin it for the test
  EXPECT_EQ(registry.ForgetSilent(kT0 + seconds(10), seconds(30)), 0);
  EXPECT_EQ(registry.ForgetSilent(kT0 + seconds(31), seconds(30)), 1);
  EXPECT_TRUE(registry.workers().empty());
}

TEST(WorkerRegistryTest, AddStampsAddedWithTheRealClock) {
  WorkerRegistry registry;
  const Clock::time_point before = Clock::now();
  const WorkerRecord& record = registry.Add("r:1", WorkerSource::kRegistered, nullptr);
  EXPECT_GE(record.added, before);
  EXPECT_LE(record.added, Clock::now());
  // Just registered: a short TTL does not drop it at once.
  EXPECT_EQ(registry.ForgetSilent(Clock::now(), seconds(30)), 0);
}

}  // namespace
}  // namespace llorch::scheduler
