#include "worker/model/activation_pool.h"

#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace llorch {
namespace {

constexpr int64_t kRows = 512, kCols = 1024;  // 2 MiB of floats
constexpr size_t kBytes = kRows * kCols * sizeof(float);

TEST(ActivationPool, SmallTensorsAreNotPooled) {
  ActivationPool pool;
  at::Tensor small = pool.Empty({16, 16});
  EXPECT_EQ(small.sizes(), (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(pool.mapped_bytes(), 0u);
}

TEST(ActivationPool, AFreedBufferServesTheNextRequestItFits) {
  ActivationPool pool;
  void* first = nullptr;
  {
    at::Tensor t = pool.Empty({kRows, kCols});
    ASSERT_TRUE(t.is_contiguous());
    EXPECT_EQ(t.scalar_type(), at::kFloat);
    t.fill_(1.5f);  // writable, all of it
    first = t.data_ptr();
  }
  EXPECT_EQ(pool.free_bytes(), kBytes);
  // Three quarters of the size: the same buffer, nothing new mapped.
  at::Tensor again = pool.Empty({kRows * 3 / 4, kCols});
  EXPECT_EQ(again.data_ptr(), first);
  EXPECT_EQ(pool.mapped_bytes(), kBytes);
  EXPECT_EQ(pool.free_bytes(), 0u);
  // Live: a second request maps its own buffer.
  at::Tensor other = pool.Empty({kRows, kCols});
  EXPECT_NE(other.data_ptr(), first);
  EXPECT_EQ(pool.mapped_bytes(), 2 * kBytes);
}

TEST(ActivationPool, ABufferOverTwiceTheRequestIsNotTaken) {
  ActivationPool pool;
  { at::Tensor big = pool.Empty({kRows, kCols}); }
  at::Tensor small = pool.Empty({kRows / 4, kCols});  // 512 KiB, a quarter
  EXPECT_EQ(pool.free_bytes(), kBytes);
  EXPECT_EQ(pool.mapped_bytes(), kBytes + kBytes / 4);
}

TEST(ActivationPool, EndStepUnmapsWhatTheStepLeftUnused) {
  ActivationPool pool;
  { at::Tensor t = pool.Empty({kRows, kCols}); }
  pool.EndStep();  // given back during this step: kept
  EXPECT_EQ(pool.mapped_bytes(), kBytes);
  {
    at::Tensor t = pool.Empty({kRows, kCols});  // taken: kept again
  }
  pool.EndStep();
  EXPECT_EQ(pool.mapped_bytes(), kBytes);
  pool.EndStep();  // a step that did not use it
  EXPECT_EQ(pool.mapped_bytes(), 0u);
  EXPECT_EQ(pool.free_bytes(), 0u);
}

TEST(ActivationPool, LiveTensorsSurviveEndStepAndThePool) {
  at::Tensor survivor;
  {
    ActivationPool pool;
    survivor = pool.Empty({kRows, kCols});
    survivor.fill_(2.0f);
    pool.EndStep();
    pool.EndStep();
    EXPECT_EQ(pool.mapped_bytes(), kBytes);  // in use
  }
  EXPECT_EQ(survivor.sum().item<double>(), 2.0 * kRows * kCols);
  survivor = at::Tensor();  // unmapped by its deleter
}

TEST(ActivationPool, OtherTypesAndShapes) {
  ActivationPool pool;
  at::Tensor halves = pool.Empty({kRows, 4, kCols / 4}, at::kHalf);
  EXPECT_EQ(halves.scalar_type(), at::kHalf);
  EXPECT_EQ(halves.dim(), 3);
  EXPECT_EQ(pool.mapped_bytes(), kBytes / 2);
}

TEST(ActivationPool, ThreadsTakeAndGiveBack) {
  ActivationPool pool;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pool, t] {
      for (int i = 0; i < 200; ++i) {
        at::Tensor a = pool.Empty({kRows / 2, kCols});
        a.fill_(static_cast<float>(t));
        EXPECT_EQ(a[kRows / 2 - 1][kCols - 1].item<float>(), static_cast<float>(t));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  // At most one buffer per thread was live at once.
  EXPECT_LE(pool.mapped_bytes(), 4 * kBytes / 2);
  EXPECT_EQ(pool.free_bytes(), pool.mapped_bytes());
}

#if defined(__SANITIZE_ADDRESS__)
// AddressSanitizer sees pooled tensors as heap blocks: their end and a
// given-back buffer are poisoned.
TEST(ActivationPoolDeathTest, AddressSanitizerSeesPastTheEnd) {
  ActivationPool pool;
  at::Tensor shorter = pool.Empty({kRows / 2 - 1, kCols});
  volatile float* past = shorter.data_ptr<float>() + shorter.numel();
  EXPECT_DEATH(*past = 1.0f, "use-after-poison");
}

TEST(ActivationPoolDeathTest, AddressSanitizerSeesAGivenBackBuffer) {
  ActivationPool pool;
  float* stale = nullptr;
  {
    at::Tensor t = pool.Empty({kRows, kCols});
    stale = t.data_ptr<float>();
  }
  volatile float* read = stale;
  EXPECT_DEATH((void)*read, "use-after-poison");
}
#endif

}  // namespace
}  // namespace llorch
