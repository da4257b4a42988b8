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
#include <limits>
#include <tuple>
#include <vector>

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
  const at::ScalarType element = type;  // (C++17 lambdas do not capture structured bindings)
  const auto norm = [&](const at::Tensor& v) {
    const at::Tensor wide = v.to(at::kFloat);
    return weight * (wide * at::rsqrt(wide.pow(2).mean(-1, true) + eps)).to(element);
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

// libtorch's ops of a decode step's attention, as LlamaModel's
// DecodeBatchLogits runs them: RoPE (Rope), the pool writes, the gathers,
// scores, mask, softmax and values (AttentionOfDecodeBatch).
at::Tensor ReferenceAttention(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                              at::Tensor& k_pool, at::Tensor& v_pool,
                              const at::Tensor& write_slots, const at::Tensor& read_slots,
                              const at::Tensor& pos, int64_t positions, const DecodeHeads& h) {
  const int64_t jobs = qkv.size(0), d = h.head_dim, half = h.rope_dim / 2;
  const int64_t q_dim = h.heads * d, kv_dim = h.kv_heads * d;
  const at::Tensor x = qkv.narrow(1, 0, q_dim + kv_dim).reshape({jobs, h.heads + h.kv_heads, d});
  const at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);  // [jobs, 1, half]
  at::Tensor rotated;
  if (h.adjacent) {
    const at::Tensor pairs = x.narrow(2, 0, h.rope_dim).reshape({jobs, -1, half, 2});
    const at::Tensor x0 = pairs.select(3, 0), x1 = pairs.select(3, 1);
    rotated = at::stack({x0 * c - x1 * s, x0 * s + x1 * c}, 3).reshape({jobs, -1, h.rope_dim});
  } else {
    const at::Tensor x0 = x.narrow(2, 0, half), x1 = x.narrow(2, half, half);
    rotated = at::cat({x0 * c - x1 * s, x0 * s + x1 * c}, 2);
  }
  if (h.rope_dim < d) rotated = at::cat({rotated, x.narrow(2, h.rope_dim, d - h.rope_dim)}, 2);
  const at::Tensor q = rotated.narrow(1, 0, h.heads);
  const at::Tensor k = rotated.narrow(1, h.heads, h.kv_heads);
  const at::Tensor v = qkv.narrow(1, q_dim + kv_dim, kv_dim).reshape({jobs, h.kv_heads, d});
  k_pool.index_copy_(1, write_slots, k.transpose(0, 1));
  v_pool.index_copy_(1, write_slots, v.transpose(0, 1));
  const auto gather = [&](const at::Tensor& pool) {  // [jobs, kv_heads, T, d]
    return pool.index_select(1, read_slots).view({h.kv_heads, jobs, positions, d}).transpose(0, 1);
  };
  const at::Tensor key_pos = at::arange(positions, pos.options());
  at::Tensor hidden = key_pos.unsqueeze(0) > pos.unsqueeze(1);  // [jobs, T]
  if (h.window > 0) hidden = hidden.logical_or(pos.unsqueeze(1) - key_pos.unsqueeze(0) >= h.window);
  const at::Tensor mask = at::zeros({jobs, positions}, qkv.options())
                              .masked_fill(hidden, -std::numeric_limits<float>::infinity())
                              .view({jobs, 1, 1, positions});
  const at::Tensor qg = q.reshape({jobs, h.kv_heads, h.heads / h.kv_heads, d});
  const at::Tensor scores =
      at::matmul(qg, gather(k_pool).transpose(-1, -2)).div_(std::sqrt(static_cast<double>(d))) +
      mask;
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(qkv.scalar_type());
  return at::matmul(probs, gather(v_pool)).reshape({jobs, q_dim});
}

// Jobs at the positions `job_pos` over one pool, rows scattered: the pool
// rows written bit for bit as libtorch's ops write them, the outputs within
// a step of the type (the sums' orders differ).
void ExpectAttentionMatches(at::ScalarType type, bool adjacent, int64_t rope_dim,
                            int64_t window, int64_t head_dim, int64_t positions,
                            const std::vector<int64_t>& job_pos) {
  DecodeHeads h;
  h.heads = 8;
  h.kv_heads = 2;
  h.head_dim = head_dim;
  h.rope_dim = rope_dim;
  h.adjacent = adjacent;
  h.window = window;
  const int64_t jobs = static_cast<int64_t>(job_pos.size()), slots = jobs * positions;
  at::manual_seed(rope_dim * 31 + window + adjacent + head_dim + positions);
  const auto options = at::TensorOptions().device(c10::kCUDA).dtype(type);
  const auto int64 = at::TensorOptions().device(c10::kCUDA).dtype(at::kLong);
  const at::Tensor qkv = at::randn({jobs, (h.heads + 2 * h.kv_heads) * h.head_dim}, options);
  const at::Tensor angles = at::rand({jobs, rope_dim / 2}, options.dtype(at::kFloat)) * 6.28;
  const at::Tensor cos = angles.cos().to(type), sin = angles.sin().to(type);
  at::Tensor k_pool = at::randn({h.kv_heads, slots, h.head_dim}, options);
  at::Tensor v_pool = at::randn({h.kv_heads, slots, h.head_dim}, options);
  at::Tensor k_ref = k_pool.clone(), v_ref = v_pool.clone();
  const at::Tensor pos = at::tensor(job_pos, int64);  // [jobs]
  // Job j's position t in pool row perm[j * positions + t]: scattered rows.
  const at::Tensor read_slots = at::randperm(slots, int64);  // [jobs * positions]
  const at::Tensor write_slots =
      read_slots.view({jobs, positions}).gather(1, pos.unsqueeze(1)).view({jobs});
  ASSERT_TRUE(DeviceDecodeAttentionSupports(qkv, k_pool, v_pool, positions, h));
  const at::Tensor got = DeviceDecodeAttention(qkv, cos, sin, k_pool, v_pool, write_slots,
                                               read_slots, pos, positions, h);
  const at::Tensor want =
      ReferenceAttention(qkv, cos, sin, k_ref, v_ref, write_slots, read_slots, pos, positions, h);
  EXPECT_TRUE(k_pool.equal(k_ref)) << "rotated keys in their pool rows";
  EXPECT_TRUE(v_pool.equal(v_ref)) << "values in their pool rows";
  const double range = want.abs().max().item<double>();
  const double step = type == at::kBFloat16 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -10);
  EXPECT_LE((got - want).abs().max().item<double>(), 2 * step * range);
}

class DeviceAttentionTest
    : public ::testing::TestWithParam<std::tuple<at::ScalarType, bool, int64_t, int64_t>> {};

TEST_P(DeviceAttentionTest, MatchesLibtorchsOps) {
  if (!KernelsHere()) GTEST_SKIP() << "no CUDA device or no kernels in this build";
  const auto [type, adjacent, rope_dim, window] = GetParam();
  ExpectAttentionMatches(type, adjacent, rope_dim, window, /*head_dim=*/64, /*positions=*/256,
                         {0, 37, 200, 255});
}

// Heads of 128 (scores times 1 / sqrt(128), not a power of two) and 4096
// positions, whose scores need more than the default 48 KiB of shared memory.
TEST(DeviceAttentionLongTest, WideHeadsAndLongContextsMatchLibtorchsOps) {
  if (!KernelsHere()) GTEST_SKIP() << "no CUDA device or no kernels in this build";
  for (const at::ScalarType type : {at::kBFloat16, at::kHalf}) {
    SCOPED_TRACE(c10::toString(type));
    ExpectAttentionMatches(type, /*adjacent=*/false, /*rope_dim=*/128, /*window=*/0,
                           /*head_dim=*/128, /*positions=*/4096, {100, 4095});
  }
}

INSTANTIATE_TEST_SUITE_P(Heads, DeviceAttentionTest,
                         ::testing::Combine(::testing::Values(at::kBFloat16, at::kHalf),
                                            ::testing::Bool(),               // adjacent pairs
                                            ::testing::Values<int64_t>(64, 32),  // partial rotary
                                            ::testing::Values<int64_t>(0, 16)));  // window

}  // namespace
}  // namespace llorch
