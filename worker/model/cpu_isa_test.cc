// LLORCH_MAX_CPU_ISA: ctest runs this binary with the cap at avx2 (CMakeLists),
// so on an AVX-512 or AMX machine every wider kernel must report itself off,
// and DetectGgmlVariant must pick ggml's AVX2 order, as on an AVX2-only CPU.
#include "worker/model/cpu_isa.h"

#include <cstdlib>

#include <gtest/gtest.h>

#include "worker/model/amx_kernels.h"
#include "worker/model/bf16_avx512.h"
#include "worker/model/float_gemm.h"
#include "worker/model/float_gemm_avx512.h"
#include "worker/model/ggml_ops.h"
#include "worker/model/interleaved_matmul.h"
#include "worker/model/kquant_avx512.h"
#include "worker/model/kquant_matmul.h"
#include "worker/model/prepared_scores.h"

namespace llorch {
namespace {

TEST(CpuIsaTest, ParsesTheNamesItPrints) {
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAmx}) {
    CpuIsa parsed = CpuIsa::kAmx;
    ASSERT_TRUE(ParseCpuIsa(CpuIsaName(isa), &parsed)) << CpuIsaName(isa);
    EXPECT_EQ(parsed, isa);
  }
  CpuIsa parsed = CpuIsa::kAvx512;
  EXPECT_FALSE(ParseCpuIsa("sse4", &parsed));
  EXPECT_FALSE(ParseCpuIsa("AVX2", &parsed));
  EXPECT_FALSE(ParseCpuIsa("", &parsed));
  EXPECT_EQ(parsed, CpuIsa::kAvx512);  // untouched
}

TEST(CpuIsaTest, EnvironmentErrorNamesTheVariableAndTheChoices) {
  const char* saved = std::getenv("LLORCH_MAX_CPU_ISA");
  const std::string restore = saved != nullptr ? saved : "";
  setenv("LLORCH_MAX_CPU_ISA", "avx10", 1);
  absl::StatusOr<CpuIsa> bad = MaxCpuIsaFromEnvironment();
  setenv("LLORCH_MAX_CPU_ISA", "avx512", 1);
  absl::StatusOr<CpuIsa> good = MaxCpuIsaFromEnvironment();
  unsetenv("LLORCH_MAX_CPU_ISA");
  absl::StatusOr<CpuIsa> unset = MaxCpuIsaFromEnvironment();
  if (saved != nullptr) setenv("LLORCH_MAX_CPU_ISA", restore.c_str(), 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("LLORCH_MAX_CPU_ISA"), std::string::npos);
  EXPECT_NE(bad.status().message().find("avx2, avx512 or amx"), std::string::npos);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, CpuIsa::kAvx512);
  ASSERT_TRUE(unset.ok());
  EXPECT_EQ(*unset, CpuIsa::kAmx);  // no cap
}

TEST(CpuIsaTest, AvxTwoCapTurnsEveryWiderKernelOff) {
  const char* cap = std::getenv("LLORCH_MAX_CPU_ISA");
  ASSERT_NE(cap, nullptr) << "run with LLORCH_MAX_CPU_ISA=avx2 (ctest does)";
  ASSERT_STREQ(cap, "avx2");
  EXPECT_TRUE(CpuIsaAllowed(CpuIsa::kAvx2));
  EXPECT_FALSE(CpuIsaAllowed(CpuIsa::kAvx512));
  EXPECT_FALSE(CpuIsaAllowed(CpuIsa::kAmx));
  EXPECT_EQ(CpuKernelIsa(), CpuIsa::kAvx2);
  EXPECT_EQ(DetectGgmlVariant(), GgmlVariant::kAvx2);
  EXPECT_FALSE(kquant_avx512::Supported());
  EXPECT_FALSE(kquant_matmul_internal::UsesAvx512());
  EXPECT_FALSE(float_gemm_avx512::Supported());
  EXPECT_FALSE(float_gemm_internal::UsesAvx512());
  EXPECT_FALSE(bf16_avx512::Bf16Avx512Supported());
  EXPECT_FALSE(prepared_scores_avx512::Supported());
  EXPECT_FALSE(interleaved_matmul_internal::UsesVnni());
  EXPECT_FALSE(amx_kernels::VnniSupported());
  EXPECT_FALSE(amx_kernels::TilesSupported());
}

}  // namespace
}  // namespace llorch
