#include "tests/support/test_certs.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace llorch::testing {
namespace {

// Own sections only, so the system's openssl.cnf adds no extensions.
constexpr char kConfig[] = R"([req]
distinguished_name = dn
prompt = no
[dn]
CN = llorch-test
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:llorch-test-client
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
)";

// Runs openssl with `args` in `dir`; Internal with its output on failure.
absl::Status Openssl(const std::string& dir, std::vector<std::string> args) {
  args.insert(args.begin(), "openssl");
  int out[2];
  if (pipe(out) != 0) return absl::InternalError("pipe failed");
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(out[1], STDERR_FILENO);
    close(out[0]);
    close(out[1]);
    if (chdir(dir.c_str()) != 0) _exit(126);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  std::string output;
  char buffer[4096];
  ssize_t n;
  while ((n = read(out[0], buffer, sizeof(buffer))) > 0) output.append(buffer, n);
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(absl::StrJoin(args, " "), " failed (status ", status,
                                            "):\n", output));
  }
  return absl::OkStatus();
}

std::vector<std::string> NewKey() {
  return {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"};
}

absl::Status MakeCa(const std::string& dir, const std::string& name, const std::string& cn) {
  std::vector<std::string> args = {"req", "-x509", "-config", "openssl.cnf", "-extensions",
                                   "ca_ext", "-days", "3650", "-subj", "/CN=" + cn};
  for (std::string& a : NewKey()) args.push_back(a);
  args.insert(args.end(), {"-keyout", name + ".key", "-out", name + ".pem"});
  return Openssl(dir, args);
}

absl::Status MakeLeaf(const std::string& dir, const std::string& name, const std::string& cn,
                      const std::string& extensions, const std::string& serial) {
  std::vector<std::string> request = {"req", "-new", "-config", "openssl.cnf", "-subj",
                                      "/CN=" + cn};
  for (std::string& a : NewKey()) request.push_back(a);
  request.insert(request.end(), {"-keyout", name + ".key", "-out", name + ".csr"});
  if (absl::Status s = Openssl(dir, request); !s.ok()) return s;
  return Openssl(dir, {"x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                       "-set_serial", serial, "-days", "3650", "-extfile", "openssl.cnf",
                       "-extensions", extensions, "-out", name + ".pem"});
}

}  // namespace

absl::StatusOr<TestCerts> WriteTestCerts(const std::string& dir) {
  {
    std::ofstream config(dir + "/openssl.cnf");
    config << kConfig;
    if (!config) return absl::InternalError(absl::StrCat("cannot write ", dir, "/openssl.cnf"));
  }
  if (absl::Status s = MakeCa(dir, "ca", "llorch test CA"); !s.ok()) return s;
  if (absl::Status s = MakeLeaf(dir, "server", "localhost", "server_ext", "1001"); !s.ok()) {
    return s;
  }
  if (absl::Status s = MakeLeaf(dir, "client", "llorch-test-client", "client_ext", "1002");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = MakeCa(dir, "other_ca", "llorch other test CA"); !s.ok()) return s;
  TestCerts certs;
  certs.dir = dir;
  certs.ca = dir + "/ca.pem";
  certs.server_cert = dir + "/server.pem";
  certs.server_key = dir + "/server.key";
  certs.client_cert = dir + "/client.pem";
  certs.client_key = dir + "/client.key";
  certs.other_ca = dir + "/other_ca.pem";
  return certs;
}

absl::StatusOr<std::string> MakeTempDir(const std::string& prefix) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string path = absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/", prefix,
                                  "XXXXXX");
  if (mkdtemp(path.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", path, " failed"));
  }
  return path;
}

}  // namespace llorch::testing
