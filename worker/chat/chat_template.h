// Renders chat messages into a prompt with a model's own Hugging Face Jinja
// chat template (tokenizer_config.json `chat_template`, GGUF
// `tokenizer.chat_template`), producing the same text as transformers'
// `tokenizer.apply_chat_template(messages, tokenize=False,
// add_generation_prompt=...)`.
//
// The engine is the Rust minijinja crate (as in Hugging Face TGI) behind the C
// ABI in chat_template_ffi/, set up like transformers' Jinja2 environment:
// trim_blocks and lstrip_blocks, Jinja2's lenient undefined, Python string
// methods (.strip(), .split(), .items(), ...), Python's str() for printed
// values, transformers' tojson, raise_exception and strftime_now.
#ifndef LLORCH_WORKER_CHAT_CHAT_TEMPLATE_H_
#define LLORCH_WORKER_CHAT_CHAT_TEMPLATE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

struct LlorchChatTemplate;  // chat_template_ffi.h

namespace llorch {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

// Immutable once created; copies share the compiled template, and Render may
// be called from several threads at once.
class ChatTemplate {
 public:
  // Compiles `source` once so that syntax errors surface here, as
  // InvalidArgument naming line and column. `bos_token`/`eos_token` are the
  // token texts the template sees as bos_token/eos_token; an empty one is left
  // undefined, as transformers leaves a tokenizer's unset special tokens.
  static absl::StatusOr<ChatTemplate> Create(std::string source, std::string bos_token,
                                             std::string eos_token);

  // The prompt text. A template that calls raise_exception(msg) (e.g. roles
  // not alternating) gives InvalidArgument with exactly msg; other template
  // failures give InvalidArgument with the engine's message.
  absl::StatusOr<std::string> Render(absl::Span<const ChatMessage> messages,
                                     bool add_generation_prompt) const;

  // As above with extra template variables (e.g. {"enable_thinking": false,
  // "tools": [...]}), a JSON object whose key order is kept (it matters to
  // tojson and .items()). They may override bos_token/eos_token, tools and
  // documents (null by default, as in apply_chat_template), but not messages
  // or add_generation_prompt.
  absl::StatusOr<std::string> Render(absl::Span<const ChatMessage> messages,
                                     bool add_generation_prompt,
                                     absl::string_view extra_variables_json) const;

  const std::string& source() const { return source_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

 private:
  ChatTemplate(std::string source, std::string bos_token, std::string eos_token,
               std::shared_ptr<const LlorchChatTemplate> compiled);

  std::string source_;
  std::string bos_token_;
  std::string eos_token_;
  std::shared_ptr<const LlorchChatTemplate> compiled_;
};

}  // namespace llorch

#endif  // LLORCH_WORKER_CHAT_CHAT_TEMPLATE_H_
