// ChatPromptIds (served_model.h) on its own: torch-free, so that the
// execute_request fuzzer links the code the worker runs.
#include <string>
#include <vector>

#include "worker/engine/served_model.h"

namespace llorch {

absl::StatusOr<std::vector<int32_t>> ChatPromptIds(const ServedModel& served,
                                                   absl::Span<const ChatMessage> messages,
                                                   bool add_generation_prompt,
                                                   std::string* rendered) {
  if (!served.chat_template.has_value()) return served.chat_template_status;
  absl::StatusOr<std::string> text = served.chat_template->Render(messages, add_generation_prompt);
  if (!text.ok()) return text.status();
  if (rendered != nullptr) *rendered = *text;
  return served.tokenizer->Encode(*text, /*add_special=*/false, /*parse_special=*/true);
}

}  // namespace llorch
