// Storage of the scheduler's workers: what it knows of each (address, how it
// learnt of it, state, model, load from its last Info, jobs the scheduler
// has on it). No policy and no locking: the scheduler core's thread owns it
// (scheduler_core.h); placement.h decides where jobs go.
#ifndef LLORCH_SCHEDULER_WORKER_REGISTRY_H_
#define LLORCH_SCHEDULER_WORKER_REGISTRY_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "llorch/worker/v1/worker.grpc.pb.h"

namespace llorch::scheduler {

using Clock = std::chrono::steady_clock;

enum class WorkerSource {
  kFlag,        // an address in --workers
  kDns,         // one of the addresses a --workers name resolved to
  kRegistered,  // RegisterWorker (llorch-worker --scheduler)
};
const char* WorkerSourceName(WorkerSource source);  // "flag", "dns", "registered"

enum class WorkerState {
  kUnknown,  // not probed yet
  kUp,       // its last probe answered and it is serving
  kDown,     // its last probe failed, or a call to it failed as a dead worker does
};
const char* WorkerStateName(WorkerState state);  // "unknown", "up", "down"

struct WorkerRecord {
  std::string address;  // host:port, the registry's key
  WorkerSource source = WorkerSource::kFlag;
  std::string dns_name;  // kDns: the --workers entry it came from
  WorkerState state = WorkerState::kUnknown;
  // From the last successful Info (model name, capacity, load); empty
  // before the first one.
  std::optional<worker::v1::InfoResponse> info;
  std::string last_error;             // why it is down
  Clock::time_point last_seen;        // last answered probe or heartbeat; epoch if never
  Clock::time_point added;            // when Add made the record (Clock::now())
  Clock::time_point last_dispatch;    // for round-robin among equals
  int32_t dispatched_jobs = 0;        // the scheduler's jobs running on it now
  int64_t dispatches_total = 0;
  bool probe_in_flight = false;
  // kDns: its name no longer resolves to it, but jobs still run on it; it
  // gets no new jobs and is removed once idle (SetDnsAddresses).
  bool dns_gone = false;
  // Stub over the worker's channel, made once when the record is added.
  std::shared_ptr<worker::v1::Worker::StubInterface> stub;

  // The served model's name, "" before the first Info.
  const std::string& model() const;
};

class WorkerRegistry {
 public:
  // Adds the worker (state kUnknown, `stub` its channel's) or, when it is
  // known, keeps it (state, info, stub); a known worker's source is only
  // ever raised (registered < dns < flag), so a flag entry is never
  // downgraded to dns/registered. Returns the record.
  WorkerRecord& Add(const std::string& address, WorkerSource source,
                    std::shared_ptr<worker::v1::Worker::StubInterface> stub,
                    const std::string& dns_name = "");
  void Remove(const std::string& address);
  WorkerRecord* Find(const std::string& address);
  const WorkerRecord* Find(const std::string& address) const;

  // A name's current addresses: adds those that are new (via `make_stub`),
  // removes its dns workers that are gone and have no dispatched jobs
  // (those with jobs are removed once idle, at a later call). Returns the
  // addresses added.
  std::vector<std::string> SetDnsAddresses(
      const std::string& dns_name, const std::vector<std::string>& addresses,
      const std::function<std::shared_ptr<worker::v1::Worker::StubInterface>(const std::string&)>&
          make_stub);

  // A probe answered: state kUp, info and last_seen updated, last_error
  // cleared. (A worker that answers but is not serving is the core's to
  // handle.)
  void ProbeSucceeded(const std::string& address, const worker::v1::InfoResponse& info,
                      Clock::time_point now);
  // A probe or a call failed as a dead or hung worker does: kDown, with
  // why's message as last_error. Info is kept, so its model stays known.
  void MarkDown(const std::string& address, const absl::Status& why);
  void Heartbeat(const std::string& address, Clock::time_point now);
  // Registered workers not seen for `ttl` (never seen: since added) and
  // without jobs are forgotten (a scaled-down replica). Returns how many.
  int ForgetSilent(Clock::time_point now, Clock::duration ttl);

  void OnDispatched(const std::string& address, Clock::time_point now);
  void OnJobLeft(const std::string& address);  // a dispatched job ended or moved

  // All records, ordered by address.
  const std::map<std::string, WorkerRecord>& workers() const { return workers_; }
  // Workers whose last Info named `model` (any state).
  std::vector<const WorkerRecord*> ForModel(const std::string& model) const;
  bool AnyUnprobed() const;  // some worker is still kUnknown
  // Model names served by some worker, sorted.
  std::vector<std::string> Models() const;

 private:
  std::map<std::string, WorkerRecord> workers_;
};

}  // namespace llorch::scheduler

#endif  // LLORCH_SCHEDULER_WORKER_REGISTRY_H_
