// chat_template_tool --template FILE --bos S --eos S --conversations FILE
// Renders each conversation of FILE (a JSON list of {"messages": [{"role",
// "content"}, ...], "add_generation_prompt": bool, "extra": {...}
// (optional)}) with the chat template in --template and prints one JSON line
// per conversation: {"ok":true,"text":...} or
// {"ok":false,"code":"INVALID_ARGUMENT","error":...}.
// Exit status 0 when every line was written (even for render errors), 1 when
// the template does not compile (one error line), 2 on bad usage or input.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/chat/chat_template.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: chat_template_tool --template FILE --bos S --eos S "
               "--conversations FILE.json\n");
  return 2;
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

nlohmann::json ErrorLine(const absl::Status& status) {
  return {{"ok", false},
          {"code", absl::StatusCodeToString(status.code())},
          {"error", std::string(status.message())}};
}

void PrintLine(const nlohmann::json& line) {
  // Rendered text is valid UTF-8 (it is a Rust String); replace, not throw,
  // should that ever change.
  std::cout << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string template_path, conversations_path, bos, eos;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--template" && i + 1 < argc) {
      template_path = argv[++i];
    } else if (arg == "--conversations" && i + 1 < argc) {
      conversations_path = argv[++i];
    } else if (arg == "--bos" && i + 1 < argc) {
      bos = argv[++i];
    } else if (arg == "--eos" && i + 1 < argc) {
      eos = argv[++i];
    } else {
      return Usage();
    }
  }
  if (template_path.empty() || conversations_path.empty()) return Usage();

  std::string source, conversations_text;
  if (!ReadFile(template_path, &source)) {
    std::cerr << "chat_template_tool: cannot read " << template_path << "\n";
    return 2;
  }
  if (!ReadFile(conversations_path, &conversations_text)) {
    std::cerr << "chat_template_tool: cannot read " << conversations_path << "\n";
    return 2;
  }
  // ordered_json keeps the key order of "extra" (tojson and .items() show it).
  const nlohmann::ordered_json conversations =
      nlohmann::ordered_json::parse(conversations_text, nullptr, /*allow_exceptions=*/false);
  if (!conversations.is_array()) {
    std::cerr << "chat_template_tool: " << conversations_path << " is not a JSON list\n";
    return 2;
  }

  absl::StatusOr<llorch::ChatTemplate> tmpl = llorch::ChatTemplate::Create(source, bos, eos);
  if (!tmpl.ok()) {
    PrintLine(ErrorLine(tmpl.status()));
    return 1;
  }

  for (const nlohmann::ordered_json& conversation : conversations) {
    std::vector<llorch::ChatMessage> messages;
    bool add_generation_prompt = false;
    try {
      for (const nlohmann::ordered_json& m :
           conversation.value("messages", nlohmann::ordered_json::array())) {
        messages.push_back({m.value("role", ""), m.value("content", "")});
      }
      add_generation_prompt = conversation.value("add_generation_prompt", false);
    } catch (const nlohmann::ordered_json::exception& e) {
      PrintLine(ErrorLine(absl::InvalidArgumentError(
          std::string("bad conversation: ") + e.what())));
      continue;
    }
    absl::StatusOr<std::string> text;
    if (conversation.contains("extra")) {
      text = tmpl->Render(messages, add_generation_prompt, conversation["extra"].dump());
    } else {
      text = tmpl->Render(messages, add_generation_prompt);
    }
    if (text.ok()) {
      PrintLine({{"ok", true}, {"text", *text}});
    } else {
      PrintLine(ErrorLine(text.status()));
    }
  }
  return 0;
}
