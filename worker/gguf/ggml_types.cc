#include "worker/gguf/ggml_types.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace llorch {
namespace {

constexpr int64_t kQK = 32;    // elements per block of the legacy quants
constexpr int64_t kQK_K = 256;  // elements per super-block of the K-quants

struct TypeTraits {
  const char* name;  // nullptr: unknown type number
  int64_t block_size;
  size_t block_bytes;
};

// Indexed by type number; layouts follow ggml's block_* structs.
constexpr TypeTraits kTraits[] = {
    {"F32", 1, 4},          // 0
    {"F16", 1, 2},          // 1
    {"Q4_0", kQK, 18},      // 2
    {"Q4_1", kQK, 20},      // 3
    {nullptr, 0, 0},        // 4 (removed Q4_2)
    {nullptr, 0, 0},        // 5 (removed Q4_3)
    {"Q5_0", kQK, 22},      // 6
    {"Q5_1", kQK, 24},      // 7
    {"Q8_0", kQK, 34},      // 8
    {"Q8_1", kQK, 36},      // 9
    {"Q2_K", kQK_K, 84},    // 10
    {"Q3_K", kQK_K, 110},   // 11
    {"Q4_K", kQK_K, 144},   // 12
    {"Q5_K", kQK_K, 176},   // 13
    {"Q6_K", kQK_K, 210},   // 14
    {"Q8_K", kQK_K, 292},   // 15
    {"IQ2_XXS", kQK_K, 66}, // 16
    {"IQ2_XS", kQK_K, 74},  // 17
    {"IQ3_XXS", kQK_K, 98}, // 18
    {"IQ1_S", kQK_K, 50},   // 19
    {"IQ4_NL", kQK, 18},    // 20
    {"IQ3_S", kQK_K, 110},  // 21
    {"IQ2_S", kQK_K, 82},   // 22
    {"IQ4_XS", kQK_K, 136}, // 23
    {"I8", 1, 1},           // 24
    {"I16", 1, 2},          // 25
    {"I32", 1, 4},          // 26
    {"I64", 1, 8},          // 27
    {"F64", 1, 8},          // 28
    {"IQ1_M", kQK_K, 56},   // 29
    {"BF16", 1, 2},         // 30
    {nullptr, 0, 0},        // 31 (removed Q4_0_4_4)
    {nullptr, 0, 0},        // 32 (removed Q4_0_4_8)
    {nullptr, 0, 0},        // 33 (removed Q4_0_8_8)
    {"TQ1_0", kQK_K, 54},   // 34
    {"TQ2_0", kQK_K, 66},   // 35
};
constexpr uint32_t kNumTraits = sizeof(kTraits) / sizeof(kTraits[0]);

const TypeTraits* Traits(GgmlType type) {
  const uint32_t index = static_cast<uint32_t>(type);
  if (index >= kNumTraits || kTraits[index].name == nullptr) return nullptr;
  return &kTraits[index];
}

// Exact IEEE half -> single conversion, subnormals, infinities and NaN
// payloads included.
uint32_t HalfBitsToFloatBits(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    if (mantissa == 0) return sign;
    // Subnormal half: normalise into a float exponent.
    uint32_t float_exponent = 127 - 15 + 1;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --float_exponent;
    }
    mantissa &= 0x3ffu;
    return sign | (float_exponent << 23) | (mantissa << 13);
  }
  if (exponent == 0x1f) return sign | 0x7f800000u | (mantissa << 13);
  return sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
}

// All 65536 halves, converted once: a table lookup beats the bit fiddling
// in the inner loops.
const float* HalfTable() {
  static const float* table = [] {
    auto* t = new float[65536];
    for (uint32_t h = 0; h < 65536; ++h) {
      const uint32_t bits = HalfBitsToFloatBits(static_cast<uint16_t>(h));
      std::memcpy(&t[h], &bits, sizeof(float));
    }
    return t;
  }();
  return table;
}

inline uint16_t LoadU16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);  // little-endian host (x86-64/aarch64)
  return v;
}

// Each Dequant* converts `num_blocks` consecutive blocks.
void DequantF32(const uint8_t* src, int64_t n, float* out) {
  std::memcpy(out, src, static_cast<size_t>(n) * sizeof(float));
}

void DequantF16(const uint8_t* src, int64_t n, float* out) {
  const float* table = HalfTable();
  for (int64_t i = 0; i < n; ++i) out[i] = table[LoadU16(src + 2 * i)];
}

void DequantBF16(const uint8_t* src, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = static_cast<uint32_t>(LoadU16(src + 2 * i)) << 16;
    std::memcpy(&out[i], &bits, sizeof(float));
  }
}

void DequantQ8_0(const uint8_t* src, int64_t num_blocks, float* y) {
  const float* half = HalfTable();
  for (int64_t b = 0; b < num_blocks; ++b, src += 34, y += kQK) {
    const float d = half[LoadU16(src)];
    const int8_t* qs = reinterpret_cast<const int8_t*>(src + 2);
    for (int j = 0; j < kQK; ++j) y[j] = qs[j] * d;
  }
}

void DequantQ4_0(const uint8_t* src, int64_t num_blocks, float* y) {
  const float* half = HalfTable();
  for (int64_t b = 0; b < num_blocks; ++b, src += 18, y += kQK) {
    const float d = half[LoadU16(src)];
    const uint8_t* qs = src + 2;
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = ((qs[j] & 0x0f) - 8) * d;
      y[j + kQK / 2] = ((qs[j] >> 4) - 8) * d;
    }
  }
}

void DequantQ4_1(const uint8_t* src, int64_t num_blocks, float* y) {
  const float* half = HalfTable();
  for (int64_t b = 0; b < num_blocks; ++b, src += 20, y += kQK) {
    const float d = half[LoadU16(src)];
    const float m = half[LoadU16(src + 2)];
    const uint8_t* qs = src + 4;
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = (qs[j] & 0x0f) * d + m;
      y[j + kQK / 2] = (qs[j] >> 4) * d + m;
    }
  }
}

void DequantQ5_0(const uint8_t* src, int64_t num_blocks, float* y) {
  const float* half = HalfTable();
  for (int64_t b = 0; b < num_blocks; ++b, src += 22, y += kQK) {
    const float d = half[LoadU16(src)];
    const uint32_t qh = LoadU32(src + 2);
    const uint8_t* qs = src + 6;
    for (int j = 0; j < kQK / 2; ++j) {
      const uint8_t high0 = ((qh >> j) << 4) & 0x10;
      const uint8_t high1 = (qh >> (j + 12)) & 0x10;
      y[j] = (((qs[j] & 0x0f) | high0) - 16) * d;
      y[j + kQK / 2] = (((qs[j] >> 4) | high1) - 16) * d;
    }
  }
}

void DequantQ5_1(const uint8_t* src, int64_t num_blocks, float* y) {
  const float* half = HalfTable();
  for (int64_t b = 0; b < num_blocks; ++b, src += 24, y += kQK) {
    const float d = half[LoadU16(src)];
    const float m = half[LoadU16(src + 2)];
    const uint32_t qh = LoadU32(src + 4);
    const uint8_t* qs = src + 8;
    for (int j = 0; j < kQK / 2; ++j) {
      const uint8_t high0 = ((qh >> j) << 4) & 0x10;
      const uint8_t high1 = (qh >> (j + 12)) & 0x10;
      y[j] = ((qs[j] & 0x0f) | high0) * d + m;
      y[j + kQK / 2] = ((qs[j] >> 4) | high1) * d + m;
    }
  }
}

void DequantQ2_K(const uint8_t* src, int64_t num_blocks, float* y) {
  const float* half = HalfTable();
  for (int64_t b = 0; b < num_blocks; ++b, src += 84) {
    const uint8_t* scales = src;
    const uint8_t* q = src + 16;
    const float d = half[LoadU16(src + 80)];
    const float dmin = half[LoadU16(src + 82)];
    int is = 0;
    for (int n = 0; n < kQK_K; n += 128) {
      int shift = 0;
      for (int j = 0; j < 4; ++j) {
        uint8_t sc = scales[is++];
        float dl = d * (sc & 0x0f), ml = dmin * (sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * ((q[l] >> shift) & 3) - ml;
        sc = scales[is++];
        dl = d * (sc & 0x0f);
        ml = dmin * (sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * ((q[l + 16] >> shift) & 3) - ml;
        shift += 2;
      }
      q += 32;
    }
  }
}

void DequantQ3_K(const uint8_t* src, int64_t num_blocks, float* y) {
  const float* half = HalfTable();
  constexpr uint32_t kMask1 = 0x03030303, kMask2 = 0x0f0f0f0f;
  for (int64_t b = 0; b < num_blocks; ++b, src += 110) {
    const uint8_t* hmask = src;
    const uint8_t* q = src + 32;
    const float d_all = half[LoadU16(src + 108)];
    uint32_t aux[4];
    std::memcpy(aux, src + 96, 12);
    const uint32_t tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & kMask2) | (((tmp >> 4) & kMask1) << 4);
    aux[3] = ((aux[1] >> 4) & kMask2) | (((tmp >> 6) & kMask1) << 4);
    aux[0] = (aux[0] & kMask2) | (((tmp >> 0) & kMask1) << 4);
    aux[1] = (aux[1] & kMask2) | (((tmp >> 2) & kMask1) << 4);
    int8_t scales[16];
    std::memcpy(scales, aux, 16);
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < kQK_K; n += 128) {
      int shift = 0;
      for (int j = 0; j < 4; ++j) {
        float dl = d_all * (scales[is++] - 32);
        for (int l = 0; l < 16; ++l) {
          *y++ = dl * (((q[l] >> shift) & 3) - ((hmask[l] & m) ? 0 : 4));
        }
        dl = d_all * (scales[is++] - 32);
        for (int l = 0; l < 16; ++l) {
          *y++ = dl * (((q[l + 16] >> shift) & 3) - ((hmask[l + 16] & m) ? 0 : 4));
        }
        shift += 2;
        m <<= 1;
      }
      q += 32;
    }
  }
}

// 6-bit scale and min number j of a Q4_K/Q5_K super-block.
inline void ScaleMinK4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void DequantQ4_K(const uint8_t* src, int64_t num_blocks, float* y) {
  const float* half = HalfTable();
  for (int64_t b = 0; b < num_blocks; ++b, src += 144) {
    const float d = half[LoadU16(src)];
    const float dmin = half[LoadU16(src + 2)];
    const uint8_t* scales = src + 4;
    const uint8_t* q = src + 16;
    for (int j = 0, is = 0; j < kQK_K; j += 64, is += 2, q += 32) {
      uint8_t sc, m;
      ScaleMinK4(is, scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      ScaleMinK4(is + 1, scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0x0f) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
    }
  }
}

void DequantQ5_K(const uint8_t* src, int64_t num_blocks, float* y) {
  const float* half = HalfTable();
  for (int64_t b = 0; b < num_blocks; ++b, src += 176) {
    const float d = half[LoadU16(src)];
    const float dmin = half[LoadU16(src + 2)];
    const uint8_t* scales = src + 4;
    const uint8_t* qh = src + 16;
    const uint8_t* ql = src + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < kQK_K; j += 64, is += 2, ql += 32) {
      uint8_t sc, m;
      ScaleMinK4(is, scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      ScaleMinK4(is + 1, scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) {
        *y++ = d1 * ((ql[l] & 0x0f) + ((qh[l] & u1) ? 16 : 0)) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        *y++ = d2 * ((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
      }
      u1 <<= 2;
      u2 <<= 2;
    }
  }
}

void DequantQ6_K(const uint8_t* src, int64_t num_blocks, float* y) {
  const float* half = HalfTable();
  for (int64_t b = 0; b < num_blocks; ++b, src += 210) {
    const uint8_t* ql = src;
    const uint8_t* qh = src + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(src + 192);
    const float d = half[LoadU16(src + 208)];
    for (int n = 0; n < kQK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[is] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

void DequantQ8_K(const uint8_t* src, int64_t num_blocks, float* y) {
  for (int64_t b = 0; b < num_blocks; ++b, src += 292, y += kQK_K) {
    float d;
    std::memcpy(&d, src, sizeof(float));
    const int8_t* qs = reinterpret_cast<const int8_t*>(src + 4);
    for (int j = 0; j < kQK_K; ++j) y[j] = d * qs[j];
  }
}

using DequantFn = void (*)(const uint8_t*, int64_t, float*);

DequantFn DequantFor(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return DequantF32;
    case GgmlType::kF16: return DequantF16;
    case GgmlType::kBF16: return DequantBF16;
    case GgmlType::kQ8_0: return DequantQ8_0;
    case GgmlType::kQ4_0: return DequantQ4_0;
    case GgmlType::kQ4_1: return DequantQ4_1;
    case GgmlType::kQ5_0: return DequantQ5_0;
    case GgmlType::kQ5_1: return DequantQ5_1;
    case GgmlType::kQ2_K: return DequantQ2_K;
    case GgmlType::kQ3_K: return DequantQ3_K;
    case GgmlType::kQ4_K: return DequantQ4_K;
    case GgmlType::kQ5_K: return DequantQ5_K;
    case GgmlType::kQ6_K: return DequantQ6_K;
    case GgmlType::kQ8_K: return DequantQ8_K;
    default: return nullptr;
  }
}

// Below this many elements a thread costs more than it saves.
constexpr int64_t kMinElementsPerThread = int64_t{1} << 20;

}  // namespace

const char* GgmlTypeName(GgmlType type) {
  const TypeTraits* traits = Traits(type);
  if (traits != nullptr) return traits->name;
  // Unknown numbers: a small ring of buffers keeps this allocation-free for
  // callers that only format the name into a message right away.
  static thread_local char buffers[4][24];
  static thread_local int next = 0;
  char* buffer = buffers[next++ & 3];
  std::snprintf(buffer, sizeof(buffers[0]), "type %u", static_cast<uint32_t>(type));
  return buffer;
}

bool GgmlTypeKnown(GgmlType type) { return Traits(type) != nullptr; }

int64_t GgmlBlockSize(GgmlType type) {
  const TypeTraits* traits = Traits(type);
  return traits == nullptr ? 0 : traits->block_size;
}

size_t GgmlBlockBytes(GgmlType type) {
  const TypeTraits* traits = Traits(type);
  return traits == nullptr ? 0 : traits->block_bytes;
}

size_t GgmlRowBytes(GgmlType type, int64_t num_elements) {
  const TypeTraits* traits = Traits(type);
  if (traits == nullptr || num_elements < 0) return 0;
  return static_cast<size_t>(num_elements / traits->block_size) * traits->block_bytes;
}

bool GgmlCanDequantize(GgmlType type) { return DequantFor(type) != nullptr; }

absl::Status DequantizeToF32(GgmlType type, const void* data,
                             int64_t num_elements, float* out) {
  const DequantFn fn = DequantFor(type);
  if (fn == nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        "dequantisation of ggml type ", GgmlTypeName(type), " is not supported"));
  }
  const int64_t block_size = GgmlBlockSize(type);
  if (num_elements < 0 || num_elements % block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot dequantise ", num_elements, " elements of ", GgmlTypeName(type),
        ": not a multiple of its block size ", block_size));
  }
  const auto* src = static_cast<const uint8_t*>(data);
  const int64_t num_blocks = num_elements / block_size;
  const size_t block_bytes = GgmlBlockBytes(type);

  const int64_t hardware = std::max(1u, std::thread::hardware_concurrency());
  const int64_t num_threads =
      std::min<int64_t>({hardware, 16, std::max<int64_t>(1, num_elements / kMinElementsPerThread)});
  if (num_threads <= 1) {
    fn(src, num_blocks, out);
    return absl::OkStatus();
  }
  const int64_t blocks_per_thread = (num_blocks + num_threads - 1) / num_threads;
  std::vector<std::thread> workers;
  workers.reserve(num_threads - 1);
  for (int64_t t = 1; t < num_threads; ++t) {
    const int64_t first = t * blocks_per_thread;
    const int64_t count = std::min(num_blocks, first + blocks_per_thread) - first;
    if (count <= 0) break;
    workers.emplace_back(fn, src + first * block_bytes, count, out + first * block_size);
  }
  fn(src, std::min(num_blocks, blocks_per_thread), out);
  for (std::thread& worker : workers) worker.join();
  return absl::OkStatus();
}

}  // namespace llorch
