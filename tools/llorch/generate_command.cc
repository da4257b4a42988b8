// llorch generate: `llorch run`'s stream, generated over gRPC by a running
// llorch-worker (--worker) or by the workers behind a llorch-scheduler
// (--scheduler, --model). Both print through StreamPrinter, so the output
// has one form whichever server streamed.
#include <chrono>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "llorch/v1/scheduler.grpc.pb.h"
#include "tools/llorch/common.h"
#include "tools/llorch/interrupt.h"
#include "tools/llorch/stream_printer.h"

ABSL_FLAG(std::string, job_id, "",
          "the job's id (default: cli-PID-RANDOM on a worker, the scheduler's own id on a "
          "scheduler)");
ABSL_FLAG(double, timeout, 600, "seconds until the request is abandoned");
// Not `model`: that flag is a path everywhere else.
ABSL_FLAG(std::string, generate_model, "",
          "the model's name as `llorch models` lists it (required with --scheduler)");

namespace llorch {
namespace tool {
namespace {

namespace api = ::llorch::v1;

constexpr char kUsage[] =
    "llorch generate (--worker HOST:PORT | --scheduler HOST:PORT --model NAME)\n"
    "           (--prompt TEXT | --prompt-ids 1,2,3 | [--system TEXT] --chat [ROLE:]TEXT...)\n"
    "           [flags]";

// The request for the flags: sampling and the one prompt form given.
absl::StatusOr<worker::v1::ExecuteRequest> RequestFromFlags(const std::string& job_id) {
  absl::StatusOr<GenerationParams> params = GenerationParamsFromFlags();
  if (!params.ok()) return params.status();
  worker::v1::ExecuteRequest request = ToExecuteRequest(job_id, *params);
  if (absl::Status s = CheckOnePrompt(); !s.ok()) return s;
  if (cli::WasGiven(FLAGS_prompt)) {
    request.set_text(absl::GetFlag(FLAGS_prompt));
  } else if (HasChatPrompt()) {
    for (const ChatMessage& m : ChatMessages()) {
      worker::v1::ChatMessage* out = request.mutable_messages()->add_messages();
      out->set_role(m.role);
      out->set_content(m.content);
    }
  } else {
    absl::StatusOr<std::vector<int32_t>> ids =
        ParseIds(absl::GetFlag(FLAGS_prompt_ids), "--prompt-ids");
    if (!ids.ok()) return ids.status();
    for (int32_t id : *ids) request.mutable_token_ids()->add_ids(id);
  }
  return request;
}

// The worker's request as the scheduler's: one request builder for both.
api::GenerateRequest ToGenerateRequest(const worker::v1::ExecuteRequest& in,
                                       const std::string& model) {
  api::GenerateRequest out;
  out.set_model(model);
  out.set_job_id(in.job_id());
  switch (in.prompt_case()) {
    case worker::v1::ExecuteRequest::kText: out.set_text(in.text()); break;
    case worker::v1::ExecuteRequest::kTokenIds:
      *out.mutable_token_ids() = SameFields<api::TokenIds>(in.token_ids());
      break;
    case worker::v1::ExecuteRequest::kMessages:
      *out.mutable_messages() = SameFields<api::ChatMessages>(in.messages());
      break;
    case worker::v1::ExecuteRequest::PROMPT_NOT_SET: break;
  }
  *out.mutable_sampling() = SameFields<api::SamplingParams>(in.sampling());
  out.set_max_tokens(in.max_tokens());
  out.mutable_stop()->CopyFrom(in.stop());
  out.mutable_stop_token_ids()->CopyFrom(in.stop_token_ids());
  out.set_logprobs(in.logprobs());
  out.set_ignore_eos(in.ignore_eos());
  if (in.has_parse_special()) out.set_parse_special(in.parse_special());
  return out;
}

absl::Status OnWorker(const Connection& server, const worker::v1::ExecuteRequest& request,
                      StreamPrinter& printer) {
  std::unique_ptr<worker::v1::Worker::Stub> stub = worker::v1::Worker::NewStub(server.channel);
  grpc::ClientContext context;
  server.Prepare(&context, absl::GetFlag(FLAGS_timeout));
  CancelOnInterrupt interrupt(&context);
  ExecuteResult result = ExecuteToEnd(*stub, request, &context, [&](const auto& event) {
    if (event.has_started()) printer.Started(event.started());
    if (event.has_token()) printer.Token(event.token());
  });
  absl::Status status = printer.End(server.address, result.status, result.finished);
  interrupt.RaiseIfInterrupted();
  return status;
}

absl::Status OnScheduler(const Connection& server, const api::GenerateRequest& request,
                         StreamPrinter& printer) {
  std::unique_ptr<api::Scheduler::Stub> stub = api::Scheduler::NewStub(server.channel);
  grpc::ClientContext context;
  server.Prepare(&context, absl::GetFlag(FLAGS_timeout));
  CancelOnInterrupt interrupt(&context);
  std::unique_ptr<grpc::ClientReader<api::GenerateResponse>> reader =
      stub->Generate(&context, request);
  api::GenerateResponse event;
  std::optional<worker::v1::Finished> finished;
  while (reader->Read(&event)) {
    if (event.has_started()) {
      const api::Started& s = event.started();
      printer.Started(SameFields<worker::v1::Started>(s),
                      {{"model", s.model()}, {"worker", s.worker()}, {"retries", s.retries()}});
    } else if (event.has_token()) {
      printer.Token(SameFields<worker::v1::Token>(event.token()));
    } else if (event.has_finished()) {
      finished = SameFields<worker::v1::Finished>(event.finished());
    }
  }
  absl::Status status = printer.End(server.address, reader->Finish(), finished);
  interrupt.RaiseIfInterrupted();
  return status;
}

absl::Status Generate() {
  absl::StatusOr<Target> target = WorkerOrScheduler();
  if (!target.ok()) return target.status();
  const std::string model = absl::GetFlag(FLAGS_generate_model);
  if (target->scheduler && model.empty()) {
    return absl::InvalidArgumentError("--model is required with --scheduler");
  }
  if (!target->scheduler && cli::WasGiven(FLAGS_generate_model)) {
    return absl::InvalidArgumentError("--model is for --scheduler: a worker serves one model");
  }
  absl::StatusOr<bool> jsonl = JsonlFormat();
  if (!jsonl.ok()) return jsonl.status();
  // The scheduler makes its own ids; a worker needs one.
  std::string job_id = absl::GetFlag(FLAGS_job_id);
  if (job_id.empty() && !target->scheduler) job_id = NewJobId();
  absl::StatusOr<worker::v1::ExecuteRequest> request = RequestFromFlags(job_id);
  if (!request.ok()) return request.status();
  absl::StatusOr<Connection> server = Connect(target->address);
  if (!server.ok()) return server.status();
  StreamPrinter printer(*jsonl);
  if (target->scheduler) return OnScheduler(*server, ToGenerateRequest(*request, model), printer);
  return OnWorker(*server, *request, printer);
}

}  // namespace

cli::Subcommand GenerateCommand() {
  return MakeSubcommand(
      "generate",
      "`run`'s stream, generated over gRPC by a llorch-worker or through a llorch-scheduler",
      kUsage,
      {{WorkerFlag(), SchedulerFlag(),
        cli::FlagSpec("model").Reads("generate_model").Value("NAME")},
       ConnectionFlags(), PromptFlags(), SamplingFlags(),
       {FormatFlag(), cli::FlagSpec("job_id").Value("ID"),
        cli::FlagSpec("timeout").Value("SECONDS").Above(0).AtMost(1e9)}},
      &Generate);
}

}  // namespace tool
}  // namespace llorch
