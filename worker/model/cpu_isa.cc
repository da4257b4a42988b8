#include "worker/model/cpu_isa.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace llorch {

bool ParseCpuIsa(const char* name, CpuIsa* isa) {
  for (CpuIsa candidate : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAmx}) {
    if (std::strcmp(name, CpuIsaName(candidate)) == 0) {
      *isa = candidate;
      return true;
    }
  }
  return false;
}

const char* CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAmx:
      break;
  }
  return "amx";
}

bool CpuIsaAllowed(CpuIsa isa) {
  static const CpuIsa cap = [] {
    const char* value = std::getenv("LLORCH_MAX_CPU_ISA");
    CpuIsa parsed = CpuIsa::kAmx;
    if (value != nullptr && *value != '\0' && !ParseCpuIsa(value, &parsed)) {
      parsed = CpuIsa::kAvx2;
    }
    return parsed;
  }();
  return static_cast<int>(isa) <= static_cast<int>(cap);
}

}  // namespace llorch
