#include "common/grpc/bearer_tokens.h"

#include <chrono>
#include <fstream>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "common/grpc/status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/test_certs.h"

namespace llorch {
namespace {

std::string WriteFile(const std::string& name, const std::string& text) {
  absl::StatusOr<std::string> dir = ::llorch::testing::MakeTempDir("llorch-tokens-test-");
  EXPECT_TRUE(dir.ok()) << dir.status();
  const std::string path = *dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(BearerTokensTest, LoadSkipsBlankAndCommentLines) {
  const std::string path =
      WriteFile("tokens", "# clients\n\n  alpha-1  \n#beta\r\nbeta-2\r\n   \n# end\n");
  absl::StatusOr<BearerTokens> tokens = BearerTokens::Load(path);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 2u);
  EXPECT_TRUE(tokens->CheckHeader("Bearer alpha-1").ok());
  EXPECT_TRUE(tokens->CheckHeader("Bearer beta-2").ok());
  EXPECT_FALSE(tokens->CheckHeader("Bearer #beta").ok());
}

TEST(BearerTokensTest, LoadErrors) {
  absl::StatusOr<BearerTokens> none = BearerTokens::Load(WriteFile("empty", "# none\n\n"));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(none.status().message(), "no token")) << none.status();
  absl::StatusOr<BearerTokens> absent = BearerTokens::Load("/nonexistent/tokens");
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<BearerTokens> spaced =
      BearerTokens::Load(WriteFile("spaced", "good\nsecret part\n"));
  EXPECT_EQ(spaced.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(spaced.status().message(), "secret")) << spaced.status();
  EXPECT_FALSE(BearerTokens::FromTokens({"", ""}).ok());
}

// A client's token file: the one token, trimmed; what a scheduler's token
// file accepts is what the client sends.
TEST(BearerTokensTest, ReadBearerToken) {
  absl::StatusOr<std::string> token = ReadBearerToken(WriteFile("client", "  s3cret-1 \r\n\n"));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "s3cret-1");
  absl::StatusOr<BearerTokens> tokens = BearerTokens::Load(WriteFile("server", "s3cret-1\n"));
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_TRUE(tokens->CheckHeader(BearerAuthorization(*token)).ok());

  absl::StatusOr<std::string> empty = ReadBearerToken(WriteFile("blank", " \n\t\n"));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(empty.status().message(), "empty")) << empty.status();
  EXPECT_EQ(ReadBearerToken("/nonexistent/token").status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<std::string> two = ReadBearerToken(WriteFile("two", "secret part\n"));
  EXPECT_EQ(two.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(two.status().message(), "secret")) << two.status();
}

TEST(BearerTokensTest, CheckHeader) {
  absl::StatusOr<BearerTokens> tokens = BearerTokens::FromTokens({"s3cret", "other-token"});
  ASSERT_TRUE(tokens.ok());
  EXPECT_TRUE(tokens->CheckHeader("Bearer s3cret").ok());
  EXPECT_TRUE(tokens->CheckHeader("bearer other-token").ok());
  struct Case {
    const char* header;
    const char* message;
  };
  for (const Case& c : {Case{"", "missing bearer token"}, Case{"Bearer", "missing bearer token"},
                        Case{"Bearer  ", "missing bearer token"},
                        Case{"Basic s3cret", "missing bearer token"},
                        Case{"s3cret", "missing bearer token"},
                        Case{"Bearer s3cre", "invalid bearer token"},
                        Case{"Bearer s3cret!", "invalid bearer token"},
                        Case{"Bearer s3cret3cret", "invalid bearer token"},
                        Case{"Bearer S3CRET", "invalid bearer token"},
                        Case{"Bearer other", "invalid bearer token"}}) {
    SCOPED_TRACE(c.header);
    absl::Status s = tokens->CheckHeader(c.header);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(s.message(), c.message);
  }
}

// The check on a real call's metadata: a health service that answers only
// callers with a token.
class GuardedHealth final : public grpc::health::v1::Health::CallbackService {
 public:
  explicit GuardedHealth(const BearerTokens* tokens) : tokens_(tokens) {}
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* /*request*/,
                                  grpc::health::v1::HealthCheckResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    absl::Status allowed = tokens_->Check(*context);
    if (allowed.ok()) response->set_status(grpc::health::v1::HealthCheckResponse::SERVING);
    reactor->Finish(ToGrpcStatus(allowed));
    return reactor;
  }

 private:
  const BearerTokens* tokens_;
};

TEST(BearerTokensTest, CheckOnACall) {
  absl::StatusOr<BearerTokens> tokens = BearerTokens::FromTokens({"s3cret"});
  ASSERT_TRUE(tokens.ok());
  GuardedHealth service(&*tokens);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  auto call = [&](const char* authorization) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (authorization != nullptr) context.AddMetadata("authorization", authorization);
    grpc::health::v1::HealthCheckResponse response;
    return stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  };
  EXPECT_TRUE(call("Bearer s3cret").ok());
  grpc::Status missing = call(nullptr);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(missing.error_message(), "missing bearer token");
  grpc::Status wrong = call("Bearer s3cre");
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(wrong.error_message(), "invalid bearer token");
  server->Shutdown(std::chrono::system_clock::now());
}

}  // namespace
}  // namespace llorch
