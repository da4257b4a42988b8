// The chat page served at GET / of llorch-scheduler's --http_listen port: a
// single HTML file with its CSS and JavaScript (services/openai/static/
// index.html, no external assets) that lists /v1/models and streams
// /v1/chat/completions answers, embedded into the binary at build time.
#ifndef LLORCH_SERVICES_OPENAI_CHAT_PAGE_H_
#define LLORCH_SERVICES_OPENAI_CHAT_PAGE_H_

#include <string_view>

namespace llorch::openai {

// static/index.html's bytes (UTF-8), for `Content-Type: text/html; charset=utf-8`.
std::string_view ChatPageHtml();

}  // namespace llorch::openai

#endif  // LLORCH_SERVICES_OPENAI_CHAT_PAGE_H_
