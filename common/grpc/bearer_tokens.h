// Bearer-token authentication for gRPC servers: a file of accepted tokens,
// and the check of a call's "authorization: Bearer <token>" metadata.
// Tokens are compared in constant time (per token, whatever matches) and
// never appear in errors or logs.
#ifndef LLORCH_COMMON_GRPC_BEARER_TOKENS_H_
#define LLORCH_COMMON_GRPC_BEARER_TOKENS_H_

#include <string>
#include <vector>

#include <grpcpp/server_context.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llorch {

class BearerTokens {
 public:
  // One token per line; surrounding whitespace is trimmed, blank lines and
  // lines starting with '#' are ignored. NotFound when the file cannot be
  // read, InvalidArgument when it holds no token or a token with inner
  // whitespace (neither message quotes a token).
  static absl::StatusOr<BearerTokens> Load(const std::string& path);
  // From tokens in memory (tests); empty tokens are dropped.
  static absl::StatusOr<BearerTokens> FromTokens(std::vector<std::string> tokens);

  // OK when the call's "authorization" metadata is "Bearer <token>" (the
  // scheme in any case) with one of the tokens; UNAUTHENTICATED "missing
  // bearer token" or "invalid bearer token" otherwise.
  absl::Status Check(const grpc::ServerContextBase& context) const;
  // The same for the value of an authorization header (empty: missing).
  absl::Status CheckHeader(absl::string_view authorization) const;

  size_t size() const { return tokens_.size(); }

 private:
  explicit BearerTokens(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {}

  std::vector<std::string> tokens_;  // non-empty, none empty
};

// A client's token file (the llorch CLI's --token-file, llorch-worker's
// --scheduler_token_file): one token, surrounding whitespace trimmed.
// NotFound when the file cannot be read, InvalidArgument when it is empty or
// the token holds whitespace (neither message quotes the token).
absl::StatusOr<std::string> ReadBearerToken(const std::string& path);

// "Bearer <token>": the value of a call's authorization metadata.
std::string BearerAuthorization(absl::string_view token);

}  // namespace llorch

#endif  // LLORCH_COMMON_GRPC_BEARER_TOKENS_H_
