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
                     const PlacementOptions& options) {
  const std::vector<const WorkerRecord*> workers = registry.ForModel(model);
  if (workers.empty()) return {PlacementVerdict::kUnknownModel, ""};
  bool any_up = false;
  const WorkerRecord* best = nullptr;
  for (const WorkerRecord* worker : workers) {
    if (worker->state != WorkerState::kUp || worker->dns_gone ||
        exclude.contains(worker->address)) {
      continue;
    }
    any_up = true;
    if (worker->dispatched_jobs >= WorkerSlots(*worker, options)) continue;
    if (best == nullptr || Better(*worker, *best)) best = worker;
  }
  if (best != nullptr) return {PlacementVerdict::kPlaced, best->address};
  return {any_up ? PlacementVerdict::kBusy : PlacementVerdict::kNoWorkerUp, ""};
}

}  // namespace llorch::scheduler
