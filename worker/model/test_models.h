// Test-only: where the test models live. "smollm2" is the real model
// ($LLORCH_DEFAULT_MODEL); other names are random-weight models written by
// tests/make_test_models.sh into LLORCH_TESTDATA_DIR.
#ifndef LLORCH_WORKER_MODEL_TEST_MODELS_H_
#define LLORCH_WORKER_MODEL_TEST_MODELS_H_

#include <cstdlib>
#include <string>

namespace llorch {

inline std::string TestModelPath(const std::string& name) {
  if (name == "smollm2") {
    const char* path = std::getenv("LLORCH_DEFAULT_MODEL");
    return path != nullptr ? path : "";
  }
  return std::string(LLORCH_TESTDATA_DIR) + "/" + name + ".gguf";
}

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_TEST_MODELS_H_
