// Chat templates (worker/chat/chat_template.h: the Rust minijinja renderer
// behind a C ABI) from untrusted template source and messages.
//
// Input: up to three parts separated by "\n--8<--\n": the template source;
// the messages, one per line as ROLE:CONTENT ("\n" in CONTENT is a newline);
// extra template variables as a JSON object. add_generation_prompt is the
// parity of the source's length.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "tests/fuzz/fuzz_support.h"
#include "worker/chat/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llorch;
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  const std::vector<absl::string_view> parts = fuzz::SplitParts(input, 3);
  absl::StatusOr<ChatTemplate> chat_template =
      ChatTemplate::Create(std::string(parts[0]), "<s>", "</s>");
  if (!chat_template.ok()) {
    // A syntax error; Internal would be a panic in the renderer.
    LLORCH_FUZZ_CHECK(absl::IsInvalidArgument(chat_template.status()),
                      chat_template.status().ToString());
    return 0;
  }
  std::vector<ChatMessage> messages;
  if (parts.size() >= 2) {
    for (absl::string_view line : absl::StrSplit(parts[1], '\n')) {
      const size_t colon = line.find(':');
      if (colon == absl::string_view::npos) continue;
      messages.push_back({std::string(line.substr(0, colon)),
                          absl::StrReplaceAll(line.substr(colon + 1), {{"\\n", "\n"}})});
    }
  } else {
    messages = {{"system", "Be brief."}, {"user", "Hi!"}, {"assistant", "Hello."},
                {"user", "2+2?"}};
  }
  const bool add_generation_prompt = parts[0].size() % 2 == 1;
  const absl::string_view extra = parts.size() >= 3 ? parts[2] : absl::string_view();
  absl::StatusOr<std::string> text = chat_template->Render(messages, add_generation_prompt, extra);
  if (!text.ok()) {
    // Template errors, raise_exception and bad input are InvalidArgument;
    // Internal means a panic in the renderer or a context it refused.
    LLORCH_FUZZ_CHECK(absl::IsInvalidArgument(text.status()), text.status().ToString());
  }
  return 0;
}
