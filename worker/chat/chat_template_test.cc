#include "worker/chat/chat_template.h"

#include <chrono>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llorch {
namespace {

using ::testing::HasSubstr;

// SmolLM2-135M-Instruct's template (ChatML with a default system prompt).
constexpr char kChatMl[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

ChatTemplate MustCreate(const std::string& source, const std::string& bos = "<s>",
                        const std::string& eos = "</s>") {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Create(source, bos, eos);
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

std::string MustRender(const ChatTemplate& t, const std::vector<ChatMessage>& messages,
                       bool add_generation_prompt = false) {
  absl::StatusOr<std::string> text = t.Render(messages, add_generation_prompt);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : std::string();
}

TEST(ChatTemplateTest, ChatMl) {
  ChatTemplate t = MustCreate(kChatMl);
  const std::vector<ChatMessage> messages = {{"user", "Hi"}, {"assistant", "Hello!"}};
  const std::string conversation =
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
      "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n";
  EXPECT_EQ(MustRender(t, messages, false), conversation);
  EXPECT_EQ(MustRender(t, messages, true), conversation + "<|im_start|>assistant\n");
  EXPECT_EQ(MustRender(t, {{"system", "Be brief."}, {"user", "Hi"}}, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(t.source(), kChatMl);
}

TEST(ChatTemplateTest, RaiseExceptionIsInvalidArgumentWithTheMessage) {
  ChatTemplate t = MustCreate(
      "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
      "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
      "{% endif %}{{ m['content'] }}{% endfor %}");
  EXPECT_EQ(MustRender(t, {{"user", "a"}, {"assistant", "b"}}), "ab");
  absl::StatusOr<std::string> text = t.Render({{"user", "a"}, {"user", "b"}}, false);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(text.status().message(),
            "Conversation roles must alternate user/assistant/user/assistant/...");
}

TEST(ChatTemplateTest, SyntaxErrorNamesLineAndColumn) {
  absl::StatusOr<ChatTemplate> t =
      ChatTemplate::Create("{% for m in messages %}\n  {{ m.content }\n{% endfor %}", "", "");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("syntax error"));
  EXPECT_THAT(t.status().message(), HasSubstr("line 2, column"));

  absl::StatusOr<ChatTemplate> unclosed = ChatTemplate::Create("{% if x %}", "", "");
  ASSERT_FALSE(unclosed.ok());
  EXPECT_EQ(unclosed.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, OtherRenderErrorsAreInvalidArgument) {
  // Jinja2's default Undefined: an attribute of an undefined value fails.
  ChatTemplate t = MustCreate("{{ messages[0]['role'] }}");
  absl::StatusOr<std::string> text = t.Render({}, false);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(), HasSubstr("chat template: "));
}

// A model's template cannot take the worker down: a huge padding is an
// error (a failed allocation would abort the process), and so is a render
// past its instruction budget (it would hold the request for ever).
TEST(ChatTemplateTest, TemplatesCannotExhaustTheProcess) {
  for (const char* source :
       {"{{ messages[0]['content'] | center(100000000000) }}",
        "{{ messages | tojson(indent=100000000000) }}",
        "{% for i in range(10000) %}{% for j in range(10000) %}{% for k in range(10000) %}"
        "{% endfor %}{% endfor %}{% endfor %}"}) {
    SCOPED_TRACE(source);
    ChatTemplate t = MustCreate(source);
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::string> text = t.Render({{"user", "hi"}}, false);
    ASSERT_FALSE(text.ok());
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  }
  EXPECT_EQ(MustRender(MustCreate("{{ messages[0]['content'] | center(6) }}"), {{"user", "ab"}},
                       false),
            "  ab  ");
}

TEST(ChatTemplateTest, BosAndEosTokens) {
  ChatTemplate t = MustCreate(
      "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}"
      "{% endfor %}",
      "<|begin_of_text|>", "<|eot_id|>");
  EXPECT_EQ(t.bos_token(), "<|begin_of_text|>");
  EXPECT_EQ(MustRender(t, {{"user", "x"}, {"assistant", "y"}}),
            "<|begin_of_text|>[user]x<|eot_id|>[assistant]y<|eot_id|>");
}

TEST(ChatTemplateTest, PythonStringMethods) {
  ChatTemplate t = MustCreate(
      "{% for m in messages %}{{ m.content.strip() }}|{{ m.content.lstrip() }}|"
      "{{ m.content.strip().upper() }}|{{ m.content.strip().startswith('he') }}|"
      "{{ m.content.split() | join(',') }}|{{ m.content.strip().split('l', 1)[-1] }}"
      "{% for k, v in m.items() %};{{ k }}={{ v | trim }}{% endfor %}{% endfor %}");
  // \x1c is whitespace to Python's str.strip() (not to Rust's trim).
  EXPECT_EQ(MustRender(t, {{"user", "\x1c  hello world \n"}}),
            "hello world|hello world \n|HELLO WORLD|True|hello,world|lo world"
            ";role=user;content=hello world");
}

TEST(ChatTemplateTest, StrftimeNowGivesTheCurrentYear) {
  ChatTemplate t = MustCreate("{{ strftime_now('%Y') }}|{{ strftime_now('%d %b %Y') }}");
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  const std::string year = std::to_string(1900 + tm.tm_year);
  const std::string text = MustRender(t, {});
  EXPECT_EQ(text.substr(0, text.find('|')), year);
  EXPECT_THAT(text, testing::EndsWith(" " + year));
}

TEST(ChatTemplateTest, EmptyMessages) {
  ChatTemplate t = MustCreate(kChatMl);
  EXPECT_EQ(MustRender(t, {}, false), "");
  EXPECT_EQ(MustRender(t, {}, true), "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, UnicodeContent) {
  ChatTemplate t =
      MustCreate("{% for m in messages %}{{ m.content }}:{{ m.content | length }}{% endfor %}");
  // Python's len() counts code points: 5 + 1 + 2 + 1 + 1.
  EXPECT_EQ(MustRender(t, {{"user", "h\xC3\xA9llo \xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\x99\x82"}}),
            "h\xC3\xA9llo \xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\x99\x82:10");
}

TEST(ChatTemplateTest, ContentIsDataNotTemplate) {
  ChatTemplate t = MustCreate(kChatMl);
  EXPECT_THAT(MustRender(t, {{"user", "{{ bos_token }} {% if x %}"}}),
              HasSubstr("user\n{{ bos_token }} {% if x %}<|im_end|>"));
}

TEST(ChatTemplateTest, TrimBlocksAndLstripBlocksAsTransformers) {
  ChatTemplate t = MustCreate(
      "{% for m in messages %}\n"
      "    {% if m.role == 'user' %}\n"
      "U: {{ m.content }}\n"
      "    {% endif %}\n"
      "{% endfor %}\n");
  EXPECT_EQ(MustRender(t, {{"user", "a"}, {"assistant", "b"}, {"user", "c"}}), "U: a\nU: c\n");
}

TEST(ChatTemplateTest, PrintsValuesLikePython) {
  ChatTemplate t = MustCreate(
      "{{ none }}|{{ true }}|{{ 1e-5 }}|{{ [1, 'a', none] }}|{{ {'k': 2.0} }}|"
      "{{ {'b': 1, 'a': [1, 2]} | tojson }}|{{ x is defined }}|{{ x }}");
  EXPECT_EQ(MustRender(t, {}),
            "None|True|1e-05|[1, 'a', None]|{'k': 2.0}|{\"b\": 1, \"a\": [1, 2]}|False|");
}

TEST(ChatTemplateTest, Jinja2BuiltinsMinijinjaLacks) {
  // Expected strings are Jinja2 3.1's.
  ChatTemplate t = MustCreate(
      "{{ 'hello world foo bar' | truncate(9) }}|{{ 'ab' | center(7) }}|"
      "{{ 'one, two_3' | wordcount }}|{{ 'a-b-c'.rsplit('-', 1) }}|{{ 'a=b'.partition('=') }}|"
      "{{ 'x.py'.removesuffix('.py') }}|{{ 'a' is sequence }}|{{ none is iterable }}|"
      "{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }}{{ c.next() }}");
  EXPECT_EQ(MustRender(t, {}), "hello...|   ab  |2|['a-b', 'c']|('a', '=', 'b')|x|True|False|aba");
}

TEST(ChatTemplateTest, VariablesAsApplyChatTemplate) {
  // tools and documents are None; an unset special token is undefined.
  ChatTemplate t = MustCreate(
      "{{ tools is none }}|{{ documents is none }}|{{ bos_token is defined }}|{{ eos_token }}",
      "", "<|im_end|>");
  EXPECT_EQ(MustRender(t, {}), "True|True|False|<|im_end|>");
}

TEST(ChatTemplateTest, ExtraVariables) {
  ChatTemplate t = MustCreate(
      "{{ bos_token }}{% if enable_thinking is defined and enable_thinking is false %}"
      "no-think{% endif %}{{ tools | tojson }}");
  absl::StatusOr<std::string> text = t.Render(
      {}, false, R"({"enable_thinking": false, "tools": [{"z": 1, "a": "é"}], "bos_token": "B"})");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "Bno-think[{\"z\": 1, \"a\": \"\xC3\xA9\"}]");

  EXPECT_EQ(t.Render({}, false, R"({"messages": []})").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Render({}, false, "[1]").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, InvalidUtf8ContentIsInvalidArgument) {
  ChatTemplate t = MustCreate(kChatMl);
  EXPECT_EQ(t.Render({{"user", "\xFF"}}, false).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, CopiesShareAndRenderConcurrently) {
  const ChatTemplate t = MustCreate(kChatMl);
  const std::string want = MustRender(t, {{"user", "q"}}, true);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([copy = t, &ok, &want, i] {
      for (int j = 0; j < 200; ++j) {
        absl::StatusOr<std::string> text = copy.Render({{"user", "q"}}, true);
        if (text.ok() && *text == want) ++ok[i];
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int n : ok) EXPECT_EQ(n, 200);
}

}  // namespace
}  // namespace llorch
