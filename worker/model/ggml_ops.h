#ifndef LLORCH_WORKER_MODEL_GGML_OPS_H_
#define LLORCH_WORKER_MODEL_GGML_OPS_H_

// Float operations of the decoder computed in the order and rounding of one
// of ggml's x86 CPU variants (the library llama.cpp picks for the machine),
// so that the 8-bit activation rounding inside the quantised products that
// follow them lands where llama.cpp's does. Without this, last-bit
// differences flip some of those roundings and the flips compound over the
// layers (SmolLM2 Q4_1: mean |Δlogprob| 0.015-0.05 against llama.cpp).
// Each function names the ggml routine it follows. Torch-free.
//
// The variants differ in the register width of their float loops, which
// sets the summation order of dot products, softmax sums and tinyBLAS's
// GEMM, and in their exp (ggml_v_expf): the AVX-512 one scales with
// _mm512_scalef_ps, the AVX2 one builds 2^n from the exponent bits.
// RMSNorm and RoPE are scalar code, the same in every variant. Either order
// runs on any CPU with AVX2 and FMA (llorch's baseline): each lane performs
// the same IEEE operations as the variant's register would.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/model/cpu_isa.h"

namespace llorch {

enum class GgmlVariant {
  kAvx2,    // ggml's haswell and alderlake libraries: 8-lane float loops
  kAvx512,  // skylakex, icelake, zen4, sapphirerapids, ...: 16-lane float loops
  // sapphirerapids and later with AMX-INT8, whose AMX buffer llama.cpp uses:
  // kAvx512's float loops, Q4_0/Q4_1/Q8_0 matrices in the AMX kernels' order
  // (amx_matmul.h).
  kAmx,
};

// "avx2", "avx512" or "amx".
const char* GgmlVariantName(GgmlVariant variant);
// Parses "avx2", "avx512" or "amx" (what GgmlVariantName prints).
absl::StatusOr<GgmlVariant> ParseGgmlVariant(absl::string_view name);

// The variant whose float order ggml's CPU backend uses on this machine. ggml
// loads the library with the highest score among those whose instruction
// sets the CPU has (ggml-cpu/arch/x86/cpu-feats.cpp); every AVX-512 library
// needs AVX-512 F, CD, VL, DQ and BW, so those five decide. A CPU without
// AVX2 and FMA gets kAvx2 too, though ggml then runs a narrower library
// whose order llorch does not follow (llorch itself needs AVX2 and FMA).
GgmlVariant DetectGgmlVariant();

// The environment variable LLORCH_GGML_VARIANT (avx2 | avx512 | amx) if set,
// else DetectGgmlVariant(). The override lets a machine follow a library
// other than the one ggml would pick there (say llama.cpp's haswell library
// loaded by name on an AVX-512 machine). `source` (optional) says which.
absl::StatusOr<GgmlVariant> GgmlVariantFromEnvironment(std::string* source = nullptr);

// LLORCH_MAX_CPU_ISA's value (cpu_isa.h; kAmx, no cap, where it is unset or
// empty), an InvalidArgument error for any other name.
absl::StatusOr<CpuIsa> MaxCpuIsaFromEnvironment();

// The widest instruction set llorch's CPU kernels use here: the CPU's, capped
// by LLORCH_MAX_CPU_ISA (AMX only with tiles this process may use).
CpuIsa CpuKernelIsa();

// ggml_compute_forward_rms_norm_f32: out = x / sqrt(mean(x^2) + eps) per row
// of `dim` floats (no weight), the squares summed in double.
void GgmlRmsNorm(const float* x, int64_t rows, int64_t dim, float eps, float* out);

// rotate_pairs (ggml RoPE): y0 = x0 cos - x1 sin, y1 = x0 sin + x1 cos with
// ggml's fused multiply-adds, for one head. `adjacent`: pairs (2i, 2i+1)
// (llama), else (i, i + num_pairs) (NeoX); dimensions past 2 * num_pairs
// are copied.
void GgmlRopeHead(const float* x, const float* cos, const float* sin, int64_t num_pairs,
                  bool adjacent, int64_t head_dim, float* out);

// ggml_v_expf of the variant, to the last bit.
float GgmlExpf(float x, GgmlVariant variant);

// ggml_vec_swiglu_f32: out = silu(gate) * up, silu(x) = x / (1 + exp(-x));
// whole registers with the variant's exp, the tail with libm's expf.
void GgmlSwiglu(const float* gate, const float* up, int64_t n, GgmlVariant variant, float* out);

// One query row of one head over keys first..last (absolute positions in a
// cache whose rows are `head_dim` floats), as llama.cpp's non-flash attention
// on the CPU: scores by ggml_vec_dot_f32 times `scale`; softmax by
// ggml_vec_soft_max_f32 (register-wide chunks of keys aligned on absolute
// position 0, chunk sums added in double); the probability-weighted sum of
// values by tinyBLAS (batches of two or more tokens: one register-wide chain
// of fused multiply-adds per output) or, with `one_token_order`, by
// ggml_vec_dot_f32 (llama.cpp's one-token steps: four chains folded).
// `scratch` holds last + 1 floats. With `block_table`, keys and values are
// paged: position j is row block_table[j / block_size] * block_size +
// j % block_size (the same sums, in the same order, as a contiguous cache).
void GgmlAttendRow(const float* query, const float* keys, const float* values, int64_t head_dim,
                   int64_t first, int64_t last, float scale, bool one_token_order,
                   GgmlVariant variant, float* scratch, float* out,
                   const int32_t* block_table = nullptr, int64_t block_size = 0);

// A cache's element type. F16 and BF16 rows are widened to F32 (exactly) as
// they are read: the same results as an F32 cache holding the same values,
// without a widened copy of the cache per step.
enum class KvElement { kF32, kF16, kBF16 };

// The same over keys and values of `element` (rows of head_dim elements).
void GgmlAttendRow(const float* query, const void* keys, const void* values, KvElement element,
                   int64_t head_dim, int64_t first, int64_t last, float scale,
                   bool one_token_order, GgmlVariant variant, float* scratch, float* out,
                   const int32_t* block_table = nullptr, int64_t block_size = 0);

// GgmlAttendRow for `count` query heads that read the same keys and values
// (grouped-query attention): head c's query at query + c * head_dim, its
// scores at scratch + c * scratch_stride (last + 1 floats each), its output
// at out + c * head_dim. Each head's bits are GgmlAttendRow's; a one-token
// step on an AVX-512 CPU loads each key and value row once for up to 4 heads.
void GgmlAttendHeads(const float* query, int count, const void* keys, const void* values,
                     KvElement element, int64_t head_dim, int64_t first, int64_t last,
                     float scale, bool one_token_order, GgmlVariant variant, float* scratch,
                     int64_t scratch_stride, float* out, const int32_t* block_table = nullptr,
                     int64_t block_size = 0);

// Prompt attention with a KV head prepared once for all the rows that read
// it: keys widened to F32 and transposed in blocks of `width` positions (8,
// or 16 on CPUs with AVX-512F), so that each score's ggml sums run across
// keys, one position per lane; values widened to F32 and, for the 16-lane
// orders over width 16, transposed the same way (each lane's value sums then
// run across positions too), else kept as rows.
struct GgmlPreparedKv {
  std::vector<float> keys_t;    // [blocks][head_dim][width], zero past `positions`
  std::vector<float> values;    // [positions][head_dim], or empty where values_t is set
  std::vector<float> values_t;  // [blocks][head_dim][16], zero past `positions`
  int64_t positions = 0;
  int width = 0;
};
// Whether the prepared path handles rows of head_dim (a multiple of 64, so
// that neither variant's KeyDot has a tail; built with AVX2, FMA and F16C).
bool GgmlPreparedAttentionSupports(int64_t head_dim);
// Prepares positions [0, positions) of one KV head (keys and values as
// GgmlAttendRow reads them) for GgmlAttendPromptRows in `variant`'s order.
// `width` 0: the best for this CPU.
void GgmlPrepareKv(const void* keys, const void* values, KvElement element, int64_t head_dim,
                   int64_t positions, const int32_t* block_table, int64_t block_size,
                   GgmlPreparedKv* out, int width, GgmlVariant variant);
// GgmlAttendRow with one_token_order = false for `count` rows of one head
// over a prepared head, the same bits as each row alone: row r's query at
// queries + r * query_stride sees keys first[r]..last[r] (< kv.positions),
// uses scratch + r * scratch_stride (last[r] + 1 floats) and writes
// out + r * out_stride. Rows share each block of keys while it is in cache.
void GgmlAttendPromptRows(const float* queries, int64_t query_stride, int count,
                          const int64_t* first, const int64_t* last, const GgmlPreparedKv& kv,
                          int64_t head_dim, float scale, GgmlVariant variant, float* scratch,
                          int64_t scratch_stride, float* out, int64_t out_stride);

namespace ggml_ops_internal {
// Whether GgmlAttendRow's value sums use their register-blocked loops (the
// default) or the scalar loop; both compute the same steps (tests).
void UseRegisterPaths(bool use);
}  // namespace ggml_ops_internal

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_GGML_OPS_H_
