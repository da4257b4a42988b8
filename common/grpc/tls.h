// TLS credentials for llorch's gRPC servers and clients from PEM files, as
// the --tls_cert, --tls_key and --tls_ca flags of llorch-worker and
// llorch-scheduler name them. Without files everything stays plaintext.
#ifndef LLORCH_COMMON_GRPC_TLS_H_
#define LLORCH_COMMON_GRPC_TLS_H_

#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"

namespace llorch {

// Paths of PEM files; empty means not given.
struct TlsFiles {
  std::string cert;  // --tls_cert: certificate chain, own identity
  std::string key;   // --tls_key: its private key
  std::string ca;    // --tls_ca: CA certificates the peer must chain to
};

// What a TLS server asks of its clients when it has a CA (without one it
// asks for no client certificate, whatever this says).
enum class ClientCerts {
  kNone,               // no client certificate asked for
  kVerifyIfPresented,  // a client may go without; one that presents a cert must chain to the CA
  kRequire,            // mutual TLS: every client presents a cert that chains to the CA
};

// Plaintext when cert and key are both empty (and ca too); otherwise TLS
// with cert/key as the server's identity, client certificates checked
// against ca as `client_certs` says. InvalidArgument naming the flag when
// only one of cert and key is given, or ca without them; NotFound naming
// the flag and the file when a file cannot be read or is empty.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files, ClientCerts client_certs);

// Plaintext when ca is empty (cert and key are not used then); otherwise
// TLS verifying the server against ca (and its name against the target's
// host), presenting cert/key as the client's identity when both are given.
// InvalidArgument naming the flag when only one of cert and key is given;
// NotFound as MakeServerCredentials.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& files);

// "tls on (client certificates required)", "tls off", ...: for log lines.
std::string DescribeServerTls(const TlsFiles& files, ClientCerts client_certs);

}  // namespace llorch

#endif  // LLORCH_COMMON_GRPC_TLS_H_
