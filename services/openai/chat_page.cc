#include "services/openai/chat_page.h"

namespace llorch::openai {
namespace {

// static/index.html as bytes ("0x3c,0x21,..."), written into the build
// directory by CMake (services/openai/CMakeLists.txt) from the source file.
constexpr unsigned char kChatPageHtml[] = {
#include "chat_page_html.inc"
};

}  // namespace

std::string_view ChatPageHtml() {
  return {reinterpret_cast<const char*>(kChatPageHtml), sizeof(kChatPageHtml)};
}

}  // namespace llorch::openai
