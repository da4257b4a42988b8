#include "worker/engine/engine.h"

#include <algorithm>
#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/engine/step_planner.h"
#include "worker/model/kv_cache.h"

namespace llorch {

namespace {

int32_t NumBlocks(const LlamaModel* model, const EngineOptions& options) {
  const size_t block_bytes =
      KvPool::BytesPerBlock(model->config(), options.kv_block_size, model->kv_type());
  return static_cast<int32_t>(options.kv_budget_bytes / block_bytes);
}

// What the prefix cache knows position p of `tokens` by.
std::vector<int64_t> PositionKeys(const std::vector<int32_t>& tokens, int32_t num_prompt,
                                  int64_t begin, int64_t end) {
  std::vector<int64_t> keys;
  keys.reserve(end - begin);
  for (int64_t p = begin; p < end; ++p) keys.push_back(PositionKey(tokens[p], p >= num_prompt));
  return keys;
}

// Background jobs report to nobody.
class NullSink final : public JobSink {
 public:
  void OnStarted(const JobStart&) override {}
  void OnToken(const TokenEvent&) override {}
  void OnFinished(const JobSummary&) override {}
  void OnError(const absl::Status&) override {}
};

}  // namespace

Engine::Engine(const LlamaModel* model, const Tokenizer* tokenizer, EngineOptions options)
    : model_(model),
      tokenizer_(tokenizer),
      options_(options),
      runner_(model, options.test_fault),
      pool_(model->NewPool(NumBlocks(model, options), options.kv_block_size)),
      blocks_(NumBlocks(model, options), options.kv_block_size, options.prefix_cache),
      block_bytes_(KvPool::BytesPerBlock(model->config(), options.kv_block_size,
                                         model->kv_type())),
      root_hash_(blocks_.Root().hash) {
  PublishStats();
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

absl::Status Engine::Submit(std::string job_id, std::vector<int32_t> prompt,
                            GenerationParams params, std::shared_ptr<JobSink> sink) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id is empty");
  const ModelConfig& config = model_->config();
  if (absl::Status s = Job::Validate(prompt, params, config); !s.ok()) return s;
  // A job runs alone when it must, so it fits if its longest sequence fits
  // the whole pool.
  const int32_t num_blocks = blocks_.BlocksFor(
      Job::CacheCapacity(config, static_cast<int64_t>(prompt.size()), params.max_tokens));
  if (num_blocks > blocks_.num_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "job ", job_id, " needs ", num_blocks * block_bytes_,
        " bytes of KV cache, more than the budget of ", options_.kv_budget_bytes));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || draining_) {
      return absl::UnavailableError("worker is draining and accepts no new jobs");
    }
    if (live_ids_.count(job_id)) {
      return absl::AlreadyExistsError(absl::StrCat("job_id '", job_id, "' is already live"));
    }
    // Jobs that the next step admits into free batch slots do not count as
    // waiting (approximately: the KV budget may still hold them back).
    const int32_t free_slots = std::max(0, options_.max_running - running_count_);
    if (static_cast<int32_t>(waiting_.size()) >= options_.max_waiting + free_slots) {
      return absl::ResourceExhaustedError(
          absl::StrCat("wait queue full (", options_.max_waiting, " jobs)"));
    }
    live_ids_[job_id] = sink.get();
    waiting_.push_back(
        Request{std::move(job_id), std::move(prompt), std::move(params), std::move(sink)});
  }
  wake_.notify_all();
  return absl::OkStatus();
}

void Engine::Cancel(const std::string& job_id, const JobSink* owner) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto live = live_ids_.find(job_id);
    if (live == live_ids_.end() || (owner != nullptr && live->second != owner)) return;
    cancelled_.push_back(Cancellation{job_id, owner});
  }
  wake_.notify_all();
}

void Engine::CancelAll() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [job_id, owner] : live_ids_) cancelled_.push_back(Cancellation{job_id, owner});
  }
  wake_.notify_all();
}

void Engine::StopAccepting() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats stats = stats_;
  stats.running = running_count_ - background_running_;
  stats.waiting += static_cast<int32_t>(waiting_.size());
  return stats;
}

int32_t Engine::CachedPrefixTokens(const std::vector<int32_t>& prompt) const {
  if (!options_.prefix_cache || prompt.empty()) return 0;
  const int64_t block_size = options_.kv_block_size;
  const int64_t max_blocks = (static_cast<int64_t>(prompt.size()) - 1) / block_size;
  const std::vector<int64_t> keys =
      PositionKeys(prompt, static_cast<int32_t>(prompt.size()), 0, max_blocks * block_size);
  std::vector<uint64_t> chain(max_blocks);  // the hash of each whole block of the prompt
  uint64_t hash = root_hash_;
  for (int64_t i = 0; i < max_blocks; ++i) {
    chain[i] = hash = ChainHash(hash, absl::MakeConstSpan(keys).subspan(i * block_size, block_size));
  }
  std::lock_guard<std::mutex> lock(mu_);
  int64_t found = 0;
  while (found < max_blocks && registered_hashes_.contains(chain[found])) ++found;
  return static_cast<int32_t>(found * block_size);
}

void Engine::PublishStats() {
  // Placement's view of the registered hashes follows the block manager's
  // events: O(changes) per step, a rebuild only if events were dropped.
  bool complete = true;
  std::vector<uint64_t> all;
  if (blocks_.prefix_cache()) {
    complete = blocks_.TakeHashEvents(&hash_events_);
    if (!complete) all = blocks_.RegisteredHashes();
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!complete) {
    registered_hashes_.clear();
    for (uint64_t h : all) ++registered_hashes_[h];
  } else {
    for (const BlockManager::HashEvent& event : hash_events_) {
      auto it = registered_hashes_.try_emplace(event.hash, 0).first;
      if ((it->second += event.delta) == 0) registered_hashes_.erase(it);
    }
  }
  stats_.waiting = static_cast<int32_t>(preempted_.size());
  stats_.kv_used_bytes = static_cast<size_t>(blocks_.num_used()) * block_bytes_;
  stats_.kv_budget_bytes = static_cast<size_t>(blocks_.num_blocks()) * block_bytes_;
  stats_.kv_blocks_total = blocks_.num_blocks();
  stats_.kv_blocks_used = blocks_.num_used();
  stats_.kv_blocks_cached = blocks_.num_cached();
  stats_.kv_block_size = blocks_.block_size();
}

void Engine::Loop() {
  while (true) {
    std::vector<Cancellation> cancelled;
    std::vector<Request> dropped;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] {
        return stopping_ || !cancelled_.empty() || !running_.empty() || !waiting_.empty() ||
               !preempted_.empty() || !answers_.empty();
      });
      if (stopping_) {
        for (Request& r : waiting_) cancelled_.push_back(Cancellation{r.job_id, nullptr});
        for (Running& r : running_) cancelled_.push_back(Cancellation{r.job->job_id(), nullptr});
        for (Running& r : preempted_) {
          cancelled_.push_back(Cancellation{r.job->job_id(), nullptr});
        }
      }
      cancelled.swap(cancelled_);
      dropped = TakeCancelledWaiting(cancelled);
    }
    // Cancelled before admission: finished without allocating.
    for (Request& r : dropped) {
      JobSummary summary;
      summary.reason = FinishReason::kCancelled;
      r.sink->OnFinished(summary);
    }
    FinishCancelled(cancelled);
    ResumePreempted();
    std::vector<std::pair<Request, Reservation>> admitted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ && waiting_.empty() && running_.empty() && preempted_.empty()) {
        running_count_ = 0;
        return;
      }
      admitted = TakeAdmissible();
    }
    for (auto& [request, reservation] : admitted) Start(std::move(request), std::move(reservation));
    PublishStats();
    const int32_t batch_size = running_.empty() ? 0 : Step();
    PublishStats();
    if (options_.on_step) options_.on_step(batch_size, Stats());
  }
}

std::vector<Engine::Request> Engine::TakeCancelledWaiting(
    const std::vector<Cancellation>& cancelled) {
  std::vector<Request> dropped;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    const auto matches = [&](const Cancellation& c) {
      return c.Matches(it->job_id, it->sink.get());
    };
    if (std::any_of(cancelled.begin(), cancelled.end(), matches)) {
      live_ids_.erase(it->job_id);
      dropped.push_back(std::move(*it));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  return dropped;
}

// Frees the blocks of cancelled running and preempted jobs before this
// turn's admissions.
void Engine::FinishCancelled(const std::vector<Cancellation>& cancelled) {
  const auto finish_matching = [&](Running& r, bool is_running) {
    const auto matches = [&](const Cancellation& c) {
      return c.Matches(r.job->job_id(), r.sink.get());
    };
    if (std::any_of(cancelled.begin(), cancelled.end(), matches)) {
      r.job->Cancel();
      Finish(r, absl::OkStatus(), is_running);
    }
  };
  const auto gone = [](const Running& r) { return r.job == nullptr; };
  for (Running& r : running_) finish_matching(r, true);
  running_.erase(std::remove_if(running_.begin(), running_.end(), gone), running_.end());
  for (Running& r : preempted_) finish_matching(r, false);
  preempted_.erase(std::remove_if(preempted_.begin(), preempted_.end(), gone), preempted_.end());
}

std::optional<Engine::Reservation> Engine::Reserve(const std::vector<int32_t>& tokens,
                                                   int32_t num_prompt, int64_t max_positions) {
  // Every position up to the last token's (fed next) needs a row; the last
  // one is always computed, so that the job gets logits to sample from.
  const int64_t num_positions = static_cast<int64_t>(tokens.size());
  const std::vector<int64_t> keys = PositionKeys(tokens, num_prompt, 0, num_positions);
  BlockManager::Match match = blocks_.Lookup(
      keys, static_cast<int32_t>((num_positions - 1) / blocks_.block_size()));
  const int64_t reserved_positions =
      options_.reserve_whole_jobs ? std::max(num_positions, max_positions) : num_positions;
  const int32_t num_fresh =
      blocks_.BlocksFor(reserved_positions) - static_cast<int32_t>(match.blocks.size());
  const int32_t headroom = AdmissionHeadroom(blocks_.num_blocks(), !running_.empty());
  if (num_fresh + headroom > blocks_.num_available()) {
    for (BlockId b : match.blocks) blocks_.Release(b);
    return std::nullopt;
  }
  Reservation reservation;
  reservation.num_cached = static_cast<int32_t>(match.blocks.size());
  reservation.chain = match.end;
  reservation.blocks = std::move(match.blocks);
  for (int32_t i = 0; i < num_fresh; ++i) reservation.blocks.push_back(*blocks_.Allocate());
  return reservation;
}

void Engine::ResumePreempted() {
  while (!preempted_.empty() &&
         static_cast<int32_t>(running_.size()) < options_.max_running) {
    Running& r = preempted_.front();
    std::optional<Reservation> reservation =
        Reserve(r.job->tokens(), r.job->prompt_tokens(), r.job->max_positions());
    if (!reservation) return;
    KvCache* cache = r.job->cache();
    for (BlockId b : reservation->blocks) cache->AppendBlock(b);
    cache->set_num_tokens(int64_t{reservation->num_cached} * blocks_.block_size());
    r.num_chained = reservation->num_cached;
    r.chain = reservation->chain;
    running_.push_back(std::move(r));
    preempted_.pop_front();
    std::lock_guard<std::mutex> lock(mu_);
    running_count_ += 1;
  }
}

std::vector<std::pair<Engine::Request, Engine::Reservation>> Engine::TakeAdmissible() {
  // First come, first served: the head of the queue waits for room rather
  // than being overtaken by smaller jobs (no starvation), and preempted
  // jobs go first. Its blocks and batch slot are reserved now, so Stats()
  // and Submit see them while the job is created outside the lock.
  std::vector<std::pair<Request, Reservation>> admitted;
  while (preempted_.empty() && !waiting_.empty() && running_count_ < options_.max_running) {
    Request& head = waiting_.front();
    std::optional<Reservation> reservation =
        Reserve(head.prompt, static_cast<int32_t>(head.prompt.size()),
                Job::CacheCapacity(model_->config(), static_cast<int64_t>(head.prompt.size()),
                                   head.params.max_tokens));
    if (!reservation) break;
    stats_.prefix_queried_tokens += static_cast<int64_t>(head.prompt.size());
    stats_.prefix_hit_tokens += int64_t{reservation->num_cached} * blocks_.block_size();
    running_count_ += 1;
    admitted.emplace_back(std::move(head), std::move(*reservation));
    waiting_.pop_front();
  }
  if (std::optional<std::pair<Request, Reservation>> answer = TakeBackgroundAnswer()) {
    admitted.push_back(std::move(*answer));
  }
  return admitted;
}

std::optional<std::pair<Engine::Request, Engine::Reservation>> Engine::TakeBackgroundAnswer() {
  if (answers_.empty()) return std::nullopt;
  if (stopping_ || draining_) {
    answers_.clear();
    return std::nullopt;
  }
  if (!preempted_.empty() || !waiting_.empty() || background_running_ > 0 ||
      running_count_ >= options_.max_running) {
    return std::nullopt;  // later: the loop is busy meanwhile
  }
  Request request = std::move(answers_.front());
  answers_.pop_front();
  const int64_t n = static_cast<int64_t>(request.prompt.size());
  std::optional<Reservation> reservation =
      Reserve(request.prompt, static_cast<int32_t>(n), n);
  if (!reservation) return std::nullopt;  // no room now: not worth waiting for
  running_count_ += 1;
  background_running_ = 1;
  return std::make_pair(std::move(request), std::move(*reservation));
}

void Engine::QueueAnswer(const Running& running) {
  const Job& job = *running.job;
  const std::vector<int32_t>& tokens = job.tokens();
  const int64_t block_size = blocks_.block_size();
  // Only worth it when the answer completes a block of prompt rows beyond
  // those of the job's own prompt.
  if (static_cast<int64_t>(tokens.size()) / block_size <= job.prompt_tokens() / block_size) return;
  GenerationParams params;
  params.max_tokens = 1;  // the prompt rows are the point; one sample ends it
  params.ignore_eos = true;
  params.sampling.temperature = 0;
  // An id no client can send (not UTF-8): never matched by Cancel.
  Request request{absl::StrCat("\xff", "answer:", job.job_id()), tokens, params,
                  std::make_shared<NullSink>(), /*background=*/true};
  std::lock_guard<std::mutex> lock(mu_);
  answers_.push_back(std::move(request));
  // The newest answers are the likeliest to be continued.
  while (static_cast<int32_t>(answers_.size()) > options_.max_running) answers_.pop_front();
}

bool Engine::EndBackgroundJob() {
  for (Running& r : running_) {
    if (r.job != nullptr && r.background) {
      r.job->Cancel();
      Finish(r, absl::OkStatus());  // its full blocks stay cached
      return true;
    }
  }
  return false;
}

void Engine::Start(Request request, Reservation reservation) {
  absl::StatusOr<std::unique_ptr<Job>> job;
  const int64_t num_cached_tokens = int64_t{reservation.num_cached} * blocks_.block_size();
  try {
    MaybeInjectFault(options_.test_fault, TestFault::Point::kKvAlloc, &kv_allocations_);
    auto cache = std::make_unique<KvCache>(pool_.get());
    for (BlockId b : reservation.blocks) cache->AppendBlock(b);
    cache->set_num_tokens(num_cached_tokens);
    job = Job::Create(request.job_id, std::move(request.prompt), std::move(request.params),
                      model_, tokenizer_, std::move(cache));
  } catch (...) {
    job = StatusFromCurrentException(
        absl::StrCat("allocating the KV cache of job ", request.job_id));
  }
  if (!job.ok()) {
    for (BlockId b : reservation.blocks) blocks_.Release(b);
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_count_ -= 1;
      if (request.background) background_running_ = 0;
      live_ids_.erase(request.job_id);
    }
    PublishStats();
    request.sink->OnError(job.status());
    return;
  }
  request.sink->OnStarted(JobStart{(*job)->prompt_tokens(),
                                   static_cast<int32_t>(num_cached_tokens), (*job)->seed()});
  running_.push_back(Running{std::move(*job), std::move(request.sink), reservation.num_cached,
                             reservation.chain, request.background});
}

void Engine::ReleaseBlocks(const KvCache& cache) {
  for (BlockId b : cache.block_table()) blocks_.Release(b);
}

void Engine::Preempt(Running& running) {
  ReleaseBlocks(*running.job->cache());
  running.job->Preempt();
  running.num_chained = 0;
  running.chain = blocks_.Root();
  preempted_.push_front(std::move(running));
  running.job = nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  running_count_ -= 1;
  stats_.preemptions += 1;
}

void Engine::GrowForDecode() {
  for (size_t i = 0; i < running_.size(); ++i) {
    if (running_[i].job == nullptr) continue;  // preempted just now
    KvCache* cache = running_[i].job->cache();
    // Prefill and recompute inputs had their blocks reserved at admission.
    while (running_[i].job != nullptr && cache->capacity() < cache->num_tokens() + 1) {
      if (std::optional<BlockId> block = blocks_.Allocate()) {
        cache->AppendBlock(*block);
        continue;
      }
      // The pool is dry: a background job gives way first; else a job gives
      // its blocks back (step_planner.h), which may be this job itself.
      if (EndBackgroundJob()) continue;
      std::vector<bool> preempted;
      for (const Running& r : running_) preempted.push_back(r.job == nullptr);
      Preempt(running_[PickPreemptionVictim(preempted)]);
    }
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [](const Running& r) { return r.job == nullptr; }),
                 running_.end());
}

int32_t Engine::Step() {
  GrowForDecode();
  std::vector<Job*> jobs;
  for (Running& r : running_) jobs.push_back(r.job.get());
  const std::vector<PlannedInput> plan =
      PlanStep(absl::MakeConstSpan(jobs), options_.max_prefill_tokens_per_step);
  std::vector<ForwardItem> items;
  std::vector<size_t> owners;  // index into running_ per item
  for (const PlannedInput& input : plan) {
    items.push_back({input.tokens, input.pos, jobs[input.job]->cache(), false, input.decode});
    owners.push_back(input.job);
  }
  if (items.empty()) return 0;
  absl::StatusOr<at::Tensor> logits = runner_.Run(items);
  if (!logits.ok()) {
    // A batch-level failure fails the jobs in it; others are untouched.
    for (size_t owner : owners) Finish(running_[owner], logits.status());
  } else {
    // The jobs that sample this step (a prefill or recompute not done yet
    // does not) draw together, over the threads; then each takes its token
    // and streams it, in order.
    const int64_t vocab = model_->config().vocab_size;
    std::vector<Job*> sampling;
    std::vector<const float*> sampling_logits;
    std::vector<size_t> sampling_owners;
    for (size_t k = 0; k < owners.size(); ++k) {
      Running& r = running_[owners[k]];
      RegisterFullBlocks(r);
      if (!r.job->ready_to_sample()) continue;
      sampling.push_back(r.job.get());
      sampling_logits.push_back(logits->data_ptr<float>() + k * vocab);
      sampling_owners.push_back(owners[k]);
    }
    std::vector<std::exception_ptr> errors;
    std::vector<TokenChoice> choices = ChooseAll(sampling, sampling_logits, &errors);
    for (size_t i = 0; i < sampling.size(); ++i) {
      Running& r = running_[sampling_owners[i]];
      TokenEvent event;
      try {
        if (errors[i] != nullptr) std::rethrow_exception(errors[i]);
        event = r.job->Accept(std::move(choices[i]));
      } catch (...) {
        Finish(r, StatusFromCurrentException("sampling"));
        continue;
      }
      r.sink->OnToken(event);
      if (event.finish != FinishReason::kNone) Finish(r, absl::OkStatus());
    }
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [](const Running& r) { return r.job == nullptr; }),
                 running_.end());
  std::lock_guard<std::mutex> lock(mu_);
  running_count_ = static_cast<int32_t>(running_.size());
  return static_cast<int32_t>(items.size());
}

void Engine::RegisterFullBlocks(Running& running) {
  if (!blocks_.prefix_cache()) return;
  const KvCache& cache = *running.job->cache();
  const int64_t block_size = blocks_.block_size();
  const int32_t num_full = static_cast<int32_t>(cache.num_tokens() / block_size);
  for (int32_t b = running.num_chained; b < num_full; ++b) {
    const std::vector<int64_t> keys = PositionKeys(
        running.job->tokens(), running.job->prompt_tokens(), b * block_size, (b + 1) * block_size);
    running.chain = blocks_.Register(cache.block_table()[b], running.chain, keys);
  }
  running.num_chained = std::max(running.num_chained, num_full);
}

void Engine::Finish(Running& running, const absl::Status& error, bool is_running) {
  JobSummary summary;
  summary.reason = running.job->finish_reason();
  summary.prompt_tokens = running.job->prompt_tokens();
  summary.completion_tokens = running.job->completion_tokens();
  summary.ttft_ms = running.job->ttft_ms();
  summary.decode_tokens_per_s = running.job->decode_tokens_per_s();
  const std::string job_id = running.job->job_id();
  if (options_.cache_answers && blocks_.prefix_cache() && error.ok() && !running.background &&
      summary.reason != FinishReason::kCancelled) {
    QueueAnswer(running);
  }
  // Blocks go back (full ones stay cached for their prefix) before anyone
  // hears the job ended.
  ReleaseBlocks(*running.job->cache());
  running.job.reset();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (is_running) running_count_ -= 1;
    if (running.background) background_running_ = 0;
    live_ids_.erase(job_id);
  }
  PublishStats();
  if (error.ok()) {
    running.sink->OnFinished(summary);
  } else {
    running.sink->OnError(error);
  }
}

}  // namespace llorch
