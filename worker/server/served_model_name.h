// The name a worker serves its model under when --served_model_name is not
// given: the model file's name without its extension, or the model
// directory's name as it is (vLLM names a model by its path; llorch keeps
// the last component, since schedulers match names across machines).
#ifndef LLORCH_WORKER_SERVER_SERVED_MODEL_NAME_H_
#define LLORCH_WORKER_SERVER_SERVED_MODEL_NAME_H_

#include <string>

namespace llorch {

// ".../SmolLM2-135M-Instruct.Q4_1.gguf" -> "SmolLM2-135M-Instruct.Q4_1";
// a directory ".../Qwen3-0.6B/" -> "Qwen3-0.6B" (a directory keeps its
// dots). Not the GGUF's general.name.
std::string DefaultServedModelName(const std::string& model_path);

}  // namespace llorch

#endif  // LLORCH_WORKER_SERVER_SERVED_MODEL_NAME_H_
