// Placement policy: which worker runs a job of a model. Pure functions over
// registry records, apart from the storage (worker_registry.h) and the
// thread that owns it (scheduler_core.h).
#ifndef LLORCH_SCHEDULER_PLACEMENT_H_
#define LLORCH_SCHEDULER_PLACEMENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "scheduler/worker_registry.h"

namespace llorch::scheduler {

struct PlacementOptions {
  // Jobs the scheduler keeps on one worker at once; beyond, jobs wait in the
  // scheduler's queue (so they can go to whichever worker frees first).
  // 0: the worker's own max_batch (from Info).
  int32_t max_jobs_per_worker = 0;
};

// A worker's load as placement sees it: the scheduler's own jobs on it, or,
// when more, what its last Info counted (other clients' jobs included).
int32_t WorkerLoad(const WorkerRecord& worker);
// How many jobs of the scheduler it may hold at once (>= 1).
int32_t WorkerSlots(const WorkerRecord& worker, const PlacementOptions& options);

enum class PlacementVerdict {
  kPlaced,       // `address` is the worker
  kBusy,         // workers are up but all are full: wait in the queue
  kNoWorkerUp,   // the model has workers, none up (or all tried already, or retiring)
  kUnknownModel, // no worker serves the model
};

struct Placement {
  PlacementVerdict verdict = PlacementVerdict::kUnknownModel;
  std::string address;
};

// Among the up workers of `model`, not in `exclude` (workers that failed
// this job already), not dns_gone (retiring) and with a free slot
// (dispatched_jobs < WorkerSlots): the least loaded; ties go to the
// one with the most free KV bytes, then to the one dispatched to longest
// ago (round robin), then by address.
Placement PickWorker(const WorkerRegistry& registry, const std::string& model,
                     const absl::flat_hash_set<std::string>& exclude,
                     const PlacementOptions& options);

}  // namespace llorch::scheduler

#endif  // LLORCH_SCHEDULER_PLACEMENT_H_
