#include "tests/integration/support/app_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/integration/support/digest.h"

#ifndef KTLS_PROBE_APP_BIN
#define KTLS_PROBE_APP_BIN ""
#endif
#ifndef KTLS_CLIENT_SO
#define KTLS_CLIENT_SO ""
#endif
#ifndef KTLS_EXAMPLE_C_BIN
#define KTLS_EXAMPLE_C_BIN ""
#endif
#ifndef KTLS_EXAMPLE_CPP_BIN
#define KTLS_EXAMPLE_CPP_BIN ""
#endif
#ifndef KTLS_EXAMPLE_PY
#define KTLS_EXAMPLE_PY ""
#endif

namespace ktls::testing {
namespace {

char UpstreamByte(uint64_t i) { return static_cast<char>((i * 7 + 3) & 255); }

}  // namespace

std::string ProbeAppBin() { return EnvOr("KTLS_PROBE_APP_BIN", KTLS_PROBE_APP_BIN); }
std::string ClientSharedLib() { return EnvOr("KTLS_CLIENT_SO", KTLS_CLIENT_SO); }
std::string ExampleCBin() { return EnvOr("KTLS_EXAMPLE_C_BIN", KTLS_EXAMPLE_C_BIN); }
std::string ExampleCppBin() { return EnvOr("KTLS_EXAMPLE_CPP_BIN", KTLS_EXAMPLE_CPP_BIN); }
std::string ExamplePy() { return EnvOr("KTLS_EXAMPLE_PY", KTLS_EXAMPLE_PY); }

std::string Python3() {
  if (access("/usr/bin/python3", X_OK) == 0) return "/usr/bin/python3";
  std::string out;
  if (RunCommand("command -v python3 2>/dev/null", &out) == 0 && !out.empty()) {
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return out;
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
PipedProcess::PipedProcess(std::vector<std::string> argv, const std::string& out_path,
                           const std::string& err_path)
    : out_path_(out_path), err_path_(err_path) {
  // Writing to the stdin of a child that has exited must be an error, not a SIGPIPE that kills
  // the test binary.
  signal(SIGPIPE, SIG_IGN);
  int in[2];
  if (pipe2(in, O_CLOEXEC) != 0) {
    child_ = std::make_unique<ChildProcess>(-1);
    return;
  }
  child_ = std::make_unique<ChildProcess>(std::move(argv), ChildStdio{in[0], out_path, err_path});
  close(in[0]);
  stdin_fd_ = in[1];
}

PipedProcess::~PipedProcess() {
  CloseStdin();
  Terminate(3000);
}

bool PipedProcess::WriteStdin(const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(stdin_fd_, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

void PipedProcess::CloseStdin() {
  if (stdin_fd_ >= 0) close(stdin_fd_);
  stdin_fd_ = -1;
}

std::string PipedProcess::Out() const { return ReadWholeFile(out_path_); }
std::string PipedProcess::Err() const { return ReadWholeFile(err_path_); }

// ---------------------------------------------------------------------------------------------
std::vector<ProbeLine> ProbeLines(const std::string& log, const std::string& kind) {
  std::vector<ProbeLine> out;
  const std::string prefix = "PROBE-" + kind;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    if (line.size() > prefix.size() && line[prefix.size()] != ' ') continue;  // PROBE-ENDX
    ProbeLine fields;
    fields["kind"] = kind;
    size_t pos = prefix.size();
    while (pos < line.size()) {
      while (pos < line.size() && line[pos] == ' ') ++pos;
      if (pos >= line.size()) break;
      const size_t eq = line.find('=', pos);
      if (eq == std::string::npos) break;
      const std::string key = line.substr(pos, eq - pos);
      if (key == "error" || key == "line") {  // free text to the end of the line
        fields[key] = line.substr(eq + 1);
        break;
      }
      size_t end = line.find(' ', eq + 1);
      if (end == std::string::npos) end = line.size();
      fields[key] = line.substr(eq + 1, end - eq - 1);
      pos = end;
    }
    out.push_back(std::move(fields));
  }
  return out;
}

ProbeLine WaitForProbeLine(Process& process, const std::string& kind, const std::string& key,
                           const std::string& value, int timeout_ms) {
  ProbeLine found;
  WaitUntil(
      [&] {
        for (ProbeLine& l : ProbeLines(process.Log(), kind)) {
          if (key.empty() || l[key] == value) {
            found = l;
            return true;
          }
        }
        return false;
      },
      timeout_ms);
  return found;
}

std::string Describe(const ProbeLine& line) {
  std::string out;
  for (const auto& [k, v] : line) out += k + "=" + v + " ";
  return out.empty() ? "(no line)" : out;
}

std::unique_ptr<Process> StartAgent(const std::string& dir, const std::string& handoff_socket,
                                    const std::string& name, int* port) {
  const std::string ready = dir + "/" + name + ".ready";
  auto p = std::make_unique<Process>(
      AgentArgv(handoff_socket, ready, dir + "/" + name + ".control.sock"),
      dir + "/" + name + ".log");
  std::string text;
  WaitUntil(
      [&] {
        text = ReadWholeFile(ready);
        return !text.empty() || !p->Running();
      },
      30000);
  *port = ReadyFilePort(text);
  EXPECT_GT(*port, 0) << "agent " << name << " not ready; log:\n" << p->Log();
  return p;
}

std::unique_ptr<Process> StartProbeApp(Stack& stack, const std::string& name) {
  auto p = std::make_unique<Process>(
      std::vector<std::string>{ProbeAppBin(), "serve", "--agent_socket=" + stack.handoff_socket()},
      stack.dir() + "/" + name + ".log");
  const ProbeLine ready = WaitForProbeLine(*p, "READY", "", "", 30000);
  EXPECT_FALSE(ready.empty()) << "probe app did not subscribe; log:\n" << p->Log();
  return p;
}

TestCert MakeTestCert(const std::string& dir) {
  TestCert c{dir + "/upstream-cert.pem", dir + "/upstream-key.pem"};
  std::string out;
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
      " -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout '" +
      c.key + "' -out '" + c.cert + "' 2>&1";
  EXPECT_EQ(0, RunCommand(cmd, &out)) << out;
  return c;
}

int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

bool ListeningOn(int port) {
  char want[32];
  std::snprintf(want, sizeof(want), ":%04X ", port);
  std::istringstream in(ReadWholeFile("/proc/net/tcp"));
  std::string line;
  while (std::getline(in, line)) {
    // "  sl  local_address rem_address   st ..."; LISTEN is st 0A.
    std::istringstream f(line);
    std::string sl, local, remote, st;
    f >> sl >> local >> remote >> st;
    if (st == "0A" && (local + " ").find(want) != std::string::npos) return true;
  }
  return false;
}

void ExpectProbeDataPath(const Stack& stack, const ProbeLine& line) {
  if (ExpectOffload()) {
    EXPECT_EQ("ktls", line.count("data_path") ? line.at("data_path") : "")
        << "kTLS expected but not active: " << Describe(line);
    EXPECT_EQ("1", line.count("kernel_tx") ? line.at("kernel_tx") : "")
        << "kernel reports no TLS_TX on the app's fd: " << Describe(line);
    EXPECT_EQ("1", line.count("kernel_rx") ? line.at("kernel_rx") : "")
        << "kernel reports no TLS_RX on the app's fd: " << Describe(line);
  } else if (!stack.ktls_available()) {
    EXPECT_EQ("relay", line.count("data_path") ? line.at("data_path") : "") << Describe(line);
    EXPECT_EQ("0", line.count("kernel_tx") ? line.at("kernel_tx") : "") << Describe(line);
  }
}

// ---------------------------------------------------------------------------------------------
std::unique_ptr<MemTlsClient> MemTlsClient::Connect(int port, int tls_version) {
  std::unique_ptr<MemTlsClient> c(new MemTlsClient());
  c->fd_ = ConnectLoopback(port);
  if (c->fd_ < 0) {
    c->error_ = std::string("connect: ") + strerror(errno);
    return c;
  }
  c->ctx_ = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(c->ctx_, tls_version);
  SSL_CTX_set_max_proto_version(c->ctx_, tls_version);
  c->ssl_ = SSL_new(c->ctx_);
  SSL_set_tlsext_host_name(c->ssl_, "localhost");
  BIO* internal = nullptr;
  BIO_new_bio_pair(&internal, 1 << 17, &c->net_, 1 << 17);
  SSL_set_bio(c->ssl_, internal, internal);  // the SSL owns `internal`
  SSL_set_connect_state(c->ssl_);
  for (;;) {
    const int rc = SSL_do_handshake(c->ssl_);
    if (rc == 1) break;
    const int err = SSL_get_error(c->ssl_, rc);
    if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
      c->error_ = OpenSslErrors("handshake");
      return c;
    }
    if (!c->Flush() || (err == SSL_ERROR_WANT_READ && !c->Fill())) {
      if (c->error_.empty()) c->error_ = "handshake: connection closed";
      return c;
    }
  }
  if (!c->Flush()) c->error_ = "flush after handshake failed";
  return c;
}

MemTlsClient::~MemTlsClient() { FreeBioPairClient(ssl_, net_, ctx_, fd_); }

bool MemTlsClient::Flush() {
  char buf[1 << 16];
  for (;;) {
    const int n = BIO_read(net_, buf, sizeof(buf));
    if (n <= 0) return true;
    size_t off = 0;
    while (off < static_cast<size_t>(n)) {
      const ssize_t w = send(fd_, buf + off, n - off, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        error_ = std::string("send: ") + strerror(errno);
        return false;
      }
      off += static_cast<size_t>(w);
    }
  }
}

bool MemTlsClient::Fill() {
  char buf[1 << 16];
  const size_t room = BIO_ctrl_get_write_guarantee(net_);
  if (room == 0) return true;
  ssize_t r;
  do {
    r = recv(fd_, buf, std::min(room, sizeof(buf)), 0);
  } while (r < 0 && errno == EINTR);
  if (r <= 0) {
    error_ = r == 0 ? "TCP EOF" : std::string("recv: ") + strerror(errno);
    return false;
  }
  BIO_write(net_, buf, static_cast<int>(r));
  return true;
}

bool MemTlsClient::Write(const std::string& data) {
  const auto flush = [this] { return Flush(); };
  return SslWriteAll(ssl_, data, 1 << 14, flush, &error_);
}

bool MemTlsClient::ReadLine(std::string* line) {
  size_t nl;
  while ((nl = rbuf_.find('\n')) == std::string::npos) {
    char buf[1 << 14];
    const int n = SSL_read(ssl_, buf, sizeof(buf));
    if (n > 0) {
      rbuf_.append(buf, n);
      continue;
    }
    const int err = SSL_get_error(ssl_, n);
    if (err == SSL_ERROR_WANT_READ) {
      if (!Flush() || !Fill()) return false;
      continue;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
      if (!Flush()) return false;
      continue;
    }
    error_ = err == SSL_ERROR_ZERO_RETURN ? "close_notify" : OpenSslErrors("SSL_read");
    return false;
  }
  *line = rbuf_.substr(0, nl);
  rbuf_.erase(0, nl + 1);
  return true;
}

bool MemTlsClient::SendCloseNotify() {
  SSL_shutdown(ssl_);
  return Flush();
}

bool MemTlsClient::ReadCloseNotify() {
  char buf[1 << 14];
  for (;;) {
    const int n = SSL_read(ssl_, buf, sizeof(buf));
    if (n > 0) continue;
    const int err = SSL_get_error(ssl_, n);
    if (err == SSL_ERROR_ZERO_RETURN) return true;
    if (err == SSL_ERROR_WANT_READ) {
      if (!Flush() || !Fill()) return false;
      continue;
    }
    error_ = OpenSslErrors("waiting for close_notify");
    return false;
  }
}

bool MemTlsClient::SendFatalAlert() {
  // An application-data record that cannot authenticate: OpenSSL answers with a fatal
  // bad_record_mac alert, encrypted under the current (application) keys.
  std::string forged = {0x17, 0x03, 0x03, 0x00, 0x20};
  forged.append(32, '\x5a');
  BIO_write(net_, forged.data(), static_cast<int>(forged.size()));
  char buf[64];
  const int n = SSL_read(ssl_, buf, sizeof(buf));
  const int err = SSL_get_error(ssl_, n);
  ERR_clear_error();
  if (n > 0 || err != SSL_ERROR_SSL) {
    error_ = "the forged record did not fail (SSL_get_error " + std::to_string(err) + ")";
    return false;
  }
  return Flush();
}

// ---------------------------------------------------------------------------------------------
TicketingUpstream::TicketingUpstream(const TestCert& cert, uint64_t download, uint64_t ticket_every)
    : cert_(cert), download_(download), ticket_every_(ticket_every) {
  listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      listen(listener_, 4) != 0 ||
      getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    result_.error = std::string("listen: ") + strerror(errno);
    finished_ = true;
    return;
  }
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this] { Run(); });
}

TicketingUpstream::~TicketingUpstream() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listener_ >= 0) close(listener_);
}

TicketingUpstream::Result TicketingUpstream::Wait(int timeout_ms) {
  WaitUntil([this] { return finished_.load(); }, timeout_ms);
  if (!finished_) {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (result_.error.empty()) result_.error = "upstream still running at the deadline";
  } else if (thread_.joinable()) {
    thread_.join();
  }
  return result_;
}

void TicketingUpstream::Run() {
  Result& r = result_;
  auto finish = [&](const std::string& error) {
    r.error = error;
    finished_ = true;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  auto expired = [&] { return stop_ || std::chrono::steady_clock::now() > deadline; };
  int fd = -1;
  while (fd < 0) {
    if (expired()) return finish("no connection");
    pollfd p{listener_, POLLIN, 0};
    if (poll(&p, 1, 100) > 0)
      fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_.cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, cert_.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    SSL_CTX_free(ctx);
    close(fd);
    return finish(OpenSslErrors("certificate"));
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_accept_state(ssl);
  // A retried SSL_write passes a regenerated (identical) chunk.
  SSL_set_mode(ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  Sha256 sent_sha, recv_sha;
  std::string chunk;
  bool handshake_done = false, peer_closed = false, closed = false;
  uint64_t next_ticket = ticket_every_;
  std::string error;
  while (!closed) {
    if (expired()) {
      error = "timed out";
      break;
    }
    bool want_write = false;
    if (!handshake_done) {
      const int rc = SSL_do_handshake(ssl);
      if (rc == 1) {
        handshake_done = true;
      } else {
        const int e = SSL_get_error(ssl, rc);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
          error = OpenSslErrors("handshake");
          break;
        }
        want_write = e == SSL_ERROR_WANT_WRITE;
      }
    }
    if (handshake_done) {
      // Read what the client sends.
      for (;;) {
        char buf[1 << 16];
        const int n = SSL_read(ssl, buf, sizeof(buf));
        if (n > 0) {
          recv_sha.Update(buf, static_cast<size_t>(n));
          r.received += static_cast<uint64_t>(n);
          continue;
        }
        const int e = SSL_get_error(ssl, n);
        if (e == SSL_ERROR_ZERO_RETURN) peer_closed = true;
        else if (e == SSL_ERROR_WANT_WRITE) want_write = true;
        else if (e != SSL_ERROR_WANT_READ) error = OpenSslErrors("SSL_read");
        break;
      }
      if (!error.empty()) break;
      // Send the download, with a ticket every `ticket_every_` bytes.
      while (r.sent < download_) {
        if (ticket_every_ > 0 && r.sent >= next_ticket) {
          if (SSL_new_session_ticket(ssl) != 1) {
            error = OpenSslErrors("SSL_new_session_ticket");
            break;
          }
          ++r.tickets_midstream;
          next_ticket += ticket_every_;
        }
        const size_t len = static_cast<size_t>(std::min<uint64_t>(download_ - r.sent, 1 << 14));
        chunk.resize(len);
        for (size_t i = 0; i < len; ++i) chunk[i] = UpstreamByte(r.sent + i);
        const int n = SSL_write(ssl, chunk.data(), static_cast<int>(len));
        if (n > 0) {
          sent_sha.Update(chunk.data(), static_cast<size_t>(n));
          r.sent += static_cast<uint64_t>(n);
          continue;
        }
        const int e = SSL_get_error(ssl, n);
        if (e == SSL_ERROR_WANT_WRITE) want_write = true;
        else if (e != SSL_ERROR_WANT_READ) error = OpenSslErrors("SSL_write");
        break;
      }
      if (!error.empty()) break;
      if (r.sent == download_ && peer_closed) {
        SSL_shutdown(ssl);  // close_notify back
        closed = true;
        break;
      }
    }
    pollfd p{fd, static_cast<short>(POLLIN | (want_write ? POLLOUT : 0)), 0};
    poll(&p, 1, 50);
  }
  r.sent_sha = sent_sha.FinalHex();
  r.received_sha = recv_sha.FinalHex();
  r.done = closed;
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  finish(error);
}

std::string UpstreamPattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = UpstreamByte(i);
  return s;
}

std::string ProbePattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + 7) >> 3);
  return s;
}

}  // namespace ktls::testing
