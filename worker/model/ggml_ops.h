#ifndef LLORCH_WORKER_MODEL_GGML_OPS_H_
#define LLORCH_WORKER_MODEL_GGML_OPS_H_

// Float operations of the decoder computed in the order and rounding of
// ggml's x86 AVX-512 CPU backend (the variant llama.cpp picks on this class of
// machine), so that the 8-bit activation rounding inside the quantised
// products that follow them lands where llama.cpp's does. Without this,
// last-bit differences flip some of those roundings and the flips compound
// over the layers (SmolLM2 Q4_1: mean |Δlogprob| 0.015-0.05 against llama.cpp).
// Each function names the ggml routine it follows. Torch-free.

#include <cstdint>

namespace llorch {

// ggml_compute_forward_rms_norm_f32: out = x / sqrt(mean(x^2) + eps) per row
// of `dim` floats (no weight), the squares summed in double.
void GgmlRmsNorm(const float* x, int64_t rows, int64_t dim, float eps, float* out);

// rotate_pairs (ggml RoPE): y0 = x0 cos - x1 sin, y1 = x0 sin + x1 cos with
// ggml's fused multiply-adds, for one head. `adjacent`: pairs (2i, 2i+1)
// (llama), else (i, i + num_pairs) (NeoX); dimensions past 2 * num_pairs
// are copied.
void GgmlRopeHead(const float* x, const float* cos, const float* sin, int64_t num_pairs,
                  bool adjacent, int64_t head_dim, float* out);

// ggml_v_expf (AVX-512): ggml's polynomial exp, to the last bit.
float GgmlExpf(float x);

// ggml_vec_swiglu_f32: out = silu(gate) * up, silu(x) = x / (1 + exp(-x)).
void GgmlSwiglu(const float* gate, const float* up, int64_t n, float* out);

// One query row of one head over keys first..last (absolute positions in a
// cache whose rows are `head_dim` floats), as llama.cpp's non-flash attention
// on the CPU: scores by ggml_vec_dot_f32 times `scale`; softmax by
// ggml_vec_soft_max_f32 (16-key chunks aligned on absolute position 0, chunk
// sums added in double); the probability-weighted sum of values by tinyBLAS
// (batches of two or more tokens: one 16-lane chain of fused multiply-adds
// per output) or, with `one_token_order`, by ggml_vec_dot_f32 (llama.cpp's
// one-token steps: four chains folded). `scratch` holds last + 1 floats.
void GgmlAttendRow(const float* query, const float* keys, const float* values, int64_t head_dim,
                   int64_t first, int64_t last, float scale, bool one_token_order,
                   float* scratch, float* out);

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_GGML_OPS_H_
