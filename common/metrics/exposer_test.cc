#include "common/metrics/exposer.h"

#include <httplib.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/metrics/registry.h"
#include "common/metrics/text_serializer.h"
#include "gtest/gtest.h"

namespace llorch::metrics {
namespace {

int PortOf(const Exposer& exposer) {
  return exposer.GetListeningPorts().front();
}

TEST(ExposerTest, ServesRegistriesWithTheTextContentType) {
  auto first = std::make_shared<Registry>();
  auto second = std::make_shared<Registry>();
  BuildCounter().Name("a_total").Register(*first).Add({}).Increment(3);
  BuildGauge().Name("b").Register(*second).Add({{"l", "\"\n"}}).Set(-1);

  absl::StatusOr<std::unique_ptr<Exposer>> exposer =
      Exposer::Create("127.0.0.1:0");
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  ASSERT_GT(PortOf(**exposer), 0);
  (*exposer)->RegisterCollectable(first);
  (*exposer)->RegisterCollectable(second);

  httplib::Client client("127.0.0.1", PortOf(**exposer));
  httplib::Result response = client.Get("/metrics");
  ASSERT_TRUE(response) << httplib::to_string(response.error());
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->get_header_value("Content-Type"), kTextContentType);
  std::vector<MetricFamily> families = first->Collect();
  for (MetricFamily& family : second->Collect()) families.push_back(family);
  EXPECT_EQ(response->body, TextSerializer().Serialize(families));

  // Updates show up in the next scrape; a destroyed registry drops out.
  second.reset();
  BuildCounter().Name("a_total").Register(*first).Add({}).Increment();
  response = client.Get("/metrics");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, TextSerializer().Serialize(first->Collect()));

  (*exposer)->RemoveCollectable(first);
  response = client.Get("/metrics");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "");

  response = client.Get("/other");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 404);
}

TEST(ExposerTest, CustomUri) {
  auto registry = std::make_shared<Registry>();
  BuildGauge().Name("g").Register(*registry).Add({}).Set(1);
  auto exposer = Exposer::Create("127.0.0.1:0");
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  (*exposer)->RegisterCollectable(registry, "/custom");
  httplib::Client client("127.0.0.1", PortOf(**exposer));
  httplib::Result response = client.Get("/custom");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "# TYPE g gauge\ng 1\n");
  response = client.Get("/metrics");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 404);
}

TEST(ExposerTest, BadAddressAndPortInUseAreErrors) {
  EXPECT_EQ(Exposer::Create("127.0.0.1").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Exposer::Create("127.0.0.1:http").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Exposer::Create("127.0.0.1:70000").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto taken = Exposer::Create("127.0.0.1:0");
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(
      Exposer::Create(absl::StrCat("127.0.0.1:", PortOf(**taken))).status().code(),
      absl::StatusCode::kUnavailable);
}

TEST(ExposerTest, Ipv6Loopback) {
  auto exposer = Exposer::Create("[::1]:0");
  if (!exposer.ok()) GTEST_SKIP() << "no IPv6 here: " << exposer.status();
  auto registry = std::make_shared<Registry>();
  (*exposer)->RegisterCollectable(registry);
  httplib::Client client("::1", PortOf(**exposer));
  httplib::Result response = client.Get("/metrics");
  ASSERT_TRUE(response) << httplib::to_string(response.error());
  EXPECT_EQ(response->status, 200);
}

// The destructor must stop the server promptly even right after start.
TEST(ExposerTest, StartStopRepeatedly) {
  for (int i = 0; i < 20; ++i) {
    auto exposer = Exposer::Create("127.0.0.1:0");
    ASSERT_TRUE(exposer.ok()) << exposer.status();
  }
}

}  // namespace
}  // namespace llorch::metrics
