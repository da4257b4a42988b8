// The step policy's pure decisions (PlanStep is exercised through the engine
// tests, whose exactness depends on its chunk rule).
#include "worker/engine/step_planner.h"

#include "gtest/gtest.h"

namespace llorch {
namespace {

TEST(StepPlannerTest, VictimIsTheMostRecentlyAdmittedStillRunning) {
  EXPECT_EQ(PickPreemptionVictim({false, false, false}), 2u);
  EXPECT_EQ(PickPreemptionVictim({false, false, true}), 1u);
  EXPECT_EQ(PickPreemptionVictim({false, true, true}), 0u);
  EXPECT_EQ(PickPreemptionVictim({false}), 0u);
}

TEST(StepPlannerTest, HeadroomIsOnePercentAndNoneForAJobAlone) {
  EXPECT_EQ(AdmissionHeadroom(20, false), 0);
  EXPECT_EQ(AdmissionHeadroom(20, true), 1);
  EXPECT_EQ(AdmissionHeadroom(1000, true), 10);
}

}  // namespace
}  // namespace llorch
