// End-to-end harness: runs the real ktls-agent and ktls-demo-app as processes on loopback and
// talks to them with a real TLS client (OpenSSL in this process, or the openssl/curl binaries).
//
// The same tests run on the host (no kTLS: connections are relayed) and inside the VM suite,
// where KTLS_EXPECT_OFFLOAD=1 makes every connection's kTLS TX and RX state an assertion: a test
// FAILS, never skips, when the kernel did not take the keys.
#ifndef KTLS_TESTS_INTEGRATION_SUPPORT_HARNESS_H_
#define KTLS_TESTS_INTEGRATION_SUPPORT_HARNESS_H_

#include <openssl/ssl.h>
#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/integration/support/process.h"

namespace ktls::testing {

// True when the VM suite asks for kTLS to be proven (KTLS_EXPECT_OFFLOAD=1).
bool ExpectOffload();

// A child process, killed (SIGTERM, then SIGKILL) when destroyed. stdout+stderr go to a log file.
class Process {
 public:
  Process(std::vector<std::string> argv, const std::string& log_path);
  pid_t pid() const { return child_.pid(); }
  bool Running() { return child_.Running(); }
  // Sends SIGTERM and waits up to `timeout_ms`; returns the exit status (or -1).
  int Terminate(int timeout_ms = 5000) { return child_.Terminate(timeout_ms); }
  std::string Log() const { return ReadWholeFile(log_path_); }

 private:
  std::string log_path_;
  ChildProcess child_;
};

// The agent binary (KTLS_AGENT_BIN overrides the compiled-in path) and its command line as the
// tests run it: loopback port 0, two workers, the given handoff socket, ready file and control
// socket, no fixed metrics port.
std::string AgentBin();
std::vector<std::string> AgentArgv(const std::string& handoff_socket, const std::string& ready_file,
                                   const std::string& control_socket);
// The port in an agent's ready file ("listen=127.0.0.1:PORT"); 0 when there is none.
int ReadyFilePort(const std::string& ready);

struct AgentOptions {
  std::vector<std::string> extra_flags;  // e.g. "--offload=off"
  int app_workers = 1;
  bool start_app = true;
  bool expect_ready = true;  // false: the test checks that the agent refuses to start
};

// Options for a Stack without the demo app: the test starts its own app (or none).
inline AgentOptions AgentOnly() {
  AgentOptions o;
  o.start_app = false;
  return o;
}

// A temporary directory with an agent and (optionally) a demo app subscribed to it.
class Stack {
 public:
  explicit Stack(AgentOptions options = {});
  ~Stack();
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  const std::string& handoff_socket() const { return handoff_socket_; }
  bool ktls_available() const { return ktls_available_; }
  Process& agent() { return *agent_; }
  Process* app() { return app_.get(); }
  // Starts a demo app (more can be started); waits until it serves.
  void StartApp(int workers = 1);
  std::string AgentLog() const { return agent_->Log(); }

 private:
  std::string dir_;
  std::string handoff_socket_;
  int port_ = 0;
  bool ktls_available_ = false;
  std::unique_ptr<Process> agent_;
  std::unique_ptr<Process> app_;
  std::vector<std::unique_ptr<Process>> extra_apps_;
};

struct ClientOptions {
  int tls_version = TLS1_3_VERSION;  // exact version to negotiate
  std::string cipher;                // TLS 1.3 suite or TLS 1.2 cipher name; empty: default
  std::string sni = "localhost";
  std::vector<std::string> alpn;
};

// A blocking TLS client over a loopback TCP socket.
class TlsClient {
 public:
  // Connects and handshakes. If `first_request` is non-empty, it is written in the SAME TCP
  // segment as the client's Finished (the handshake runs over memory BIOs and the bytes are
  // flushed together), so the server receives application data right behind Finished.
  static std::unique_ptr<TlsClient> Connect(int port, const ClientOptions& options,
                                            const std::string& first_request = "");
  ~TlsClient();

  bool Write(const std::string& data);
  // Reads one HTTP/1.1 response (Content-Length bodies). Returns false on error/EOF.
  bool ReadResponse(int* status, std::map<std::string, std::string>* headers, std::string* body);
  // Sends close_notify and half-closes.
  void ShutdownWrite();
  // Reads until the peer's close_notify; true when a clean close_notify arrived.
  bool ReadCloseNotify();
  SSL* ssl() { return ssl_; }
  std::string error() const { return error_; }

 private:
  TlsClient() = default;
  bool Pump(bool want_read);  // memory-BIO transport
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  BIO* net_ = nullptr;  // our side of the BIO pair
  std::string rbuf_;
  std::string error_;
};

// One request/response on a fresh connection.
struct Exchange {
  bool ok = false;
  int status = 0;
  std::string body;
  std::string error;
};
Exchange Get(int port, const std::string& path, const ClientOptions& options = {});

// Tiny JSON field readers for /conninfo (flat object, string/bool/number values).
std::string JsonString(const std::string& json, const std::string& key);
bool JsonBool(const std::string& json, const std::string& key);

// Connects, sends `bytes`, and waits (up to 15 s) for the server to close the connection.
// True when it closed (with or without an alert first).
bool SendRawAndAwaitClose(int port, const std::string& bytes);

// A blocking TCP socket connected to 127.0.0.1:port, with TCP_NODELAY and 60 s send and receive
// timeouts; -1 (errno set) when connect failed.
int ConnectLoopback(int port);

// The pieces TlsClient and app_harness.h's MemTlsClient (TLS over a memory BIO pair) share:
// `what` followed by OpenSSL's queued errors (the queue is drained).
std::string OpenSslErrors(const char* what);
// SSL_write of all of `data`, at most `chunk` bytes a call, with `flush` moving what OpenSSL
// produced to the socket; false (and *error) when a write or a flush fails.
bool SslWriteAll(SSL* ssl, const std::string& data, size_t chunk,
                 const std::function<bool()>& flush, std::string* error);
// Frees the client's OpenSSL objects (the SSL owns its half of the pair) and closes `fd`.
void FreeBioPairClient(SSL* ssl, BIO* net, SSL_CTX* ctx, int fd);

// Runs a shell command, returns its exit status and stdout.
int RunCommand(const std::string& command, std::string* out);

std::string Sha256Hex(const std::string& data);
// The demo app's /bytes/N pattern.
std::string BytesPattern(size_t n);

}  // namespace ktls::testing

#endif  // KTLS_TESTS_INTEGRATION_SUPPORT_HARNESS_H_
