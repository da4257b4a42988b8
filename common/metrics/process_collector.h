// The standard process metrics of Prometheus clients (client_golang's and
// prometheus-cpp's names), read from /proc/self at each scrape, plus the
// bytes malloc has handed out and not yet had back. Every llorch server
// exposes them through ServeMetrics; the soak reads them to find leaks
// (heap bytes and open descriptors at idle must not grow with requests).
//
//   process_resident_memory_bytes, process_virtual_memory_bytes,
//   process_cpu_seconds_total, process_start_time_seconds,
//   process_open_fds, process_max_fds, process_threads,
//   llorch_process_heap_bytes (glibc mallinfo2: in-use chunks + mmapped)
#ifndef LLORCH_COMMON_METRICS_PROCESS_COLLECTOR_H_
#define LLORCH_COMMON_METRICS_PROCESS_COLLECTOR_H_

#include <vector>

#include "common/metrics/metric_family.h"

namespace llorch::metrics {

class ProcessCollector : public Collectable {
 public:
  std::vector<MetricFamily> Collect() const override;
};

}  // namespace llorch::metrics

#endif  // LLORCH_COMMON_METRICS_PROCESS_COLLECTOR_H_
