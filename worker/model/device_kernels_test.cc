// llorch's CUDA kernels against the same products in F32 on the same device
// (each output rounded once to the 16-bit type: at most one step of that
// type apart from the F32 sum's rounding). Skipped without a CUDA device or
// without the kernels in this build.
#include "worker/model/device_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <tuple>

namespace llorch {
namespace {

bool KernelsHere() { return at::hasCUDA() && DeviceKernelsAvailable(c10::Device(c10::kCUDA, 0)); }

TEST(DeviceKernels, BuiltWhereAsked) {
#ifdef LLORCH_HAVE_CUDA_KERNELS
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  EXPECT_TRUE(DeviceKernelsAvailable(c10::Device(c10::kCUDA, 0)));
#else
  EXPECT_FALSE(DeviceKernelsAvailable(c10::Device(c10::kCUDA, 0)));
#endif
  EXPECT_FALSE(DeviceKernelsAvailable(c10::Device(c10::kCPU)));
}

TEST(DeviceKernels, LinearRefusesWhatItDoesNotTake) {
  const auto cpu = at::TensorOptions().dtype(at::kBFloat16);
  EXPECT_FALSE(DeviceLinearSupports(at::ones({1, 64}, cpu), at::ones({4, 64}, cpu), {}));
  if (!KernelsHere()) GTEST_SKIP() << "no CUDA device or no kernels in this build";
  const auto gpu = cpu.device(c10::kCUDA);
  const at::Tensor w = at::ones({4, 64}, gpu);
  EXPECT_TRUE(DeviceLinearSupports(at::ones({8, 64}, gpu), w, {}));
  EXPECT_FALSE(DeviceLinearSupports(at::ones({9, 64}, gpu), w, {}));   // more than 8 rows
  EXPECT_FALSE(DeviceLinearSupports(at::ones({1, 60}, gpu), at::ones({4, 60}, gpu), {}));
  EXPECT_FALSE(DeviceLinearSupports(at::ones({1, 64}, gpu.dtype(at::kFloat)),
                                    at::ones({4, 64}, gpu.dtype(at::kFloat)), {}));
  EXPECT_FALSE(DeviceLinearSupports(at::ones({64, 2}, gpu).t(), w, {}));  // not contiguous
  EXPECT_FALSE(DeviceLinearSupports(at::ones({1, 64}, gpu), w, at::ones({5}, gpu)));
}

class DeviceLinearTest
    : public ::testing::TestWithParam<std::tuple<at::ScalarType, int64_t, int64_t, int64_t, bool>> {};

TEST_P(DeviceLinearTest, MatchesTheF32ProductRoundedOnce) {
  if (!KernelsHere()) GTEST_SKIP() << "no CUDA device or no kernels in this build";
  const auto [type, m, n, k, with_bias] = GetParam();
  at::manual_seed(m * 1000003 + n * 101 + k);
  const auto options = at::TensorOptions().device(c10::kCUDA).dtype(type);
  const at::Tensor x = at::randn({m, k}, options);
  const at::Tensor w = at::randn({n, k}, options) / std::sqrt(static_cast<double>(k));
  const at::Tensor bias = with_bias ? at::randn({n}, options) : at::Tensor();
  ASSERT_TRUE(DeviceLinearSupports(x, w, bias));
  at::Tensor want = at::matmul(x.to(at::kFloat), w.to(at::kFloat).t());  // [m, n]
  if (with_bias) want = want + bias.to(at::kFloat);
  const at::Tensor got = DeviceLinear(x, w, bias).to(at::kFloat).cpu();
  want = want.cpu();
  // One step of the type at the F32 sum's magnitude (summation orders
  // differ: the two roundings may fall on either side).
  const double step = type == at::kBFloat16 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -10);
  const at::Tensor bound = want.abs() * step + 1e-5;
  const at::Tensor excess = (got - want).abs() - bound;
  EXPECT_LE(excess.max().item<float>(), 0.0f)
      << "max |got - want| " << (got - want).abs().max().item<float>();
  EXPECT_GT(want.abs().max().item<float>(), 0.1f);  // not all zeros
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DeviceLinearTest,
    ::testing::Combine(::testing::Values(at::kBFloat16, at::kHalf),
                       ::testing::Values<int64_t>(1, 2, 3, 5, 8),
                       ::testing::Values<int64_t>(1, 33, 2560),
                       ::testing::Values<int64_t>(8, 72, 2048, 5632),
                       ::testing::Bool()));

// At most one step of the type apart, element by element, and most equal.
void ExpectWithinOneStep(const at::Tensor& got, const at::Tensor& want, at::ScalarType type,
                         const char* what) {
  const at::Tensor g = got.to(at::kFloat).cpu(), w = want.to(at::kFloat).cpu();
  const double step = type == at::kBFloat16 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -10);
  const at::Tensor excess = (g - w).abs() - (w.abs() * step + 1e-6);
  EXPECT_LE(excess.max().item<float>(), 0.0f) << what << ": max |got - want| "
                                              << (g - w).abs().max().item<float>();
  const double equal = g.eq(w).to(at::kFloat).mean().item<double>();
  EXPECT_GT(equal, 0.9) << what << ": " << equal << " of the elements equal";
}

class DeviceFusedTest
    : public ::testing::TestWithParam<std::tuple<at::ScalarType, int64_t, int64_t>> {};

// libtorch's ops, as LlamaModel::AddNorm runs them on the libtorch path.
TEST_P(DeviceFusedTest, AddRmsNormIsLibtorchsOps) {
  if (!KernelsHere()) GTEST_SKIP() << "no CUDA device or no kernels in this build";
  const auto [type, rows, hidden] = GetParam();
  at::manual_seed(rows * 7919 + hidden);
  const auto options = at::TensorOptions().device(c10::kCUDA).dtype(type);
  const at::Tensor x = at::randn({rows, hidden}, options) * 3;
  const at::Tensor delta = at::randn({rows, hidden}, options);
  const at::Tensor weight = at::rand({hidden}, options) + 0.5;
  const double eps = 1e-5;
  const at::Tensor sum = x + delta;
  const auto norm = [&](const at::Tensor& v) {
    const at::Tensor wide = v.to(at::kFloat);
    return weight * (wide * at::rsqrt(wide.pow(2).mean(-1, true) + eps)).to(type);
  };
  ASSERT_TRUE(DeviceAddRmsNormSupports(x, delta, weight));
  const auto [got_sum, got] = DeviceAddRmsNorm(x, delta, weight, eps);
  EXPECT_TRUE(got_sum.equal(sum)) << "the residual sum is one rounding: the same bits";
  ExpectWithinOneStep(got, norm(sum), type, "norm of the sum");
  const auto [no_sum, alone] = DeviceAddRmsNorm(x, at::Tensor(), weight, eps);
  EXPECT_FALSE(no_sum.defined());
  ExpectWithinOneStep(alone, norm(x), type, "norm alone");
}

TEST_P(DeviceFusedTest, SiluGatedIsLibtorchsOps) {
  if (!KernelsHere()) GTEST_SKIP() << "no CUDA device or no kernels in this build";
  const auto [type, rows, ffn] = GetParam();
  at::manual_seed(rows * 104729 + ffn);
  const at::Tensor gate_up =
      at::randn({rows, 2 * ffn}, at::TensorOptions().device(c10::kCUDA).dtype(type)) * 4;
  ASSERT_TRUE(DeviceSiluGatedSupports(gate_up));
  const at::Tensor want = at::silu(gate_up.narrow(1, 0, ffn)) * gate_up.narrow(1, ffn, ffn);
  ExpectWithinOneStep(DeviceSiluGated(gate_up), want, type, "silu(gate) * up");
}

INSTANTIATE_TEST_SUITE_P(Shapes, DeviceFusedTest,
                         ::testing::Combine(::testing::Values(at::kBFloat16, at::kHalf),
                                            ::testing::Values<int64_t>(1, 3, 8, 64),
                                            ::testing::Values<int64_t>(64, 576, 2048, 5632)));

}  // namespace
}  // namespace llorch
