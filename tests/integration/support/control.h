// Helpers for the control-plane integration tests (tests/integration/control_*_test.cc): a gRPC
// client on a Stack's control socket, ktlsctl as a process, /metrics fetched and parsed,
// certificates generated at test time, and the certificate a handshake was served.
#ifndef KTLS_TESTS_INTEGRATION_SUPPORT_CONTROL_H_
#define KTLS_TESTS_INTEGRATION_SUPPORT_CONTROL_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "ktls/v1/control.grpc.pb.h"
#include "tests/integration/support/harness.h"
#include "tests/unit/agent/test_certs.h"

namespace ktls::testing {

// The agent's ready file as key=value pairs (listen, control_socket, metrics, ...).
std::map<std::string, std::string> ReadyInfo(const Stack& stack);

struct Control {
  explicit Control(const std::string& socket_path);
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::CertificateService::Stub> certs;
  std::unique_ptr<v1::TrustService::Stub> trust;
  std::unique_ptr<v1::SessionTicketService::Stub> tickets;
  std::unique_ptr<v1::TelemetryService::Stub> telemetry;
};
// A context with a 10 s deadline.
std::unique_ptr<grpc::ClientContext> Ctx();

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// Runs ktlsctl with `args` (the --socket flag is added when `socket` is non-empty).
CommandResult Ktlsctl(const std::string& socket, const std::vector<std::string>& args);
std::string KtlsctlBin();

// One Prometheus text exposition, parsed: "name{a="b",c="d"}" -> value (labels sorted by
// name, as prometheus-cpp prints them in declaration order; keys use the exposition's order).
struct Metrics {
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;  // family -> counter|gauge|histogram
  // Value of a series; `labels` as in the exposition, e.g. "reason=\"timeout\"". -1 if absent.
  double Get(const std::string& name, const std::string& labels = "") const;
  // Sum over every series of a family that contains `label_filter` (empty: all).
  double Sum(const std::string& name, const std::string& label_filter = "") const;
};
bool FetchMetrics(const std::string& host_port, Metrics* out, std::string* error);

// A leaf for `names` signed by `ca` (valid from an hour ago for `days`).
testcerts::TestCert MakeLeaf(const testcerts::TestCert& ca, const std::string& cn,
                             const std::vector<std::string>& names, long days = 30);

// Handshakes with `sni` and returns the served leaf's SHA-256 (hex), or "" with `error` set.
std::string ServedFingerprint(int port, const std::string& sni, std::string* error = nullptr,
                              int tls_version = TLS1_3_VERSION);
std::string FingerprintOfPem(const std::string& cert_pem);

struct HandshakeOptions {
  std::string sni = "localhost";
  int tls_version = TLS1_3_VERSION;
  X509* client_cert = nullptr;     // not owned
  EVP_PKEY* client_key = nullptr;  // not owned
  SSL_SESSION* resume = nullptr;   // not owned: offered for resumption
  bool request = true;             // send GET /healthz and read the answer (collects tickets)
};
struct HandshakeResult {
  bool ok = false;
  std::string error;
  bool resumed = false;
  std::string fingerprint;         // served leaf, SHA-256 hex
  std::string response;            // what the app answered
  SSL_SESSION* session = nullptr;  // owned by the caller (SSL_SESSION_free), after the request
};
// A blocking TLS client on a plain socket: for client certificates and session resumption.
HandshakeResult Handshake(int port, const HandshakeOptions& options);

// A temporary directory removed (with its contents) when destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& contents, int mode = 0600) const;

 private:
  std::string path_;
};

}  // namespace ktls::testing

#endif  // KTLS_TESTS_INTEGRATION_SUPPORT_CONTROL_H_
