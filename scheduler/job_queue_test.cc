#include "scheduler/job_queue.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace llorch::scheduler {
namespace {

using ::testing::ElementsAre;
using std::chrono::seconds;

const JobQueue::Clock::time_point kT0{seconds(1000)};

std::vector<std::string> Ids(const JobQueue& queue) {
  std::vector<std::string> ids;
  for (const auto& entry : queue.entries()) ids.push_back(entry.job_id);
  return ids;
}

TEST(JobQueueTest, PushKeepsOrderUpToTheBound) {
  JobQueue queue(2);
  EXPECT_TRUE(queue.Push("a", kT0));
  EXPECT_TRUE(queue.Push("b", kT0 + seconds(1)));
  EXPECT_FALSE(queue.Push("c", kT0 + seconds(2)));  // full: refused, not queued
  EXPECT_THAT(Ids(queue), ElementsAre("a", "b"));
  EXPECT_EQ(queue.size(), 2u);
  EXPECT_EQ(queue.max_size(), 2u);
}

TEST(JobQueueTest, ZeroBoundRefusesEverything) {
  JobQueue queue(0);
  EXPECT_FALSE(queue.Push("a", kT0));
  EXPECT_TRUE(queue.empty());
}

TEST(JobQueueTest, PushFrontGoesPastTheBoundAndKeepsItsTime) {
  JobQueue queue(1);
  ASSERT_TRUE(queue.Push("a", kT0 + seconds(5)));
  queue.PushFront("retry", kT0);
  EXPECT_THAT(Ids(queue), ElementsAre("retry", "a"));
  EXPECT_EQ(queue.entries().front().enqueued, kT0);
  // The retry does not free room for new jobs.
  EXPECT_FALSE(queue.Push("b", kT0 + seconds(6)));
}

TEST(JobQueueTest, RemoveFindsAnyEntry) {
  JobQueue queue(5);
  queue.Push("a", kT0);
  queue.Push("b", kT0);
  queue.Push("c", kT0);
  EXPECT_TRUE(queue.Remove("b"));
  EXPECT_FALSE(queue.Remove("b"));
  EXPECT_FALSE(queue.Remove("missing"));
  EXPECT_THAT(Ids(queue), ElementsAre("a", "c"));
  EXPECT_TRUE(queue.Push("d", kT0));  // room again
}

TEST(JobQueueTest, TakeExpiredReturnsOldJobsInQueueOrder) {
  JobQueue queue(10);
  queue.Push("old1", kT0);
  queue.Push("fresh", kT0 + seconds(20));
  queue.Push("old2", kT0 + seconds(5));
  queue.PushFront("old_retry", kT0 - seconds(30));  // front, oldest time
  queue.Push("edge", kT0 + seconds(10));            // exactly max_wait: not yet
  const auto expired = queue.TakeExpired(kT0 + seconds(40), seconds(30));
  EXPECT_THAT(expired, ElementsAre("old_retry", "old1", "old2"));
  EXPECT_THAT(Ids(queue), ElementsAre("fresh", "edge"));
}

TEST(JobQueueTest, TakeExpiredWithNothingOld) {
  JobQueue queue(10);
  queue.Push("a", kT0);
  EXPECT_TRUE(queue.TakeExpired(kT0 + seconds(1), seconds(30)).empty());
  EXPECT_EQ(queue.size(), 1u);
}

TEST(JobQueueTest, TakeRemovesTheEntryAtAnIndex) {
  JobQueue queue(5);
  queue.Push("a", kT0);
  queue.Push("b", kT0 + seconds(1));
  queue.Push("c", kT0 + seconds(2));
  const JobQueue::Entry taken = queue.Take(1);
  EXPECT_EQ(taken.job_id, "b");
  EXPECT_EQ(taken.enqueued, kT0 + seconds(1));
  EXPECT_THAT(Ids(queue), ElementsAre("a", "c"));
  EXPECT_EQ(queue.Take(0).job_id, "a");
  EXPECT_EQ(queue.Take(0).job_id, "c");
  EXPECT_TRUE(queue.empty());
}

}  // namespace
}  // namespace llorch::scheduler
