// Placement policy: which worker runs a job of a model. Pure functions over
// registry records, apart from the storage (worker_registry.h) and the
// thread that owns it (scheduler_core.h).
#ifndef LLORCH_SCHEDULER_PLACEMENT_H_
#define LLORCH_SCHEDULER_PLACEMENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "scheduler/worker_registry.h"

namespace llorch::scheduler {

enum class PlacementPolicy {
  kLeastLoaded,  // the least loaded worker
  kCacheAware,   // the worker holding most of the prompt's prefix, within max_load_imbalance
};

struct PlacementOptions {
  // Jobs the scheduler keeps on one worker at once; beyond, jobs wait in the
  // scheduler's queue (so they can go to whichever worker frees first).
  // 0: the worker's own max_batch (from Info).
  int32_t max_jobs_per_worker = 0;
  PlacementPolicy policy = PlacementPolicy::kCacheAware;
  // kCacheAware: a worker with more of the prompt cached wins while its load
  // is at most this many jobs above the least loaded candidate's; beyond,
  // load decides (a hot prefix must not pile every job onto one worker).
  int32_t max_load_imbalance = 4;
};

// Prompt tokens each worker (by address) already holds in its prefix cache
// for one job, from the workers' MatchPrefix answers; workers that did not
// answer are absent (as if 0).
using PrefixHits = absl::flat_hash_map<std::string, int32_t>;

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
  // kPlaced: the prompt tokens `address` holds (from PrefixHits), and
  // whether they decided (another worker would have won on load alone).
  int32_t cached_tokens = 0;
  bool by_prefix = false;
};

// Among the up workers of `model`, not in `exclude` (workers that failed
// this job already), not dns_gone (retiring) and with a free slot
// (dispatched_jobs < WorkerSlots): the least loaded; ties go to the
// one with the most free KV bytes, then to the one dispatched to longest
// ago (round robin), then by address. kCacheAware with `hits`: among those
// whose load is within max_load_imbalance of that winner's, the one with
// the most cached prompt tokens (ties as above); none cached: the winner.
Placement PickWorker(const WorkerRegistry& registry, const std::string& model,
                     const absl::flat_hash_set<std::string>& exclude,
                     const PlacementOptions& options, const PrefixHits& hits = {});

// The workers whose prefix caches are worth asking about a new job of
// `model` (kCacheAware only): the up ones not excluded nor retiring, when
// there are two or more (with one, there is no choice to make).
std::vector<std::string> PrefixProbeTargets(const WorkerRegistry& registry,
                                            const std::string& model,
                                            const absl::flat_hash_set<std::string>& exclude,
                                            const PlacementOptions& options);

}  // namespace llorch::scheduler

#endif  // LLORCH_SCHEDULER_PLACEMENT_H_
