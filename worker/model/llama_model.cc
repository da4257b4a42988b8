#include "worker/model/llama_model.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/gguf/gguf.h"
#include "worker/model/attention_cpu.h"
#include "worker/model/bf16_matmul.h"
#include "worker/model/device_graph.h"
#include "worker/model/device_kernels.h"
#include "worker/model/float_gemm.h"
#include "worker/model/float_matmul.h"
#include "worker/model/ggml_ops.h"
#include "worker/model/amx_matmul.h"
#include "worker/model/interleaved_matmul.h"
#include "worker/model/quant_matmul.h"

namespace llorch {
namespace {

// at::parallel_for: [begin, end) split evenly between the threads.
ParallelFor StaticParallelFor(int64_t grain) {
  return [grain](int64_t begin, int64_t end, const RangeFn& body) {
    at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { body(b, e); });
  };
}

// A ParallelFor that deals [begin, end) out in chunks from a shared counter
// (up to 8 per thread, each at least `min_chunk` units and 256 KiB of
// weights where a unit's bytes are given), so a thread that finishes early
// takes the next one, as ggml's matrix products do: a static split waits for
// its slowest part (the last rows of causal attention cost the most, and on
// a shared machine one core is often slower). Ranges too small for 4 chunks
// per thread keep the static split: a few coarse chunks balance worse than
// equal halves (SmolLM2's decode was 10% slower with them). Products and
// attention give the same bits however their rows are split.
ParallelFor ChunkedParallelFor(int64_t min_chunk, int64_t unit_bytes = 0) {
  return [min_chunk, unit_bytes](int64_t begin, int64_t end, const RangeFn& body) {
    constexpr int64_t kMinChunkBytes = 256 << 10;
    const int64_t threads = at::get_num_threads();
    int64_t chunk = std::max(min_chunk, (end - begin + 8 * threads - 1) / (8 * threads));
    if (unit_bytes > 0) chunk = std::max(chunk, (kMinChunkBytes + unit_bytes - 1) / unit_bytes);
    const int64_t chunks = (end - begin + chunk - 1) / chunk;
    if (chunks < 4 * threads) {
      StaticParallelFor(min_chunk)(begin, end, body);
      return;
    }
    std::atomic<int64_t> next{0};
    at::parallel_for(0, threads, /*grain_size=*/1, [&](int64_t, int64_t) {
      for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) {
        body(begin + c * chunk, std::min(end, begin + (c + 1) * chunk));
      }
    });
  };
}

// Rounds x [n, in] (in a multiple of 32) in place to ggml's Q8_0/Q8_1 grid,
// as quantize_row_q8_0/q8_1 do: per block of 32, d = amax / 127,
// q = nearbyint(x * 127 / amax), x' = q * f16(d). For Q8_1 also returns
// [n, in / 32] the difference between ggml's block sum s = f16(d * sum(q))
// and sum(x'), which the weights' block offsets m multiply. Used on
// accelerators; the CPU multiplies the ggml blocks directly (quant_matmul).
at::Tensor QuantizeActivationsInPlace(at::Tensor& x, bool with_sums) {
  constexpr int64_t kBlock = 32;
  at::Tensor blocks = x.view({-1, kBlock});                    // [blocks, 32]
  at::Tensor amax = blocks.abs().amax(-1, /*keepdim=*/true);  // [blocks, 1]
  at::Tensor id = at::where(amax > 0, 127.0f / amax, at::zeros_like(amax));
  at::Tensor q = at::round(blocks * id);  // half to even, as _mm256_round_ps
  at::Tensor d = amax / 127.0f;
  at::Tensor d16 = d.to(at::kHalf).to(at::kFloat);
  blocks.copy_(q * d16);
  if (!with_sums) return at::Tensor();
  at::Tensor sum = q.sum(-1, /*keepdim=*/true);
  return ((d * sum).to(at::kHalf).to(at::kFloat) - d16 * sum).view({x.size(0), -1});
}

// Rounds x [n, in] (in a multiple of 256) in place to ggml's Q8_K grid, as
// quantize_row_q8_K does: per block of 256, the signed value of largest
// magnitude (the first, on ties) sets iscale = -127 / max, q =
// min(127, nearbyint(x * iscale)), x' = q / iscale.
void QuantizeActivationsQ8KInPlace(at::Tensor& x) {
  constexpr int64_t kBlock = 256;
  at::Tensor blocks = x.view({-1, kBlock});                                // [blocks, 256]
  at::Tensor index = blocks.abs().argmax(-1, /*keepdim=*/true);            // [blocks, 1]
  at::Tensor max = blocks.gather(-1, index);                               // [blocks, 1]
  at::Tensor iscale = at::where(max != 0, -127.0f / max, at::zeros_like(max));
  at::Tensor q = at::round(blocks * iscale).clamp_max(127.0f);
  at::Tensor d = at::where(max != 0, 1.0f / iscale, at::zeros_like(max));
  blocks.copy_(q * d);
}

// Logits as the caller gets them: F32 on the CPU. From a CUDA device
// widened there and copied into pinned memory: a copy that also converts
// goes through pageable memory (~2.6 GB/s on an H200's host, half of a
// 64-job decode step: docs/gpu-runs/2026-12-04-h200-3.txt).
at::Tensor HostLogits(const at::Tensor& logits) {
  if (!logits.device().is_cuda()) return logits.to(at::kCPU, at::kFloat).contiguous();
  const at::Tensor wide = logits.to(at::kFloat).contiguous();  // on the device
  at::Tensor host =
      at::empty(wide.sizes(), at::TensorOptions().dtype(at::kFloat).pinned_memory(true));
  host.copy_(wide);  // waits for the device
  return host;
}

}  // namespace

std::pair<at::Tensor, at::Tensor> RopeAngles(const ModelConfig& c,
                                             absl::Span<const int64_t> positions) {
  // As ggml computes them (float, theta multiplied per pair), so that
  // positions far into the context round the same way as llama.cpp.
  const int64_t half = c.rope_dim / 2, n = static_cast<int64_t>(positions.size());
  at::Tensor cos = at::empty({n, half}, at::kFloat);  // [n, rope_dim / 2]
  at::Tensor sin = at::empty({n, half}, at::kFloat);
  const float theta_scale = std::pow(c.rope_freq_base, -2.0f / static_cast<float>(c.rope_dim));
  float* cos_data = cos.data_ptr<float>();
  float* sin_data = sin.data_ptr<float>();
  for (int64_t r = 0; r < n; ++r) {
    float theta = static_cast<float>(positions[r]);
    for (int64_t i = 0; i < half; ++i) {
      const float factor = c.rope_freq_factors.empty() ? 1.0f : c.rope_freq_factors[i];
      const float angle = c.rope_freq_scale * theta / factor;
      cos_data[r * half + i] = std::cos(angle);
      sin_data[r * half + i] = std::sin(angle);
      theta *= theta_scale;
    }
  }
  return {cos, sin};
}

LlamaModel::~LlamaModel() = default;

std::pair<at::Tensor, at::Tensor> LlamaModel::RopeRows(const at::Tensor& pos) const {
  if (rope_cos_.defined()) return {rope_cos_.index_select(0, pos), rope_sin_.index_select(0, pos)};
  const at::Tensor host = pos.to(at::kCPU, at::kLong).contiguous();
  return RopeAngles(config_, absl::MakeConstSpan(host.data_ptr<int64_t>(), host.numel()));
}

std::unique_ptr<KvCache> LlamaModel::NewCache(int64_t capacity) const {
  return std::make_unique<KvCache>(config_, capacity, device_, kv_type_);
}

std::unique_ptr<KvPool> LlamaModel::NewPool(int64_t num_blocks, int64_t block_size) const {
  return std::make_unique<KvPool>(config_, num_blocks, block_size, device_, kv_type_);
}

at::Tensor LlamaModel::Norm(const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias) const {
  at::Tensor residual = x;
  return AddNorm(&residual, at::Tensor(), weight, bias);
}

at::Tensor LlamaModel::AddNorm(at::Tensor* x, const at::Tensor& delta, const at::Tensor& weight,
                               const at::Tensor& bias) const {
  // x: [n, hidden]; delta: [n, hidden] or undefined.
  const bool ggml_rms = config_.norm == NormType::kRms && x->device().is_cpu() &&
                        x->scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat;
  if (!ggml_rms) {
    if (device_kernels_ && config_.norm == NormType::kRms && !bias.defined() &&
        DeviceAddRmsNormSupports(*x, delta, weight)) {
      auto [sum, normed] = DeviceAddRmsNorm(*x, delta, weight, config_.norm_eps);
      if (delta.defined()) *x = sum;
      return normed;  // [n, hidden], one kernel for the 8 ops below
    }
    if (delta.defined()) *x = *x + delta;
    if (config_.norm == NormType::kLayer) {
      return at::layer_norm(*x, {x->size(1)}, weight, bias, config_.norm_eps);
    }
    // In F32 whatever x's type, then rounded back, as transformers' RMSNorm.
    const at::Tensor wide = x->to(at::kFloat);                          // [n, hidden]
    const at::Tensor mean_square = wide.pow(2).mean(-1, /*keepdim=*/true);  // [n, 1]
    return weight * (wide * at::rsqrt(mean_square + config_.norm_eps)).to(x->scalar_type());
  }
  // As ggml computes it, so that the 8-bit activation rounding that follows
  // lands as in llama.cpp (ggml_ops.h). The residual sum is made in the same
  // region, in place: a decode step's ops are too short to be worth a
  // tensor and a pass of their own.
  if (delta.defined() && !x->is_contiguous()) *x = x->contiguous();
  const at::Tensor input = delta.defined() ? *x : x->contiguous();
  const at::Tensor addend = delta.defined() ? delta.contiguous() : at::Tensor();
  at::Tensor out = NewActivation(input.sizes(), input.options());  // [n, hidden]
  const int64_t hidden = input.size(1);
  const at::Tensor w = weight.contiguous();  // [hidden], F32 as loaded
  const float* scale = w.data_ptr<float>();
  float* in = input.data_ptr<float>();
  const float* add = delta.defined() ? addend.data_ptr<float>() : nullptr;
  float* normed = out.data_ptr<float>();
  at::parallel_for(0, input.size(0), 1, [&](int64_t begin, int64_t end) {
    if (add != nullptr) {
      for (int64_t i = begin * hidden; i < end * hidden; ++i) in[i] += add[i];  // x + delta
    }
    GgmlRmsNorm(in + begin * hidden, end - begin, hidden, config_.norm_eps,
                normed + begin * hidden);
    // Times the weight in place: one product per element, as `out * weight`.
    for (int64_t r = begin; r < end; ++r) {
      float* row = normed + r * hidden;
      for (int64_t i = 0; i < hidden; ++i) row[i] *= scale[i];
    }
  });
  return out;
}

int64_t LlamaModel::WeightBytes() const {
  std::set<const void*> seen;  // storages and K-quant matrices counted so far
  int64_t bytes = 0;
  auto add = [&](const at::Tensor& t) {
    if (!t.defined()) return;
    if (seen.insert(t.storage().data()).second) bytes += static_cast<int64_t>(t.storage().nbytes());
  };
  auto add_matrix = [&](const Matrix& m) {
    add(m.weight);
    add(m.block_offsets);
    add(m.raw);
  };
  add(token_embd_.table);
  add(token_embd_.raw);
  add(output_norm_);
  add(output_norm_bias_);
  add_matrix(output_);
  add(output_bias_);
  for (const Layer& layer : layers_) {
    for (const at::Tensor* t : {&layer.attn_norm, &layer.attn_norm_bias, &layer.qkv_bias,
                                &layer.wo_bias, &layer.ffn_norm, &layer.ffn_in_bias,
                                &layer.down_bias}) {
      add(*t);
    }
    for (const Matrix* m : {&layer.wqkv, &layer.wo, &layer.w_ffn_in, &layer.w_down}) add_matrix(*m);
  }
  return bytes;
}

at::Tensor LlamaModel::Embed(const at::Tensor& ids) const {
  const Embedding& e = token_embd_;
  if (e.table.defined()) return e.table.index_select(0, ids);  // [N, hidden]
  const int64_t n = ids.size(0);
  at::Tensor out = NewActivation({n, e.hidden}, at::TensorOptions(at::kFloat));  // [N, hidden]
  const int64_t* id = ids.data_ptr<int64_t>();
  const uint8_t* rows = e.raw.data_ptr<uint8_t>();
  const int64_t row_bytes = e.raw.size(1);
  std::vector<uint8_t> row(e.interleaved || e.amx ? row_bytes : 0);
  for (int64_t i = 0; i < n; ++i) {
    // Ids were validated against the vocabulary; rows are whole blocks.
    const uint8_t* ggml_row = rows + id[i] * row_bytes;
    if (e.amx) {
      UnpackAmxRow(e.type, rows, e.hidden, id[i], row.data());
      ggml_row = row.data();
    } else if (e.interleaved && KQuantSupports(e.type)) {
      DeinterleaveKQuantRow(rows, e.hidden, id[i], row.data());
      ggml_row = row.data();
    } else if (e.interleaved) {
      DeinterleaveRow(e.type, rows, e.hidden, id[i], row.data());
      ggml_row = row.data();
    }
    absl::Status s = DequantizeToF32(e.type, ggml_row, e.hidden,
                                     out.data_ptr<float>() + i * e.hidden);
    TORCH_CHECK(s.ok(), "token embedding row ", id[i], ": ", s.ToString());
  }
  return out;
}

at::Tensor LlamaModel::FloatLinear(const at::Tensor& x, const Matrix& matrix,
                                   const uint8_t* decode) const {
  at::Tensor input = x.contiguous();  // [n, in]
  if (matrix.raw_type != GgmlType::kF32 && round_activations_to_weight_type_) {
    // Round to nearest even, as ggml's conversions, through a row of the
    // weight's type on the stack.
    at::Tensor rounded = NewActivation(input.sizes(), input.options());  // [n, in]
    const float* from = input.data_ptr<float>();
    float* to = rounded.data_ptr<float>();
    const int64_t count = input.numel();
    at::parallel_for(0, count, int64_t{1} << 14, [&](int64_t begin, int64_t end) {
      constexpr int64_t kChunk = 1024;
      uint16_t narrow[kChunk];
      for (int64_t i = begin; i < end; i += kChunk) {
        const int64_t k = std::min(kChunk, end - i);
        NarrowRowFromFloat(matrix.raw_type, from + i, k, narrow);
        WidenRowToFloat(matrix.raw_type, narrow, k, to + i);
      }
    });
    input = rounded;
  }
  const int64_t n = input.size(0);
  at::Tensor out = NewActivation({n, matrix.rows}, input.options());  // [n, out]
  const ParallelFor parallel_for = ChunkedParallelFor(/*min_chunk=*/1);
  const int64_t row_bytes = static_cast<int64_t>(GgmlRowBytes(matrix.raw_type, matrix.in));
  // BF16 weights meeting BF16-rounded activations: BF16 pairs (vdpbf16ps
  // where the CPU has it, the same bits elsewhere).
  const bool bf16_pairs = matrix.raw_type == GgmlType::kBF16 && round_activations_to_weight_type_;
  // Runs of rows of one kind: generated tokens by FloatMatmul (each weight
  // row read once for the few of them), prompt rows by FloatGemm. Both give
  // a row the same bits whatever else shares the call.
  for (int64_t begin = 0; begin < n;) {
    const bool is_decode = decode != nullptr && decode[begin] != 0;
    int64_t end = begin + 1;
    while (end < n && (decode != nullptr && decode[end] != 0) == is_decode) ++end;
    const float* rows_in = input.data_ptr<float>() + begin * matrix.in;
    float* rows_out = out.data_ptr<float>() + begin * matrix.rows;
    if (is_decode && bf16_pairs) {
      Bf16Matmul(matrix.raw.data_ptr<uint8_t>(), matrix.rows, matrix.in, rows_in, end - begin,
                 rows_out, ChunkedParallelFor(/*min_chunk=*/16, row_bytes));
    } else if (is_decode) {
      FloatMatmul(matrix.raw_type, matrix.raw.data_ptr<uint8_t>(), matrix.rows, matrix.in, rows_in,
                  end - begin, rows_out, ChunkedParallelFor(/*min_chunk=*/16, row_bytes));
    } else if (bf16_pairs) {
      Bf16Gemm(matrix.raw.data_ptr<uint8_t>(), matrix.rows, matrix.in, rows_in, end - begin,
               rows_out, parallel_for);
    } else {
      FloatGemm(matrix.raw_type, matrix.raw.data_ptr<uint8_t>(), matrix.rows, matrix.in, rows_in,
                end - begin, rows_out, parallel_for);
    }
    begin = end;
  }
  return out;
}

at::Tensor LlamaModel::Linear(const at::Tensor& x, const Matrix& matrix, const RowKinds& kinds,
                              const at::Tensor& bias) const {
  // F16/BF16 on the libtorch path: the bias added inside the product, as
  // transformers' nn.Linear (one rounding).
  if (matrix.weight.defined() && matrix.weight.scalar_type() != at::kFloat) {
    if (device_kernels_ && DeviceLinearSupports(x, matrix.weight, bias)) {
      return DeviceLinear(x, matrix.weight, bias);  // [n, out], n <= 8
    }
    return at::linear(x, matrix.weight, bias);  // [n, out]
  }
  at::Tensor out = Product(x, matrix, kinds);  // [n, out]
  return bias.defined() ? out + bias : out;
}

at::Tensor LlamaModel::Product(const at::Tensor& x, const Matrix& matrix,
                               const RowKinds& kinds) const {
  // x: [n, in], weight: [out, in] -> [n, out].
  if (matrix.raw.defined() && FloatMatmulSupports(matrix.raw_type)) {
    return FloatLinear(x, matrix, kinds.decode);
  }
  // Weight bytes of one row, for the size of a thread's chunk.
  const int64_t row_bytes =
      matrix.raw.defined() ? static_cast<int64_t>(GgmlRowBytes(matrix.raw_type, matrix.in)) : 0;
  if (matrix.amx) {
    // Packed by 16 (Q4_0/Q4_1/Q8_0, K-quants): llama.cpp's AMX-buffer results.
    at::Tensor input = x.contiguous();
    at::Tensor out = NewActivation({input.size(0), matrix.rows}, input.options());  // [n, out]
    AmxMatmul(matrix.raw_type, matrix.raw.data_ptr<uint8_t>(), matrix.rows, matrix.in,
              input.data_ptr<float>(), input.size(0), out.data_ptr<float>(),
              ChunkedParallelFor(/*min_chunk=*/2, 32 * row_bytes));
    return out;
  }
  if (matrix.interleaved && KQuantSupports(matrix.raw_type)) {
    // Q4_K, 8 rows interleaved: llama.cpp's repacked-weight results.
    at::Tensor input = x.contiguous();
    at::Tensor out = NewActivation({input.size(0), matrix.rows}, input.options());  // [n, out]
    KQuantInterleavedMatmul(matrix.raw.data_ptr<uint8_t>(), matrix.rows, matrix.in,
                            input.data_ptr<float>(), input.size(0), out.data_ptr<float>(),
                            ChunkedParallelFor(/*min_chunk=*/2, 8 * row_bytes),
                            kinds.in_groups_of_4);
    return out;
  }
  if (matrix.interleaved) {
    // Q4_0/Q8_0, 8 rows interleaved: llama.cpp's repacked-weight results.
    at::Tensor input = x.contiguous();
    at::Tensor out = NewActivation({input.size(0), matrix.rows}, input.options());  // [n, out]
    InterleavedMatmul(matrix.raw_type, matrix.raw.data_ptr<uint8_t>(), matrix.rows, matrix.in,
                      input.data_ptr<float>(), input.size(0), out.data_ptr<float>(),
                      ChunkedParallelFor(/*min_chunk=*/4, 8 * row_bytes));
    return out;
  }
  if (matrix.raw.defined() && KQuantSupports(matrix.raw_type)) {
    // K-quant blocks on the CPU: activations rounded to Q8_K, integer
    // products, in llama.cpp's order for this weight.
    at::Tensor input = x.contiguous();
    at::Tensor out = NewActivation({input.size(0), matrix.rows}, input.options());  // [n, out]
    KQuantMatmul(matrix.raw_type, matrix.raw.data_ptr<uint8_t>(), matrix.rows, matrix.in,
                 input.data_ptr<float>(), input.size(0), out.data_ptr<float>(),
                 matrix.kquant_order,
                 ChunkedParallelFor(/*min_chunk=*/16, row_bytes),
                 kinds.in_groups_of_4);
    return out;
  }
  if (matrix.raw.defined()) {
    // ggml blocks on the CPU: activations rounded to 8 bits and integer
    // block dot products, as llama.cpp computes them; per-row results do not
    // depend on the batch size.
    at::Tensor input = x.contiguous();
    at::Tensor out = NewActivation({input.size(0), matrix.rows}, input.options());  // [n, out]
    QuantMatmul(matrix.raw_type, matrix.raw.data_ptr<uint8_t>(), matrix.rows, matrix.in,
                input.data_ptr<float>(), input.size(0), out.data_ptr<float>(),
                ChunkedParallelFor(/*min_chunk=*/32, row_bytes));
    return out;
  }
  const at::Tensor& weight = matrix.weight;
  at::Tensor input = x;
  at::Tensor sum_delta;  // [n, in / 32] for Q8_1
  if (matrix.quant == ActivationQuant::kQ8_K) {
    input = x.clone(at::MemoryFormat::Contiguous);
    QuantizeActivationsQ8KInPlace(input);
  } else if (matrix.quant != ActivationQuant::kNone) {
    input = x.clone(at::MemoryFormat::Contiguous);
    sum_delta = QuantizeActivationsInPlace(input, matrix.quant == ActivationQuant::kQ8_1);
  }
  at::Tensor out = input.size(0) == 1 ? at::mv(weight, input[0]).unsqueeze(0)
                                      : at::matmul(input, weight.t());  // [n, out]
  if (sum_delta.defined()) {
    // ggml's Q4_1 x Q8_1 dot adds m * s with s rounded to F16; the product
    // above used the unrounded sum. Add m * (s - sum) per block.
    out += sum_delta.size(0) == 1
               ? at::mv(matrix.block_offsets, sum_delta[0]).unsqueeze(0)
               : at::matmul(sum_delta, matrix.block_offsets.t());
  }
  return out;
}

at::Tensor LlamaModel::Rope(const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin) const {
  // x: [n, heads, head_dim]; cos, sin: [n, rope_dim / 2]. The first rope_dim
  // dimensions of each head rotate, in pairs (x0[i], x1[i]) whose layout the
  // rope type says; the rest pass through (phi2's partial rotary).
  const int64_t n = x.size(0), heads = x.size(1), head_dim = x.size(2);
  const int64_t rope_dim = config_.rope_dim, half = rope_dim / 2;
  if (x.device().is_cpu() && x.scalar_type() == at::kFloat) {
    // ggml's fused multiply-adds (ggml_ops.h).
    // Read in place when heads are rows of unit stride (q and k are column
    // ranges of the fused QKV product).
    const at::Tensor input = x.stride(2) == 1 ? x : x.contiguous();
    at::Tensor out = NewActivation({n, heads, head_dim}, input.options());
    at::Tensor c = cos.contiguous(), s = sin.contiguous();  // [n, half]
    const bool adjacent = config_.rope_type == RopeType::kAdjacent;
    const float* in = input.data_ptr<float>();
    const int64_t row_stride = input.stride(0), head_stride = input.stride(1);
    // A head is a few hundred flops: a decode step's heads take less time
    // than waking the other threads, so only prompts' rows are split.
    const int64_t grain = std::max<int64_t>(1, 16384 / head_dim);
    at::parallel_for(0, n * heads, grain, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t i = task / heads, h = task % heads;
        GgmlRopeHead(in + i * row_stride + h * head_stride, c.data_ptr<float>() + i * half,
                     s.data_ptr<float>() + i * half, half, adjacent, head_dim,
                     out.data_ptr<float>() + task * head_dim);
      }
    });
    return out;
  }
  at::Tensor c = cos.unsqueeze(1).to(x.scalar_type());  // [n, 1, half]
  at::Tensor s = sin.unsqueeze(1).to(x.scalar_type());
  at::Tensor out;  // [n, heads, rope_dim]
  if (config_.rope_type == RopeType::kAdjacent) {
    at::Tensor pairs = x.narrow(2, 0, rope_dim).reshape({n, heads, half, 2});
    at::Tensor x0 = pairs.select(3, 0), x1 = pairs.select(3, 1);  // [n, heads, half]
    out = at::stack({x0 * c - x1 * s, x0 * s + x1 * c}, 3).reshape({n, heads, rope_dim});
  } else {
    at::Tensor x0 = x.narrow(2, 0, half), x1 = x.narrow(2, half, half);  // [n, heads, half]
    out = at::cat({x0 * c - x1 * s, x0 * s + x1 * c}, 2);
  }
  if (rope_dim == head_dim) return out;
  return at::cat({out, x.narrow(2, rope_dim, head_dim - rope_dim)}, 2);
}

at::Tensor LlamaModel::SiluGated(const at::Tensor& gate_up) const {
  // gate_up: [n, 2 * ffn] -> silu(gate) * up: [n, ffn]
  const int64_t n = gate_up.size(0), ffn = config_.ffn_size;
  if (!gate_up.device().is_cpu() || gate_up.scalar_type() != at::kFloat) {
    if (device_kernels_ && DeviceSiluGatedSupports(gate_up) && gate_up.size(1) == 2 * ffn) {
      return DeviceSiluGated(gate_up);  // one kernel for silu and the product
    }
    return at::silu(gate_up.narrow(1, 0, ffn)) * gate_up.narrow(1, ffn, ffn);
  }
  at::Tensor input = gate_up.contiguous();
  at::Tensor out = NewActivation({n, ffn}, input.options());
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = input.data_ptr<float>() + r * 2 * ffn;
      GgmlSwiglu(row, row + ffn, ffn, ggml_variant_, out.data_ptr<float>() + r * ffn);
    }
  });
  return out;
}

at::Tensor LlamaModel::Gelu(const at::Tensor& x) const {
  if (x.scalar_type() != at::kFloat) {
    // transformers' gelu_new, op by op in x's type (each rounded).
    const double sqrt_2_over_pi = std::sqrt(2.0 / M_PI);
    return 0.5 * x * (1.0 + at::tanh(sqrt_2_over_pi * (x + 0.044715 * at::pow(x, 3.0))));
  }
  if (!ggml_gelu_) return at::gelu(x, "tanh");
  at::Tensor table = at::gelu(x.to(at::kHalf).to(at::kFloat), "tanh").to(at::kHalf).to(at::kFloat);
  return at::where(x <= -10.0f, at::zeros_like(x), at::where(x >= 10.0f, x, table));
}

absl::StatusOr<at::Tensor> LlamaModel::Forward(absl::Span<const int32_t> tokens, int64_t pos,
                                               KvCache* cache, bool all_logits,
                                               bool decode) const {
  const ForwardItem item{tokens, pos, cache, all_logits, decode};
  return ForwardBatch(absl::MakeConstSpan(&item, 1));
}

absl::Status LlamaModel::Validate(const ForwardItem& item) const {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(item.tokens.size());
  if (n == 0) return absl::InvalidArgumentError("forward: no tokens");
  if (item.pos < 0 || item.pos > item.cache->num_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat("forward: position ", item.pos,
                                                   " is past the cache's ",
                                                   item.cache->num_tokens(), " tokens"));
  }
  if (item.pos + n > item.cache->capacity() || item.pos + n > c.context_length) {
    return absl::OutOfRangeError(absl::StrCat(
        "forward: positions up to ", item.pos + n, " exceed the cache capacity ",
        item.cache->capacity(), " or the context length ", c.context_length));
  }
  for (int32_t id : item.tokens) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("forward: token id ", id, " is outside the vocabulary [0, ",
                       c.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

namespace {

// The rows of positions [0, total) of one layer's pool: [kv_heads, total, head_dim].
at::Tensor GatherKv(const at::Tensor& pool, const KvCache& cache, int64_t total) {
  if (cache.block_table().size() == 1) return pool.narrow(1, cache.Slot(0), total);
  std::vector<int64_t> slots(total);
  for (int64_t p = 0; p < total; ++p) slots[p] = cache.Slot(p);
  at::Tensor index = at::from_blob(slots.data(), {total}, at::kLong).to(pool.device());
  return pool.index_select(1, index);
}

// CPU pools of any type: positions [0, total) of the cache widened to F32
// (exactly) into `out`, [kv_heads, total, head_dim], over all threads.
void WidenKv(const at::Tensor& pool, const KvCache& cache, int64_t total, int64_t head_dim,
             float* out) {
  const int64_t kv_heads = pool.size(0), slots = pool.size(1);
  const KvType type = cache.type();
  const size_t row_bytes = KvRowBytes(type, head_dim);
  const auto* rows = static_cast<const uint8_t*>(pool.data_ptr());
  at::parallel_for(0, kv_heads * total, /*grain_size=*/256, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t h = r / total, p = r % total;
      const uint8_t* row = rows + (h * slots + cache.Slot(p)) * row_bytes;
      float* dst = out + r * head_dim;
      if (type == KvType::kQ8_0) {
        KvPool::DequantizeRow(row, head_dim, dst);
        continue;
      }
      WidenRowToFloat(type == KvType::kF16 ? GgmlType::kF16 : GgmlType::kBF16, row, head_dim, dst);
    }
  });
}

// One position's keys and values into CPU pools: k and v [kv_heads,
// head_dim] (unit strides), rounded to the pool's type (F16/BF16 to nearest
// even, as at::Tensor::copy_ and ggml round them; Q8_0 as ggml quantises) and
// stored at the position's slot.
void WriteKvRowCpu(const float* k, const float* v, int64_t kv_heads, int64_t head_dim,
                   int64_t pos, const KvCache& cache, at::Tensor& k_pool, at::Tensor& v_pool) {
  const int64_t slot = cache.Slot(pos), slots = k_pool.size(1);
  const KvType type = cache.type();
  const size_t row_bytes = KvRowBytes(type, head_dim);
  const GgmlType element = type == KvType::kF32   ? GgmlType::kF32
                           : type == KvType::kF16 ? GgmlType::kF16
                                                  : GgmlType::kBF16;  // unless Q8_0
  for (auto [x, pool] : {std::pair<const float*, at::Tensor*>{k, &k_pool}, {v, &v_pool}}) {
    auto* base = static_cast<uint8_t*>(pool->data_ptr());
    for (int64_t h = 0; h < kv_heads; ++h) {
      uint8_t* row = base + (h * slots + slot) * row_bytes;
      if (type == KvType::kQ8_0) {
        KvPool::QuantizeRows(x + h * head_dim, 1, head_dim, row);
      } else {
        NarrowRowFromFloat(element, x + h * head_dim, head_dim, row);
      }
    }
  }
}

// CPU pools: k and v ([n, kv_heads, head_dim]) of positions [pos, pos + n).
void WriteKvCpu(const at::Tensor& k, const at::Tensor& v, int64_t pos, const KvCache& cache,
                at::Tensor& k_pool, at::Tensor& v_pool) {
  const int64_t n = k.size(0), kv_heads = k.size(1), head_dim = k.size(2);
  // Heads of a row at unit stride (v is a column range of the QKV product).
  const auto heads_packed = [&](const at::Tensor& t) {
    return t.stride(2) == 1 && t.stride(1) == head_dim ? t : t.contiguous();
  };
  const at::Tensor k_rows = heads_packed(k), v_rows = heads_packed(v);
  for (int64_t i = 0; i < n; ++i) {
    WriteKvRowCpu(k_rows.data_ptr<float>() + i * k_rows.stride(0),
                  v_rows.data_ptr<float>() + i * v_rows.stride(0), kv_heads, head_dim, pos + i,
                  cache, k_pool, v_pool);
  }
}

// Stores k, v ([n, kv_heads, head_dim]) of positions [pos, pos + n) in the
// pool rows the cache's blocks give them, one copy per block touched.
void WriteKv(const at::Tensor& k, const at::Tensor& v, int64_t pos, KvCache* cache,
             at::Tensor& k_pool, at::Tensor& v_pool) {
  if (k_pool.device().is_cpu() && k.scalar_type() == at::kFloat) {
    WriteKvCpu(k, v, pos, *cache, k_pool, v_pool);
    return;
  }
  const int64_t n = k.size(0), block_size = cache->block_size();
  at::Tensor k_heads = k.transpose(0, 1), v_heads = v.transpose(0, 1);  // [kv_heads, n, head_dim]
  for (int64_t i = 0; i < n;) {
    const int64_t run = std::min(n - i, block_size - (pos + i) % block_size);
    const int64_t slot = cache->Slot(pos + i);
    k_pool.narrow(1, slot, run).copy_(k_heads.narrow(1, i, run));
    v_pool.narrow(1, slot, run).copy_(v_heads.narrow(1, i, run));
    i += run;
  }
}

}  // namespace

void LlamaModel::AttendCpu(int64_t layer, const ForwardItem& item, const float* query, int64_t n,
                           float* out, const ParallelFor& parallel_for,
                           int64_t min_tasks) const {
  const ModelConfig& c = config_;
  const int64_t pos = item.pos, total = pos + n;  // keys attended over
  const int64_t kv_heads = c.num_kv_heads, head_dim = c.head_dim;
  KvCache& cache = *item.cache;
  const at::Tensor& k_pool = cache.pool().keys(layer);  // [kv_heads, slots, head_dim]
  const at::Tensor& v_pool = cache.pool().values(layer);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  // An F32 cache is read in place through the block table, and so is an F16
  // or BF16 one for a decode step (widened exactly as it is loaded: widening
  // the whole cache first took a quarter of SmolLM2's decode at 600 tokens).
  // Otherwise the cache is first widened to F32 ([kv_heads, total,
  // head_dim], exact; once for all of a prompt's rows) and attended over
  // exactly as an F32 cache holding the same values.
  AttentionShape shape{c.num_heads, kv_heads, head_dim, k_pool.size(1), c.sliding_window};
  const void* keys = nullptr;
  const void* values = nullptr;
  const KvType type = cache.type();
  if (type == KvType::kF32 || (n == 1 && type != KvType::kQ8_0)) {
    keys = k_pool.data_ptr();
    values = v_pool.data_ptr();
    shape.block_table = cache.block_table().data();
    shape.block_size = cache.block_size();
    shape.element = type == KvType::kF16    ? KvElement::kF16
                    : type == KvType::kBF16 ? KvElement::kBF16
                                            : KvElement::kF32;
  } else {
    // Reused from step to step: no allocation once they are large enough.
    thread_local std::vector<float> widened_keys, widened_values;
    const size_t floats = static_cast<size_t>(kv_heads * total * head_dim);
    if (widened_keys.size() < floats) {
      widened_keys.resize(floats);
      widened_values.resize(floats);
    }
    WidenKv(k_pool, cache, total, head_dim, widened_keys.data());
    WidenKv(v_pool, cache, total, head_dim, widened_values.data());
    keys = widened_keys.data();
    values = widened_values.data();
    shape.capacity = total;
  }
  // Row by row, so that results do not depend on chunking or batching.
  CausalAttention(shape, query, n, pos, keys, values, scale, item.decode, ggml_variant_, out,
                  parallel_for, min_tasks);
}

at::Tensor LlamaModel::AttentionOfDecodeSteps(const at::Tensor& qkv, const at::Tensor& cos,
                                              const at::Tensor& sin, int64_t layer,
                                              absl::Span<const ForwardItem> items) const {
  // qkv: [items, q_dim + 2 * kv_dim], unrotated; cos, sin: [items, rope_dim / 2].
  const ModelConfig& c = config_;
  const int64_t num_items = static_cast<int64_t>(items.size());
  const int64_t q_dim = c.q_dim(), kv_dim = c.kv_dim(), head_dim = c.head_dim;
  const int64_t half = c.rope_dim / 2, rotated_heads = c.num_heads + c.num_kv_heads;
  const bool adjacent = c.rope_type == RopeType::kAdjacent;
  const at::Tensor rows = qkv.contiguous();
  const at::Tensor cos_rows = cos.contiguous(), sin_rows = sin.contiguous();
  at::Tensor out = NewActivation({num_items, q_dim}, rows.options());  // [items, q_dim]
  const float* qkv_rows = rows.data_ptr<float>();
  const float* cos_data = cos_rows.data_ptr<float>();
  const float* sin_data = sin_rows.data_ptr<float>();
  float* out_rows = out.data_ptr<float>();
  // Item i's query and key heads (adjacent in its row) rotated into
  // `rotated` ([heads + kv_heads, head_dim]), its key and value rows stored.
  const auto rotate_and_store = [&](int64_t i, float* rotated) {
    const float* row = qkv_rows + i * (q_dim + 2 * kv_dim);
    for (int64_t h = 0; h < rotated_heads; ++h) {
      GgmlRopeHead(row + h * head_dim, cos_data + i * half, sin_data + i * half, half, adjacent,
                   head_dim, rotated + h * head_dim);
    }
    KvCache* cache = items[i].cache;
    WriteKvRowCpu(rotated + q_dim, row + q_dim + kv_dim, c.num_kv_heads, head_dim, items[i].pos,
                  *cache, cache->pool().keys(layer), cache->pool().values(layer));
  };
  const int64_t threads = at::get_num_threads();
  if (num_items < 2 * threads) {
    // Too few jobs to keep every thread busy: each job's heads split over the
    // threads (as Attention splits them), its rows rotated and stored first
    // on this thread (a few hundred flops, less than a region's fork; the
    // tensors of Rope and Attention took a fifth of SmolLM2's one-job step).
    thread_local std::vector<float> rotated;  // [heads + kv_heads, head_dim]
    rotated.resize(static_cast<size_t>(rotated_heads * head_dim));
    for (int64_t i = 0; i < num_items; ++i) {
      rotate_and_store(i, rotated.data());
      AttendCpu(layer, items[i], rotated.data(), 1, out_rows + i * q_dim,
                StaticParallelFor(/*grain=*/1), 2 * threads);
    }
    return out;
  }
  // Each job rotated, stored and attended on one thread: one region per
  // layer, no per-job tensors. Inside the region WidenKv's own parallel_for
  // runs inline on the thread.
  at::parallel_for(0, num_items, /*grain_size=*/1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> rotated;  // [heads + kv_heads, head_dim]
    rotated.resize(static_cast<size_t>(rotated_heads * head_dim));
    for (int64_t i = begin; i < end; ++i) {
      rotate_and_store(i, rotated.data());
      AttendCpu(layer, items[i], rotated.data(), 1, out_rows + i * q_dim, SerialFor);
    }
  });
  return out;
}

at::Tensor LlamaModel::Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 int64_t layer, const ForwardItem& item) const {
  // q: [n, heads, head_dim]; k, v: [n, kv_heads, head_dim], already rotated.
  const ModelConfig& c = config_;
  const int64_t n = q.size(0), pos = item.pos, total = pos + n;  // keys attended over
  const int64_t kv_heads = c.num_kv_heads, group = c.num_heads / c.num_kv_heads;
  const int64_t head_dim = c.head_dim;
  KvCache& cache = *item.cache;
  at::Tensor& k_pool = cache.pool().keys(layer);  // [kv_heads, slots, head_dim]
  at::Tensor& v_pool = cache.pool().values(layer);
  WriteKv(k, v, pos, &cache, k_pool, v_pool);
  if (device_.is_cpu() && q.scalar_type() == at::kFloat) {
    at::Tensor query = q.contiguous();                        // [n, heads, head_dim]
    at::Tensor out = NewActivation({n, c.q_dim()}, q.options());  // [n, q_dim]
    // A decode step's heads are split evenly (in at least two tasks a
    // thread), a prompt's rows (later ones see more keys) dealt out in chunks.
    AttendCpu(layer, item, query.data_ptr<float>(), n, out.data_ptr<float>(),
              n == 1 ? StaticParallelFor(/*grain=*/1) : ChunkedParallelFor(c.num_heads),
              n == 1 ? 2 * at::get_num_threads() : 1);
    return out;
  }
  // [kv_heads, total, head_dim], in the activations' type
  at::Tensor keys = GatherKv(k_pool, cache, total).to(q.scalar_type());
  at::Tensor values = GatherKv(v_pool, cache, total).to(q.scalar_type());

  // Query heads h*group .. h*group+group-1 share KV head h.
  at::Tensor qg = q.reshape({n, kv_heads, group, head_dim})
                      .permute({1, 2, 0, 3})
                      .reshape({kv_heads, group * n, head_dim});  // [kv_heads, group*n, head_dim]
  at::Tensor scores = AttentionScores(qg, keys);  // [kv_heads, group*n, total]
  if (n > 1 || (c.sliding_window > 0 && total > c.sliding_window)) {
    // Causal mask from absolute positions: query i sits at pos + i and may
    // see keys 0..pos + i (the last sliding_window of them, if set).
    // Shape [n, pos + n]; a single query without a window needs none.
    const auto long_options = at::TensorOptions().dtype(at::kLong).device(device_);
    at::Tensor query_pos = at::arange(pos, total, long_options);  // [n]
    at::Tensor key_pos = at::arange(0, total, long_options);      // [total]
    at::Tensor hidden = key_pos.unsqueeze(0) > query_pos.unsqueeze(1);  // [n, total]
    if (c.sliding_window > 0) {
      hidden = hidden.logical_or(query_pos.unsqueeze(1) - key_pos.unsqueeze(0) >= c.sliding_window);
    }
    at::Tensor mask = at::zeros({n, total}, scores.options())
                          .masked_fill(hidden, -std::numeric_limits<float>::infinity());
    scores = scores.view({kv_heads, group, n, total}).add_(mask).view({kv_heads, group * n, total});
  }
  // In F32 whatever the scores' type, as transformers' eager attention.
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(values.scalar_type());
  return at::bmm(probs, values)                // [kv_heads, group*n, head_dim]
      .view({kv_heads, group, n, head_dim})
      .permute({2, 0, 1, 3})
      .reshape({n, c.q_dim()});  // [n, q_dim]
}

at::Tensor LlamaModel::AttentionScores(const at::Tensor& qg, const at::Tensor& keys) const {
  const int64_t head_dim = config_.head_dim;
  // Phi-2's queries and keys meet in F32 (transformers upcasts them there).
  const bool f32_scores = qg.scalar_type() != at::kFloat && config_.architecture == "phi2";
  at::Tensor scores = f32_scores ? at::matmul(qg.to(at::kFloat), keys.to(at::kFloat).transpose(-1, -2))
                                 : at::matmul(qg, keys.transpose(-1, -2));
  // F32 times ggml's scale; below F32 over sqrt(head_dim), as transformers.
  if (qg.scalar_type() == at::kFloat) {
    scores.mul_(1.0f / std::sqrt(static_cast<float>(head_dim)));
  } else {
    scores.div_(std::sqrt(static_cast<double>(head_dim)));
  }
  return scores;
}

std::optional<LlamaModel::DecodeBatch> LlamaModel::MakeDecodeBatch(
    absl::Span<const ForwardItem> items) const {
  // The CPU's F32 steps take AttentionOfDecodeSteps.
  if (device_.is_cpu() && dtype_ == at::kFloat) return std::nullopt;
  if (items.empty() || (items.size() < 2 && decode_pad_ == 0)) return std::nullopt;
  KvPool* pool = &items[0].cache->pool();
  int64_t longest = 0;
  for (const ForwardItem& item : items) {
    if (item.tokens.size() != 1 || &item.cache->pool() != pool) return std::nullopt;
    longest = std::max(longest, item.pos + 1);
  }
  DecodeBatch batch;
  batch.pool = pool;
  batch.num_items = static_cast<int64_t>(items.size());
  batch.jobs = batch.num_items;
  batch.positions = longest;
  if (decode_pad_ > 0) {
    const int64_t n = batch.num_items;
    batch.jobs = n <= 2 ? n : n <= 4 ? 4 : (n + 7) / 8 * 8;
    batch.positions = (longest + decode_pad_ - 1) / decode_pad_ * decode_pad_;
  }
  const int64_t jobs = batch.jobs, positions = batch.positions;
  batch.inputs.assign(3 * jobs + jobs * positions, 0);
  int64_t* ids = batch.inputs.data();
  int64_t* pos = ids + jobs;
  int64_t* write_slots = pos + jobs;
  int64_t* read_slots = write_slots + jobs;  // [B, T]
  for (int64_t b = 0; b < jobs; ++b) {
    const ForwardItem& item = items[b < batch.num_items ? b : 0];  // padding: job 0 again
    ids[b] = item.tokens[0];
    pos[b] = item.pos;
    write_slots[b] = item.cache->Slot(item.pos);
    for (int64_t t = 0; t <= item.pos; ++t) read_slots[b * positions + t] = item.cache->Slot(t);
  }
  return batch;
}

at::Tensor LlamaModel::DecodeBatchLogits(const at::Tensor& inputs, KvPool* pool, int64_t jobs,
                                         int64_t positions) const {
  const ModelConfig& c = config_;
  const int64_t q_dim = c.q_dim(), kv_dim = c.kv_dim(), head_dim = c.head_dim;
  const at::Tensor ids = inputs.narrow(0, 0, jobs);                             // [B]
  const at::Tensor pos = inputs.narrow(0, jobs, jobs);                          // [B]
  const at::Tensor write_slots = inputs.narrow(0, 2 * jobs, jobs);              // [B]
  const at::Tensor read_slots = inputs.narrow(0, 3 * jobs, jobs * positions);  // [B*T]
  // 0 where job b sees position t (t <= its pos; the last sliding_window of
  // them, if set), else -inf: [B, 1, 1, T], built here so that a replayed
  // step computes it from the positions it is given.
  const at::Tensor key_pos = at::arange(positions, inputs.options());  // [T]
  at::Tensor hidden = key_pos.unsqueeze(0) > pos.unsqueeze(1);         // [B, T]
  if (c.sliding_window > 0) {
    hidden = hidden.logical_or(pos.unsqueeze(1) - key_pos.unsqueeze(0) >= c.sliding_window);
  }
  const at::Tensor mask = at::zeros({jobs, positions}, inputs.options().dtype(dtype_))
                              .masked_fill(hidden, -std::numeric_limits<float>::infinity())
                              .view({jobs, 1, 1, positions});
  at::Tensor x = Embed(ids);                              // [B, hidden]
  // [B, rope_dim / 2], in the activations' type once for every layer.
  const auto [cos_rows, sin_rows] = RopeRows(pos);
  const at::Tensor cos = cos_rows.to(dtype_), sin = sin_rows.to(dtype_);
  // Every row a generated token's (host flags, read by the CPU kernels only).
  const std::vector<uint8_t> no_groups(jobs, 0), decode_rows(jobs, 1);
  const RowKinds kinds{no_groups.data(), decode_rows.data()};
  at::Tensor residual;  // [B, hidden], not yet added to x
  // llorch's CUDA kernels: RoPE with the pool writes, then the attention, in
  // two kernels (phi2's F32 scores keep libtorch's ops).
  DecodeHeads heads;
  heads.heads = c.num_heads;
  heads.kv_heads = c.num_kv_heads;
  heads.head_dim = head_dim;
  heads.rope_dim = c.rope_dim;
  heads.adjacent = c.rope_type == RopeType::kAdjacent;
  heads.window = c.sliding_window > 0 ? c.sliding_window : 0;
  const bool fused_attention = device_kernels_ && c.architecture != "phi2";
  for (int64_t l = 0; l < c.num_layers; ++l) {
    DecoderLayer(l, &x, &residual, kinds, [&](const at::Tensor& qkv) {
      if (fused_attention && DeviceDecodeAttentionSupports(qkv, pool->keys(l), pool->values(l),
                                                           positions, heads)) {
        return DeviceDecodeAttention(qkv, cos, sin, pool->keys(l), pool->values(l),
                                     write_slots, read_slots, pos, positions, heads);
      }
      // Query and key heads rotated together: [B, heads + kv_heads, head_dim].
      const at::Tensor qk = Rope(
          qkv.narrow(1, 0, q_dim + kv_dim).reshape({jobs, c.num_heads + c.num_kv_heads, head_dim}),
          cos, sin);
      const at::Tensor v =
          qkv.narrow(1, q_dim + kv_dim, kv_dim).reshape({jobs, c.num_kv_heads, head_dim});
      return AttentionOfDecodeBatch(qk.narrow(1, 0, c.num_heads),
                                    qk.narrow(1, c.num_heads, c.num_kv_heads), v, l, pool,
                                    write_slots, read_slots, mask);
    });
  }
  if (residual.defined()) x = x + residual;
  return Linear(Norm(x, output_norm_, output_norm_bias_), output_, kinds, output_bias_);
}

at::Tensor LlamaModel::AttentionOfDecodeBatch(const at::Tensor& q, const at::Tensor& k,
                                              const at::Tensor& v, int64_t layer, KvPool* pool,
                                              const at::Tensor& write_slots,
                                              const at::Tensor& read_slots,
                                              const at::Tensor& mask) const {
  const ModelConfig& c = config_;
  const int64_t jobs = q.size(0), positions = mask.size(-1);
  const int64_t kv_heads = c.num_kv_heads, group = c.num_heads / kv_heads, head_dim = c.head_dim;
  at::Tensor& k_pool = pool->keys(layer);  // [kv_heads, slots, head_dim]
  at::Tensor& v_pool = pool->values(layer);
  // k, v: [jobs, kv_heads, head_dim] -> rows of [kv_heads, slots, head_dim].
  k_pool.index_copy_(1, write_slots, k.transpose(0, 1).to(k_pool.scalar_type()));
  v_pool.index_copy_(1, write_slots, v.transpose(0, 1).to(v_pool.scalar_type()));
  const auto gather = [&](const at::Tensor& pool) {  // [jobs, kv_heads, T, head_dim]
    return pool.index_select(1, read_slots)
        .view({kv_heads, jobs, positions, head_dim})
        .transpose(0, 1)
        .to(q.scalar_type());
  };
  const at::Tensor keys = gather(k_pool), values = gather(v_pool);
  const at::Tensor qg = q.reshape({jobs, kv_heads, group, head_dim});
  // [jobs, kv_heads, group, T]; positions a job does not see masked.
  const at::Tensor scores = AttentionScores(qg, keys) + mask;
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(values.scalar_type());
  return at::matmul(probs, values).reshape({jobs, c.q_dim()});  // [jobs, q_dim]
}

void LlamaModel::DecoderLayer(int64_t l, at::Tensor* x, at::Tensor* residual,
                              const RowKinds& kinds,
                              const std::function<at::Tensor(const at::Tensor& qkv)>& attend) const {
  const ModelConfig& c = config_;
  const Layer& layer = layers_[l];
  // x + the last layer's FFN output, normed.
  at::Tensor h = AddNorm(x, *residual, layer.attn_norm, layer.attn_norm_bias);  // [N, hidden]
  *residual = at::Tensor();
  at::Tensor qkv = Linear(h, layer.wqkv, kinds, layer.qkv_bias);  // [N, q_dim + 2 * kv_dim]
  at::Tensor attn = attend(qkv);                                  // [N, q_dim]
  at::Tensor attn_out = Linear(attn, layer.wo, kinds, layer.wo_bias);  // [N, hidden]

  // Parallel residual (phi2): the FFN reads the same normed input as
  // attention. Otherwise it reads the normed sum.
  at::Tensor ffn_input;  // [N, hidden]
  if (c.parallel_residual) {
    ffn_input = h;
  } else {
    ffn_input = AddNorm(x, attn_out, layer.ffn_norm, at::Tensor());  // x += attn_out
  }
  // [N, 2 * ffn] | [N, ffn]
  at::Tensor ffn_in = Linear(ffn_input, layer.w_ffn_in, kinds, layer.ffn_in_bias);
  // [N, ffn]
  at::Tensor act = c.ffn == FfnType::kSiluGated ? SiluGated(ffn_in) : Gelu(ffn_in);
  at::Tensor ffn_out = Linear(act, layer.w_down, kinds, layer.down_bias);  // [N, hidden]
  if (c.parallel_residual) {
    // Below F32 in transformers' order (attention + FFN, then the residual).
    *x = x->scalar_type() == at::kFloat ? *x + attn_out + ffn_out : attn_out + ffn_out + *x;
  } else {
    *residual = ffn_out;  // added by the next norm
  }
}

namespace {

// Where a batch's items lie in its N rows, and how llama.cpp would have
// multiplied each row.
struct BatchRows {
  std::vector<int32_t> tokens;       // every item's tokens, concatenated: N rows
  std::vector<int64_t> positions;    // absolute position of each row
  std::vector<int64_t> output_rows;  // rows whose logits are returned
  std::vector<int64_t> item_begin;   // first row of each item
  // Rows llama.cpp would multiply in groups of 4 (its repacked Q4_K gemm):
  // per sequence, all but the last n % 4 rows of a call; the same for the
  // rows whose logits are computed. Generated tokens never are: each was one
  // row of its own step, also when several are recomputed together.
  std::vector<uint8_t> in_groups_of_4, output_in_groups_of_4;
  std::vector<uint8_t> decode, output_decode;  // generated-token rows
};

BatchRows LayOutRows(absl::Span<const ForwardItem> items) {
  BatchRows rows;
  auto mark_groups = [](int64_t n, bool decode, std::vector<uint8_t>* flags) {
    for (int64_t j = 0; j < n; ++j) flags->push_back(!decode && j < n - n % 4);
  };
  for (const ForwardItem& item : items) {
    const int64_t n = static_cast<int64_t>(item.tokens.size());
    const int64_t begin = static_cast<int64_t>(rows.tokens.size());
    rows.item_begin.push_back(begin);
    rows.tokens.insert(rows.tokens.end(), item.tokens.begin(), item.tokens.end());
    for (int64_t j = 0; j < n; ++j) rows.positions.push_back(item.pos + j);
    if (item.all_logits) {
      for (int64_t j = 0; j < n; ++j) rows.output_rows.push_back(begin + j);
    } else {
      rows.output_rows.push_back(begin + n - 1);
    }
    const int64_t outputs = item.all_logits ? n : 1;
    mark_groups(n, item.decode, &rows.in_groups_of_4);
    mark_groups(outputs, item.decode, &rows.output_in_groups_of_4);
    rows.decode.insert(rows.decode.end(), n, item.decode ? 1 : 0);
    rows.output_decode.insert(rows.output_decode.end(), outputs, item.decode ? 1 : 0);
  }
  return rows;
}

}  // namespace

absl::Status LlamaModel::ValidateBatch(absl::Span<const ForwardItem> items) const {
  if (items.empty()) return absl::InvalidArgumentError("forward: empty batch");
  for (size_t i = 0; i < items.size(); ++i) {
    if (absl::Status s = Validate(items[i]); !s.ok()) return s;
    for (size_t j = 0; j < i; ++j) {
      if (items[j].cache == items[i].cache) {
        return absl::InvalidArgumentError("forward: one cache appears twice in a batch");
      }
    }
  }
  return absl::OkStatus();
}

at::Tensor LlamaModel::RunDecodeBatch(DecodeBatch& batch,
                                      absl::Span<const ForwardItem> items) const {
  const auto step = [&](const at::Tensor& inputs) {
    return DecodeBatchLogits(inputs, batch.pool, batch.jobs, batch.positions);
  };
  at::Tensor logits;  // [B, vocab] on the device
  if (graphs_ != nullptr) {
    absl::StatusOr<at::Tensor> replayed =
        graphs_->Run({batch.pool->id(), batch.jobs, batch.positions}, batch.inputs, step);
    if (replayed.ok()) logits = *replayed;
  }
  if (!logits.defined()) {
    logits = step(at::from_blob(batch.inputs.data(),
                                {static_cast<int64_t>(batch.inputs.size())}, at::kLong)
                      .to(device_, /*non_blocking=*/false, /*copy=*/true));
  }
  for (const ForwardItem& item : items) item.cache->set_num_tokens(item.pos + 1);
  return HostLogits(logits.narrow(0, 0, batch.num_items));
}

at::Tensor LlamaModel::AttentionOfItems(const at::Tensor& qkv, const at::Tensor& cos,
                                        const at::Tensor& sin, int64_t layer,
                                        absl::Span<const ForwardItem> items,
                                        absl::Span<const int64_t> item_begin) const {
  const ModelConfig& c = config_;
  const int64_t rows = qkv.size(0), head_dim = c.head_dim;
  const int64_t q_dim = c.q_dim(), kv_dim = c.kv_dim();
  at::Tensor q = Rope(qkv.narrow(1, 0, q_dim).reshape({rows, c.num_heads, head_dim}), cos, sin);
  at::Tensor k =
      Rope(qkv.narrow(1, q_dim, kv_dim).reshape({rows, c.num_kv_heads, head_dim}), cos, sin);
  at::Tensor v = qkv.narrow(1, q_dim + kv_dim, kv_dim).reshape({rows, c.num_kv_heads, head_dim});
  if (items.size() == 1) return Attention(q, k, v, layer, items[0]);
  std::vector<at::Tensor> parts;  // [n_i, q_dim] each
  for (size_t i = 0; i < items.size(); ++i) {
    const int64_t n = static_cast<int64_t>(items[i].tokens.size());
    parts.push_back(Attention(q.narrow(0, item_begin[i], n), k.narrow(0, item_begin[i], n),
                              v.narrow(0, item_begin[i], n), layer, items[i]));
  }
  return at::cat(parts, 0);
}

absl::StatusOr<at::Tensor> LlamaModel::ForwardBatch(absl::Span<const ForwardItem> items) const {
  if (absl::Status s = ValidateBatch(items); !s.ok()) return s;
  BatchRows batch_rows = LayOutRows(items);
  at::NoGradGuard no_grad;
  // The libtorch path's one-token steps over one pool: one device step
  // (DecodeBatchLogits), replayed as a CUDA graph where graphs_ is set.
  if (std::optional<DecodeBatch> batch = MakeDecodeBatch(items); batch.has_value()) {
    return RunDecodeBatch(*batch, items);
  }
  const int64_t rows = static_cast<int64_t>(batch_rows.tokens.size());  // N
  const auto long_cpu = at::TensorOptions().dtype(at::kLong);

  at::Tensor ids =
      at::from_blob(batch_rows.tokens.data(), {rows}, at::kInt).to(at::kLong).to(device_);
  at::Tensor pos = at::from_blob(batch_rows.positions.data(), {rows}, long_cpu).to(device_);
  at::Tensor x = Embed(ids);  // [N, hidden]
  auto [cos, sin] = RopeRows(pos);  // [N, rope_dim / 2] each

  const RowKinds kinds{batch_rows.in_groups_of_4.data(), batch_rows.decode.data()};
  // One-token steps on the CPU (a lone job's decode, continuous batching's
  // steady state): rotation, cache rows and attention on raw rows
  // (AttentionOfDecodeSteps). Prompt chunks take Rope and Attention, each
  // item over its own cache.
  bool decode_steps = device_.is_cpu() && x.scalar_type() == at::kFloat;
  for (const ForwardItem& item : items) decode_steps &= item.tokens.size() == 1;
  at::Tensor residual;  // [N, hidden], not yet added to x
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    DecoderLayer(l, &x, &residual, kinds, [&](const at::Tensor& qkv) {
      if (decode_steps) return AttentionOfDecodeSteps(qkv, cos, sin, l, items);
      return AttentionOfItems(qkv, cos, sin, l, items, batch_rows.item_begin);
    });
  }
  if (residual.defined()) x = x + residual;
  for (const ForwardItem& item : items) {
    item.cache->set_num_tokens(item.pos + static_cast<int64_t>(item.tokens.size()));
  }

  std::vector<int64_t>& output_rows = batch_rows.output_rows;
  if (static_cast<int64_t>(output_rows.size()) != rows) {
    at::Tensor keep = at::from_blob(output_rows.data(), {static_cast<int64_t>(output_rows.size())},
                                    long_cpu).to(device_);
    x = x.index_select(0, keep);  // [outputs, hidden]
  }
  x = Norm(x, output_norm_, output_norm_bias_);
  at::Tensor logits =  // [outputs, vocab]
      Linear(x, output_,
             RowKinds{batch_rows.output_in_groups_of_4.data(), batch_rows.output_decode.data()},
             output_bias_);
  activations_.EndStep();
  return HostLogits(logits);
}

at::Tensor LlamaModel::NewActivation(at::IntArrayRef sizes, const at::TensorOptions& like) const {
  if (!like.device().is_cpu()) return at::empty(sizes, like);
  return activations_.Empty(sizes, c10::typeMetaToScalarType(like.dtype()));
}

}  // namespace llorch
