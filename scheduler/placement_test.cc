#include "scheduler/placement.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace llorch::scheduler {
namespace {

using std::chrono::seconds;

const Clock::time_point kT0{seconds(1000)};

// What a worker's last Info reported (C++17: setters, not designated inits).
struct Load {
  Load& Active(int32_t n) {
    active = n;
    return *this;
  }
  Load& Waiting(int32_t n) {
    waiting = n;
    return *this;
  }
  Load& Kv(int64_t used, int64_t capacity) {
    kv_used = used;
    kv_capacity = capacity;
    return *this;
  }
  Load& MaxBatch(int32_t n) {
    max_batch = n;
    return *this;
  }

  int32_t active = 0;
  int32_t waiting = 0;
  int64_t kv_used = 0;
  int64_t kv_capacity = 1000;
  int32_t max_batch = 4;
};

class PlacementTest : public ::testing::Test {
 protected:
  // An up flag worker of `model` whose last Info reported `load`.
  void AddUp(const std::string& address, const std::string& model, const Load& load = Load()) {
    registry_.Add(address, WorkerSource::kFlag, nullptr);
    Probe(address, model, load);
  }

  void Probe(const std::string& address, const std::string& model, const Load& load = Load()) {
    worker::v1::InfoResponse info;
    info.set_model(model);
    info.set_active_jobs(load.active);
    info.set_waiting_jobs(load.waiting);
    info.set_kv_used_bytes(load.kv_used);
    info.set_kv_capacity_bytes(load.kv_capacity);
    info.set_max_batch(load.max_batch);
    registry_.ProbeSucceeded(address, info, kT0);
  }

  Placement Pick(const std::string& model, const absl::flat_hash_set<std::string>& exclude = {},
                 const PrefixHits& hits = {}) {
    return PickWorker(registry_, model, exclude, options_, hits);
  }

  // Picks and records the dispatch, as the core does.
  std::string PickAndDispatch(const std::string& model, Clock::time_point now) {
    const Placement placement = Pick(model);
    EXPECT_EQ(placement.verdict, PlacementVerdict::kPlaced);
    registry_.OnDispatched(placement.address, now);
    return placement.address;
  }

  WorkerRegistry registry_;
  PlacementOptions options_;
};

TEST_F(PlacementTest, UnknownModel) {
  AddUp("a:1", "llama");
  registry_.Add("b:1", WorkerSource::kFlag, nullptr);  // unprobed: no model yet
  EXPECT_EQ(Pick("qwen").verdict, PlacementVerdict::kUnknownModel);
  EXPECT_EQ(PickWorker(WorkerRegistry(), "llama", {}, options_).verdict,
            PlacementVerdict::kUnknownModel);
}

TEST_F(PlacementTest, AllDownIsNoWorkerUp) {
  AddUp("a:1", "llama");
  AddUp("b:1", "llama");
  registry_.MarkDown("a:1", absl::UnavailableError("x"));
  registry_.MarkDown("b:1", absl::UnavailableError("x"));
  const Placement placement = Pick("llama");
  EXPECT_EQ(placement.verdict, PlacementVerdict::kNoWorkerUp);
  EXPECT_EQ(placement.address, "");
}

TEST_F(PlacementTest, ExcludedWorkersAreNotChosen) {
  AddUp("a:1", "llama");
  AddUp("b:1", "llama", Load().Active(3));
  EXPECT_EQ(Pick("llama").address, "a:1");
  EXPECT_EQ(Pick("llama", {"a:1"}).address, "b:1");
  // All tried already: as if none were up.
  EXPECT_EQ(Pick("llama", {"a:1", "b:1"}).verdict, PlacementVerdict::kNoWorkerUp);
}

TEST_F(PlacementTest, SkipsDownWorkers) {
  AddUp("a:1", "llama");
  AddUp("b:1", "llama", Load().Active(3));
  registry_.MarkDown("a:1", absl::UnavailableError("x"));
  EXPECT_EQ(Pick("llama").address, "b:1");
}

TEST_F(PlacementTest, FullWorkersMeanBusy) {
  options_.max_jobs_per_worker = 1;
  AddUp("a:1", "llama");
  AddUp("b:1", "llama");
  registry_.MarkDown("b:1", absl::UnavailableError("x"));
  registry_.OnDispatched("a:1", kT0);
  EXPECT_EQ(Pick("llama").verdict, PlacementVerdict::kBusy);
  // Busy wins over excluded/down ones: a slot will free on an up worker.
  EXPECT_EQ(Pick("llama", {"b:1"}).verdict, PlacementVerdict::kBusy);
  registry_.OnJobLeft("a:1");
  EXPECT_EQ(Pick("llama").address, "a:1");
}

TEST_F(PlacementTest, LeastLoadedWins) {
  AddUp("a:1", "llama", Load().Active(2));
  AddUp("b:1", "llama", Load().Active(1));
  AddUp("c:1", "llama", Load().Active(1).Waiting(1));
  EXPECT_EQ(Pick("llama").address, "b:1");
}

TEST_F(PlacementTest, OwnDispatchesCountBetweenProbes) {
  AddUp("a:1", "llama");
  AddUp("b:1", "llama", Load().Active(1));
  registry_.OnDispatched("a:1", kT0);
  registry_.OnDispatched("a:1", kT0);  // Info still says 0 on a:1
  EXPECT_EQ(Pick("llama").address, "b:1");
}

TEST_F(PlacementTest, TieGoesToMostFreeKv) {
  AddUp("a:1", "llama", Load().Kv(500, 1000));
  AddUp("b:1", "llama", Load().Kv(100, 1000));
  AddUp("c:1", "llama", Load().Kv(0, 600));
  EXPECT_EQ(Pick("llama").address, "b:1");
}

TEST_F(PlacementTest, TieGoesToOldestDispatchThenAddress) {
  AddUp("a:1", "llama");
  AddUp("b:1", "llama");
  AddUp("c:1", "llama");
  // Never dispatched anywhere: by address.
  EXPECT_EQ(Pick("llama").address, "a:1");
  registry_.OnDispatched("a:1", kT0 + seconds(2));
  registry_.OnDispatched("b:1", kT0 + seconds(1));
  registry_.OnJobLeft("a:1");
  registry_.OnJobLeft("b:1");
  EXPECT_EQ(Pick("llama").address, "c:1");  // never dispatched to
  registry_.OnDispatched("c:1", kT0 + seconds(3));
  registry_.OnJobLeft("c:1");
  EXPECT_EQ(Pick("llama").address, "b:1");  // dispatched longest ago
}

TEST_F(PlacementTest, RoundRobinAmongEquals) {
  AddUp("a:1", "llama");
  AddUp("b:1", "llama");
  AddUp("c:1", "llama");
  std::vector<std::string> order;
  for (int i = 0; i < 6; ++i) {
    const std::string address = PickAndDispatch("llama", kT0 + seconds(i));
    registry_.OnJobLeft(address);  // short jobs: loads stay equal
    order.push_back(address);
  }
  EXPECT_EQ(order, (std::vector<std::string>{"a:1", "b:1", "c:1", "a:1", "b:1", "c:1"}));
}

TEST_F(PlacementTest, SlotsFromInfoMaxBatch) {
  AddUp("a:1", "llama", Load().MaxBatch(2));
  EXPECT_EQ(WorkerSlots(*registry_.Find("a:1"), options_), 2);
  PickAndDispatch("llama", kT0);
  PickAndDispatch("llama", kT0 + seconds(1));
  EXPECT_EQ(Pick("llama").verdict, PlacementVerdict::kBusy);
}

TEST_F(PlacementTest, SlotsFromOptionOverrideInfo) {
  options_.max_jobs_per_worker = 3;
  AddUp("a:1", "llama", Load().MaxBatch(1));
  EXPECT_EQ(WorkerSlots(*registry_.Find("a:1"), options_), 3);
  for (int i = 0; i < 3; ++i) PickAndDispatch("llama", kT0 + seconds(i));
  EXPECT_EQ(Pick("llama").verdict, PlacementVerdict::kBusy);
}

TEST_F(PlacementTest, SlotsAtLeastOne) {
  AddUp("a:1", "llama", Load().MaxBatch(0));
  EXPECT_EQ(WorkerSlots(*registry_.Find("a:1"), options_), 1);
  WorkerRecord unprobed;
  EXPECT_EQ(WorkerSlots(unprobed, options_), 1);
}

TEST_F(PlacementTest, WorkerLoadIsTheLargerCount) {
  WorkerRecord record;
  EXPECT_EQ(WorkerLoad(record), 0);
  record.dispatched_jobs = 2;
  EXPECT_EQ(WorkerLoad(record), 2);
  record.info.emplace();
  record.info->set_active_jobs(3);
  record.info->set_waiting_jobs(1);
  EXPECT_EQ(WorkerLoad(record), 4);  // other clients' jobs too
  record.dispatched_jobs = 5;
  EXPECT_EQ(WorkerLoad(record), 5);
}

TEST_F(PlacementTest, SlotIsOwnJobsNotReportedLoad) {
  options_.max_jobs_per_worker = 1;
  // Busy with other clients' jobs, but none of ours: it still has our slot.
  AddUp("a:1", "llama", Load().Active(8));
  EXPECT_EQ(Pick("llama").address, "a:1");
}

TEST_F(PlacementTest, RetiringDnsWorkerGetsNoNewJobs) {
  const auto no_stub = [](const std::string&) {
    return std::shared_ptr<worker::v1::Worker::StubInterface>();
  };
  registry_.SetDnsAddresses("svc", {"a:1"}, no_stub);
  Probe("a:1", "llama");
  registry_.OnDispatched("a:1", kT0);
  // The name no longer resolves to it; its job runs on, but nothing new.
  registry_.SetDnsAddresses("svc", {}, no_stub);
  ASSERT_NE(registry_.Find("a:1"), nullptr);
  EXPECT_EQ(Pick("llama").verdict, PlacementVerdict::kNoWorkerUp);
}

// ---- Cache-aware placement (issue 15). ----

TEST_F(PlacementTest, CacheAwarePicksTheWorkerHoldingMostOfThePrompt) {
  AddUp("a:1", "llama");
  AddUp("b:1", "llama", Load().Active(1));
  AddUp("c:1", "llama", Load().Active(2));
  // On load alone a:1 wins; c:1 holds most of the prompt.
  const Placement placement = Pick("llama", {}, {{"a:1", 0}, {"b:1", 32}, {"c:1", 48}});
  EXPECT_EQ(placement.address, "c:1");
  EXPECT_EQ(placement.cached_tokens, 48);
  EXPECT_TRUE(placement.by_prefix);
  // Nothing cached anywhere: load decides, and says so.
  const Placement cold = Pick("llama", {}, {{"a:1", 0}, {"b:1", 0}});
  EXPECT_EQ(cold.address, "a:1");
  EXPECT_EQ(cold.cached_tokens, 0);
  EXPECT_FALSE(cold.by_prefix);
  // The least loaded one holding most: chosen, not "by prefix".
  const Placement both = Pick("llama", {}, {{"a:1", 64}, {"c:1", 48}});
  EXPECT_EQ(both.address, "a:1");
  EXPECT_EQ(both.cached_tokens, 64);
  EXPECT_FALSE(both.by_prefix);
}

TEST_F(PlacementTest, CacheAwareFallsBackToLoadWhenTooUnbalanced) {
  options_.max_load_imbalance = 2;
  AddUp("a:1", "llama", Load().Active(1).MaxBatch(8));
  AddUp("b:1", "llama", Load().Active(3).MaxBatch(8));
  AddUp("c:1", "llama", Load().Active(4).MaxBatch(8));
  const PrefixHits hits = {{"b:1", 16}, {"c:1", 80}};
  // c:1 is 3 jobs above a:1: too many; b:1 (2 above) still may win.
  EXPECT_EQ(Pick("llama", {}, hits).address, "b:1");
  options_.max_load_imbalance = 3;
  EXPECT_EQ(Pick("llama", {}, hits).address, "c:1");
  options_.max_load_imbalance = 0;
  EXPECT_EQ(Pick("llama", {}, hits).address, "a:1");
}

TEST_F(PlacementTest, CacheAwareTiesGoToLoadThenTheUsualOrder) {
  AddUp("a:1", "llama", Load().Active(1));
  AddUp("b:1", "llama", Load().Active(2));
  AddUp("c:1", "llama", Load().Active(1).Kv(0, 2000));
  EXPECT_EQ(Pick("llama", {}, {{"a:1", 32}, {"b:1", 32}, {"c:1", 32}}).address, "c:1");
  EXPECT_EQ(Pick("llama", {}, {{"a:1", 32}, {"b:1", 32}}).address, "a:1");
}

TEST_F(PlacementTest, CacheAwareSkipsFullExcludedAndDownWorkers) {
  options_.max_jobs_per_worker = 1;
  AddUp("a:1", "llama");
  AddUp("b:1", "llama");
  AddUp("c:1", "llama");
  AddUp("d:1", "llama");
  registry_.OnDispatched("b:1", kT0);                        // full
  registry_.MarkDown("c:1", absl::UnavailableError("x"));  // down
  const PrefixHits hits = {{"b:1", 64}, {"c:1", 64}, {"d:1", 64}};
  EXPECT_EQ(Pick("llama", {"d:1"}, hits).address, "a:1");  // d:1 failed this job
  EXPECT_EQ(Pick("llama", {}, hits).address, "d:1");
}

TEST_F(PlacementTest, LeastLoadedPolicyIgnoresPrefixHits) {
  options_.policy = PlacementPolicy::kLeastLoaded;
  AddUp("a:1", "llama");
  AddUp("b:1", "llama", Load().Active(1));
  const Placement placement = Pick("llama", {}, {{"b:1", 64}});
  EXPECT_EQ(placement.address, "a:1");
  EXPECT_FALSE(placement.by_prefix);
}

TEST_F(PlacementTest, PrefixProbesOnlyWhenThereIsAChoice) {
  AddUp("a:1", "llama");
  AddUp("q:1", "qwen");
  EXPECT_TRUE(PrefixProbeTargets(registry_, "llama", {}, options_).empty());  // one worker
  AddUp("b:1", "llama", Load().Active(7));  // busy workers are asked too: slots free up
  AddUp("c:1", "llama");
  registry_.MarkDown("c:1", absl::UnavailableError("x"));
  EXPECT_EQ(PrefixProbeTargets(registry_, "llama", {}, options_),
            (std::vector<std::string>{"a:1", "b:1"}));
  EXPECT_TRUE(PrefixProbeTargets(registry_, "llama", {"a:1"}, options_).empty());
  options_.policy = PlacementPolicy::kLeastLoaded;
  EXPECT_TRUE(PrefixProbeTargets(registry_, "llama", {}, options_).empty());
}

}  // namespace
}  // namespace llorch::scheduler
