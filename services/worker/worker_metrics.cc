#include "services/worker/worker_metrics.h"

namespace llorch {
namespace {

using metrics::BuildCounter;
using metrics::BuildGauge;
using metrics::BuildHistogram;

// Seconds, from 1 ms to ~33 s.
metrics::Histogram::BucketBoundaries LatencyBuckets() {
  return metrics::ExponentialBuckets(0.001, 2, 16);
}

}  // namespace

WorkerMetrics::WorkerMetrics(metrics::Registry& registry, const WorkerBuildInfo& info)
    : prompt_tokens(BuildCounter()
                        .Name("llorch_worker_prompt_tokens_total")
                        .Help("Prompt tokens of admitted jobs.")
                        .Register(registry)
                        .Add({})),
      generated_tokens(BuildCounter()
                           .Name("llorch_worker_generated_tokens_total")
                           .Help("Tokens generated.")
                           .Register(registry)
                           .Add({})),
      time_to_first_token(BuildHistogram()
                              .Name("llorch_worker_time_to_first_token_seconds")
                              .Help("From receiving a request to sending its first token.")
                              .Register(registry)
                              .Add({}, LatencyBuckets())),
      inter_token_latency(BuildHistogram()
                              .Name("llorch_worker_inter_token_latency_seconds")
                              .Help("Between consecutive tokens of one job.")
                              .Register(registry)
                              .Add({}, LatencyBuckets())),
      request_duration(BuildHistogram()
                           .Name("llorch_worker_request_duration_seconds")
                           .Help("From receiving a request to its last event (end to end).")
                           .Register(registry)
                           .Add({}, LatencyBuckets())),
      requests_(BuildCounter()
                    .Name("llorch_worker_requests_total")
                    .Help("Execute requests by outcome: finish reason, or the error code.")
                    .Register(registry)),
      active_jobs_(BuildGauge()
                       .Name("llorch_worker_active_jobs")
                       .Help("Jobs admitted and holding KV cache.")
                       .Register(registry)
                       .Add({})),
      waiting_jobs_(BuildGauge()
                        .Name("llorch_worker_waiting_jobs")
                        .Help("Jobs queued for admission.")
                        .Register(registry)
                        .Add({})),
      kv_used_bytes_(BuildGauge()
                         .Name("llorch_worker_kv_cache_used_bytes")
                         .Help("KV cache memory held by admitted jobs.")
                         .Register(registry)
                         .Add({})),
      kv_capacity_bytes_(BuildGauge()
                             .Name("llorch_worker_kv_cache_capacity_bytes")
                             .Help("KV cache budget (--kv_budget).")
                             .Register(registry)
                             .Add({})),
      kv_blocks_(BuildGauge()
                     .Name("llorch_worker_kv_cache_blocks")
                     .Help("KV cache blocks (--kv_block_size positions each) by state: used by "
                           "jobs, cached (kept for their prefix, reclaimable) or free.")
                     .Register(registry)),
      preemptions_(BuildCounter()
                       .Name("llorch_worker_preemptions_total")
                       .Help("Jobs that gave their KV blocks back when the pool ran dry, to be "
                             "recomputed.")
                       .Register(registry)
                       .Add({})),
      prefix_queried_tokens_(BuildCounter()
                                 .Name("llorch_worker_prefix_cache_queried_tokens_total")
                                 .Help("Prompt tokens looked up in the prefix cache.")
                                 .Register(registry)
                                 .Add({})),
      prefix_hit_tokens_(BuildCounter()
                             .Name("llorch_worker_prefix_cache_hit_tokens_total")
                             .Help("Prompt tokens found in the prefix cache (not computed).")
                             .Register(registry)
                             .Add({})),
      batch_size_(BuildHistogram()
                      .Name("llorch_worker_batch_size")
                      .Help("Jobs in each engine forward step.")
                      .Register(registry)
                      .Add({}, metrics::ExponentialBuckets(1, 2, 9))),
      model_load_seconds_(BuildGauge()
                              .Name("llorch_worker_model_load_seconds")
                              .Help("Time taken to load the model's weights.")
                              .Register(registry)
                              .Add({})),
      serving_(BuildGauge()
                   .Name("llorch_worker_serving")
                   .Help("1 once the model is loaded and warmed up, 0 while starting or draining.")
                   .Register(registry)
                   .Add({})) {
  BuildGauge()
      .Name("llorch_worker_build_info")
      .Help("Always 1; labels describe the build and the model.")
      .Register(registry)
      .Add({{"version", info.version},
            {"model", info.model},
            {"architecture", info.architecture},
            {"dtype", info.dtype},
            {"device", info.device}})
      .Set(1);
  // Outcomes known up front, so rates exist from the first scrape.
  for (const char* outcome : {"eos", "length", "stop", "cancelled"}) {
    requests_.Add({{"outcome", outcome}});
  }
}

void WorkerMetrics::CountRequest(const std::string& outcome) {
  requests_.Add({{"outcome", outcome}}).Increment();
}

void WorkerMetrics::OnEngineStep(int32_t batch_size, const EngineStats& stats) {
  if (batch_size > 0) batch_size_.Observe(batch_size);
  active_jobs_.Set(stats.running);
  waiting_jobs_.Set(stats.waiting);
  kv_used_bytes_.Set(static_cast<double>(stats.kv_used_bytes));
  kv_capacity_bytes_.Set(static_cast<double>(stats.kv_budget_bytes));
  kv_blocks_.Add({{"state", "used"}}).Set(stats.kv_blocks_used);
  kv_blocks_.Add({{"state", "cached"}}).Set(stats.kv_blocks_cached);
  kv_blocks_.Add({{"state", "free"}})
      .Set(stats.kv_blocks_total - stats.kv_blocks_used - stats.kv_blocks_cached);
  preemptions_.Increment(static_cast<double>(stats.preemptions - last_stats_.preemptions));
  prefix_queried_tokens_.Increment(
      static_cast<double>(stats.prefix_queried_tokens - last_stats_.prefix_queried_tokens));
  prefix_hit_tokens_.Increment(
      static_cast<double>(stats.prefix_hit_tokens - last_stats_.prefix_hit_tokens));
  last_stats_ = stats;
}

}  // namespace llorch
