// TLS and mutual TLS over a real in-process gRPC server on loopback, with
// certificates made by the openssl command (tests/support/test_certs.h).
#include "common/grpc/tls.h"

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/test_certs.h"

namespace llorch {
namespace {

using ::llorch::testing::TestCerts;

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    grpc::EnableDefaultHealthCheckService(true);
    absl::StatusOr<std::string> dir = ::llorch::testing::MakeTempDir("llorch-tls-test-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    absl::StatusOr<TestCerts> certs = ::llorch::testing::WriteTestCerts(*dir);
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = new TestCerts(*certs);
  }
  static void TearDownTestSuite() {
    if (certs_ != nullptr) std::filesystem::remove_all(certs_->dir);
    delete certs_;
    certs_ = nullptr;
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }

  // Starts a server with only the health service (and a generic service
  // that answers UNIMPLEMENTED: gRPC builds no server without one of its
  // own); returns its address.
  std::string StartServer(const TlsFiles& files, ClientCerts client_certs) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
        MakeServerCredentials(files, client_certs);
    EXPECT_TRUE(credentials.ok()) << credentials.status();
    if (!credentials.ok()) return "";
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", *credentials, &port);
    builder.RegisterCallbackGenericService(&generic_);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    EXPECT_NE(port, 0);
    return "127.0.0.1:" + std::to_string(port);
  }

  // A health check over a fresh channel with the client's files.
  static grpc::Status Check(const std::string& address, const TlsFiles& files) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        MakeChannelCredentials(files);
    EXPECT_TRUE(credentials.ok()) << credentials.status();
    if (!credentials.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "no credentials");
    auto stub = grpc::health::v1::Health::NewStub(grpc::CreateChannel(address, *credentials));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = stub->Check(&context, request, &response);
    if (status.ok()) EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    return status;
  }

  static TlsFiles ServerFiles(const std::string& ca = "") {
    return {certs_->server_cert, certs_->server_key, ca};
  }
  static TlsFiles ClientFiles(const std::string& ca, bool with_cert) {
    if (!with_cert) return {"", "", ca};
    return {certs_->client_cert, certs_->client_key, ca};
  }

  static TestCerts* certs_;
  grpc::CallbackGenericService generic_;
  std::unique_ptr<grpc::Server> server_;
};

TestCerts* TlsTest::certs_ = nullptr;

TEST_F(TlsTest, PlaintextWithoutFiles) {
  const std::string address = StartServer({}, ClientCerts::kRequire);
  EXPECT_TRUE(Check(address, {}).ok());
}

TEST_F(TlsTest, ServerVerifiedAgainstTheRightCa) {
  const std::string address = StartServer(ServerFiles(), ClientCerts::kNone);
  grpc::Status status = Check(address, ClientFiles(certs_->ca, false));
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  // The certificate's DNS name works as well as its IP address.
  const std::string by_name = "localhost" + address.substr(address.find(':'));
  status = Check(by_name, ClientFiles(certs_->ca, false));
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
}

TEST_F(TlsTest, WrongCaFails) {
  const std::string address = StartServer(ServerFiles(), ClientCerts::kNone);
  grpc::Status status = Check(address, ClientFiles(certs_->other_ca, false));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(TlsTest, PlaintextClientAgainstTlsServerFails) {
  const std::string address = StartServer(ServerFiles(), ClientCerts::kNone);
  grpc::Status status = Check(address, {});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(TlsTest, TlsClientAgainstPlaintextServerFails) {
  const std::string address = StartServer({}, ClientCerts::kNone);
  grpc::Status status = Check(address, ClientFiles(certs_->ca, false));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(TlsTest, RequireRefusesAClientWithoutCertAndAcceptsOneWithCert) {
  const std::string address = StartServer(ServerFiles(certs_->ca), ClientCerts::kRequire);
  grpc::Status without = Check(address, ClientFiles(certs_->ca, false));
  EXPECT_EQ(without.error_code(), grpc::StatusCode::UNAVAILABLE) << without.error_message();
  grpc::Status with = Check(address, ClientFiles(certs_->ca, true));
  EXPECT_TRUE(with.ok()) << with.error_code() << " " << with.error_message();
}

// The client's certificate must chain to the server's --tls_ca.
TEST_F(TlsTest, RequireRefusesAClientCertFromAnotherCa) {
  const std::string address = StartServer(ServerFiles(certs_->other_ca), ClientCerts::kRequire);
  grpc::Status status = Check(address, ClientFiles(certs_->ca, true));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(TlsTest, VerifyIfPresentedAcceptsBoth) {
  const std::string address =
      StartServer(ServerFiles(certs_->ca), ClientCerts::kVerifyIfPresented);
  grpc::Status without = Check(address, ClientFiles(certs_->ca, false));
  EXPECT_TRUE(without.ok()) << without.error_message();
  grpc::Status with = Check(address, ClientFiles(certs_->ca, true));
  EXPECT_TRUE(with.ok()) << with.error_message();
}

TEST_F(TlsTest, ErrorsNameTheFlag) {
  auto server_error = [](const TlsFiles& files) {
    return MakeServerCredentials(files, ClientCerts::kRequire).status();
  };
  absl::Status s = server_error({certs_->server_cert, "", ""});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "--tls_key")) << s;
  s = server_error({"", certs_->server_key, ""});
  EXPECT_TRUE(absl::StrContains(s.message(), "--tls_cert")) << s;
  s = server_error({"", "", certs_->ca});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "--tls_ca")) << s;
  s = server_error({certs_->dir + "/absent.pem", certs_->server_key, ""});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(s.message(), "--tls_cert")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "absent.pem")) << s;
  s = server_error({certs_->server_cert, certs_->server_key, certs_->dir + "/absent.pem"});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(s.message(), "--tls_ca")) << s;
  // A key where the certificate belongs.
  s = server_error({certs_->server_key, certs_->server_key, ""});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "--tls_cert")) << s;
  s = server_error({certs_->server_cert, certs_->server_cert, ""});
  EXPECT_TRUE(absl::StrContains(s.message(), "--tls_key")) << s;

  s = MakeChannelCredentials({certs_->client_cert, "", certs_->ca}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "--tls_key")) << s;
  s = MakeChannelCredentials({"", "", certs_->dir + "/absent.pem"}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(s.message(), "--tls_ca")) << s;
}

TEST(DescribeServerTlsTest, Words) {
  EXPECT_EQ(DescribeServerTls({}, ClientCerts::kRequire), "tls off");
  EXPECT_EQ(DescribeServerTls({"c", "k", ""}, ClientCerts::kRequire), "tls on");
  EXPECT_EQ(DescribeServerTls({"c", "k", "ca"}, ClientCerts::kRequire),
            "tls on, client certificates required");
}

}  // namespace
}  // namespace llorch
