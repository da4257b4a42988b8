#ifndef LLORCH_COMMON_FLOAT_BITS_H_
#define LLORCH_COMMON_FLOAT_BITS_H_

// A float's IEEE bits and back (memcpy: no aliasing questions; compiles to a move).

#include <cstdint>
#include <cstring>

namespace llorch {

inline float BitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint32_t FloatToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

}  // namespace llorch

#endif  // LLORCH_COMMON_FLOAT_BITS_H_
