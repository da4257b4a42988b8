#include "scheduler/placement.h"

#include <algorithm>
#include <tuple>

namespace llorch::scheduler {
namespace {

int64_t FreeKvBytes(const WorkerRecord& worker) {
  return worker.info ? worker.info->kv_capacity_bytes() - worker.info->kv_used_bytes() : 0;
}

// Whether `a` should get the job before `b`: less load, then more free KV,
// then the one that waited longest for a job (round robin), then address so
// the choice never depends on iteration order.
bool Better(const WorkerRecord& a, const WorkerRecord& b) {
  return std::make_tuple(WorkerLoad(a), -FreeKvBytes(a), a.last_dispatch, a.address) <
         std::make_tuple(WorkerLoad(b), -FreeKvBytes(b), b.last_dispatch, b.address);
}

bool Eligible(const WorkerRecord& worker, const absl::flat_hash_set<std::string>& exclude) {
  return worker.state == WorkerState::kUp && !worker.dns_gone && !exclude.contains(worker.address);
}

int32_t CachedTokens(const PrefixHits& hits, const std::string& address) {
  auto it = hits.find(address);
  return it == hits.end() ? 0 : it->second;
}

}  // namespace

int32_t WorkerLoad(const WorkerRecord& worker) {
  // Info also counts other clients' jobs; our own count is fresher between probes.
  const int32_t reported =
      worker.info ? worker.info->active_jobs() + worker.info->waiting_jobs() : 0;
  return std::max(worker.dispatched_jobs, reported);
}

int32_t WorkerSlots(const WorkerRecord& worker, const PlacementOptions& options) {
  if (options.max_jobs_per_worker > 0) return options.max_jobs_per_worker;
  return worker.info ? std::max<int32_t>(1, worker.info->max_batch()) : 1;
}

Placement PickWorker(const WorkerRegistry& registry, const std::string& model,
                     const absl::flat_hash_set<std::string>& exclude,
                     const PlacementOptions& options, const PrefixHits& hits) {
  const std::vector<const WorkerRecord*> workers = registry.ForModel(model);
  if (workers.empty()) return {PlacementVerdict::kUnknownModel, ""};
  bool any_up = false;
  std::vector<const WorkerRecord*> free;  // up, eligible, with a free slot
  for (const WorkerRecord* worker : workers) {
    if (!Eligible(*worker, exclude)) continue;
    any_up = true;
    if (worker->dispatched_jobs < WorkerSlots(*worker, options)) free.push_back(worker);
  }
  if (free.empty()) {
    return {any_up ? PlacementVerdict::kBusy : PlacementVerdict::kNoWorkerUp, ""};
  }
  const WorkerRecord* least = *std::min_element(
      free.begin(), free.end(), [](const WorkerRecord* a, const WorkerRecord* b) { return Better(*a, *b); });
  const WorkerRecord* best = least;
  if (options.policy == PlacementPolicy::kCacheAware) {
    const int32_t max_load = WorkerLoad(*least) + std::max(0, options.max_load_imbalance);
    for (const WorkerRecord* worker : free) {
      if (WorkerLoad(*worker) > max_load) continue;
      const int32_t cached = CachedTokens(hits, worker->address);
      const int32_t best_cached = CachedTokens(hits, best->address);
      if (cached > best_cached || (cached == best_cached && Better(*worker, *best))) best = worker;
    }
  }
  Placement placement{PlacementVerdict::kPlaced, best->address};
  placement.cached_tokens = CachedTokens(hits, best->address);
  placement.by_prefix = best != least;
  return placement;
}

std::vector<std::string> PrefixProbeTargets(const WorkerRegistry& registry,
                                            const std::string& model,
                                            const absl::flat_hash_set<std::string>& exclude,
                                            const PlacementOptions& options) {
  if (options.policy != PlacementPolicy::kCacheAware) return {};
  std::vector<std::string> targets;
  for (const WorkerRecord* worker : registry.ForModel(model)) {
    if (Eligible(*worker, exclude)) targets.push_back(worker->address);
  }
  if (targets.size() < 2) targets.clear();
  return targets;
}

}  // namespace llorch::scheduler
