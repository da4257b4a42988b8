#include "services/openai/openai_request.h"

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "services/worker/request_limits.h"

namespace llorch::openai {
namespace {

using json = nlohmann::json;

constexpr char kParamPayload[] = "type.llorch.dev/openai.param";

std::string TypeName(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    default: return "an unsupported value";
  }
}

absl::Status WrongType(absl::string_view param, absl::string_view expected, const json& value) {
  return InvalidParam(param, absl::StrCat("Invalid type for '", param, "': expected ", expected,
                                          ", but got ", TypeName(value), " instead."));
}

// The field's value; null when absent or null.
const json* Field(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::optional<bool>> Bool(const json& object, const char* key) {
  const json* value = Field(object, key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_boolean()) return WrongType(key, "a boolean", *value);
  return value->get<bool>();
}

absl::StatusOr<std::optional<double>> Number(const json& object, const char* key) {
  const json* value = Field(object, key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_number()) return WrongType(key, "a number", *value);
  return value->get<double>();
}

// An integer in [min, max]; integral floats (16.0) count.
absl::StatusOr<int64_t> IntegerValue(absl::string_view param, const json& value, int64_t min,
                                     int64_t max) {
  int64_t out = 0;
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(max)) {
      return InvalidParam(param, absl::StrCat("'", param, "' must be at most ", max, ", got ", u));
    }
    out = static_cast<int64_t>(u);
  } else if (value.is_number_integer()) {
    out = value.get<int64_t>();
  } else if (value.is_number_float()) {
    const double d = value.get<double>();
    if (!(std::isfinite(d) && d == std::floor(d) && d >= -9.2e18 && d <= 9.2e18)) {
      return WrongType(param, "an integer", value);
    }
    out = static_cast<int64_t>(d);
  } else {
    return WrongType(param, "an integer", value);
  }
  if (out < min || out > max) {
    return InvalidParam(param, absl::StrCat("'", param, "' must be in [", min, ", ", max,
                                            "], got ", out));
  }
  return out;
}

absl::StatusOr<std::optional<int64_t>> Integer(const json& object, const char* key, int64_t min,
                                               int64_t max) {
  const json* value = Field(object, key);
  if (value == nullptr) return std::nullopt;
  absl::StatusOr<int64_t> out = IntegerValue(key, *value, min, max);
  if (!out.ok()) return out.status();
  return *out;
}

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// A field that only its default value may have: anything else is refused
// rather than silently ignored (it would change the answer).
absl::Status OnlyDefault(const json& object, const char* key, const json& allowed,
                         absl::string_view what) {
  const json* value = Field(object, key);
  if (value == nullptr || *value == allowed) return absl::OkStatus();
  return InvalidParam(key, absl::StrCat("'", key, "' is not supported: ", what));
}

absl::Status CheckUnsupported(const json& body) {
  const json* n = Field(body, "n");
  if (n != nullptr) {
    absl::StatusOr<int64_t> value = IntegerValue("n", *n, 1, kInt32Max);
    if (!value.ok()) return value.status();
    if (*value != 1) return InvalidParam("n", "'n' must be 1: one choice per request");
  }
  if (absl::Status s = OnlyDefault(body, "best_of", 1, "must be 1"); !s.ok()) return s;
  if (absl::Status s = OnlyDefault(body, "echo", false, "must be false"); !s.ok()) return s;
  if (absl::Status s = OnlyDefault(body, "suffix", "", "must be empty"); !s.ok()) return s;
  if (absl::Status s =
          OnlyDefault(body, "presence_penalty", 0, "must be 0 (use repetition_penalty)");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          OnlyDefault(body, "frequency_penalty", 0, "must be 0 (use repetition_penalty)");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = OnlyDefault(body, "logit_bias", json::object(), "must be empty"); !s.ok()) {
    return s;
  }
  if (absl::Status s = OnlyDefault(body, "tools", json::array(), "no tool calling"); !s.ok()) {
    return s;
  }
  if (absl::Status s = OnlyDefault(body, "functions", json::array(), "no function calling");
      !s.ok()) {
    return s;
  }
  // Without tools "none" and "auto" mean plain text; "required" or a named
  // function would demand a call (OpenAI and vLLM refuse them too).
  const json* tool_choice = Field(body, "tool_choice");
  if (tool_choice != nullptr && *tool_choice != "none" && *tool_choice != "auto") {
    return InvalidParam("tool_choice",
                        "'tool_choice' is not supported: no tool calling (only \"none\" or "
                        "\"auto\")");
  }
  const json* format = Field(body, "response_format");
  if (format != nullptr) {
    if (!format->is_object()) return WrongType("response_format", "an object", *format);
    const json* type = Field(*format, "type");
    if (type != nullptr && *type != "text") {
      return InvalidParam("response_format",
                          "'response_format' is not supported: only {\"type\": \"text\"}");
    }
  }
  return absl::OkStatus();
}

absl::Status ParseStop(const json& body, v1::GenerateRequest* out) {
  const json* stop = Field(body, "stop");
  if (stop != nullptr) {
    if (stop->is_string()) {
      out->add_stop(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        const json& s = (*stop)[i];
        if (!s.is_string()) {
          return WrongType(absl::StrCat("stop[", i, "]"), "a string", s);
        }
        out->add_stop(s.get<std::string>());
      }
    } else {
      return WrongType("stop", "a string or an array of strings", *stop);
    }
  }
  const json* ids = Field(body, "stop_token_ids");
  if (ids != nullptr) {
    if (!ids->is_array()) return WrongType("stop_token_ids", "an array of integers", *ids);
    for (size_t i = 0; i < ids->size(); ++i) {
      absl::StatusOr<int64_t> id =
          IntegerValue(absl::StrCat("stop_token_ids[", i, "]"), (*ids)[i], 0, kInt32Max);
      if (!id.ok()) return id.status();
      out->add_stop_token_ids(static_cast<int32_t>(*id));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseSampling(const json& body, v1::GenerateRequest* out) {
  v1::SamplingParams* sampling = out->mutable_sampling();
  // The scheduler checks the ranges (and names the field).
  for (auto [key, setter] :
       {std::pair<const char*, void (v1::SamplingParams::*)(float)>{
            "temperature", &v1::SamplingParams::set_temperature},
        {"top_p", &v1::SamplingParams::set_top_p},
        {"min_p", &v1::SamplingParams::set_min_p},
        {"repetition_penalty", &v1::SamplingParams::set_repetition_penalty}}) {
    absl::StatusOr<std::optional<double>> value = Number(body, key);
    if (!value.ok()) return value.status();
    if (value->has_value()) (sampling->*setter)(static_cast<float>(**value));
  }
  // -1 turns top_k off, as vLLM's API has it.
  absl::StatusOr<std::optional<int64_t>> top_k = Integer(body, "top_k", -1, kInt32Max);
  if (!top_k.ok()) return top_k.status();
  if (top_k->has_value()) sampling->set_top_k(static_cast<int32_t>(std::max<int64_t>(**top_k, 0)));
  const json* seed = Field(body, "seed");
  if (seed != nullptr) {
    // Any 64-bit integer: a negative one is taken as its two's complement.
    if (seed->is_number_unsigned()) {
      sampling->set_seed(seed->get<uint64_t>());
    } else {
      absl::StatusOr<int64_t> value = IntegerValue("seed", *seed,
                                                   std::numeric_limits<int64_t>::min(),
                                                   std::numeric_limits<int64_t>::max());
      if (!value.ok()) return value.status();
      sampling->set_seed(static_cast<uint64_t>(*value));
    }
  }
  if (sampling->ByteSizeLong() == 0) out->clear_sampling();
  return absl::OkStatus();
}

absl::Status ParseCommon(const json& body, OpenAiRequest* out) {
  v1::GenerateRequest& generate = out->generate;
  const json* model = Field(body, "model");
  if (model == nullptr) return InvalidParam("model", "'model' is required");
  if (!model->is_string()) return WrongType("model", "a string", *model);
  generate.set_model(model->get<std::string>());

  if (absl::Status s = CheckUnsupported(body); !s.ok()) return s;

  absl::StatusOr<std::optional<bool>> stream = Bool(body, "stream");
  if (!stream.ok()) return stream.status();
  out->stream = stream->value_or(false);
  const json* options = Field(body, "stream_options");
  if (options != nullptr) {
    if (!options->is_object()) return WrongType("stream_options", "an object", *options);
    const json* usage = Field(*options, "include_usage");
    if (usage != nullptr && !usage->is_boolean()) {
      return WrongType("stream_options.include_usage", "a boolean", *usage);
    }
    if (!out->stream) {
      return InvalidParam("stream_options",
                          "'stream_options' is only allowed when 'stream' is true");
    }
    out->include_usage = usage != nullptr && usage->get<bool>();
  }

  // max_completion_tokens replaces max_tokens in OpenAI's chat API; either
  // is taken, the newer first. Absent: the worker's default (128).
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    absl::StatusOr<std::optional<int64_t>> value = Integer(body, key, 1, kInt32Max);
    if (!value.ok()) return value.status();
    if (value->has_value()) {
      generate.set_max_tokens(static_cast<int32_t>(**value));
      out->max_tokens_param = key;
    }
  }

  if (absl::Status s = ParseSampling(body, &generate); !s.ok()) return s;
  if (absl::Status s = ParseStop(body, &generate); !s.ok()) return s;
  absl::StatusOr<std::optional<bool>> ignore_eos = Bool(body, "ignore_eos");
  if (!ignore_eos.ok()) return ignore_eos.status();
  generate.set_ignore_eos(ignore_eos->value_or(false));
  return absl::OkStatus();
}

// A message's content: a string, null, or text parts (joined by "\n", as
// vLLM joins them).
absl::StatusOr<std::string> MessageContent(const json& content, const std::string& param) {
  if (content.is_null()) return std::string();
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    return WrongType(param, "a string or an array of content parts", content);
  }
  std::vector<std::string> texts;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string part_param = absl::StrCat(param, "[", i, "]");
    if (!part.is_object()) return WrongType(part_param, "an object", part);
    const json* type = Field(part, "type");
    if (type == nullptr || !type->is_string() || *type != "text") {
      return InvalidParam(absl::StrCat(part_param, ".type"),
                          absl::StrCat("'", part_param, ".type' must be \"text\": only text "
                                       "content parts are supported"));
    }
    const json* text = Field(part, "text");
    if (text == nullptr || !text->is_string()) {
      return WrongType(absl::StrCat(part_param, ".text"), "a string",
                       text == nullptr ? json() : *text);
    }
    texts.push_back(text->get<std::string>());
  }
  return absl::StrJoin(texts, "\n");
}

absl::Status ParseChat(const json& body, OpenAiRequest* out) {
  const json* messages = Field(body, "messages");
  if (messages == nullptr) return InvalidParam("messages", "'messages' is required");
  if (!messages->is_array()) return WrongType("messages", "an array", *messages);
  v1::ChatMessages* chat = out->generate.mutable_messages();
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& message = (*messages)[i];
    const std::string param = absl::StrCat("messages[", i, "]");
    if (!message.is_object()) return WrongType(param, "an object", message);
    const json* role = Field(message, "role");
    if (role == nullptr) {
      return InvalidParam(param + ".role", absl::StrCat("'", param, ".role' is required"));
    }
    if (!role->is_string()) return WrongType(param + ".role", "a string", *role);
    auto content_it = message.find("content");
    absl::StatusOr<std::string> content =
        MessageContent(content_it == message.end() ? json() : *content_it, param + ".content");
    if (!content.ok()) return content.status();
    v1::ChatMessage* m = chat->add_messages();
    m->set_role(role->get<std::string>());
    m->set_content(*std::move(content));
  }
  absl::StatusOr<std::optional<bool>> add_generation_prompt = Bool(body, "add_generation_prompt");
  if (!add_generation_prompt.ok()) return add_generation_prompt.status();
  if (add_generation_prompt->has_value()) chat->set_add_generation_prompt(**add_generation_prompt);

  absl::StatusOr<std::optional<bool>> logprobs = Bool(body, "logprobs");
  if (!logprobs.ok()) return logprobs.status();
  out->logprobs = logprobs->value_or(false);
  // The scheduler's range, checked here to name the request's field.
  absl::StatusOr<std::optional<int64_t>> top = Integer(body, "top_logprobs", 0, kMaxLogprobs);
  if (!top.ok()) return top.status();
  if (top->has_value()) {
    if (!out->logprobs && **top > 0) {
      return InvalidParam("top_logprobs", "'top_logprobs' needs 'logprobs' to be true");
    }
    out->top_logprobs = static_cast<int>(**top);
  }
  out->generate.set_logprobs(out->top_logprobs);
  return absl::OkStatus();
}

// Token ids of a prompt array; false (and no status) when it is not one.
absl::StatusOr<bool> TokenIds(const json& array, const std::string& param,
                              v1::TokenIds* out) {
  if (array.empty() || !array[0].is_number()) return false;
  for (size_t i = 0; i < array.size(); ++i) {
    absl::StatusOr<int64_t> id =
        IntegerValue(absl::StrCat(param, "[", i, "]"), array[i], 0, kInt32Max);
    if (!id.ok()) return id.status();
    out->add_ids(static_cast<int32_t>(*id));
  }
  return true;
}

absl::Status ParseCompletion(const json& body, OpenAiRequest* out) {
  const json* prompt = Field(body, "prompt");
  if (prompt == nullptr) return InvalidParam("prompt", "'prompt' is required");
  v1::GenerateRequest& generate = out->generate;
  const absl::Status one_prompt =
      InvalidParam("prompt", "'prompt' must be one prompt: a string, a list of one string, or "
                             "token ids (batches are not supported)");
  if (prompt->is_string()) {
    generate.set_text(prompt->get<std::string>());
  } else if (!prompt->is_array()) {
    return WrongType("prompt", "a string, an array of strings or token ids", *prompt);
  } else if (prompt->empty()) {
    return InvalidParam("prompt", "'prompt' is empty");
  } else if ((*prompt)[0].is_number()) {
    absl::StatusOr<bool> ids = TokenIds(*prompt, "prompt", generate.mutable_token_ids());
    if (!ids.ok()) return ids.status();
  } else if (prompt->size() != 1) {
    return one_prompt;
  } else if ((*prompt)[0].is_string()) {
    generate.set_text((*prompt)[0].get<std::string>());
  } else if ((*prompt)[0].is_array()) {
    absl::StatusOr<bool> ids = TokenIds((*prompt)[0], "prompt[0]", generate.mutable_token_ids());
    if (!ids.ok()) return ids.status();
    if (!*ids) return InvalidParam("prompt", "'prompt[0]' must be a non-empty array of token ids");
  } else {
    return WrongType("prompt[0]", "a string or an array of token ids", (*prompt)[0]);
  }
  // Completions' logprobs: how many alternatives (0 = the sampled token's only).
  absl::StatusOr<std::optional<int64_t>> logprobs = Integer(body, "logprobs", 0, kInt32Max);
  if (!logprobs.ok()) return logprobs.status();
  if (logprobs->has_value()) {
    out->logprobs = true;
    out->top_logprobs = static_cast<int>(**logprobs);
    generate.set_logprobs(out->top_logprobs);
  }
  return absl::OkStatus();
}

// "messages[0].role is required" -> "messages[0].role"; "stop[3] ..." ->
// "stop"; the prompt's forms -> "prompt". "" when the message starts with
// no request field.
std::string ParamFromMessage(absl::string_view message, const OpenAiRequest* request) {
  absl::ConsumePrefix(&message, "sampling parameter ");  // the sampler's checks
  const size_t space = message.find(' ');
  absl::string_view first = message.substr(0, space);
  absl::ConsumeSuffix(&first, ":");  // the worker's "token_ids: ...", "stop_token_ids: ..."
  const absl::string_view root = first.substr(0, first.find_first_of("[.("));
  if (root == "text" || root == "token_ids") return "prompt";
  if (root == "prompt") {  // the worker's: "prompt of 300 tokens does not fit the context ..."
    return request != nullptr && request->endpoint == Endpoint::kChatCompletions ? "messages"
                                                                                : "prompt";
  }
  if (root == "messages") return std::string(first);
  if (root == "logprobs") {
    return request != nullptr && request->endpoint == Endpoint::kChatCompletions ? "top_logprobs"
                                                                                : "logprobs";
  }
  if (root == "max_tokens") return request != nullptr ? request->max_tokens_param : "max_tokens";
  for (absl::string_view known : {"model", "temperature", "top_k", "top_p", "min_p",
                                  "repetition_penalty", "seed", "stop", "stop_token_ids"}) {
    if (root == known) return std::string(known);
  }
  return "";
}

int64_t CodePoints(absl::string_view text) {
  int64_t n = 0;
  for (char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

json Bytes(absl::string_view text) {
  json bytes = json::array();
  for (char c : text) bytes.push_back(static_cast<unsigned char>(c));
  return bytes;
}

std::string AlternativeName(int32_t id) { return absl::StrCat("token_id:", id); }

// Where the parser is in the body, from its events: the field of a value
// that fails to parse (invalid UTF-8, a number out of range, NaN), as
// "temperature", "messages[1].content" or "stop[0]"; "" between fields.
class JsonPath {
 public:
  // `depth` is the parser's: a container's own level at its start and end,
  // its parent's level + 1 for its keys and values.
  void Track(int depth, json::parse_event_t event, const json& value) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        levels_.resize(depth);
        levels_.push_back({event == json::parse_event_t::array_start, 0, ""});
        break;
      case json::parse_event_t::key:
        if (depth >= 1 && static_cast<size_t>(depth) <= levels_.size()) {
          levels_.resize(depth);
          levels_[depth - 1].key = value.get<std::string>();
        }
        break;
      case json::parse_event_t::value:
        Done(depth - 1);
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        levels_.resize(depth);
        Done(depth - 1);
        break;
    }
  }

  std::string Field() const {
    // A path as deep as the body is long ("a[0][0][0]...") would make an
    // error body larger than the request: cut at kMaxFieldBytes.
    constexpr size_t kMaxFieldBytes = 200;
    std::string out;
    for (const Level& level : levels_) {
      if (out.size() > kMaxFieldBytes) {
        out.resize(kMaxFieldBytes);
        out += "...";
        break;
      }
      if (level.array) {
        if (out.empty()) break;  // a top-level array is no field
        absl::StrAppend(&out, "[", level.index, "]");
      } else if (!level.key.empty()) {
        absl::StrAppend(&out, out.empty() ? "" : ".", level.key);
      } else {
        break;  // between an object's fields
      }
    }
    return out;
  }

 private:
  struct Level {
    bool array;
    size_t index;     // arrays: the element being read
    std::string key;  // objects: the field being read; "" between fields
  };

  // The value at `level` was read.
  void Done(int level) {
    if (level < 0 || static_cast<size_t>(level) >= levels_.size()) return;
    Level& l = levels_[level];
    if (l.array) {
      ++l.index;
    } else {
      l.key.clear();
    }
  }

  std::vector<Level> levels_;
};

// The scheduler's gRPC server takes requests of at most 4 MiB (gRPC's
// default receive limit), and a larger one would get gRPC's own
// RESOURCE_EXHAUSTED, which is 429 here: a rate limit that clients retry.
// Such a request is far over a field's limit anyway: 400 naming the largest.
absl::Status CheckGrpcSize(const OpenAiRequest& request) {
  constexpr size_t kMaxGrpcRequestBytes = 4 << 20;
  const v1::GenerateRequest& g = request.generate;
  const size_t size = g.ByteSizeLong();
  if (size <= kMaxGrpcRequestBytes) return absl::OkStatus();
  size_t prompt = g.text().size();
  if (g.has_token_ids()) prompt = g.token_ids().ByteSizeLong();
  if (g.has_messages()) prompt = g.messages().ByteSizeLong();
  size_t stop = 0;
  for (const std::string& s : g.stop()) stop += s.size() + 2;
  const size_t stop_ids = g.stop_token_ids_size() * size_t{5};
  std::string param = request.endpoint == Endpoint::kChatCompletions ? "messages" : "prompt";
  if (stop > prompt && stop >= stop_ids) param = "stop";
  if (stop_ids > prompt && stop_ids > stop) param = "stop_token_ids";
  return InvalidParam(param, absl::StrCat("'", param, "' is too large: the request is ", size,
                                          " bytes in gRPC, more than the scheduler's limit of ",
                                          kMaxGrpcRequestBytes));
}

}  // namespace

absl::Status InvalidParam(absl::string_view param, absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kParamPayload, absl::Cord(param));
  return status;
}

std::string ParamOf(const absl::Status& status) {
  const auto param = status.GetPayload(kParamPayload);
  return param ? std::string(*param) : "";
}

absl::StatusOr<OpenAiRequest> ParseRequest(Endpoint endpoint, absl::string_view body) {
  json parsed;
  JsonPath path;
  try {
    parsed = json::parse(
        body.begin(), body.end(),
        [&path](int depth, json::parse_event_t event, json& value) {
          path.Track(depth, event, value);
          return true;
        });
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e999
    const std::string field = path.Field();
    // nlohmann's text quotes the last token it read, which may be long.
    constexpr size_t kMaxDetailBytes = 300;
    std::string detail = e.what();
    if (detail.size() > kMaxDetailBytes) detail = detail.substr(0, kMaxDetailBytes) + "...";
    const std::string message =
        absl::StrCat("The request body is not valid JSON",
                     field.empty() ? "" : absl::StrCat(" (in '", field, "')"), ": ", detail);
    if (field.empty()) return absl::InvalidArgumentError(message);
    return InvalidParam(field, message);
  }
  if (!parsed.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("The request body must be a JSON object, got ", TypeName(parsed)));
  }
  OpenAiRequest out;
  out.endpoint = endpoint;
  if (absl::Status s = ParseCommon(parsed, &out); !s.ok()) return s;
  if (absl::Status s = endpoint == Endpoint::kChatCompletions ? ParseChat(parsed, &out)
                                                              : ParseCompletion(parsed, &out);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckGrpcSize(out); !s.ok()) return s;
  return out;
}

ApiError ToApiError(const absl::Status& status, const OpenAiRequest* request) {
  ApiError error;
  error.message = std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      error.http_status = 400;
      error.type = "invalid_request_error";
      error.param = ParamOf(status);
      if (error.param.empty()) error.param = ParamFromMessage(status.message(), request);
      break;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      error.http_status = 400;
      error.type = "invalid_request_error";
      break;
    case absl::StatusCode::kUnauthenticated:
      error.http_status = 401;
      error.type = "invalid_request_error";
      error.code = "invalid_api_key";
      break;
    case absl::StatusCode::kPermissionDenied:
      error.http_status = 403;
      error.type = "permission_error";
      break;
    case absl::StatusCode::kNotFound:
      error.http_status = 404;
      error.type = "invalid_request_error";
      error.param = "model";
      error.code = "model_not_found";
      break;
    case absl::StatusCode::kAlreadyExists:
      error.http_status = 409;
      error.type = "invalid_request_error";
      break;
    case absl::StatusCode::kResourceExhausted:
      error.http_status = 429;
      error.type = "rate_limit_error";
      error.code = "rate_limit_exceeded";
      break;
    case absl::StatusCode::kUnavailable:
      error.http_status = 503;
      error.type = "server_error";
      error.code = "service_unavailable";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      error.http_status = 504;
      error.type = "server_error";
      error.code = "timeout";
      break;
    default:
      error.http_status = 500;
      error.type = "server_error";
      break;
  }
  if (error.message.empty()) error.message = absl::StatusCodeToString(status.code());
  return error;
}

json ErrorBody(const ApiError& error) {
  return {{"error",
           {{"message", error.message},
            {"type", error.type},
            {"param", error.param.empty() ? json() : json(error.param)},
            {"code", error.code.empty() ? json() : json(error.code)}}}};
}

std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string SseEvent(const json& data) { return absl::StrCat("data: ", Dump(data), "\n\n"); }

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_CANCELLED: return "cancelled";
    case v1::FINISH_REASON_EOS:
    case v1::FINISH_REASON_STOP:
    default: return "stop";
  }
}

ResponseBuilder::ResponseBuilder(const OpenAiRequest& request, std::string id, int64_t created,
                                 int32_t cached_prompt_tokens)
    : endpoint_(request.endpoint),
      model_(request.generate.model()),
      id_(std::move(id)),
      created_(created),
      logprobs_(request.logprobs),
      include_usage_(request.include_usage),
      cached_prompt_tokens_(cached_prompt_tokens) {}

std::string ResponseBuilder::ResponseId(Endpoint endpoint, const std::string& job_id) {
  return absl::StrCat(endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-", job_id);
}

void ResponseBuilder::Add(const v1::Token& token) {
  if (logprobs_) {
    if (endpoint_ == Endpoint::kChatCompletions) {
      json top = json::array();
      for (const v1::TopLogprob& alt : token.top_logprobs()) {
        top.push_back({{"token", alt.id() == token.id() ? token.text() : AlternativeName(alt.id())},
                       {"logprob", alt.logprob()},
                       {"bytes", alt.id() == token.id() ? Bytes(token.text()) : json()}});
      }
      entries_.push_back({{"token", token.text()},
                          {"logprob", token.logprob()},
                          {"bytes", Bytes(token.text())},
                          {"top_logprobs", std::move(top)}});
    } else {
      json top = json::object();
      for (const v1::TopLogprob& alt : token.top_logprobs()) {
        top[alt.id() == token.id() ? token.text() : AlternativeName(alt.id())] = alt.logprob();
      }
      tokens_.push_back(token.text());
      token_logprobs_.push_back(token.logprob());
      top_logprobs_.push_back(std::move(top));
      text_offsets_.push_back(text_chars_);
    }
  }
  text_ += token.text();
  text_chars_ += CodePoints(token.text());
}

json ResponseBuilder::LogprobsOf(size_t from, size_t to) const {
  if (!logprobs_) return json();
  auto slice = [from, to](const json& list) {
    json out = json::array();
    for (size_t i = from; i < to && i < list.size(); ++i) out.push_back(list[i]);
    return out;
  };
  if (endpoint_ == Endpoint::kChatCompletions) return {{"content", slice(entries_)}};
  return {{"tokens", slice(tokens_)},
          {"token_logprobs", slice(token_logprobs_)},
          {"top_logprobs", slice(top_logprobs_)},
          {"text_offset", slice(text_offsets_)}};
}

json ResponseBuilder::Chunk(json choice) const {
  json chunk = {{"id", id_},
                {"object", endpoint_ == Endpoint::kChatCompletions ? "chat.completion.chunk"
                                                                    : "text_completion"},
                {"created", created_},
                {"model", model_},
                {"choices", json::array({std::move(choice)})}};
  // With include_usage, every chunk has usage: null but the last one.
  if (include_usage_) chunk["usage"] = nullptr;
  return chunk;
}

std::optional<json> ResponseBuilder::FirstChunk() const {
  if (endpoint_ != Endpoint::kChatCompletions) return std::nullopt;
  return Chunk({{"index", 0},
                {"delta", {{"role", "assistant"}, {"content", ""}}},
                {"logprobs", nullptr},
                {"finish_reason", nullptr}});
}

std::optional<json> ResponseBuilder::TokenChunk(const v1::Token& token) {
  Add(token);
  if (token.text().empty()) return std::nullopt;
  const size_t count = logprobs_ ? (endpoint_ == Endpoint::kChatCompletions ? entries_.size()
                                                                            : tokens_.size())
                                 : 0;
  json logprobs = LogprobsOf(streamed_logprobs_, count);
  streamed_logprobs_ = count;
  if (endpoint_ == Endpoint::kChatCompletions) {
    return Chunk({{"index", 0},
                  {"delta", {{"content", token.text()}}},
                  {"logprobs", std::move(logprobs)},
                  {"finish_reason", nullptr}});
  }
  return Chunk({{"index", 0},
                {"text", token.text()},
                {"logprobs", std::move(logprobs)},
                {"finish_reason", nullptr}});
}

json ResponseBuilder::FinalChunk(const v1::Finished& finished) {
  const size_t count = logprobs_ ? (endpoint_ == Endpoint::kChatCompletions ? entries_.size()
                                                                            : tokens_.size())
                                 : 0;
  json logprobs = count > streamed_logprobs_ ? LogprobsOf(streamed_logprobs_, count) : json();
  streamed_logprobs_ = count;
  json choice = {{"index", 0},
                 {"logprobs", std::move(logprobs)},
                 {"finish_reason", FinishReasonName(finished.reason())}};
  if (endpoint_ == Endpoint::kChatCompletions) {
    choice["delta"] = json::object();
  } else {
    choice["text"] = "";
  }
  return Chunk(std::move(choice));
}

json ResponseBuilder::UsageOf(const v1::Finished& finished) const {
  return {{"prompt_tokens", finished.prompt_tokens()},
          {"completion_tokens", finished.completion_tokens()},
          {"total_tokens", finished.prompt_tokens() + finished.completion_tokens()},
          {"prompt_tokens_details", {{"cached_tokens", cached_prompt_tokens_}}}};
}

json ResponseBuilder::UsageChunk(const v1::Finished& finished) const {
  return {{"id", id_},
          {"object", endpoint_ == Endpoint::kChatCompletions ? "chat.completion.chunk"
                                                              : "text_completion"},
          {"created", created_},
          {"model", model_},
          {"choices", json::array()},
          {"usage", UsageOf(finished)}};
}

json ResponseBuilder::Response(const v1::Finished& finished) const {
  const size_t count = endpoint_ == Endpoint::kChatCompletions ? entries_.size() : tokens_.size();
  json choice = {{"index", 0},
                 {"logprobs", LogprobsOf(0, count)},
                 {"finish_reason", FinishReasonName(finished.reason())}};
  if (endpoint_ == Endpoint::kChatCompletions) {
    choice["message"] = {{"role", "assistant"}, {"content", text_}};
  } else {
    choice["text"] = text_;
  }
  return {{"id", id_},
          {"object",
           endpoint_ == Endpoint::kChatCompletions ? "chat.completion" : "text_completion"},
          {"created", created_},
          {"model", model_},
          {"choices", json::array({std::move(choice)})},
          {"usage", UsageOf(finished)}};
}

}  // namespace llorch::openai
