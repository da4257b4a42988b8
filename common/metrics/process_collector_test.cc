#include "common/metrics/process_collector.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <string>

#include <gtest/gtest.h>

namespace llorch::metrics {
namespace {

std::map<std::string, double> Values() {
  std::map<std::string, double> values;
  for (const MetricFamily& family : ProcessCollector().Collect()) {
    EXPECT_EQ(family.metric.size(), 1u) << family.name;
    values[family.name] = family.type == MetricType::kCounter ? family.metric[0].counter.value
                                                               : family.metric[0].gauge.value;
  }
  return values;
}

TEST(ProcessCollectorTest, ReadsThisProcess) {
  std::map<std::string, double> before = Values();
  EXPECT_GT(before["process_resident_memory_bytes"], 1 << 20);
  EXPECT_GE(before["process_virtual_memory_bytes"], before["process_resident_memory_bytes"]);
  EXPECT_GE(before["process_threads"], 1);
  EXPECT_GT(before["process_max_fds"], before["process_open_fds"]);
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(before["process_start_time_seconds"], now + 1);
  EXPECT_GT(before["process_start_time_seconds"], now - 3600);

  // Two more descriptors and 64 MiB more heap, touched, show; freed, they go.
  const int a = open("/dev/null", O_RDONLY), b = open("/dev/null", O_RDONLY);
  const size_t size = 64 << 20;
  char* block = static_cast<char*>(std::malloc(size));
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, size);
  std::map<std::string, double> during = Values();
  EXPECT_EQ(during["process_open_fds"], before["process_open_fds"] + 2);
  EXPECT_GE(during["llorch_process_heap_bytes"] - before["llorch_process_heap_bytes"], size);
  EXPECT_GE(during["process_resident_memory_bytes"] - before["process_resident_memory_bytes"],
            size / 2);
  std::free(block);
  close(a);
  close(b);
  std::map<std::string, double> after = Values();
  EXPECT_EQ(after["process_open_fds"], before["process_open_fds"]);
  EXPECT_LT(after["llorch_process_heap_bytes"] - before["llorch_process_heap_bytes"], size / 16);
  EXPECT_GE(after["process_cpu_seconds_total"], before["process_cpu_seconds_total"]);
}

}  // namespace
}  // namespace llorch::metrics
