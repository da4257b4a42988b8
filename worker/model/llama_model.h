// The decoder of the Llama family (llama/mistral, qwen2, phi3, phi2; the
// variants are in ModelConfig): immutable weights shared by every job, and an
// explicit forward(tokens, pos, cache) over a job's own KV cache (gpt-fast
// style).
#ifndef LLORCH_WORKER_MODEL_LLAMA_MODEL_H_
#define LLORCH_WORKER_MODEL_LLAMA_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "worker/gguf/ggml_types.h"
#include "worker/model/activation_pool.h"
#include "worker/model/decode_graphs.h"
#include "worker/model/float_matmul.h"
#include "worker/model/ggml_ops.h"
#include "worker/model/kquant_matmul.h"
#include "worker/model/kv_cache.h"
#include "worker/model/model_config.h"

namespace llorch {

class GgufFile;

struct LoadOptions {
  std::string device = "cpu";  // cpu | cuda | mps
  // For block-quantised weights, round each activation row to 8 bits per
  // block before the product, as ggml's quantised dot products do, so that
  // a quantised file gives the numbers it gives under llama.cpp (whose
  // results quantised models are published and evaluated with).
  bool quantize_activations = true;
  // kGgmlF16: GELU as ggml's CPU backend computes it, input and output
  // rounded to F16 (a lookup table), 0 below -10, identity above 10: what a
  // GGUF gives under llama.cpp. kExact: the tanh approximation in F32, as
  // transformers computes it. kAuto: kGgmlF16 for GGUF files, kExact for
  // Hugging Face checkpoint directories.
  enum class Gelu { kAuto, kExact, kGgmlF16 };
  Gelu gelu = Gelu::kAuto;
  // F16 and BF16 weights on the CPU: round each activation to the weight's
  // type before the product, as ggml does (the type's vec_dot_type), so a
  // GGUF gives llama.cpp's numbers. Off for Hugging Face directories
  // (LoadServedModel), which transformers multiplies in F32.
  bool round_activations_to_weight_type = true;
  // Whose float order the CPU path follows (ggml_ops.h): unset means
  // LLORCH_GGML_VARIANT or, without it, the variant ggml picks on this CPU.
  std::optional<GgmlVariant> ggml_variant;
  // Element type of every job's KV cache (NewCache).
  KvType kv_type = KvType::kF32;
  // CPU weight matrices whose rows the file holds as the kernels read them
  // (F32/F16/BF16, Q5_K/Q6_K; fused ones when their parts lie back to back)
  // are multiplied straight from the file's mapping: a load in a fraction of
  // a second, the page cache's pages shared. False copies them into fresh
  // memory (llama.cpp's --no-mmap): measured on a VM, F32 decode 8-10%
  // faster, its load 25 s instead of 0.2.
  bool map_weights = true;
  // Element type of the weights and activations on the libtorch path, which
  // CUDA and MPS take (norms and softmax computed in F32 inside, as
  // transformers does). kAuto: BF16 on CUDA, F16 on MPS, and on the CPU
  // llorch's own kernels over the file's types. kF32/kF16/kBF16 on the CPU
  // take the libtorch path too: what a GPU computes, for tests and
  // comparisons (slower than the CPU kernels). Quantised files are
  // dequantised to this type at load; only F32 rounds activations as ggml
  // does (quantize_activations).
  enum class Dtype { kAuto, kF32, kF16, kBF16 };
  Dtype dtype = Dtype::kAuto;
  // CUDA, below F32: each decode step's kernels captured once per shape
  // (jobs, positions) as a CUDA graph and replayed (DecodeGraphs), as vLLM
  // and gpt-fast do. No effect elsewhere.
  bool cuda_graphs = true;
  // CUDA, below F32, in builds with llorch's CUDA kernels
  // (-DLLORCH_CUDA_KERNELS=ON, device_kernels.h): products of at most 8 rows
  // (a decode step's jobs) reading each weight byte once instead of cuBLAS,
  // the residual add + RMSNorm and the SiLU-gated product fused, a decode
  // step's RoPE, pool writes and attention in two kernels. No effect elsewhere.
  bool cuda_kernels = true;
  // The libtorch path's one-token steps over a shared pool attend over their
  // positions padded to a multiple of this (masked), so that steps' shapes
  // repeat and a graph serves many of them; every such step, also a lone
  // job's, takes that path. -1: 256 where CUDA graphs are used, else 0 (no
  // padding; a lone job takes the plain path). Tests set it on the CPU.
  int64_t decode_pad = -1;
};

// "auto", "f32", "f16" or "bf16".
absl::StatusOr<LoadOptions::Dtype> ParseDtype(absl::string_view name);

// The KV cache type `--kv_type auto` stands for: F32 where the CPU's kernels
// run (options.dtype kAuto on the CPU), else the libtorch path's type (BF16
// on CUDA by default), as vLLM's cache follows the model's dtype.
KvType DefaultKvType(const LoadOptions& options);
// ParseKvType, plus "auto": DefaultKvType(options).
absl::StatusOr<KvType> ParseKvTypeFor(absl::string_view name, const LoadOptions& options);

// How activations are rounded before meeting a weight matrix.
enum class ActivationQuant {
  kNone,  // F32/F16/BF16 weights: activations stay F32
  kQ8_0,  // blocks of 32, scale = amax / 127 stored as F16 (Q4_0, Q5_0, Q8_0 weights)
  kQ8_1,  // as Q8_0; the weight's offset meets the same rounded activations (Q4_1, Q5_1)
  kQ8_K,  // blocks of 256, scale = -max / 127 in F32 (K-quants: Q2_K .. Q6_K)
};

// One job's part of a batched forward: `tokens` at absolute positions
// [pos, pos + n) over the job's own cache.
struct ForwardItem {
  absl::Span<const int32_t> tokens;
  int64_t pos = 0;
  KvCache* cache = nullptr;
  bool all_logits = false;  // logits for every token, not just the last
  // Generated tokens (not a prompt chunk): each row is computed exactly as
  // a one-token step (llama.cpp's one-token attention order, no row
  // grouping), prompt rows in its batch order, so that both scoring and
  // generation agree with llama.cpp to the bit. Set by the job's phase,
  // never by the batch's shape, so a job's results do not depend on what it
  // is batched with; several generated tokens in one item (a preempted job
  // recomputed) give what their one-token steps gave.
  bool decode = false;
};

// cos and sin of RoPE's angles for each position ([positions, rope_dim / 2],
// F32, on the CPU), as ggml computes them.
std::pair<at::Tensor, at::Tensor> RopeAngles(const ModelConfig& config,
                                             absl::Span<const int64_t> positions);

class LlamaModel {
 public:
  // Dequantises every weight to options.dtype's type on `options.device`
  // (on the CPU with dtype kAuto: keeps them in their GGUF type, multiplied
  // from the file's mapping where its rows are laid out as the kernel reads
  // them). The GgufFile may be closed
  // afterwards: the model holds on to its data_owner().
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const GgufFile& gguf,
                                                          const LoadOptions& options);

  ~LlamaModel();

  const ModelConfig& config() const { return config_; }
  c10::Device device() const { return device_; }
  int64_t num_parameters() const { return num_parameters_; }
  // Bytes the weights take in memory, each buffer counted once (a tied
  // embedding shares the LM head's). RoPE tables and KV caches excluded.
  int64_t WeightBytes() const;
  // Whose float order the CPU path follows (see LoadOptions::ggml_variant).
  GgmlVariant ggml_variant() const { return ggml_variant_; }
  KvType kv_type() const { return kv_type_; }
  // The element type of weights and activations: kFloat where the CPU
  // kernels run (they keep each weight in its file's type), else the
  // libtorch path's (LoadOptions::dtype).
  at::ScalarType dtype() const { return dtype_; }
  // Whether the CPU's own kernels multiply (else libtorch, in dtype()).
  bool cpu_kernels() const { return cpu_kernels_; }
  // Whether decode steps are replayed as CUDA graphs (LoadOptions::cuda_graphs).
  // False once a capture has failed (the steps then run without them).
  bool cuda_graphs() const { return graphs_ != nullptr && graphs_->ok(); }
  // Whether llorch's CUDA kernels run where they apply (LoadOptions::cuda_kernels).
  bool cuda_kernels() const { return device_kernels_; }

  // Runs `tokens` at absolute positions [pos, pos + n) over `cache`, whose
  // positions [0, pos) must already hold this sequence's keys and values.
  // Writes the new keys/values and sets cache->num_tokens() to pos + n.
  // Returns float32 logits on the CPU: [n, vocab] if all_logits, else
  // [1, vocab] for the last token. Const: the model holds no request state.
  // `decode`: see ForwardItem::decode.
  absl::StatusOr<at::Tensor> Forward(absl::Span<const int32_t> tokens, int64_t pos,
                                     KvCache* cache, bool all_logits, bool decode = false) const;

  // Several jobs in one forward (continuous batching): prefill chunks and
  // decode tokens of different lengths and positions share the matrix
  // products; attention is per item over its own cache. Returns the logits
  // rows of every item in order (n rows if all_logits, else 1), [rows, vocab].
  absl::StatusOr<at::Tensor> ForwardBatch(absl::Span<const ForwardItem> items) const;

  // A fresh cache for one job, of kv_type().
  std::unique_ptr<KvCache> NewCache(int64_t capacity) const;
  // A pool of `num_blocks` blocks of `block_size` positions, of kv_type(),
  // for paged caches (KvCache(KvPool*)).
  std::unique_ptr<KvPool> NewPool(int64_t num_blocks, int64_t block_size) const;

 private:
  class Loader;  // llama_model_load.cc

  // A weight matrix [out, in] and the activation rounding its file type implies.
  struct Matrix {
    at::Tensor weight;
    ActivationQuant quant = ActivationQuant::kNone;
    at::Tensor block_offsets;  // kQ8_1 on the F32 path: the weight's per-block m, [out, in / 32]
    // CPU kernel path (quantize_activations and a supported type): the ggml
    // blocks, [out, row bytes]; `weight` is then undefined. On the CPU, F32,
    // F16 and BF16 weights are held here too, in their own type (FloatMatmul).
    at::Tensor raw;
    GgmlType raw_type = GgmlType::kF32;
    // `raw` holds Q4_0/Q8_0 rows (InterleavedMatmul) or Q4_K rows
    // (KQuantInterleavedMatmul) interleaved by 8, as llama.cpp repacks them
    // on the CPU.
    bool interleaved = false;
    // `raw` holds Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K rows packed by 16 (AmxMatmul):
    // variant kAmx.
    bool amx = false;
    // K-quant `raw` rows: which of llama.cpp's orders they follow.
    KQuantOrder kquant_order = KQuantOrder::kVecDot;
    int64_t rows = 0;
    int64_t in = 0;
  };
  // Biases are undefined tensors where the architecture has none.
  struct Layer {
    at::Tensor attn_norm, attn_norm_bias;  // [hidden]
    Matrix wqkv;                           // [q_dim + 2 * kv_dim, hidden]: q, k, v rows
    at::Tensor qkv_bias;                   // [q_dim + 2 * kv_dim]
    Matrix wo;                             // [hidden, q_dim]
    at::Tensor wo_bias;                    // [hidden]
    at::Tensor ffn_norm;                   // [hidden]; undefined with a parallel residual
    Matrix w_ffn_in;                       // [2 * ffn, hidden] gate then up | [ffn, hidden] up
    at::Tensor ffn_in_bias;                // [ffn] (GELU FFN)
    Matrix w_down;                         // [hidden, ffn]
    at::Tensor down_bias;                  // [hidden]
  };

  // The token embedding. On the CPU, for a file whose embedding is not F32,
  // the ggml rows (shared with the LM head when the two are tied) are kept
  // and a row is dequantised when it is looked up, as ggml's get_rows does:
  // no F32 copy of the whole table. Otherwise an F32 table on the device.
  struct Embedding {
    at::Tensor table;  // [vocab, hidden] F32, or undefined
    at::Tensor raw;    // [vocab, row bytes] ggml rows, or undefined
    bool interleaved = false;  // `raw` is the LM head's, rows interleaved by 8
    bool amx = false;          // `raw` is the LM head's, packed by 16 (AmxMatmul)
    GgmlType type = GgmlType::kF32;
    int64_t hidden = 0;
  };

  LlamaModel() : device_(c10::kCPU) {}
  // The rows of `ids` ([N] int64 on the device): [N, hidden] F32.
  at::Tensor Embed(const at::Tensor& ids) const;
  absl::Status Validate(const ForwardItem& item) const;
  // Every item valid, and no cache twice.
  absl::Status ValidateBatch(absl::Span<const ForwardItem> items) const;
  // Writes the item's keys/values for `layer` and attends: [n, hidden].
  at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       int64_t layer, const ForwardItem& item) const;
  // CPU: attends the item's n query rows (`query`, [n, heads, head_dim]) over
  // its cache, whose keys/values are written: `out` [n, q_dim]. Heads are
  // spread over `parallel_for` (in at least `min_tasks` tasks where there are
  // enough heads); a 16-bit or Q8_0 cache is widened on the calling thread's
  // buffers.
  void AttendCpu(int64_t layer, const ForwardItem& item, const float* query, int64_t n,
                 float* out, const ParallelFor& parallel_for, int64_t min_tasks = 1) const;
  // Rotates the fused QKV product's q and k rows (qkv: [N, q_dim + 2 *
  // kv_dim], items' rows from item_begin on) and attends each item over its
  // own cache: [N, q_dim].
  at::Tensor AttentionOfItems(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                              int64_t layer, absl::Span<const ForwardItem> items,
                              absl::Span<const int64_t> item_begin) const;
  // CPU, one generated token per item: each item's query and key rotated
  // (qkv: [items, q_dim + 2 * kv_dim] unrotated; cos, sin: [items, rope_dim /
  // 2]), its keys/values written, then attended, on raw rows. Enough items
  // spread over the threads, each item's heads on one (one parallel region
  // per layer); fewer have each item's heads split over the threads.
  // [items, q_dim].
  at::Tensor AttentionOfDecodeSteps(const at::Tensor& qkv, const at::Tensor& cos,
                                    const at::Tensor& sin, int64_t layer,
                                    absl::Span<const ForwardItem> items) const;
  // The libtorch path's one-token steps of jobs sharing one KV pool (the
  // worker's), as the device reads them: one int64 tensor, [3B + B*T] =
  // token ids [B] | positions [B] | each job's pool row for its new position
  // [B] | the pool rows of job b's positions 0..T-1 [B, T] (past its own:
  // row 0, masked). T is the longest job's positions, padded to decode_pad_;
  // with decode_pad_ set B is padded too (to 4, 8, then multiples of 8: few
  // shapes, few graphs) by copies of job 0's step, whose key and value rows
  // are the same bits written to the same pool row.
  struct DecodeBatch {
    KvPool* pool = nullptr;
    int64_t jobs = 0;       // B, padded
    int64_t num_items = 0;  // the real jobs: the first rows
    int64_t positions = 0;  // T
    std::vector<int64_t> inputs;
  };
  // For `items` when each is one token over the same pool (at least two, or
  // one where decode_pad_ is set); nullopt otherwise.
  std::optional<DecodeBatch> MakeDecodeBatch(absl::Span<const ForwardItem> items) const;
  // The decode batch's step on the device, from `inputs` (DecodeBatch's,
  // there): every op a device op, shapes fixed by (B, T), so a CUDA graph can
  // capture it. Writes the new keys and values; [B, vocab] logits.
  at::Tensor DecodeBatchLogits(const at::Tensor& inputs, KvPool* pool, int64_t jobs,
                               int64_t positions) const;
  // The decode batch's logits for `items`, [items, vocab] on the CPU: the
  // step replayed as a CUDA graph where graphs_ has it, else run.
  at::Tensor RunDecodeBatch(DecodeBatch& batch, absl::Span<const ForwardItem> items) const;
  // Writes the jobs' keys and values (q: [B, heads, head_dim], k, v: [B,
  // kv_heads, head_dim], rotated) with one index_copy_ each and attends for
  // all jobs at once over one gather of their positions (`read_slots` [B*T],
  // `mask` [B, 1, 1, T]): [B, q_dim].
  at::Tensor AttentionOfDecodeBatch(const at::Tensor& q, const at::Tensor& k,
                                    const at::Tensor& v, int64_t layer, KvPool* pool,
                                    const at::Tensor& write_slots, const at::Tensor& read_slots,
                                    const at::Tensor& mask) const;
  // Scores of grouped queries against keys, scaled as this dtype's reference
  // computes them: qg [..., group, head_dim], keys [..., T, head_dim].
  at::Tensor AttentionScores(const at::Tensor& qg, const at::Tensor& keys) const;
  at::Tensor Norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) const;
  // *x += delta (if defined), then its norm: the residual sum and the norm
  // after it in one pass.
  at::Tensor AddNorm(at::Tensor* x, const at::Tensor& delta, const at::Tensor& weight,
                     const at::Tensor& bias) const;
  // How each row of a Linear's input is multiplied, as llama.cpp would have
  // computed it: one flag per row of x, or null for none.
  struct RowKinds {
    const uint8_t* in_groups_of_4 = nullptr;  // Q4_K gemm rows (see KQuantMatmul)
    const uint8_t* decode = nullptr;          // generated tokens (FloatMatmul, else FloatGemm)
  };
  // x [n, in] times the matrix, plus `bias` [out] where defined: [n, out].
  at::Tensor Linear(const at::Tensor& x, const Matrix& matrix, const RowKinds& kinds,
                    const at::Tensor& bias = at::Tensor()) const;
  // One decoder layer: *x (the residual stream, [N, hidden]) plus the
  // pending *residual, normed, through attention (`attend`: the fused QKV
  // product [N, q_dim + 2 * kv_dim] to [N, q_dim]) and the FFN. Leaves the
  // FFN's output in *residual (added by the next layer's norm) or, with a
  // parallel residual, in *x.
  void DecoderLayer(int64_t l, at::Tensor* x, at::Tensor* residual, const RowKinds& kinds,
                    const std::function<at::Tensor(const at::Tensor& qkv)>& attend) const;
  // The product alone, F32 (the CPU kernels, or libtorch's in F32).
  at::Tensor Product(const at::Tensor& x, const Matrix& matrix, const RowKinds& kinds) const;
  // Linear for F32/F16/BF16 rows in `matrix.raw` (CPU).
  at::Tensor FloatLinear(const at::Tensor& x, const Matrix& matrix, const uint8_t* decode) const;
  at::Tensor Rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;

  // silu(gate) * up over the fused [n, 2 * ffn] product, as ggml computes it on the CPU.
  at::Tensor SiluGated(const at::Tensor& gate_up) const;
  at::Tensor Gelu(const at::Tensor& x) const;
  // An uninitialised activation tensor of `like`'s type and device; on the
  // CPU from activations_.
  at::Tensor NewActivation(at::IntArrayRef sizes, const at::TensorOptions& like) const;
  // cos and sin of the positions `pos` ([n], on device_): rows of the tables
  // off the CPU, RopeAngles on it. [n, rope_dim / 2] each.
  std::pair<at::Tensor, at::Tensor> RopeRows(const at::Tensor& pos) const;

  ModelConfig config_;
  bool ggml_gelu_ = true;
  GgmlVariant ggml_variant_ = GgmlVariant::kAvx2;
  KvType kv_type_ = KvType::kF32;
  bool round_activations_to_weight_type_ = true;
  at::ScalarType dtype_ = at::kFloat;
  // The CPU's own kernels (LoadOptions::dtype kAuto on the CPU); otherwise
  // every product is libtorch's, in dtype_.
  bool cpu_kernels_ = true;
  c10::Device device_;
  // CPU steps' outputs of ops, kept for the next op and step (EndStep after
  // each ForwardBatch).
  mutable ActivationPool activations_;
  int64_t num_parameters_ = 0;
  Embedding token_embd_;
  at::Tensor output_norm_, output_norm_bias_;  // [hidden]
  Matrix output_;           // [vocab, hidden]; when tied, its raw rows are token_embd_'s
  at::Tensor output_bias_;  // [vocab] (phi2)
  std::vector<Layer> layers_;
  at::Tensor rope_cos_;     // [context, rope_dim / 2], off the CPU only (RopeRows)
  at::Tensor rope_sin_;     // [context, rope_dim / 2]
  int64_t decode_pad_ = 0;  // LoadOptions::decode_pad, resolved
  std::unique_ptr<DecodeGraphs> graphs_;  // CUDA graphs of decode steps, or null
  bool device_kernels_ = false;            // LoadOptions::cuda_kernels, where built
};

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_LLAMA_MODEL_H_
