// The defaults of every generation parameter, in one place for the worker's
// API (fields absent from ExecuteRequest) and the CLI (flags not given).
// They turn every transform off: plain sampling from the model's
// distribution at temperature 1, as Hugging Face's generate(do_sample=True)
// and OpenAI's API do. A default-constructed SamplingParams and
// GenerationParams hold exactly these values.
//
// Seed: none by default. A job without one samples with a fresh random seed
// (RandomSeed() in sampler.h, drawn when its Sampler is made) and reports it
// (Job::seed(), the worker's Started.seed), so any run can be replayed by
// passing that seed back.
#ifndef LLORCH_WORKER_SAMPLING_GENERATION_DEFAULTS_H_
#define LLORCH_WORKER_SAMPLING_GENERATION_DEFAULTS_H_

#include <cstdint>

namespace llorch {

inline constexpr float kDefaultTemperature = 1.0f;        // 0 = greedy
inline constexpr int32_t kDefaultTopK = 0;                // 0 = off
inline constexpr float kDefaultTopP = 1.0f;               // 1 = off
inline constexpr float kDefaultMinP = 0.0f;               // 0 = off
inline constexpr float kDefaultRepetitionPenalty = 1.0f;  // 1 = off
inline constexpr int32_t kDefaultMaxTokens = 128;

}  // namespace llorch

#endif  // LLORCH_WORKER_SAMPLING_GENERATION_DEFAULTS_H_
