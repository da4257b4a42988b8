// SafeTensors files (worker/safetensors/safetensors.h) from untrusted bytes:
// the 8-byte header length, the JSON header, the tensors' byte ranges.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tests/fuzz/fuzz_support.h"
#include "worker/safetensors/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llorch;
  const std::string& path = fuzz::BytesAsFile(data, size);
  absl::StatusOr<std::unique_ptr<SafeTensorsFile>> file = SafeTensorsFile::Open(path);
  if (!file.ok()) {
    // safetensors.h: InvalidArgument for a malformed header, DataLoss for truncation.
    LLORCH_FUZZ_CHECK(absl::IsInvalidArgument(file.status()) || absl::IsDataLoss(file.status()),
                      file.status().ToString());
    return 0;
  }
  for (const auto& [name, tensor] : (*file)->tensors()) {
    LLORCH_FUZZ_CHECK((*file)->Find(name) == &tensor, name);
    LLORCH_FUZZ_CHECK(tensor.type == GgmlType::kF32 || tensor.type == GgmlType::kF16 ||
                          tensor.type == GgmlType::kBF16,
                      name);
    // The shape's element count is what the byte range holds.
    const size_t element_bytes = tensor.type == GgmlType::kF32 ? 4 : 2;
    uint64_t elements = 1;
    for (int64_t d : tensor.shape) {
      LLORCH_FUZZ_CHECK(d >= 0, absl::StrCat(name, ": negative dimension ", d));
    }
    if (std::find(tensor.shape.begin(), tensor.shape.end(), 0) != tensor.shape.end()) {
      elements = 0;
    } else {
      for (int64_t d : tensor.shape) {
        LLORCH_FUZZ_CHECK(elements <= INT64_MAX / static_cast<uint64_t>(d),
                          absl::StrCat(name, ": element count overflows"));
        elements *= static_cast<uint64_t>(d);
      }
    }
    LLORCH_FUZZ_CHECK(elements == static_cast<uint64_t>(tensor.num_elements()), name);
    LLORCH_FUZZ_CHECK(elements * element_bytes == tensor.num_bytes,
                      absl::StrCat(name, ": ", elements, " elements in ", tensor.num_bytes, " bytes"));
    LLORCH_FUZZ_CHECK(tensor.num_bytes <= size, name);
    // Touch every byte: a range outside the mapping faults.
    uint8_t sum = 0;
    for (size_t i = 0; i < tensor.num_bytes; ++i) sum ^= tensor.data[i];
    (void)sum;
  }
  for (const auto& [key, value] : (*file)->metadata()) (void)key.size(), (void)value.size();
  return 0;
}
