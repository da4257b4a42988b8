#include "services/worker/worker_client.h"

#include <memory>

namespace llorch {

namespace v1 = worker::v1;

std::vector<int32_t> ExecuteResult::ids() const {
  std::vector<int32_t> out;
  for (const v1::Token& token : tokens) out.push_back(token.id());
  return out;
}

std::string ExecuteResult::text() const {
  std::string out;
  for (const v1::Token& token : tokens) out += token.text();
  return out;
}

ExecuteResult ExecuteToEnd(v1::Worker::StubInterface& stub, const v1::ExecuteRequest& request,
                           grpc::ClientContext* context,
                           const std::function<void(const v1::ExecuteEvent&)>& on_event) {
  ExecuteResult result;
  std::unique_ptr<grpc::ClientReaderInterface<v1::ExecuteEvent>> reader =
      stub.Execute(context, request);
  v1::ExecuteEvent event;
  while (reader->Read(&event)) {
    if (on_event) on_event(event);
    switch (event.event_case()) {
      case v1::ExecuteEvent::kStarted: result.started = event.started(); break;
      case v1::ExecuteEvent::kToken: result.tokens.push_back(event.token()); break;
      case v1::ExecuteEvent::kFinished: result.finished = event.finished(); break;
      case v1::ExecuteEvent::EVENT_NOT_SET: break;
    }
  }
  result.status = reader->Finish();
  return result;
}

}  // namespace llorch
