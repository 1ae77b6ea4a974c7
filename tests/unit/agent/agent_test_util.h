// In-process helpers for agent component tests: a fake app that speaks the handoff protocol
// directly (proto/ktls/wire.h), and a blocking OpenSSL client that records its keylog.
#ifndef KTLS_TESTS_UNIT_AGENT_AGENT_TEST_UTIL_H_
#define KTLS_TESTS_UNIT_AGENT_AGENT_TEST_UTIL_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ktls/v1/handoff.pb.h"
#include "ktls/wire.h"

namespace ktls::agent::testing {

inline void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Polls `pred` every 5 ms for up to `timeout_ms`.
template <typename Pred>
bool WaitFor(Pred pred, int timeout_ms = 5000) {
  for (int t = 0; t < timeout_ms; t += 5) {
    if (pred()) return true;
    SleepMs(5);
  }
  return pred();
}

class FakeApp {
 public:
  explicit FakeApp(const std::string& path) {
    fd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~FakeApp() {
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  bool SendRaw(const std::string& bytes, int fd_to_send = -1) {
    wire::OutgoingMessage out(bytes, fd_to_send);
    return sendmsg(fd_, out.header(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  }
  bool Send(const v1::AppToAgent& m) { return SendRaw(*wire::Serialize(m)); }

  // Receives one message (waiting up to timeout_ms). Returns false on timeout/EOF.
  bool Receive(v1::AgentToApp* m, std::vector<int>* fds, int timeout_ms = 5000) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    std::string buf(wire::kMaxMessageBytes, '\0');
    wire::IncomingMessage in(buf.data(), buf.size());
    msghdr& msg = *in.header();
    ssize_t n = recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) return false;
    EXPECT_TRUE(wire::ExtractFds(msg, fds).ok());
    return wire::Parse(std::string_view(buf.data(), n), m).ok();
  }

  bool Subscribe(uint32_t credits, const std::string& name = "fake") {
    v1::AppToAgent m;
    m.mutable_subscribe()->set_protocol_version(wire::kProtocolVersion);
    m.mutable_subscribe()->set_app_name(name);
    m.mutable_subscribe()->set_initial_credits(credits);
    if (!Send(m)) return false;
    v1::AgentToApp r;
    std::vector<int> fds;
    return Receive(&r, &fds) && r.has_subscribed();
  }

  bool Grant(uint32_t n) {
    v1::AppToAgent m;
    m.mutable_grant()->set_credits(n);
    return Send(m);
  }

  // Waits for a Handoff; returns its fd (owned by the caller) or -1.
  int ReceiveHandoff(v1::ConnectionInfo* info, int timeout_ms = 5000) {
    v1::AgentToApp m;
    std::vector<int> fds;
    if (!Receive(&m, &fds, timeout_ms) || !m.has_handoff() || fds.size() != 1) {
      for (int f : fds) close(f);
      return -1;
    }
    *info = m.handoff().connection();
    return fds[0];
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

// Captures each client SSL's CLIENT_TRAFFIC_SECRET_0 line (for checking the agent's RX keys).
inline std::mutex& KeylogMu() {
  static std::mutex mu;
  return mu;
}
inline std::map<const SSL*, std::string>& Keylog() {
  static std::map<const SSL*, std::string> m;
  return m;
}

class TestClient {
 public:
  TestClient() = default;
  ~TestClient() {
    if (ssl_) {
      std::lock_guard<std::mutex> l(KeylogMu());
      Keylog().erase(ssl_);
      SSL_free(ssl_);
    }
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) close(fd_);
  }

  bool ConnectTcp(int port, int timeout_s = 5) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{timeout_s, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }

  bool Handshake(int version = TLS1_3_VERSION, const std::string& cipher = "",
                 const std::string& sni = "localhost") {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx_, version);
    SSL_CTX_set_max_proto_version(ctx_, version);
    if (!cipher.empty()) {
      if (version == TLS1_3_VERSION) SSL_CTX_set_ciphersuites(ctx_, cipher.c_str());
      else SSL_CTX_set_cipher_list(ctx_, cipher.c_str());
    }
    SSL_CTX_set_keylog_callback(ctx_, [](const SSL* ssl, const char* line) {
      if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0) {
        std::lock_guard<std::mutex> l(KeylogMu());
        Keylog()[ssl] = line;
      }
    });
    ssl_ = SSL_new(ctx_);
    if (!sni.empty()) SSL_set_tlsext_host_name(ssl_, sni.c_str());
    SSL_set_fd(ssl_, fd_);
    ERR_clear_error();
    return SSL_connect(ssl_) == 1;
  }

  // The hex secret of CLIENT_TRAFFIC_SECRET_0 (TLS 1.3), or "".
  std::string ClientTrafficSecretHex() {
    std::lock_guard<std::mutex> l(KeylogMu());
    auto it = Keylog().find(ssl_);
    if (it == Keylog().end()) return "";
    return it->second.substr(it->second.rfind(' ') + 1);
  }

  bool WriteAll(const std::string& s) {
    return SSL_write(ssl_, s.data(), static_cast<int>(s.size())) == static_cast<int>(s.size());
  }
  // Reads exactly n bytes (or fails).
  bool ReadN(size_t n, std::string* out) {
    out->clear();
    char buf[16384];
    while (out->size() < n) {
      int r = SSL_read(ssl_, buf, static_cast<int>(std::min(sizeof(buf), n - out->size())));
      if (r <= 0) return false;
      out->append(buf, r);
    }
    return true;
  }
  // True when the next thing the server sends is close_notify.
  bool ReadCloseNotify() {
    char buf[256];
    int r = SSL_read(ssl_, buf, sizeof(buf));
    return r == 0 && SSL_get_error(ssl_, r) == SSL_ERROR_ZERO_RETURN;
  }
  // True when the server closed the TCP connection (with or without alert) within the timeout.
  bool ServerClosed() {
    char buf[256];
    for (;;) {
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) continue;
      return n == 0 || errno == ECONNRESET;
    }
  }
  SSL* ssl() { return ssl_; }
  int fd() { return fd_; }

 private:
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

// Reads exactly n bytes from a plain fd with a timeout.
inline bool ReadFdN(int fd, size_t n, std::string* out, int timeout_ms = 5000) {
  out->clear();
  char buf[16384];
  while (out->size() < n) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    ssize_t r = read(fd, buf, std::min(sizeof(buf), n - out->size()));
    if (r <= 0) return false;
    out->append(buf, r);
  }
  return true;
}

// True when `fd` reports EOF within the timeout (after draining nothing).
inline bool FdAtEof(int fd, int timeout_ms = 5000) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return false;
  char c;
  return read(fd, &c, 1) == 0;
}

}  // namespace ktls::agent::testing

#endif  // KTLS_TESTS_UNIT_AGENT_AGENT_TEST_UTIL_H_
