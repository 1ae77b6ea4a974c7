// ktls_client.hpp: a thin, header-only C++17 layer over the C API (ktls/ktls_client.h).
//
// RAII handles and std::string messages; nothing but the C ABI underneath, so it works against
// libktls_client.so from any C++ toolchain. No exceptions: calls return a ktls::Status.
//
//   ktls::Agent agent;
//   if (ktls::Status s = ktls::Agent::Connect("/run/ktls/handoff.sock", "my-app", 16, &agent); !s)
//     die(s.message);
//   for (;;) {
//     ktls::Connection conn;
//     if (ktls::Status s = agent.Accept(&conn); !s) { ... s.code == KTLS_E_UNAVAILABLE:
//                                                     agent.Reconnect() ... }
//     agent.Grant(1);
//     char buf[4096];
//     ssize_t n = conn.Read(buf, sizeof(buf));       // pending bytes first, then ktls_recv
//     conn.WriteAll("HTTP/1.1 200 OK\r\n...");
//     conn.ShutdownWrite();                          // close_notify
//   }                                                // ~Connection closes the descriptor
//
// See docs/app-integration.md for the lifecycle, the errors and epoll use.
#ifndef KTLS_CLIENT_KTLS_CLIENT_HPP_
#define KTLS_CLIENT_KTLS_CLIENT_HPP_

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ktls/ktls_client.h"

namespace ktls::app {

// KTLS_OK or a KTLS_E_* code with the library's message.
struct Status {
  int code = KTLS_OK;
  std::string message;

  bool ok() const { return code == KTLS_OK; }
  explicit operator bool() const { return ok(); }
  const char* name() const { return ktls_status_name(code); }
  std::string ToString() const { return ok() ? "OK" : std::string(name()) + ": " + message; }
  static Status FromCode(int code) {
    Status s;
    s.code = code;
    if (code != KTLS_OK && code != KTLS_E_AGAIN) s.message = ktls_last_error();
    return s;
  }
};

// What a read reported, for logs: "peer KeyUpdate: ...", "alert bad_record_mac".
inline std::string DescribeReadError(int err, const ktls_record_info& info) {
  std::string out = std::to_string(err);
  if (info.error != nullptr) out = info.error;
  if (info.alert_name != nullptr) out += std::string(" (alert ") + info.alert_name + ")";
  return out;
}

// One handed connection (inbound or dialed). Move-only; closes its descriptor when destroyed.
class Connection {
 public:
  Connection() = default;
  explicit Connection(ktls_conn* c) : c_(c) {}
  Connection(Connection&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  Connection& operator=(Connection&& o) noexcept {
    if (this != &o) reset(std::exchange(o.c_, nullptr));
    return *this;
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { reset(); }

  bool valid() const { return c_ != nullptr; }
  explicit operator bool() const { return valid(); }
  int fd() const { return ktls_conn_fd(c_); }
  const ktls_conn_info& info() const { return *ktls_conn_get_info(c_); }
  std::string_view json() const { return ktls_conn_info_json(c_); }
  bool ktls() const { return valid() && info().data_path == KTLS_DATA_PATH_KTLS; }
  // Bytes the agent read before the handoff, not yet consumed.
  std::string_view pending() const {
    const void* p = nullptr;
    const size_t n = ktls_conn_pending(c_, &p);
    return std::string_view(static_cast<const char*>(p), n);
  }

  // As ktls_conn_read: > 0 bytes, 0 end of stream, -1 with errno (and `info` filled).
  ssize_t Read(void* buf, size_t len, ktls_record_info* info = nullptr, int flags = 0) {
    return ktls_conn_read(c_, buf, len, flags, info);
  }
  ssize_t ReadV(const iovec* iov, int iovcnt, ktls_record_info* info = nullptr, int flags = 0) {
    return ktls_conn_readv(c_, iov, iovcnt, flags, info);
  }
  // write(2) until everything is written (blocking descriptors) or an error (-1, errno).
  ssize_t WriteAll(std::string_view data) {
    size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = ::send(fd(), data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return -1;
      }
      off += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(off);
  }
  // close_notify (kTLS) or EOF (relay), then the app may still read (half-close).
  int ShutdownWrite() { return ktls_shutdown(fd(), SHUT_WR); }

  ktls_conn* get() const { return c_; }
  ktls_conn* release() { return std::exchange(c_, nullptr); }
  void reset(ktls_conn* c = nullptr) {
    if (c_ != nullptr) ktls_conn_free(c_);
    c_ = c;
  }

 private:
  ktls_conn* c_ = nullptr;
};

struct DialOptions {
  std::string host;
  uint16_t port = 0;
  std::string sni;
  std::vector<std::string> alpn;
  std::string ca_file;
  std::string expected_name;
  bool insecure_skip_verify = false;
  uint32_t timeout_ms = 0;
  std::string tls_version;  // "", "TLSv1.2", "TLSv1.3"
};

// A subscription. Move-only; closes the subscription when destroyed.
class Agent {
 public:
  Agent() = default;
  Agent(Agent&& o) noexcept : a_(std::exchange(o.a_, nullptr)) {}
  Agent& operator=(Agent&& o) noexcept {
    if (this != &o) {
      if (a_ != nullptr) ktls_agent_close(a_);
      a_ = std::exchange(o.a_, nullptr);
    }
    return *this;
  }
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;
  ~Agent() {
    if (a_ != nullptr) ktls_agent_close(a_);
  }

  static Status Connect(const std::string& socket_path, const std::string& app_name,
                        uint32_t initial_credits, Agent* out, int timeout_ms = 0) {
    ktls_agent* a = nullptr;
    const int rc =
        ktls_agent_connect(socket_path.c_str(), app_name.c_str(), initial_credits, timeout_ms, &a);
    if (rc == KTLS_OK) *out = Agent(a);
    return Status::FromCode(rc);
  }

  bool valid() const { return a_ != nullptr; }
  int fd() const { return ktls_agent_fd(a_); }
  bool connected() const { return ktls_agent_connected(a_) != 0; }
  uint64_t outstanding_credits() const { return ktls_agent_outstanding_credits(a_); }
  std::string agent_version() const { return ktls_agent_version(a_); }
  void SetNonBlocking(bool on) { ktls_agent_set_nonblocking(a_, on ? 1 : 0); }

  // KTLS_OK with *out; KTLS_E_AGAIN (non-blocking, nothing waiting); KTLS_E_UNAVAILABLE: Reconnect.
  Status Accept(Connection* out) {
    ktls_conn* c = nullptr;
    const int rc = ktls_agent_accept(a_, &c);
    if (rc == KTLS_OK) *out = Connection(c);
    return Status::FromCode(rc);
  }
  Status Grant(uint32_t n) { return Status::FromCode(ktls_agent_grant(a_, n)); }
  Status Reconnect(int timeout_ms = 0) {
    return Status::FromCode(ktls_agent_reconnect(a_, timeout_ms));
  }
  Status Dial(const DialOptions& o, Connection* out) {
    std::string alpn;
    for (const std::string& p : o.alpn) {
      if (!alpn.empty()) alpn.push_back(',');
      alpn += p;
    }
    ktls_dial_options d = KTLS_DIAL_OPTIONS_INIT;
    d.host = o.host.c_str();
    d.port = o.port;
    d.sni = o.sni.c_str();
    d.alpn = alpn.c_str();
    d.ca_file = o.ca_file.empty() ? nullptr : o.ca_file.c_str();
    d.expected_name = o.expected_name.c_str();
    d.insecure_skip_verify = o.insecure_skip_verify ? 1 : 0;
    d.timeout_ms = o.timeout_ms;
    d.tls_version = o.tls_version.c_str();
    ktls_conn* c = nullptr;
    const int rc = ktls_agent_dial(a_, &d, &c);
    if (rc == KTLS_OK) *out = Connection(c);
    return Status::FromCode(rc);
  }

  ktls_agent* get() const { return a_; }

 private:
  explicit Agent(ktls_agent* a) : a_(a) {}
  ktls_agent* a_ = nullptr;
};

}  // namespace ktls::app

#endif  // KTLS_CLIENT_KTLS_CLIENT_HPP_
