// The widest x86 instruction sets llorch's CPU kernels may use: what the CPU
// has, capped by the environment variable LLORCH_MAX_CPU_ISA (avx2 | avx512 |
// amx; as oneDNN's ONEDNN_MAX_CPU_ISA caps its kernels). With avx2 an AVX-512
// machine runs, tests and measures the very kernels (and ggml's AVX2 order,
// DetectGgmlVariant) an AVX2-only machine runs; avx512 leaves AMX tiles
// unused. Unset: no cap. MaxCpuIsaFromEnvironment (ggml_ops.h) reports an
// invalid value; model loads fail with it.
// No includes: AVX-512-compiled files include this (an inline function of a
// shared header compiled there could be the copy other files call).
#ifndef LLORCH_WORKER_MODEL_CPU_ISA_H_
#define LLORCH_WORKER_MODEL_CPU_ISA_H_

namespace llorch {

// Ordered: each includes what the ones before it name.
enum class CpuIsa { kAvx2 = 0, kAvx512 = 1, kAmx = 2 };

// "avx2", "avx512" or "amx" into *isa; false for anything else.
bool ParseCpuIsa(const char* name, CpuIsa* isa);
const char* CpuIsaName(CpuIsa isa);

// Whether LLORCH_MAX_CPU_ISA allows kernels of `isa` (read once per process;
// an invalid value allows only AVX2). The CPU's own features are each
// kernel's Supported() check beside this one.
bool CpuIsaAllowed(CpuIsa isa);

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_CPU_ISA_H_
