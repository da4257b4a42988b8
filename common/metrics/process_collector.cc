#include "common/metrics/process_collector.h"

#include <dirent.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace llorch::metrics {
namespace {

MetricFamily One(const char* name, const char* help, MetricType type, double value) {
  MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  ClientMetric metric;
  if (type == MetricType::kCounter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(metric);
  return family;
}

// Fields of /proc/self/stat after the command name, numbered as in proc(5)
// from 3 (state); empty when unreadable.
std::vector<std::string> StatFields() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  std::getline(in, line);
  const size_t paren = line.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return {};
  return absl::StrSplit(line.substr(paren + 2), ' ');
}

double Field(const std::vector<std::string>& fields, int number) {
  double value = 0;
  const size_t index = static_cast<size_t>(number - 3);
  if (index < fields.size() && absl::SimpleAtod(fields[index], &value)) return value;
  return 0;
}

// Boot time in seconds since the epoch (/proc/stat "btime").
double BootTime() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime" && in >> value) return value;
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

int OpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  int count = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count - 1;  // the directory's own descriptor
}

}  // namespace

std::vector<MetricFamily> ProcessCollector::Collect() const {
  const std::vector<std::string> stat = StatFields();
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  const struct mallinfo2 heap = mallinfo2();
  return {
      One("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
          MetricType::kCounter, (Field(stat, 14) + Field(stat, 15)) / ticks),
      One("process_open_fds", "Number of open file descriptors.", MetricType::kGauge, OpenFds()),
      One("process_max_fds", "Maximum number of open file descriptors.", MetricType::kGauge,
          static_cast<double>(files.rlim_cur)),
      One("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::kGauge,
          Field(stat, 23)),
      One("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::kGauge,
          Field(stat, 24) * page),
      One("process_start_time_seconds",
          "Start time of the process since unix epoch in seconds.", MetricType::kGauge,
          BootTime() + Field(stat, 22) / ticks),
      One("process_threads", "Number of OS threads in the process.", MetricType::kGauge,
          Field(stat, 20)),
      One("llorch_process_heap_bytes",
          "Bytes allocated with malloc and not yet freed (glibc mallinfo2: in-use chunks plus "
          "mmapped ones).",
          MetricType::kGauge, static_cast<double>(heap.uordblks + heap.hblkhd)),
  };
}

}  // namespace llorch::metrics
