#include "services/scheduler/generate_request.h"

#include <cmath>
#include <limits>
#include <string>

#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>

#include "common/grpc/lenient_utf8.h"

namespace llorch {
namespace {

namespace pb = google::protobuf;

// The public messages the scheduler copies as bytes into the worker's must
// have the worker's fields: same names, numbers, types and labels.
void ExpectSameFields(const pb::Descriptor* public_message, const pb::Descriptor* worker_message) {
  SCOPED_TRACE(public_message->full_name());
  ASSERT_EQ(public_message->field_count(), worker_message->field_count());
  for (int i = 0; i < public_message->field_count(); ++i) {
    const pb::FieldDescriptor* a = public_message->field(i);
    const pb::FieldDescriptor* b = worker_message->FindFieldByNumber(a->number());
    ASSERT_NE(b, nullptr) << a->name();
    EXPECT_EQ(a->name(), b->name());
    EXPECT_EQ(a->type(), b->type()) << a->name();
    EXPECT_EQ(a->is_repeated(), b->is_repeated()) << a->name();
    EXPECT_EQ(a->has_presence(), b->has_presence()) << a->name();
    if (a->message_type() != nullptr) {
      EXPECT_EQ(a->message_type()->name(), b->message_type()->name()) << a->name();
    }
  }
}

TEST(SharedMessages, EqualToTheWorkers) {
  ExpectSameFields(v1::TokenIds::descriptor(), worker::v1::TokenIds::descriptor());
  ExpectSameFields(v1::SamplingParams::descriptor(), worker::v1::SamplingParams::descriptor());
  ExpectSameFields(v1::ChatMessage::descriptor(), worker::v1::ChatMessage::descriptor());
  ExpectSameFields(v1::ChatMessages::descriptor(), worker::v1::ChatMessages::descriptor());
  ExpectSameFields(v1::TopLogprob::descriptor(), worker::v1::TopLogprob::descriptor());
  ExpectSameFields(v1::Token::descriptor(), worker::v1::Token::descriptor());
  ExpectSameFields(v1::Finished::descriptor(), worker::v1::Finished::descriptor());
  const pb::EnumDescriptor* a = v1::FinishReason_descriptor();
  const pb::EnumDescriptor* b = worker::v1::FinishReason_descriptor();
  ASSERT_EQ(a->value_count(), b->value_count());
  for (int i = 0; i < a->value_count(); ++i) {
    EXPECT_EQ(a->value(i)->name(), b->value(i)->name());
    EXPECT_EQ(a->value(i)->number(), b->value(i)->number());
  }
}

v1::GenerateRequest Valid() {
  v1::GenerateRequest request;
  request.set_model("m");
  request.set_text("hello");
  return request;
}

TEST(ToExecuteRequest, CarriesEveryField) {
  v1::GenerateRequest request = Valid();
  request.mutable_sampling()->set_temperature(0.5f);
  request.mutable_sampling()->set_top_k(7);
  request.mutable_sampling()->set_seed(42);
  request.set_max_tokens(9);
  request.add_stop("\n\n");
  request.add_stop_token_ids(3);
  request.set_logprobs(2);
  request.set_ignore_eos(true);
  request.set_parse_special(false);
  const worker::v1::ExecuteRequest out = ToExecuteRequest(request, "job-1");
  EXPECT_EQ(out.job_id(), "job-1");
  EXPECT_EQ(out.text(), "hello");
  EXPECT_FLOAT_EQ(out.sampling().temperature(), 0.5f);
  EXPECT_EQ(out.sampling().top_k(), 7);
  EXPECT_EQ(out.sampling().seed(), 42u);
  EXPECT_FALSE(out.sampling().has_top_p());  // absent stays absent
  EXPECT_EQ(out.max_tokens(), 9);
  ASSERT_EQ(out.stop_size(), 1);
  EXPECT_EQ(out.stop(0), "\n\n");
  ASSERT_EQ(out.stop_token_ids_size(), 1);
  EXPECT_EQ(out.logprobs(), 2);
  EXPECT_TRUE(out.ignore_eos());
  ASSERT_TRUE(out.has_parse_special());
  EXPECT_FALSE(out.parse_special());

  v1::GenerateRequest chat;
  chat.set_model("m");
  auto* m = chat.mutable_messages()->add_messages();
  m->set_role("user");
  m->set_content("hi");
  chat.mutable_messages()->set_add_generation_prompt(false);
  const worker::v1::ExecuteRequest chat_out = ToExecuteRequest(chat, "j");
  ASSERT_EQ(chat_out.messages().messages_size(), 1);
  EXPECT_EQ(chat_out.messages().messages(0).content(), "hi");
  EXPECT_FALSE(chat_out.messages().add_generation_prompt());
  EXPECT_FALSE(chat_out.has_sampling());

  v1::GenerateRequest ids;
  ids.set_model("m");
  ids.mutable_token_ids()->add_ids(5);
  EXPECT_EQ(ToExecuteRequest(ids, "j").token_ids().ids(0), 5);
}

struct BadCase {
  const char* name;
  void (*mutate)(v1::GenerateRequest*);
  const char* field;  // the message names it
};

TEST(ValidateGenerateRequest, NamesTheField) {
  const BadCase cases[] = {
      {"no model", [](v1::GenerateRequest* r) { r->clear_model(); }, "model"},
      {"long model", [](v1::GenerateRequest* r) { r->set_model(std::string(257, 'm')); }, "model"},
      {"long job id", [](v1::GenerateRequest* r) { r->set_job_id(std::string(257, 'j')); }, "job_id"},
      {"no prompt", [](v1::GenerateRequest* r) { r->clear_prompt(); }, "prompt"},
      {"empty text", [](v1::GenerateRequest* r) { r->set_text(""); }, "text"},
      {"huge text", [](v1::GenerateRequest* r) { r->set_text(std::string((1 << 20) + 1, 'a')); }, "text"},
      {"bad utf8", [](v1::GenerateRequest* r) { r->set_text("a\xff"); }, "text"},
      {"empty ids", [](v1::GenerateRequest* r) { r->mutable_token_ids(); }, "token_ids"},
      {"negative id", [](v1::GenerateRequest* r) { r->mutable_token_ids()->add_ids(-1); }, "token_ids[0]"},
      {"no messages", [](v1::GenerateRequest* r) { r->mutable_messages(); }, "messages"},
      {"empty role",
       [](v1::GenerateRequest* r) { r->mutable_messages()->add_messages()->set_content("x"); },
       "messages[0].role"},
      {"bad content",
       [](v1::GenerateRequest* r) {
         auto* m = r->mutable_messages()->add_messages();
         m->set_role("user");
         m->set_content("\xc3");
       },
       "messages[0].content"},
      {"nan temperature",
       [](v1::GenerateRequest* r) {
         r->mutable_sampling()->set_temperature(std::numeric_limits<float>::quiet_NaN());
       },
       "temperature"},
      {"negative temperature", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_temperature(-1); }, "temperature"},
      {"top_p", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_top_p(1.5f); }, "top_p"},
      {"top_k", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_top_k(-2); }, "top_k"},
      {"min_p", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_min_p(2); }, "min_p"},
      {"penalty", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_repetition_penalty(0); }, "repetition_penalty"},
      {"max_tokens", [](v1::GenerateRequest* r) { r->set_max_tokens(-1); }, "max_tokens"},
      {"logprobs", [](v1::GenerateRequest* r) { r->set_logprobs(21); }, "logprobs"},
      {"many stops",
       [](v1::GenerateRequest* r) {
         for (int i = 0; i < 17; ++i) r->add_stop("s");
       },
       "stop"},
      {"long stop", [](v1::GenerateRequest* r) { r->add_stop(std::string(257, 's')); }, "stop[0]"},
      {"empty stop", [](v1::GenerateRequest* r) { r->add_stop(""); }, "stop[0]"},
      {"many stop ids",
       [](v1::GenerateRequest* r) {
         for (int i = 0; i < 65; ++i) r->add_stop_token_ids(1);
       },
       "stop_token_ids"},
      {"negative stop id", [](v1::GenerateRequest* r) { r->add_stop_token_ids(-5); }, "stop_token_ids[0]"},
      // Bytes that were no GenerateRequest at all (common/grpc/lenient_utf8.h).
      {"unparsed",
       [](v1::GenerateRequest* r) { MarkUnparsed(r, "the request is not a llorch.v1.GenerateRequest"); },
       "GenerateRequest"},
  };
  EXPECT_TRUE(ValidateGenerateRequest(Valid()).ok());
  for (const BadCase& c : cases) {
    v1::GenerateRequest request = Valid();
    c.mutate(&request);
    const absl::Status status = ValidateGenerateRequest(request);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(status.message().find(c.field), absl::string_view::npos)
        << c.name << ": " << status.message();
  }
}

}  // namespace
}  // namespace llorch
