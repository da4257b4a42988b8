// The normaliser of a log-softmax over a whole vocabulary, computed for every
// generated token (its logprob). Vectorised: a serial scalar pass over 49k
// logits in double took ~0.5 ms per token and job, about 6% of a SmolLM2
// decode step and more at 8 jobs, where the step waits for it.
#ifndef LLORCH_WORKER_SAMPLING_LOG_SUM_EXP_H_
#define LLORCH_WORKER_SAMPLING_LOG_SUM_EXP_H_

#include <cstdint>

namespace llorch {

// The largest logit, NaN counting as -inf; -inf for an empty or all-NaN row.
float MaxLogit(const float* logits, int32_t vocab_size);

// The lowest id holding the largest logit (MaxLogit's value): greedy
// sampling's token. NaN never wins; 0 when no logit exceeds -inf.
int32_t ArgmaxLogit(const float* logits, int32_t vocab_size);

// log(sum over i of exp(logits[i] - max_logit)) for a finite `max_logit`
// (MaxLogit's), NaN logits contributing nothing. Each term is a float
// exp of the float difference (within 2 ulp), the sum is accumulated in
// double, in the same order on every x86-64 CPU (AVX2, and Sleef's AVX2 exp
// on AVX-512 machines too); elsewhere a scalar loop, within 1e-6 of it.
double LogSumExp(const float* logits, int32_t vocab_size, float max_logit);

}  // namespace llorch

#endif  // LLORCH_WORKER_SAMPLING_LOG_SUM_EXP_H_
