// Decode speed of LlamaModel alone on one device (no engine, no server):
// `batch` jobs, their caches in one pool of blocks as the worker's, take a
// prompt in one ForwardBatch, then greedy one-token steps, all jobs in one
// ForwardBatch per step. Prints one JSON line per batch size (--batch 1,16:
// one load) with tokens/s and the weight bytes read per second, the decode
// rate over the steps after the first (which captures the step's CUDA graph
// where they are used: --cuda-graphs on, the default), a step's time and the
// part of it inside ForwardBatch (the rest: the bench's own argmax on the
// CPU), and job 0's first tokens (greedy: the same with graphs on and off). Built in
// every configuration, also -DLLORCH_MODEL_ONLY=ON, for tools/device-check.sh
// on a lent GPU machine (no CLI there); on the CPU `llorch bench` measures
// the same with the engine's settings.
//
//   model_bench MODEL.gguf [--device cpu|cuda] [--batch 1[,16,...]] [--prompt-tokens 16]
//                          [--gen-tokens 64] [--kv-type auto|f32|f16|bf16] [--threads N]
//                          [--dtype auto|f32|f16|bf16] [--cuda-graphs on|off]
//                          [--cuda-kernels on|off]
//                          [--profile-steps N]
//
// --profile-steps N (libtorch 2 with Kineto, a GPU): N decode steps after the
// first under libtorch's profiler; prints (to stderr) the device's time a
// step by kernel (replayed graphs' kernels too): where a step's time goes.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/autograd/profiler_kineto.h>
#define LLORCH_MODEL_BENCH_PROFILER 1
#endif

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "worker/gguf/gguf.h"
#include "worker/model/kv_cache.h"
#include "worker/model/llama_model.h"

namespace llorch {
namespace {

struct Args {
  std::string model;
  std::string device = "cpu";
  std::vector<int64_t> batches = {1};  // --batch 1,16,64: one model, one line each
  int64_t prompt_tokens = 16, gen_tokens = 64;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::string kv_type = "auto";
  std::string dtype = "auto";
  bool cuda_graphs = true;
  bool cuda_kernels = true;
  int64_t profile_steps = 0;
};

bool ParseArgs(int argc, char** argv, Args* args) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const bool has_value = i + 1 < argc;
    if (flag == "--device" && has_value) {
      args->device = argv[++i];
    } else if (flag == "--batch" && has_value) {
      args->batches.clear();
      for (absl::string_view b : absl::StrSplit(argv[++i], ',')) {
        int64_t batch = 0;
        if (!absl::SimpleAtoi(b, &batch) || batch <= 0) return false;
        args->batches.push_back(batch);
      }
    } else if (flag == "--prompt-tokens" && has_value) {
      args->prompt_tokens = std::atoll(argv[++i]);
    } else if (flag == "--gen-tokens" && has_value) {
      args->gen_tokens = std::atoll(argv[++i]);
    } else if (flag == "--threads" && has_value) {
      args->threads = std::atoi(argv[++i]);
    } else if (flag == "--kv-type" && has_value) {
      args->kv_type = argv[++i];
    } else if (flag == "--dtype" && has_value) {
      args->dtype = argv[++i];
    } else if (flag == "--profile-steps" && has_value) {
      if (!absl::SimpleAtoi(argv[++i], &args->profile_steps) || args->profile_steps < 0) {
        return false;
      }
    } else if (flag == "--cuda-graphs" && has_value) {
      const std::string value = argv[++i];
      if (value != "on" && value != "off") return false;
      args->cuda_graphs = value == "on";
    } else if (flag == "--cuda-kernels" && has_value) {
      const std::string value = argv[++i];
      if (value != "on" && value != "off") return false;
      args->cuda_kernels = value == "on";
    } else if (flag.rfind("--", 0) != 0 && args->model.empty()) {
      args->model = flag;
    } else {
      return false;
    }
  }
  return !args->model.empty() && args->threads > 0 && !args->batches.empty() &&
         args->prompt_tokens > 0 && args->gen_tokens > 1;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Each job's next token: the argmax of its logits row ([batch, vocab], CPU).
std::vector<int32_t> Greedy(const at::Tensor& logits) {
  const at::Tensor ids = logits.argmax(-1).to(at::kInt).contiguous();
  return std::vector<int32_t>(ids.data_ptr<int32_t>(), ids.data_ptr<int32_t>() + ids.numel());
}

#ifdef LLORCH_MODEL_BENCH_PROFILER
void StartProfiler() {
  using torch::profiler::impl::ActivityType;
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  const std::set<ActivityType> activities = {ActivityType::CPU, ActivityType::CUDA};
  torch::autograd::profiler::prepareProfiler(config, activities);
  torch::autograd::profiler::enableProfiler(config, activities);
}

// Device events of the profiled steps by name: time a step, largest first.
void PrintProfile(int64_t batch, bool graphs, int64_t steps, double wall_s) {
  const std::unique_ptr<torch::autograd::profiler::ProfilerResult> result =
      torch::autograd::profiler::disableProfiler();
  std::map<std::string, std::pair<int64_t, uint64_t>> by_name;  // count, ns
  uint64_t device_ns = 0;
  for (const torch::autograd::profiler::KinetoEvent& event : result->events()) {
    if (event.deviceType() != c10::DeviceType::CUDA) continue;
    auto& [count, ns] = by_name[event.name().substr(0, 90)];
    ++count;
    ns += event.durationNs();
    device_ns += event.durationNs();
  }
  std::vector<std::pair<uint64_t, std::string>> order;
  for (const auto& [name, entry] : by_name) order.push_back({entry.second, name});
  std::sort(order.rbegin(), order.rend());
  std::fprintf(stderr, "profile: batch %lld, CUDA graphs %s, %lld steps: %.3f ms a step, device events "
              "%.3f ms a step (%zu names)\n",
              static_cast<long long>(batch), graphs ? "on" : "off", static_cast<long long>(steps),
              1e3 * wall_s / steps, 1e-6 * device_ns / steps, by_name.size());
  for (size_t i = 0; i < order.size() && i < 15; ++i) {
    const auto& [count, ns] = by_name[order[i].second];
    std::fprintf(stderr, "profile:   %8.3f ms %6.1fx  %s\n", 1e-6 * ns / steps,
                static_cast<double>(count) / steps, order[i].second.c_str());
  }
}
#endif

// `batch` jobs over one pool of blocks, as the worker holds them (its block
// size), each job's blocks a run of its own: the prompt in one ForwardBatch,
// then greedy one-token steps. Prints one JSON line.
int MeasureBatch(const LlamaModel& model, const Args& args, int64_t batch, double load_s) {
  const int64_t vocab = model.config().vocab_size;
  const int64_t capacity = args.prompt_tokens + args.gen_tokens + args.profile_steps;
  constexpr int64_t kBlockSize = 16;
  const int64_t blocks_per_job = (capacity + kBlockSize - 1) / kBlockSize;
  std::unique_ptr<KvPool> pool = model.NewPool(batch * blocks_per_job, kBlockSize);
  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<std::vector<int32_t>> prompts(batch);
  std::vector<ForwardItem> items(batch);
  for (int64_t j = 0; j < batch; ++j) {
    caches.push_back(std::make_unique<KvCache>(pool.get()));
    for (int64_t b = 0; b < blocks_per_job; ++b) {
      caches[j]->AppendBlock(static_cast<int32_t>(j * blocks_per_job + b));
    }
    for (int64_t t = 0; t < args.prompt_tokens; ++t) {
      prompts[j].push_back(static_cast<int32_t>((1 + 7 * j + 13 * t) % vocab));
    }
    items[j] = ForwardItem{prompts[j], 0, caches[j].get()};
  }
  const auto prompt_start = std::chrono::steady_clock::now();
  auto logits = model.ForwardBatch(items);
  if (!logits.ok()) return std::fprintf(stderr, "%s\n", logits.status().ToString().c_str()), 1;
  const double prompt_s = SecondsSince(prompt_start);

  std::vector<int32_t> next = Greedy(*logits);
  std::vector<int32_t> job0_tokens = {next[0]};
  double first_step_s = 0, forward_s = 0;  // forward_s: in ForwardBatch, after the first step
  auto decode_start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < args.gen_tokens; ++step) {
    for (int64_t j = 0; j < batch; ++j) {
      items[j] = ForwardItem{absl::MakeConstSpan(&next[j], 1), args.prompt_tokens + step,
                             caches[j].get(), /*all_logits=*/false, /*decode=*/true};
    }
    const auto forward_start = std::chrono::steady_clock::now();
    logits = model.ForwardBatch(items);  // logits on the CPU: the step has finished
    if (step > 0) forward_s += SecondsSince(forward_start);
    if (!logits.ok()) return std::fprintf(stderr, "%s\n", logits.status().ToString().c_str()), 1;
    next = Greedy(*logits);
    job0_tokens.push_back(next[0]);
    if (step == 0) {  // first use of the shape (a graph's capture): timed apart
      first_step_s = SecondsSince(decode_start);
      decode_start = std::chrono::steady_clock::now();
    }
  }
  const double steps_per_s = (args.gen_tokens - 1) / SecondsSince(decode_start);
  if (args.profile_steps > 0) {
#ifdef LLORCH_MODEL_BENCH_PROFILER
    // Past the timed steps: the profiler's own cost stays out of them.
    StartProfiler();
    const auto profile_start = std::chrono::steady_clock::now();
    for (int64_t step = 0; step < args.profile_steps; ++step) {
      const int64_t pos = args.prompt_tokens + args.gen_tokens + step;
      for (int64_t j = 0; j < batch; ++j) {
        items[j] = ForwardItem{absl::MakeConstSpan(&next[j], 1), pos, caches[j].get(),
                               /*all_logits=*/false, /*decode=*/true};
      }
      logits = model.ForwardBatch(items);
      if (!logits.ok()) return std::fprintf(stderr, "%s\n", logits.status().ToString().c_str()), 1;
      next = Greedy(*logits);
    }
    PrintProfile(batch, model.cuda_graphs(), args.profile_steps, SecondsSince(profile_start));
#else
    std::fprintf(stderr, "--profile-steps needs libtorch 2 (its Kineto profiler)\n");
#endif
  }
  std::string tokens;
  for (size_t i = 0; i < job0_tokens.size() && i < 16; ++i) {
    tokens += (i == 0 ? "" : ",") + std::to_string(job0_tokens[i]);
  }
  std::printf(
      "{\"model\":\"%s\",\"device\":\"%s\",\"dtype\":\"%s\",\"kv_type\":\"%s\","
      "\"cuda_graphs\":%s,\"cuda_kernels\":%s,\"batch\":%lld,\"prompt_tokens\":%lld,\"gen_tokens\":%lld,"
      "\"load_s\":%.3f,\"prompt_tok_s\":%.1f,\"first_step_s\":%.4f,\"decode_tok_s\":%.1f,"
      "\"forward_ms\":%.3f,\"step_ms\":%.3f,"
      "\"weight_bytes\":%lld,\"weight_read_gb_s\":%.1f,\"job0_tokens\":[%s]}\n",
      args.model.c_str(), args.device.c_str(), c10::toString(model.dtype()), KvTypeName(model.kv_type()),
      model.cuda_graphs() ? "true" : "false", model.cuda_kernels() ? "true" : "false",
      static_cast<long long>(batch),
      static_cast<long long>(args.prompt_tokens), static_cast<long long>(args.gen_tokens), load_s,
      batch * args.prompt_tokens / prompt_s, first_step_s, batch * steps_per_s,
      1e3 * forward_s / (args.gen_tokens - 1), 1e3 / steps_per_s,
      static_cast<long long>(model.WeightBytes()), model.WeightBytes() * steps_per_s / 1e9,
      tokens.c_str());
  std::fflush(stdout);
  return 0;
}

int Run(const Args& args) {
  at::set_num_threads(args.threads);  // CPU threads (OpenMP), as `llorch --threads`
  auto gguf = GgufFile::Open(args.model);
  if (!gguf.ok()) return std::fprintf(stderr, "%s\n", gguf.status().ToString().c_str()), 1;
  absl::StatusOr<LoadOptions::Dtype> dtype = ParseDtype(args.dtype);
  if (!dtype.ok()) return std::fprintf(stderr, "%s\n", dtype.status().ToString().c_str()), 1;
  LoadOptions options;
  options.device = args.device;
  options.dtype = *dtype;
  absl::StatusOr<KvType> kv_type = ParseKvTypeFor(args.kv_type, options);
  if (!kv_type.ok()) return std::fprintf(stderr, "%s\n", kv_type.status().ToString().c_str()), 1;
  options.kv_type = *kv_type;
  options.cuda_graphs = args.cuda_graphs;
  options.cuda_kernels = args.cuda_kernels;
  const auto load_start = std::chrono::steady_clock::now();
  auto model = LlamaModel::Load(**gguf, options);
  if (!model.ok()) return std::fprintf(stderr, "%s\n", model.status().ToString().c_str()), 1;
  const double load_s = SecondsSince(load_start);

  // Warm-up on a throwaway job (device start-up, first kernels).
  {
    auto cache = (*model)->NewCache(args.prompt_tokens + args.gen_tokens);
    const std::vector<int32_t> ids = {1, 2};
    if (auto s = (*model)->Forward(ids, 0, cache.get(), false); !s.ok()) {
      return std::fprintf(stderr, "%s\n", s.status().ToString().c_str()), 1;
    }
  }
  for (int64_t batch : args.batches) {
    if (int rc = MeasureBatch(**model, args, batch, load_s); rc != 0) return rc;
  }
  return 0;
}

}  // namespace
}  // namespace llorch

int main(int argc, char** argv) {
  llorch::Args args;
  if (!llorch::ParseArgs(argc, argv, &args)) {
    std::fprintf(stderr,
                 "usage: model_bench MODEL.gguf [--device cpu|cuda] [--batch N[,N...]] "
                 "[--prompt-tokens N] [--gen-tokens N] [--kv-type auto|f32|f16|bf16] "
                 "[--dtype auto|f32|f16|bf16] [--cuda-graphs on|off] [--cuda-kernels on|off] "
                 "[--profile-steps N] [--threads N]\n");
    return 2;
  }
  return llorch::Run(args);
}
