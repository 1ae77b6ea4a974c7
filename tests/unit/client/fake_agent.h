// A fake ktls-agent for the app library's unit tests: a real SOCK_SEQPACKET listener in a temp
// directory whose accepted end the test drives by hand, message by message.
#ifndef KTLS_TESTS_UNIT_CLIENT_FAKE_AGENT_H_
#define KTLS_TESTS_UNIT_CLIENT_FAKE_AGENT_H_

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ktls/v1/handoff.pb.h"
#include "ktls/wire.h"

namespace ktls::client::testing {

class FakeAgent {
 public:
  FakeAgent() {
    char tmpl[] = "/tmp/ktls-app-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/handoff.sock";
    Relisten();
  }
  ~FakeAgent() {
    if (conn_ >= 0) close(conn_);
    if (listener_ >= 0) close(listener_);
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }

  // Accepts the app and reads its Subscribe.
  v1::Subscribe AcceptAndReadSubscribe() {
    conn_ = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    EXPECT_GE(conn_, 0);
    v1::AppToAgent m = ReadFromApp();
    EXPECT_TRUE(m.has_subscribe());
    return m.subscribe();
  }

  v1::AppToAgent ReadFromApp() {
    std::string buf(wire::kMaxMessageBytes, '\0');
    ssize_t n = recv(conn_, buf.data(), buf.size(), 0);
    EXPECT_GT(n, 0);
    v1::AppToAgent m;
    EXPECT_TRUE(wire::Parse(std::string_view(buf.data(), n > 0 ? n : 0), &m).ok());
    return m;
  }

  void Send(const v1::AgentToApp& m, const std::vector<int>& fds = {}) {
    absl::StatusOr<std::string> bytes = wire::Serialize(m);
    ASSERT_TRUE(bytes.ok());
    SendRaw(*bytes, fds);
  }

  // Sends `payload` with `fds` in one SCM_RIGHTS (any number, unlike wire::OutgoingMessage).
  void SendRaw(const std::string& payload, const std::vector<int>& fds) {
    iovec iov{const_cast<char*>(payload.data()), payload.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    wire::ControlBuffer control;
    if (!fds.empty()) {
      msg.msg_control = control.bytes;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ASSERT_EQ(static_cast<ssize_t>(payload.size()), sendmsg(conn_, &msg, MSG_NOSIGNAL));
  }

  void SendSubscribed(uint32_t version = wire::kProtocolVersion, uint32_t max_credits = 0) {
    v1::AgentToApp m;
    m.mutable_subscribed()->set_protocol_version(version);
    m.mutable_subscribed()->set_agent_version("fake-1.0");
    m.mutable_subscribed()->set_subscriber_id(7);
    m.mutable_subscribed()->set_max_outstanding_credits(max_credits);
    Send(m);
  }

  void Hangup() {
    close(conn_);
    conn_ = -1;
  }

  // True when the app sent something within `timeout_ms` (without reading it).
  bool AppSentSomething(int timeout_ms) {
    pollfd p{conn_, POLLIN, 0};
    return poll(&p, 1, timeout_ms) > 0;
  }

  // Stops listening (a dead agent); Relisten() binds the same path again (a restarted one).
  void StopListening() {
    close(listener_);
    listener_ = -1;
    unlink(path_.c_str());
  }
  void Relisten() {
    listener_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(0, bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
    EXPECT_EQ(0, listen(listener_, 4));
  }

 private:
  std::string dir_;
  std::string path_;
  int listener_ = -1;
  int conn_ = -1;
};

struct StreamPair {
  int fd[2] = {-1, -1};
  StreamPair() { EXPECT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd)); }
  ~StreamPair() {
    if (fd[0] >= 0) close(fd[0]);
    if (fd[1] >= 0) close(fd[1]);
  }
};

inline std::set<int> OpenFds() {
  std::set<int> open;
  for (int fd = 0; fd < 1024; ++fd) {
    if (fcntl(fd, F_GETFD) != -1) open.insert(fd);
  }
  return open;
}

inline v1::AgentToApp HandoffMessage(uint64_t id, const std::string& initial_data) {
  v1::AgentToApp m;
  v1::ConnectionInfo* c = m.mutable_handoff()->mutable_connection();
  c->set_connection_id(id);
  c->set_sni("example.test");
  c->set_alpn("http/1.1");
  c->set_tls_version("TLSv1.3");
  c->set_cipher("TLS_AES_128_GCM_SHA256");
  c->set_data_path(v1::DATA_PATH_RELAY);
  c->set_ktls_tx(v1::OFFLOAD_STATE_INACTIVE);
  c->set_ktls_rx(v1::OFFLOAD_STATE_INACTIVE);
  c->set_fallback_reason("kernel tls module not loaded (TCP_ULP: ENOENT)");
  c->mutable_peer_identity()->set_subject("CN=client");
  c->set_initial_data(initial_data);
  return m;
}

inline v1::AgentToApp DialResultMessage(uint64_t request_id, bool ok, const std::string& error,
                                        uint64_t connection_id = 0) {
  v1::AgentToApp m;
  v1::DialResult* r = m.mutable_dial_result();
  r->set_request_id(request_id);
  r->set_ok(ok);
  r->set_error(error);
  if (ok) {
    v1::ConnectionInfo* c = r->mutable_connection();
    c->set_connection_id(connection_id);
    c->set_outbound(true);
    c->set_dial_request_id(request_id);
    c->set_sni("upstream.test");
    c->set_tls_version("TLSv1.3");
    c->set_cipher("TLS_AES_256_GCM_SHA384");
    c->set_data_path(v1::DATA_PATH_KTLS);
    c->set_ktls_tx(v1::OFFLOAD_STATE_ACTIVE);
    c->set_ktls_rx(v1::OFFLOAD_STATE_ACTIVE);
    c->set_resumed(true);
    c->mutable_peer()->set_address("127.0.0.1");
    c->mutable_peer()->set_port(8443);
    c->mutable_peer_identity()->set_presented(true);
    c->mutable_peer_identity()->set_verified(true);
    c->mutable_peer_identity()->add_dns_sans("upstream.test");
    c->mutable_peer_identity()->add_dns_sans("*.upstream.test");
  }
  return m;
}

// True when `fd` is readable right now.
inline bool Readable(int fd, int timeout_ms = 0) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) > 0;
}

}  // namespace ktls::client::testing

#endif  // KTLS_TESTS_UNIT_CLIENT_FAKE_AGENT_H_
