#include "worker/chat/chat_template.h"

#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/chat/chat_template_ffi/chat_template_ffi.h"

namespace llorch {
namespace {

// Owns a string allocated by the Rust side.
struct FfiString {
  char* data = nullptr;
  size_t size = 0;
  ~FfiString() { llorch_chat_template_free(data); }
  std::string str() const { return data == nullptr ? std::string() : std::string(data, size); }
};

// Serializes the context; fails (instead of throwing) on invalid UTF-8,
// which a JSON string cannot carry.
absl::StatusOr<std::string> DumpContext(const nlohmann::ordered_json& context) {
  try {
    return context.dump(-1, ' ', /*ensure_ascii=*/false,
                        nlohmann::ordered_json::error_handler_t::strict);
  } catch (const nlohmann::ordered_json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template: message text is not valid UTF-8 (", e.what(), ")"));
  }
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source, std::string bos_token, std::string eos_token,
                           std::shared_ptr<const LlorchChatTemplate> compiled)
    : source_(std::move(source)),
      bos_token_(std::move(bos_token)),
      eos_token_(std::move(eos_token)),
      compiled_(std::move(compiled)) {}

absl::StatusOr<ChatTemplate> ChatTemplate::Create(std::string source, std::string bos_token,
                                                  std::string eos_token) {
  LlorchChatTemplate* handle = nullptr;
  FfiString err;
  const int rc =
      llorch_chat_template_compile(source.data(), source.size(), &handle, &err.data, &err.size);
  if (rc != LLORCH_CHAT_TEMPLATE_OK) {
    if (rc == LLORCH_CHAT_TEMPLATE_SYNTAX_ERROR) {
      return absl::InvalidArgumentError(absl::StrCat("chat template: ", err.str()));
    }
    return absl::InternalError(absl::StrCat("chat template: ", err.str()));
  }
  std::shared_ptr<const LlorchChatTemplate> compiled(
      handle, [](const LlorchChatTemplate* t) {
        llorch_chat_template_destroy(const_cast<LlorchChatTemplate*>(t));
      });
  return ChatTemplate(std::move(source), std::move(bos_token), std::move(eos_token),
                      std::move(compiled));
}

absl::StatusOr<std::string> ChatTemplate::Render(absl::Span<const ChatMessage> messages,
                                                 bool add_generation_prompt) const {
  return Render(messages, add_generation_prompt, absl::string_view());
}

absl::StatusOr<std::string> ChatTemplate::Render(absl::Span<const ChatMessage> messages,
                                                 bool add_generation_prompt,
                                                 absl::string_view extra_variables_json) const {
  // The variables apply_chat_template passes: its special tokens (only those
  // set: an unset one is undefined, not ""), overridable by kwargs, then
  // tools=None and documents=None (templates test `tools is not none`), then
  // messages and add_generation_prompt.
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  if (!bos_token_.empty()) context["bos_token"] = bos_token_;
  if (!eos_token_.empty()) context["eos_token"] = eos_token_;
  context["tools"] = nullptr;
  context["documents"] = nullptr;
  if (!extra_variables_json.empty()) {
    nlohmann::ordered_json extra = nlohmann::ordered_json::parse(
        extra_variables_json.begin(), extra_variables_json.end(), nullptr,
        /*allow_exceptions=*/false);
    if (!extra.is_object()) {
      return absl::InvalidArgumentError(
          "chat template: extra variables must be a JSON object");
    }
    for (auto& [key, value] : extra.items()) {
      if (key == "messages" || key == "add_generation_prompt") {
        return absl::InvalidArgumentError(
            absl::StrCat("chat template: extra variable '", key, "' is reserved"));
      }
      context[key] = std::move(value);
    }
  }
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) {
    nlohmann::ordered_json message = nlohmann::ordered_json::object();
    message["role"] = m.role;
    message["content"] = m.content;
    list.push_back(std::move(message));
  }
  context["messages"] = std::move(list);
  context["add_generation_prompt"] = add_generation_prompt;

  absl::StatusOr<std::string> json = DumpContext(context);
  if (!json.ok()) return json.status();

  FfiString out;
  const int rc = llorch_chat_template_render(compiled_.get(), json->data(), json->size(),
                                             &out.data, &out.size);
  switch (rc) {
    case LLORCH_CHAT_TEMPLATE_OK:
      return out.str();
    case LLORCH_CHAT_TEMPLATE_RAISED:
      // The template's own words (e.g. "Conversation roles must alternate
      // user/assistant/user/assistant/..."), as transformers reports them.
      return absl::InvalidArgumentError(out.str());
    case LLORCH_CHAT_TEMPLATE_RENDER_ERROR:
      return absl::InvalidArgumentError(absl::StrCat("chat template: ", out.str()));
    default:
      return absl::InternalError(absl::StrCat("chat template: ", out.str()));
  }
}

}  // namespace llorch
