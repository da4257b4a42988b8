#include "common/grpc/tls.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace llorch {
namespace {

constexpr absl::string_view kCertificate = "CERTIFICATE";
constexpr absl::string_view kPrivateKey = "PRIVATE KEY";  // also "EC PRIVATE KEY", "RSA ..."

// The whole file; NotFound naming the flag when it cannot be read or is
// empty, InvalidArgument when it holds no PEM block of the kind (gRPC would
// only fail later, at listening or at the handshake, and say less).
absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path,
                                    absl::string_view kind) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("--", flag, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
  if (text.str().empty()) return absl::NotFoundError(absl::StrCat("--", flag, ": ", path, " is empty"));
  if (!absl::StrContains(text.str(), "-----BEGIN ") ||
      !absl::StrContains(text.str(), absl::StrCat(kind, "-----"))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", path, " holds no PEM ", absl::AsciiStrToLower(kind)));
  }
  return text.str();
}

// Both or neither of cert and key.
absl::Status CheckPair(const TlsFiles& files) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(files.cert.empty()
                                          ? "--tls_key needs --tls_cert (its certificate)"
                                          : "--tls_cert needs --tls_key (its private key)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files, ClientCerts client_certs) {
  if (absl::Status s = CheckPair(files); !s.ok()) return s;
  if (files.cert.empty()) {
    if (!files.ca.empty()) {
      return absl::InvalidArgumentError(
          "--tls_ca needs --tls_cert and --tls_key (the server's own certificate and key)");
    }
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  absl::StatusOr<std::string> cert = ReadPem("tls_cert", files.cert, kCertificate);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("tls_key", files.key, kPrivateKey);
  if (!key.ok()) return key.status();
  pair.cert_chain = std::move(*cert);
  pair.private_key = std::move(*key);

  grpc_ssl_client_certificate_request_type request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  std::string roots;
  if (!files.ca.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("tls_ca", files.ca, kCertificate);
    if (!ca.ok()) return ca.status();
    roots = std::move(*ca);
    switch (client_certs) {
      case ClientCerts::kNone:
        break;
      case ClientCerts::kVerifyIfPresented:
        request = GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
        break;
      case ClientCerts::kRequire:
        request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
        break;
    }
  }
  grpc::SslServerCredentialsOptions options(request);
  options.pem_root_certs = std::move(roots);
  options.pem_key_cert_pairs.push_back(std::move(pair));
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::SslServerCredentials(options);
  if (credentials == nullptr) return absl::InvalidArgumentError("cannot make TLS server credentials");
  return credentials;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& files) {
  if (absl::Status s = CheckPair(files); !s.ok()) return s;
  if (files.ca.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  absl::StatusOr<std::string> ca = ReadPem("tls_ca", files.ca, kCertificate);
  if (!ca.ok()) return ca.status();
  options.pem_root_certs = std::move(*ca);
  if (!files.cert.empty()) {
    absl::StatusOr<std::string> cert = ReadPem("tls_cert", files.cert, kCertificate);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem("tls_key", files.key, kPrivateKey);
    if (!key.ok()) return key.status();
    options.pem_cert_chain = std::move(*cert);
    options.pem_private_key = std::move(*key);
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::SslCredentials(options);
  if (credentials == nullptr) return absl::InvalidArgumentError("cannot make TLS channel credentials");
  return credentials;
}

std::string DescribeServerTls(const TlsFiles& files, ClientCerts client_certs) {
  if (files.cert.empty()) return "tls off";
  if (files.ca.empty() || client_certs == ClientCerts::kNone) return "tls on";
  return client_certs == ClientCerts::kRequire ? "tls on, client certificates required"
                                               : "tls on, client certificates verified if presented";
}

}  // namespace llorch
