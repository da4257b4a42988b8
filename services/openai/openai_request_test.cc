#include "services/openai/openai_request.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace llorch::openai {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

OpenAiRequest Parse(Endpoint endpoint, const json& body) {
  absl::StatusOr<OpenAiRequest> parsed = ParseRequest(endpoint, body.dump());
  EXPECT_TRUE(parsed.ok()) << parsed.status() << " for " << body.dump();
  return parsed.ok() ? *parsed : OpenAiRequest();
}

// Checks that a request is refused naming `param`; returns the message.
std::string Refused(Endpoint endpoint, const std::string& body, const std::string& param) {
  absl::StatusOr<OpenAiRequest> parsed = ParseRequest(endpoint, body);
  EXPECT_FALSE(parsed.ok()) << body;
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << body;
  EXPECT_EQ(ToApiError(parsed.status(), nullptr).param, param) << body << ": " << parsed.status();
  return std::string(parsed.status().message());
}

constexpr Endpoint kChat = Endpoint::kChatCompletions;
constexpr Endpoint kCompletions = Endpoint::kCompletions;

TEST(ParseRequestTest, ChatWithEveryField) {
  const OpenAiRequest r = Parse(
      kChat, {{"model", "m"},
              {"messages",
               {{{"role", "system"}, {"content", "Be brief."}},
                {{"role", "user"},
                 {"content",
                  {{{"type", "text"}, {"text", "Hello"}}, {{"type", "text"}, {"text", "there"}}}}},
                {{"role", "assistant"}, {"content", nullptr}}}},
              {"max_tokens", 7},
              {"temperature", 0.5},
              {"top_p", 0.9},
              {"seed", 42},
              {"stop", "\n\n"},
              {"n", 1},
              {"logprobs", true},
              {"top_logprobs", 3},
              {"stream", true},
              {"stream_options", {{"include_usage", true}}},
              {"top_k", 40},
              {"min_p", 0.05},
              {"repetition_penalty", 1.1},
              {"ignore_eos", true},
              {"user", "someone"},            // ignored
              {"presence_penalty", 0},        // the default: fine
              {"some_future_field", {1, 2}}});  // unknown: ignored
  EXPECT_EQ(r.endpoint, kChat);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 3);
  const v1::GenerateRequest& g = r.generate;
  EXPECT_EQ(g.model(), "m");
  EXPECT_TRUE(g.job_id().empty());
  ASSERT_EQ(g.prompt_case(), v1::GenerateRequest::kMessages);
  ASSERT_EQ(g.messages().messages_size(), 3);
  EXPECT_EQ(g.messages().messages(0).role(), "system");
  EXPECT_EQ(g.messages().messages(0).content(), "Be brief.");
  EXPECT_EQ(g.messages().messages(1).content(), "Hello\nthere");
  EXPECT_EQ(g.messages().messages(2).content(), "");
  EXPECT_FALSE(g.messages().has_add_generation_prompt());
  EXPECT_EQ(g.max_tokens(), 7);
  EXPECT_FLOAT_EQ(g.sampling().temperature(), 0.5f);
  EXPECT_FLOAT_EQ(g.sampling().top_p(), 0.9f);
  EXPECT_EQ(g.sampling().top_k(), 40);
  EXPECT_FLOAT_EQ(g.sampling().min_p(), 0.05f);
  EXPECT_FLOAT_EQ(g.sampling().repetition_penalty(), 1.1f);
  EXPECT_EQ(g.sampling().seed(), 42u);
  ASSERT_EQ(g.stop_size(), 1);
  EXPECT_EQ(g.stop(0), "\n\n");
  EXPECT_EQ(g.logprobs(), 3);
  EXPECT_TRUE(g.ignore_eos());
}

TEST(ParseRequestTest, AbsentAndNullFieldsTakeTheSchedulersDefaults) {
  const OpenAiRequest r = Parse(kChat, {{"model", "m"},
                                        {"messages", {{{"role", "user"}, {"content", "hi"}}}},
                                        {"temperature", nullptr},
                                        {"stop", nullptr},
                                        {"max_tokens", nullptr},
                                        {"stream_options", nullptr}});
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.include_usage);
  EXPECT_FALSE(r.logprobs);
  EXPECT_FALSE(r.generate.has_sampling());
  EXPECT_FALSE(r.generate.sampling().has_temperature());
  EXPECT_EQ(r.generate.max_tokens(), 0);
  EXPECT_EQ(r.generate.stop_size(), 0);
  EXPECT_EQ(r.generate.logprobs(), 0);
  EXPECT_FALSE(r.generate.ignore_eos());
}

TEST(ParseRequestTest, MaxCompletionTokensWinsOverMaxTokens) {
  const OpenAiRequest r = Parse(kChat, {{"model", "m"},
                                        {"messages", {{{"role", "user"}, {"content", "hi"}}}},
                                        {"max_tokens", 5},
                                        {"max_completion_tokens", 9}});
  EXPECT_EQ(r.generate.max_tokens(), 9);
  EXPECT_EQ(r.max_tokens_param, "max_completion_tokens");
}

// stream_options belongs to streams (OpenAI and vLLM refuse it otherwise).
TEST(ParseRequestTest, StreamOptionsOnlyWhenStreaming) {
  const OpenAiRequest r = Parse(kCompletions, {{"model", "m"},
                                               {"prompt", "x"},
                                               {"stream", true},
                                               {"stream_options", {{"include_usage", true}}}});
  EXPECT_TRUE(r.include_usage);
  EXPECT_THAT(Refused(kCompletions,
                      R"({"model": "m", "prompt": "x", "stream_options": {"include_usage": true}})",
                      "stream_options"),
              HasSubstr("only allowed when 'stream' is true"));
  EXPECT_FALSE(Parse(kCompletions, {{"model", "m"}, {"prompt", "x"}, {"stream_options", nullptr}})
                   .include_usage);
}

TEST(ParseRequestTest, CompletionPromptForms) {
  OpenAiRequest r = Parse(kCompletions, {{"model", "m"}, {"prompt", "Once upon"}});
  EXPECT_EQ(r.generate.text(), "Once upon");
  r = Parse(kCompletions, {{"model", "m"}, {"prompt", {"Once upon"}}});
  EXPECT_EQ(r.generate.text(), "Once upon");
  r = Parse(kCompletions, {{"model", "m"}, {"prompt", {1, 2, 3}}});
  ASSERT_EQ(r.generate.prompt_case(), v1::GenerateRequest::kTokenIds);
  EXPECT_THAT(r.generate.token_ids().ids(), ::testing::ElementsAre(1, 2, 3));
  r = Parse(kCompletions, {{"model", "m"}, {"prompt", {{4, 5}}}});
  EXPECT_THAT(r.generate.token_ids().ids(), ::testing::ElementsAre(4, 5));
}

TEST(ParseRequestTest, CompletionLogprobsIsACount) {
  OpenAiRequest r = Parse(kCompletions, {{"model", "m"}, {"prompt", "x"}, {"logprobs", 2}});
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.generate.logprobs(), 2);
  r = Parse(kCompletions, {{"model", "m"}, {"prompt", "x"}, {"logprobs", 0}});
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.generate.logprobs(), 0);
  r = Parse(kCompletions, {{"model", "m"}, {"prompt", "x"}, {"logprobs", nullptr}});
  EXPECT_FALSE(r.logprobs);
}

TEST(ParseRequestTest, StopListStopTokenIdsSeedAndTopKOff) {
  const OpenAiRequest r = Parse(kCompletions, {{"model", "m"},
                                               {"prompt", "x"},
                                               {"stop", {"a", "bc"}},
                                               {"stop_token_ids", {2, 7}},
                                               {"seed", -1},
                                               {"top_k", -1},
                                               {"max_tokens", 16.0}});
  EXPECT_THAT(r.generate.stop(), ::testing::ElementsAre("a", "bc"));
  EXPECT_THAT(r.generate.stop_token_ids(), ::testing::ElementsAre(2, 7));
  EXPECT_EQ(r.generate.sampling().seed(), ~uint64_t{0});
  EXPECT_EQ(r.generate.sampling().top_k(), 0);
  EXPECT_EQ(r.generate.max_tokens(), 16);
}

TEST(ParseRequestTest, MalformedBodies) {
  EXPECT_THAT(Refused(kChat, "{", ""), HasSubstr("not valid JSON"));
  EXPECT_THAT(Refused(kChat, "[1]", ""), HasSubstr("must be a JSON object"));
  EXPECT_THAT(Refused(kChat, "", ""), HasSubstr("not valid JSON"));
}

TEST(ParseRequestTest, WrongTypesNameTheField) {
  const std::string messages = R"("messages": [{"role": "user", "content": "hi"}])";
  auto chat = [&](const std::string& fields) {
    return absl::StrCat(R"({"model": "m", )", messages, fields.empty() ? "" : ", ", fields, "}");
  };
  Refused(kChat, R"({"messages": []})", "model");
  Refused(kChat, R"({"model": 5, "messages": []})", "model");
  Refused(kChat, R"({"model": "m"})", "messages");
  Refused(kChat, R"({"model": "m", "messages": "hi"})", "messages");
  Refused(kChat, R"({"model": "m", "messages": ["hi"]})", "messages[0]");
  Refused(kChat, R"({"model": "m", "messages": [{"content": "hi"}]})", "messages[0].role");
  Refused(kChat, R"({"model": "m", "messages": [{"role": "user", "content": 5}]})",
          "messages[0].content");
  Refused(kChat,
          R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
          "messages[0].content[0].type");
  Refused(kChat, chat(R"("max_tokens": "7")"), "max_tokens");
  Refused(kChat, chat(R"("max_tokens": 0)"), "max_tokens");
  Refused(kChat, chat(R"("max_tokens": 1.5)"), "max_tokens");
  Refused(kChat, chat(R"("max_completion_tokens": 99999999999)"), "max_completion_tokens");
  Refused(kChat, chat(R"("temperature": "hot")"), "temperature");
  Refused(kChat, chat(R"("stream": "yes")"), "stream");
  Refused(kChat, chat(R"("stream_options": {"include_usage": 1})"), "stream_options.include_usage");
  Refused(kChat, chat(R"("stop": 5)"), "stop");
  Refused(kChat, chat(R"("stop": ["a", 5])"), "stop[1]");
  Refused(kChat, chat(R"("seed": "x")"), "seed");
  Refused(kChat, chat(R"("logprobs": 1)"), "logprobs");
  Refused(kChat, chat(R"("top_logprobs": 2)"), "top_logprobs");
  EXPECT_THAT(Refused(kChat, chat(R"("logprobs": true, "top_logprobs": 21)"), "top_logprobs"),
              HasSubstr("'top_logprobs' must be at most 20"));
  EXPECT_THAT(Refused(kChat, chat(R"("stream_options": {"include_usage": "x"})"),
                      "stream_options.include_usage"),
              HasSubstr("'stream_options.include_usage'"));
  Refused(kChat, chat(R"("n": 2)"), "n");
  Refused(kChat, chat(R"("presence_penalty": 0.5)"), "presence_penalty");
  Refused(kChat, chat(R"("tools": [{"type": "function"}])"), "tools");
  Refused(kChat, chat(R"("tool_choice": "required")"), "tool_choice");
  Refused(kChat, chat(R"("tool_choice": {"type": "function", "function": {"name": "f"}})"),
          "tool_choice");
  Parse(kChat, json::parse(chat(R"("tool_choice": "none")")));
  Parse(kChat, json::parse(chat(R"("tool_choice": "auto", "tools": [])")));
  Refused(kChat, chat(R"("response_format": {"type": "json_object"})"), "response_format");
  Refused(kCompletions, R"({"model": "m"})", "prompt");
  Refused(kCompletions, R"({"model": "m", "prompt": 5})", "prompt");
  Refused(kCompletions, R"({"model": "m", "prompt": []})", "prompt");
  Refused(kCompletions, R"({"model": "m", "prompt": ["a", "b"]})", "prompt");
  Refused(kCompletions, R"({"model": "m", "prompt": [1, -2]})", "prompt[1]");
  Refused(kCompletions, R"({"model": "m", "prompt": "x", "logprobs": true})", "logprobs");
  Refused(kCompletions, R"({"model": "m", "prompt": "x", "echo": true})", "echo");
  Refused(kCompletions, R"({"model": "m", "prompt": "x", "best_of": 3})", "best_of");
}

// A value the JSON parser refuses (invalid UTF-8, a number out of range,
// NaN) is named by where it is; a bad key or trailing text is no field.
TEST(ParseRequestTest, UnparsableValuesNameTheirField) {
  Refused(kChat, R"({"model": "m", "temperature": 1e999})", "temperature");
  Refused(kChat, R"({"model": "m", "temperature": NaN})", "temperature");
  Refused(kChat, "{\"model\": \"\xc3\x28\"}", "model");
  Refused(kChat,
          "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
          "{\"role\": \"user\", \"content\": \"\xed\xa0\x80\"}]}",
          "messages[1].content");
  Refused(kChat, R"({"model": "m", "stream_options": {"include_usage": tru}})",
          "stream_options.include_usage");
  Refused(kCompletions, "{\"model\": \"m\", \"stop\": [\"a\", \"\xff\"]}", "stop[1]");
  Refused(kCompletions, R"({"model": "m", "prompt": "\ud800"})", "prompt");
  Refused(kCompletions, "{\"model\": \"m\", \"\xff\": 1}", "");
  Refused(kCompletions, R"({"model": "m", "prompt": "x"} trailing)", "");
  Refused(kCompletions, "[1, \xff]", "");
  // A path as deep as the body: the error names its first 200 bytes.
  const std::string deep = absl::StrCat(R"({"model": "m", "x": )", std::string(100000, '['), "y");
  absl::StatusOr<OpenAiRequest> parsed = ParseRequest(kCompletions, deep);
  ASSERT_FALSE(parsed.ok());
  EXPECT_LT(parsed.status().message().size(), 1000u);
  EXPECT_LT(ToApiError(parsed.status(), nullptr).param.size(), 300u);
  EXPECT_THAT(ToApiError(parsed.status(), nullptr).param, ::testing::StartsWith("x[0][0]"));
}

// Over the scheduler's gRPC limit (4 MiB) a request would get gRPC's
// RESOURCE_EXHAUSTED (429): 400 naming its largest field instead.
TEST(ParseRequestTest, RequestsOverTheGrpcLimitNameTheirLargestField) {
  const std::string big(5 << 20, 'a');
  Refused(kCompletions, json{{"model", "m"}, {"prompt", big}}.dump(), "prompt");
  Refused(kCompletions, json{{"model", "m"}, {"prompt", std::vector<int>(1 << 20, 1 << 30)}}.dump(),
          "prompt");
  Refused(kChat, json{{"model", "m"}, {"messages", {{{"role", "user"}, {"content", big}}}}}.dump(),
          "messages");
  Refused(kCompletions,
          json{{"model", "m"}, {"prompt", "x"}, {"stop_token_ids", std::vector<int>(1 << 20, 1 << 30)}}
              .dump(),
          "stop_token_ids");
  Refused(kCompletions,
          json{{"model", "m"}, {"prompt", "x"}, {"stop", std::vector<std::string>(1 << 21, "ab")}}
              .dump(),
          "stop");
  // Under it, the scheduler's own limits apply (1 MiB of text: its message).
  Parse(kCompletions, json{{"model", "m"}, {"prompt", std::string(2 << 20, 'a')}});
}

TEST(ToApiErrorTest, CodesBecomeHttpStatusesAndTypes) {
  struct Case {
    absl::Status status;
    int http;
    std::string type;
    std::string code;
  };
  for (const Case& c : std::vector<Case>{
           {absl::InvalidArgumentError("x"), 400, "invalid_request_error", ""},
           {absl::FailedPreconditionError("no chat template"), 400, "invalid_request_error", ""},
           {absl::UnauthenticatedError("missing bearer token"), 401, "invalid_request_error",
            "invalid_api_key"},
           {absl::NotFoundError("no worker serves model x"), 404, "invalid_request_error",
            "model_not_found"},
           {absl::ResourceExhaustedError("queue full"), 429, "rate_limit_error",
            "rate_limit_exceeded"},
           {absl::UnavailableError("no worker up"), 503, "server_error", "service_unavailable"},
           {absl::DeadlineExceededError("late"), 504, "server_error", "timeout"},
           {absl::InternalError("boom"), 500, "server_error", ""},
           {absl::CancelledError("cancelled"), 500, "server_error", ""},
       }) {
    const ApiError e = ToApiError(c.status, nullptr);
    EXPECT_EQ(e.http_status, c.http) << c.status;
    EXPECT_EQ(e.type, c.type) << c.status;
    EXPECT_EQ(e.code, c.code) << c.status;
    EXPECT_EQ(e.message, c.status.message());
  }
}

TEST(ToApiErrorTest, TheSchedulersFieldBecomesTheParamInTheRequestsNames) {
  OpenAiRequest chat;
  chat.endpoint = kChat;
  chat.max_tokens_param = "max_completion_tokens";
  OpenAiRequest completion;
  completion.endpoint = kCompletions;
  auto param = [](const std::string& message, const OpenAiRequest& r) {
    return ToApiError(absl::InvalidArgumentError(message), &r).param;
  };
  EXPECT_EQ(param("temperature must be finite and >= 0, got -1", chat), "temperature");
  EXPECT_EQ(param("sampling parameter top_p must be in (0, 1], got 1.5", chat), "top_p");
  EXPECT_EQ(param("text (the prompt) is empty", completion), "prompt");
  EXPECT_EQ(param("token_ids[3] is negative", completion), "prompt");
  EXPECT_EQ(param("messages[0].role is required", chat), "messages[0].role");
  EXPECT_EQ(param("stop[2] has 300 bytes, more than the limit of 256", chat), "stop");
  EXPECT_EQ(param("logprobs must be in [0, 20], got 21", chat), "top_logprobs");
  EXPECT_EQ(param("logprobs must be in [0, 20], got 21", completion), "logprobs");
  EXPECT_EQ(param("max_tokens must be at least 1, got -1", chat), "max_completion_tokens");
  EXPECT_EQ(param("the prompt has 9000 tokens, more than the context", chat), "");
  EXPECT_EQ(param("token_ids: prompt token id 9 is outside the vocabulary [0, 8)", completion),
            "prompt");
  EXPECT_EQ(param("stop_token_ids: id 9 is outside the vocabulary [0, 8)", chat),
            "stop_token_ids");
  EXPECT_EQ(param("messages: the chat template says: boom", chat), "messages");
  EXPECT_EQ(param("prompt of 300 tokens does not fit the context length 256", chat), "messages");
  EXPECT_EQ(param("prompt of 300 tokens does not fit the context length 256", completion),
            "prompt");
}

TEST(ErrorBodyTest, OpenAiShapeWithNulls) {
  ApiError error;
  error.http_status = 400;
  error.message = "bad";
  error.type = "invalid_request_error";
  EXPECT_EQ(ErrorBody(error),
            json::parse(R"({"error": {"message": "bad", "type": "invalid_request_error",
                                      "param": null, "code": null}})"));
  error.param = "n";
  error.code = "x";
  EXPECT_EQ(ErrorBody(error)["error"]["param"], "n");
  EXPECT_EQ(ErrorBody(error)["error"]["code"], "x");
}

v1::Token MakeToken(int index, int id, const std::string& text, float logprob,
                    std::vector<std::pair<int, float>> top = {}) {
  v1::Token t;
  t.set_index(index);
  t.set_id(id);
  t.set_text(text);
  t.set_logprob(logprob);
  for (auto [alt, lp] : top) {
    v1::TopLogprob* p = t.add_top_logprobs();
    p->set_id(alt);
    p->set_logprob(lp);
  }
  return t;
}

v1::Finished MakeFinished(v1::FinishReason reason, int prompt, int completion) {
  v1::Finished f;
  f.set_reason(reason);
  f.set_prompt_tokens(prompt);
  f.set_completion_tokens(completion);
  return f;
}

TEST(ResponseBuilderTest, ChatResponse) {
  OpenAiRequest request = Parse(kChat, {{"model", "smol"},
                                        {"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  ResponseBuilder builder(request, ResponseBuilder::ResponseId(kChat, "job-1"), 1700000000,
                          /*cached_prompt_tokens=*/3);
  builder.Add(MakeToken(0, 10, "Hel", -0.5f));
  builder.Add(MakeToken(1, 11, "lo", -0.25f));
  const json response = builder.Response(MakeFinished(v1::FINISH_REASON_EOS, 5, 2));
  EXPECT_EQ(response, json::parse(R"({
    "id": "chatcmpl-job-1", "object": "chat.completion", "created": 1700000000, "model": "smol",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                 "logprobs": null, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
              "prompt_tokens_details": {"cached_tokens": 3}}})"));
}

TEST(ResponseBuilderTest, CompletionResponseWithLogprobs) {
  OpenAiRequest request =
      Parse(kCompletions, {{"model", "smol"}, {"prompt", "x"}, {"logprobs", 2}});
  ResponseBuilder builder(request, ResponseBuilder::ResponseId(kCompletions, "job-2"), 1);
  builder.Add(MakeToken(0, 10, "é", -0.5f, {{10, -0.5f}, {12, -1.5f}}));
  builder.Add(MakeToken(1, 11, "b", -0.25f, {{11, -0.25f}, {13, -2.0f}}));
  const json response = builder.Response(MakeFinished(v1::FINISH_REASON_LENGTH, 3, 2));
  EXPECT_EQ(response["id"], "cmpl-job-2");
  EXPECT_EQ(response["object"], "text_completion");
  const json& choice = response["choices"][0];
  EXPECT_EQ(choice["text"], "éb");
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_EQ(choice["logprobs"], json::parse(R"({
    "tokens": ["é", "b"], "token_logprobs": [-0.5, -0.25],
    "top_logprobs": [{"é": -0.5, "token_id:12": -1.5}, {"b": -0.25, "token_id:13": -2.0}],
    "text_offset": [0, 1]})"));
}

TEST(ResponseBuilderTest, ChatStreamChunks) {
  OpenAiRequest request = Parse(kChat, {{"model", "smol"},
                                        {"messages", {{{"role", "user"}, {"content", "hi"}}}},
                                        {"stream", true},
                                        {"stream_options", {{"include_usage", true}}},
                                        {"logprobs", true},
                                        {"top_logprobs", 1}});
  ResponseBuilder builder(request, "chatcmpl-j", 7);
  const std::optional<json> first = builder.FirstChunk();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ((*first)["object"], "chat.completion.chunk");
  EXPECT_EQ((*first)["choices"][0]["delta"],
            json::parse(R"({"role": "assistant", "content": ""})"));
  EXPECT_TRUE((*first)["usage"].is_null());
  EXPECT_TRUE((*first).contains("usage"));

  // An empty text (an incomplete character) makes no chunk; its log-prob
  // goes with the next one.
  EXPECT_FALSE(builder.TokenChunk(MakeToken(0, 200, "", -1.0f, {{200, -1.0f}})).has_value());
  const std::optional<json> chunk =
      builder.TokenChunk(MakeToken(1, 201, "€", -0.5f, {{7, -0.1f}}));
  ASSERT_TRUE(chunk.has_value());
  EXPECT_EQ((*chunk)["choices"][0]["delta"], json::parse(R"({"content": "€"})"));
  EXPECT_TRUE((*chunk)["choices"][0]["finish_reason"].is_null());
  const json& content = (*chunk)["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], "");
  EXPECT_EQ(content[1], json::parse(R"({"token": "€", "logprob": -0.5, "bytes": [226, 130, 172],
      "top_logprobs": [{"token": "token_id:7", "logprob": -0.10000000149011612,
                        "bytes": null}]})"));

  const json last = builder.FinalChunk(MakeFinished(v1::FINISH_REASON_STOP, 4, 2));
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(last["choices"][0]["logprobs"].is_null());
  const json usage = builder.UsageChunk(MakeFinished(v1::FINISH_REASON_STOP, 4, 2));
  EXPECT_EQ(usage["choices"], json::array());
  EXPECT_EQ(usage["usage"],
            json::parse(R"({"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6,
                            "prompt_tokens_details": {"cached_tokens": 0}})"));
  EXPECT_EQ(builder.text(), "€");
}

TEST(ResponseBuilderTest, CompletionStreamChunks) {
  OpenAiRequest request =
      Parse(kCompletions, {{"model", "smol"}, {"prompt", "x"}, {"stream", true}});
  ResponseBuilder builder(request, "cmpl-j", 7);
  EXPECT_FALSE(builder.FirstChunk().has_value());
  const std::optional<json> chunk = builder.TokenChunk(MakeToken(0, 5, " a", -0.5f));
  ASSERT_TRUE(chunk.has_value());
  EXPECT_EQ(*chunk, json::parse(R"({"id": "cmpl-j", "object": "text_completion", "created": 7,
      "model": "smol", "choices": [{"index": 0, "text": " a", "logprobs": null,
      "finish_reason": null}]})"));
  const json last = builder.FinalChunk(MakeFinished(v1::FINISH_REASON_LENGTH, 1, 1));
  EXPECT_EQ(last["choices"][0]["text"], "");
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
}

TEST(SseTest, EventFraming) {
  EXPECT_EQ(SseEvent(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(std::string(kSseDone), "data: [DONE]\n\n");
  EXPECT_EQ(FinishReasonName(v1::FINISH_REASON_EOS), "stop");
  EXPECT_EQ(FinishReasonName(v1::FINISH_REASON_STOP), "stop");
  EXPECT_EQ(FinishReasonName(v1::FINISH_REASON_LENGTH), "length");
  EXPECT_EQ(FinishReasonName(v1::FINISH_REASON_CANCELLED), "cancelled");
}

}  // namespace
}  // namespace llorch::openai
