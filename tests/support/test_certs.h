// Throwaway PKI for tests of TLS and mutual TLS, made with the `openssl`
// command: a CA, a server certificate for 127.0.0.1, ::1 and localhost, a
// client certificate, both signed by the CA, and a second, unrelated CA.
// EC P-256 keys (fast to make), valid for ten years.
#ifndef LLORCH_TESTS_SUPPORT_TEST_CERTS_H_
#define LLORCH_TESTS_SUPPORT_TEST_CERTS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace llorch::testing {

// The files WriteTestCerts makes, as paths.
struct TestCerts {
  std::string dir;
  std::string ca;          // ca.pem (its key: ca.key)
  // server.pem: CN localhost, SAN IP:127.0.0.1, IP:::1, DNS:localhost; its
  // extendedKeyUsage allows clientAuth too, as a worker shows its own
  // certificate to schedulers.
  std::string server_cert;
  std::string server_key;  // server.key
  std::string client_cert; // client.pem: CN llorch-test-client, extendedKeyUsage clientAuth
  std::string client_key;  // client.key
  std::string other_ca;    // other_ca.pem: a CA that signed none of the above
};

// Writes the files into `dir` (which must exist); Internal with openssl's
// output when a command fails.
absl::StatusOr<TestCerts> WriteTestCerts(const std::string& dir);

// A fresh directory under $TEST_TMPDIR or /tmp (not removed).
absl::StatusOr<std::string> MakeTempDir(const std::string& prefix);

}  // namespace llorch::testing

#endif  // LLORCH_TESTS_SUPPORT_TEST_CERTS_H_
