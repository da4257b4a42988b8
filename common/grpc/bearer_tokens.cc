#include "common/grpc/bearer_tokens.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace llorch {
namespace {

constexpr absl::string_view kScheme = "bearer ";

// Whether `presented` equals `token`, in time that depends only on the
// presented token's length: every byte is compared, nothing exits early.
bool ConstantTimeEquals(absl::string_view presented, absl::string_view token) {
  volatile uint8_t diff = presented.size() == token.size() ? 0 : 1;
  const size_t n = token.size();  // never 0
  for (size_t i = 0; i < presented.size(); ++i) {
    diff = diff | static_cast<uint8_t>(static_cast<uint8_t>(presented[i]) ^
                                       static_cast<uint8_t>(token[i % n]));
  }
  return diff == 0;
}

}  // namespace

absl::StatusOr<BearerTokens> BearerTokens::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the token file ", path, ": ", std::strerror(errno)));
  }
  std::vector<std::string> tokens;
  std::string line;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    const absl::string_view token = absl::StripAsciiWhitespace(line);
    if (token.empty() || token[0] == '#') continue;
    for (char c : token) {
      if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "token file ", path, ", line ", line_number, ": a token cannot contain whitespace"));
      }
    }
    tokens.emplace_back(token);
  }
  if (in.bad()) return absl::NotFoundError(absl::StrCat("cannot read the token file ", path));
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, " holds no token"));
  }
  return BearerTokens(std::move(tokens));
}

absl::StatusOr<BearerTokens> BearerTokens::FromTokens(std::vector<std::string> tokens) {
  std::vector<std::string> kept;
  for (std::string& token : tokens) {
    if (!token.empty()) kept.push_back(std::move(token));
  }
  if (kept.empty()) return absl::InvalidArgumentError("no bearer token given");
  return BearerTokens(std::move(kept));
}

absl::Status BearerTokens::Check(const grpc::ServerContextBase& context) const {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) return CheckHeader("");
  return CheckHeader(absl::string_view(it->second.data(), it->second.size()));
}

absl::Status BearerTokens::CheckHeader(absl::string_view authorization) const {
  authorization = absl::StripAsciiWhitespace(authorization);
  if (!absl::StartsWithIgnoreCase(authorization, kScheme)) {
    return absl::UnauthenticatedError("missing bearer token");
  }
  const absl::string_view presented =
      absl::StripAsciiWhitespace(authorization.substr(kScheme.size()));
  if (presented.empty()) return absl::UnauthenticatedError("missing bearer token");
  bool match = false;
  for (const std::string& token : tokens_) {
    match |= ConstantTimeEquals(presented, token);  // every token, no early exit
  }
  if (!match) return absl::UnauthenticatedError("invalid bearer token");
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadBearerToken(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the token file ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();  // sets text's failbit when the file is empty: checked below
  if (in.bad()) return absl::NotFoundError(absl::StrCat("cannot read the token file ", path));
  const std::string token(absl::StripAsciiWhitespace(text.str()));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the token file ", path, " is empty"));
  }
  for (char c : token) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(
          absl::StrCat("the token file ", path, " holds more than one word: a token cannot "
                       "contain whitespace"));
    }
  }
  return token;
}

std::string BearerAuthorization(absl::string_view token) { return absl::StrCat("Bearer ", token); }

}  // namespace llorch
