// Support for the app-side integration tests (tests/integration/app_*_test.cc): the test-only
// probe app and its report lines, the client library's examples, processes whose stdin the test
// drives (openssl s_client / s_server), a TLS client that can make OpenSSL send a fatal alert,
// and an upstream TLS 1.3 server that issues session tickets in the middle of its data.
//
// Same rules as harness.h: on the host connections are relayed; in the VM suite
// (KTLS_EXPECT_OFFLOAD=1) tests assert kTLS and FAIL, never skip, when it is not active.
#ifndef KTLS_TESTS_INTEGRATION_SUPPORT_APP_HARNESS_H_
#define KTLS_TESTS_INTEGRATION_SUPPORT_APP_HARNESS_H_

#include <openssl/ssl.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/support/harness.h"
#include "tests/integration/support/process.h"

namespace ktls::testing {

// Build outputs (compiled-in paths; environment variables of the same name override them).
std::string ProbeAppBin();      // KTLS_PROBE_APP_BIN
std::string ClientSharedLib();  // KTLS_CLIENT_SO: libktls_client.so for the Python example
std::string ExampleCBin();      // KTLS_EXAMPLE_C_BIN
std::string ExampleCppBin();    // KTLS_EXAMPLE_CPP_BIN
std::string ExamplePy();        // KTLS_EXAMPLE_PY
// Debian's interpreter (/usr/bin/python3) when present, else python3 from PATH, else "".
std::string Python3();

// A child process whose stdin is a pipe the test writes; stdout and stderr go to separate files.
// Killed (SIGTERM, then SIGKILL) when destroyed.
class PipedProcess {
 public:
  PipedProcess(std::vector<std::string> argv, const std::string& out_path,
               const std::string& err_path);
  ~PipedProcess();
  pid_t pid() const { return child_->pid(); }
  bool WriteStdin(const std::string& data);
  void CloseStdin();
  bool Running() { return child_->Running(); }
  // Waits up to `timeout_ms` for the process to exit on its own: its wait status, or -1.
  int Wait(int timeout_ms) { return child_->Wait(timeout_ms); }
  int Terminate(int timeout_ms = 3000) { return child_->Terminate(timeout_ms); }
  std::string Out() const;
  std::string Err() const;

 private:
  std::unique_ptr<ChildProcess> child_;  // after the stdin pipe exists
  int stdin_fd_ = -1;
  std::string out_path_;
  std::string err_path_;
};

// One "PROBE-<KIND> key=value ... error=<rest of line>" line of ktls-probe-app.
using ProbeLine = std::map<std::string, std::string>;
// Every `kind` line in `log` (kind without the "PROBE-" prefix, e.g. "END").
std::vector<ProbeLine> ProbeLines(const std::string& log, const std::string& kind);
// Waits until `process` has printed a `kind` line whose `key` is `value` (any, if key is empty).
// Returns it, or an empty map after `timeout_ms`.
ProbeLine WaitForProbeLine(Process& process, const std::string& kind, const std::string& key,
                           const std::string& value, int timeout_ms);
// "key=value ..." for failure messages.
std::string Describe(const ProbeLine& line);

// Another agent process (KTLS_AGENT_BIN) serving `handoff_socket` (e.g. a restarted agent for a
// Stack's apps), files named after `name` in `dir`; waits until it is ready and sets *port.
std::unique_ptr<Process> StartAgent(const std::string& dir, const std::string& handoff_socket,
                                    const std::string& name, int* port);

// ktls-probe-app serve subscribed to `stack`'s agent; waits for PROBE-READY.
std::unique_ptr<Process> StartProbeApp(Stack& stack, const std::string& name = "probe");

// A self-signed certificate for localhost / 127.0.0.1 made with the openssl CLI; it is its own CA.
struct TestCert {
  std::string cert;
  std::string key;
};
TestCert MakeTestCert(const std::string& dir);

// A loopback port nothing listens on right now, and whether something listens on one
// (/proc/net/tcp, so that checking does not consume a connection).
int FreeLoopbackPort();
bool ListeningOn(int port);

// Passes the offload assertion of a probe line (data_path, kernel_tx, kernel_rx): in the VM kTLS
// must be active as the kernel reports it on the app's descriptor; on a host without kTLS the
// connection must be relayed.
void ExpectProbeDataPath(const Stack& stack, const ProbeLine& line);

// A TLS client over a memory BIO pair (like harness.h's TlsClient), which can also hand its SSL
// a forged record "from the server": decryption fails and OpenSSL sends a fatal bad_record_mac
// alert under the current keys, which the server side reads as an alert record.
class MemTlsClient {
 public:
  static std::unique_ptr<MemTlsClient> Connect(int port, int tls_version);
  ~MemTlsClient();
  const std::string& error() const { return error_; }
  bool Write(const std::string& data);
  // Reads one '\n'-terminated line (without the '\n').
  bool ReadLine(std::string* line);
  // close_notify, TCP stays open for the answer.
  bool SendCloseNotify();
  // True when the server's close_notify arrives (data before it is discarded).
  bool ReadCloseNotify();
  bool SendFatalAlert();

 private:
  MemTlsClient() = default;
  bool Flush();
  bool Fill();
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  BIO* net_ = nullptr;
  std::string rbuf_;
  std::string error_;
};

// A TLS 1.3 server on 127.0.0.1:port() for one connection, in its own thread: after the
// handshake (and OpenSSL's two automatic tickets) it sends `download` bytes (byte i = (i*7+3)&255)
// and issues one more NewSessionTicket every `ticket_every` bytes, while it reads and hashes what
// the client sends until close_notify; then it answers with close_notify.
class TicketingUpstream {
 public:
  struct Result {
    bool done = false;
    std::string error;
    uint64_t sent = 0;
    std::string sent_sha;
    uint64_t received = 0;
    std::string received_sha;
    int tickets_midstream = 0;
  };
  TicketingUpstream(const TestCert& cert, uint64_t download, uint64_t ticket_every);
  ~TicketingUpstream();
  int port() const { return port_; }
  Result Wait(int timeout_ms);

 private:
  void Run();
  TestCert cert_;
  uint64_t download_;
  uint64_t ticket_every_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> finished_{false};
  std::atomic<bool> stop_{false};
  Result result_;
  std::thread thread_;
};

// Byte i of TicketingUpstream's download, and of ktls-probe-app's SEND/dial pattern.
std::string UpstreamPattern(size_t n);
std::string ProbePattern(size_t n);

}  // namespace ktls::testing

#endif  // KTLS_TESTS_INTEGRATION_SUPPORT_APP_HARNESS_H_
