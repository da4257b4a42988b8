// The vector kernels of AmxMatmul (amx_matmul.h): AVX-512 VNNI for a few
// activation rows, int8 tiles (AMX) for batches. Both compute llama.cpp's AMX
// order exactly (exact integer block dots, then one fma per block). This file's
// .cc is compiled with AVX-512 and AMX enabled: call only what the Supported()
// functions allow.
#ifndef LLORCH_WORKER_MODEL_AMX_KERNELS_H_
#define LLORCH_WORKER_MODEL_AMX_KERNELS_H_

#include <cstdint>

#include "worker/gguf/ggml_types.h"
#include "worker/model/kquant_matmul.h"
#include "worker/model/quant_matmul.h"

namespace llorch {
namespace amx_kernels {

using kquant_matmul_internal::Q8KBlock;
using quant_matmul_internal::ActBlock;

inline constexpr int64_t kGroupRows = 16;  // weight rows per group (one tile's columns)
inline constexpr int64_t kTileRows = 16;   // activation rows per A tile

// Where the parts of a K-quant group block (16 rows, 256 elements) lie, in
// bytes from its start (-1: the type has none); see amx_matmul.h.
struct KLayout {
  int64_t d, dmin, scales, mins, qh, qs, bytes;
};
constexpr KLayout KLayoutOf(GgmlType type) {
  return type == GgmlType::kQ4_K   ? KLayout{0, 32, 64, 192, -1, 320, 2368}
         : type == GgmlType::kQ5_K ? KLayout{0, 32, 64, 192, 320, 832, 2880}
                                   : KLayout{0, -1, 32, -1, 2336, 288, 3360};  // Q6_K
}

// Built with the kernels and running on a CPU with AVX-512 F/BW/VL/VNNI.
bool VnniSupported();
// VnniSupported(), AMX-INT8, and the kernel let this process use tile data
// (arch_prctl ARCH_REQ_XCOMP_PERM, asked once).
bool TilesSupported();

// out[t * rows + 16 g + i] for groups g in [g0, g1), i < 16, t < n. `act`: n
// rows of num_blocks blocks; `act_sum` (Q4_0): the sum of each block's qs.
void VnniGroups(GgmlType type, const uint8_t* packed, int64_t rows, int64_t num_blocks,
                const ActBlock* act, const int32_t* act_sum, int64_t n, float* out, int64_t g0,
                int64_t g1);

// The same for pairs of groups [p0, p1) (32 weight rows each) on tiles. `act`
// must hold n rounded up to a multiple of 16 rows (the padding is read, its
// products dropped).
void TileGroupPairs(GgmlType type, const uint8_t* packed, int64_t rows, int64_t num_blocks,
                    const ActBlock* act, int64_t n, float* out, int64_t p0, int64_t p1);

// The same for Q4_K, Q5_K and Q6_K (activations rounded to Q8_K).
void VnniGroupsK(GgmlType type, const uint8_t* packed, int64_t rows, int64_t num_blocks,
                 const Q8KBlock* act, int64_t n, float* out, int64_t g0, int64_t g1);
void TileGroupPairsK(GgmlType type, const uint8_t* packed, int64_t rows, int64_t num_blocks,
                     const Q8KBlock* act, int64_t n, float* out, int64_t p0, int64_t p1);

}  // namespace amx_kernels
}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_AMX_KERNELS_H_
