#include "scheduler/worker_registry.h"

#include <algorithm>
#include <set>
#include <utility>

namespace llorch::scheduler {
namespace {

// How strongly a source pins a worker: a re-add may only raise it, so an
// operator's --workers entry is never turned into one DNS or a TTL may drop.
int SourceRank(WorkerSource source) {
  switch (source) {
    case WorkerSource::kRegistered:
      return 0;
    case WorkerSource::kDns:
      return 1;
    case WorkerSource::kFlag:
      return 2;
  }
  return 0;
}

}  // namespace

const char* WorkerSourceName(WorkerSource source) {
  switch (source) {
    case WorkerSource::kFlag:
      return "flag";
    case WorkerSource::kDns:
      return "dns";
    case WorkerSource::kRegistered:
      return "registered";
  }
  return "?";
}

const char* WorkerStateName(WorkerState state) {
  switch (state) {
    case WorkerState::kUnknown:
      return "unknown";
    case WorkerState::kUp:
      return "up";
    case WorkerState::kDown:
      return "down";
  }
  return "?";
}

const std::string& WorkerRecord::model() const {
  static const std::string* const kNone = new std::string();
  return info ? info->model() : *kNone;
}

WorkerRecord& WorkerRegistry::Add(const std::string& address, WorkerSource source,
                                  std::shared_ptr<worker::v1::Worker::StubInterface> stub,
                                  const std::string& dns_name) {
  auto [it, inserted] = workers_.try_emplace(address);
  WorkerRecord& record = it->second;
  if (inserted) {
    record.address = address;
    record.source = source;
    record.dns_name = source == WorkerSource::kDns ? dns_name : "";
    record.added = Clock::now();
    record.stub = std::move(stub);
    return record;
  }
  // Known: state, info and counters stay; only the source may rise.
  if (SourceRank(source) > SourceRank(record.source)) {
    record.source = source;
    record.dns_name = source == WorkerSource::kDns ? dns_name : "";
    record.dns_gone = false;
  }
  if (record.stub == nullptr) record.stub = std::move(stub);
  return record;
}

void WorkerRegistry::Remove(const std::string& address) { workers_.erase(address); }

WorkerRecord* WorkerRegistry::Find(const std::string& address) {
  auto it = workers_.find(address);
  return it == workers_.end() ? nullptr : &it->second;
}

const WorkerRecord* WorkerRegistry::Find(const std::string& address) const {
  auto it = workers_.find(address);
  return it == workers_.end() ? nullptr : &it->second;
}

std::vector<std::string> WorkerRegistry::SetDnsAddresses(
    const std::string& dns_name, const std::vector<std::string>& addresses,
    const std::function<std::shared_ptr<worker::v1::Worker::StubInterface>(const std::string&)>&
        make_stub) {
  const std::set<std::string> current(addresses.begin(), addresses.end());
  // Drop (or retire, while jobs run there) this name's workers it no longer
  // resolves to.
  for (auto it = workers_.begin(); it != workers_.end();) {
    WorkerRecord& record = it->second;
    const bool gone = record.source == WorkerSource::kDns && record.dns_name == dns_name &&
                      current.count(record.address) == 0;
    if (gone && record.dispatched_jobs == 0) {
      it = workers_.erase(it);
      continue;
    }
    if (gone) record.dns_gone = true;
    ++it;
  }
  std::vector<std::string> added;
  for (const std::string& address : current) {
    if (WorkerRecord* known = Find(address)) {
      // Back in the answer before its jobs ended: serve again.
      if (known->source == WorkerSource::kDns && known->dns_name == dns_name) {
        known->dns_gone = false;
      } else {
        Add(address, WorkerSource::kDns, nullptr, dns_name);  // may raise a registered one
      }
      continue;
    }
    Add(address, WorkerSource::kDns, make_stub(address), dns_name);
    added.push_back(address);
  }
  return added;
}

void WorkerRegistry::ProbeSucceeded(const std::string& address,
                                    const worker::v1::InfoResponse& info, Clock::time_point now) {
  WorkerRecord* record = Find(address);
  if (record == nullptr) return;  // removed while the probe was out
  record->state = WorkerState::kUp;
  record->info = info;
  record->last_seen = now;
  record->last_error.clear();
}

void WorkerRegistry::MarkDown(const std::string& address, const absl::Status& why) {
  WorkerRecord* record = Find(address);
  if (record == nullptr) return;
  record->state = WorkerState::kDown;
  // Info stays, so its model reads "no worker up" rather than "unknown".
  record->last_error = why.message().empty() ? why.ToString() : std::string(why.message());
}

void WorkerRegistry::Heartbeat(const std::string& address, Clock::time_point now) {
  if (WorkerRecord* record = Find(address)) record->last_seen = now;
}

int WorkerRegistry::ForgetSilent(Clock::time_point now, Clock::duration ttl) {
  int forgotten = 0;
  for (auto it = workers_.begin(); it != workers_.end();) {
    const WorkerRecord& record = it->second;
    // Never seen: count from when it registered, or it would go at once.
    const Clock::time_point seen =
        record.last_seen == Clock::time_point() ? record.added : record.last_seen;
    if (record.source == WorkerSource::kRegistered && record.dispatched_jobs == 0 &&
        now - seen > ttl) {
      it = workers_.erase(it);
      ++forgotten;
    } else {
      ++it;
    }
  }
  return forgotten;
}

void WorkerRegistry::OnDispatched(const std::string& address, Clock::time_point now) {
  WorkerRecord* record = Find(address);
  if (record == nullptr) return;
  ++record->dispatched_jobs;
  ++record->dispatches_total;
  record->last_dispatch = now;
}

void WorkerRegistry::OnJobLeft(const std::string& address) {
  WorkerRecord* record = Find(address);
  if (record != nullptr && record->dispatched_jobs > 0) --record->dispatched_jobs;
}

std::vector<const WorkerRecord*> WorkerRegistry::ForModel(const std::string& model) const {
  std::vector<const WorkerRecord*> result;
  for (const auto& [address, record] : workers_) {
    if (record.info && record.info->model() == model) result.push_back(&record);
  }
  return result;
}

bool WorkerRegistry::AnyUnprobed() const {
  return std::any_of(workers_.begin(), workers_.end(), [](const auto& entry) {
    return entry.second.state == WorkerState::kUnknown;
  });
}

std::vector<std::string> WorkerRegistry::Models() const {
  std::set<std::string> models;
  for (const auto& [address, record] : workers_) {
    if (!record.model().empty()) models.insert(record.model());
  }
  return {models.begin(), models.end()};
}

}  // namespace llorch::scheduler
