// AgentSubscription against a fake agent: a real SOCK_SEQPACKET listener in a temp directory
// whose accepted end the test drives by hand, message by message.
#include "ktls/app.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ktls/wire.h"

namespace ktls::client {
namespace {

using ::testing::HasSubstr;

class FakeAgent {
 public:
  FakeAgent() {
    char tmpl[] = "/tmp/ktls-app-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/handoff.sock";
    listener_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(0, bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
    EXPECT_EQ(0, listen(listener_, 4));
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

 private:
  std::string dir_;
  std::string path_;
  int listener_ = -1;
  int conn_ = -1;
};

// Connects in a thread while the fake agent answers on this one.
std::unique_ptr<AgentSubscription> Subscribe(FakeAgent& agent, uint32_t credits = 8,
                                             uint32_t max_credits = 0) {
  auto pending = std::async(std::launch::async, [&] {
    return AgentSubscription::Connect(agent.path(), "unit-test-app", credits);
  });
  v1::Subscribe sub = agent.AcceptAndReadSubscribe();
  EXPECT_EQ(wire::kProtocolVersion, sub.protocol_version());
  EXPECT_EQ("unit-test-app", sub.app_name());
  EXPECT_EQ(credits, sub.initial_credits());
  agent.SendSubscribed(wire::kProtocolVersion, max_credits);
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s = pending.get();
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

struct StreamPair {
  int fd[2] = {-1, -1};
  StreamPair() { EXPECT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd)); }
  ~StreamPair() {
    if (fd[0] >= 0) close(fd[0]);
    if (fd[1] >= 0) close(fd[1]);
  }
};

std::set<int> OpenFds() {
  std::set<int> open;
  for (int fd = 0; fd < 1024; ++fd) {
    if (fcntl(fd, F_GETFD) != -1) open.insert(fd);
  }
  return open;
}

v1::AgentToApp HandoffMessage(uint64_t id, const std::string& initial_data) {
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

TEST(AgentSubscriptionTest, SubscribesAndReceivesAHandoffWithPendingBytes) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 8, 32);
  ASSERT_NE(nullptr, sub);
  EXPECT_EQ("fake-1.0", sub->subscribed().agent_version());
  EXPECT_EQ(8u, sub->outstanding_credits());

  StreamPair tls;  // fd[0] goes to the app, fd[1] plays the relay
  agent.Send(HandoffMessage(41, "GET / HTTP/1.1\r\n"), {tls.fd[0]});
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  HandedConnection conn = std::move(**got);
  EXPECT_TRUE(conn.fd.valid());
  EXPECT_NE(tls.fd[0], conn.fd.get());
  EXPECT_EQ(FD_CLOEXEC, fcntl(conn.fd.get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(41u, conn.info.connection_id());
  EXPECT_EQ("example.test", conn.info.sni());
  EXPECT_EQ(v1::DATA_PATH_RELAY, conn.info.data_path());
  EXPECT_EQ("CN=client", conn.info.peer_identity().subject());
  EXPECT_EQ("GET / HTTP/1.1\r\n", conn.pending);
  EXPECT_EQ(16u, conn.initial_data_bytes);
  EXPECT_TRUE(conn.info.initial_data().empty());  // moved into pending
  EXPECT_EQ(7u, sub->outstanding_credits());

  // Read() serves pending bytes first, then the descriptor.
  ASSERT_EQ(11, write(tls.fd[1], "Host: a\r\n\r\n", 11));
  char buf[64];
  EXPECT_EQ(10, conn.Read(buf, 10));
  EXPECT_EQ("GET / HTTP", std::string(buf, 10));
  EXPECT_EQ(6, conn.Read(buf, sizeof(buf)));
  EXPECT_EQ("/1.1\r\n", std::string(buf, 6));
  EXPECT_TRUE(conn.pending.empty());
  EXPECT_EQ(11, conn.Read(buf, sizeof(buf)));
  EXPECT_EQ("Host: a\r\n\r\n", std::string(buf, 11));
}

TEST(AgentSubscriptionTest, GrantCreditsReachesTheAgentAndIsClamped) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 4, 6);
  ASSERT_NE(nullptr, sub);
  ASSERT_TRUE(sub->GrantCredits(3).ok());
  v1::AppToAgent m = agent.ReadFromApp();
  ASSERT_TRUE(m.has_grant());
  EXPECT_EQ(3u, m.grant().credits());
  EXPECT_EQ(6u, sub->outstanding_credits());  // 4 + 3, clamped to the agent's 6
  EXPECT_TRUE(sub->GrantCredits(0).ok());     // no message
}

TEST(AgentSubscriptionTest, HandoffWithTwoDescriptorsIsRejectedAndBothAreClosed) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  StreamPair a, b;
  const std::set<int> before = OpenFds();
  agent.Send(HandoffMessage(1, ""), {a.fd[0], b.fd[0]});
  // Our copies go away, so only the app's received copies keep the pairs open.
  close(a.fd[0]);
  close(b.fd[0]);
  a.fd[0] = b.fd[0] = -1;
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, got.status().code());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("2 file descriptors"));
  // Nothing new is open in this process, and the peers see end of stream.
  std::set<int> after = OpenFds();
  after.insert(before.begin(), before.end());
  EXPECT_EQ(before.size(), after.size());
  char c;
  EXPECT_EQ(0, read(a.fd[1], &c, 1));
  EXPECT_EQ(0, read(b.fd[1], &c, 1));
  // The subscription is still usable.
  StreamPair ok;
  agent.Send(HandoffMessage(2, ""), {ok.fd[0]});
  got = sub->Receive();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(2u, (*got)->info.connection_id());
}

TEST(AgentSubscriptionTest, HandoffWithoutADescriptorIsRejected) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  agent.Send(HandoffMessage(1, "x"));
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, got.status().code());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("0 file descriptors"));
}

TEST(AgentSubscriptionTest, HandoffOfANonSocketIsRejectedAndClosed) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  int pipefd[2];
  ASSERT_EQ(0, pipe2(pipefd, O_CLOEXEC));
  agent.Send(HandoffMessage(1, ""), {pipefd[1]});
  close(pipefd[1]);
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("not a stream socket"));
  char c;
  EXPECT_EQ(0, read(pipefd[0], &c, 1));  // the received write end was closed
  close(pipefd[0]);
}

TEST(AgentSubscriptionTest, GarbageIsRejectedAndItsDescriptorClosed) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  StreamPair p;
  agent.SendRaw(std::string("\xff\xff\xff\xff garbage", 12), {p.fd[0]});
  close(p.fd[0]);
  p.fd[0] = -1;
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, got.status().code());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("malformed message"));
  char c;
  EXPECT_EQ(0, read(p.fd[1], &c, 1));
}

TEST(AgentSubscriptionTest, ProtocolErrorIsSurfaced) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  v1::AgentToApp m;
  m.mutable_error()->set_message("credit grant exceeds max_outstanding_credits");
  agent.Send(m);
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(absl::StatusCode::kFailedPrecondition, got.status().code());
  EXPECT_THAT(std::string(got.status().message()),
              HasSubstr("credit grant exceeds max_outstanding_credits"));
}

TEST(AgentSubscriptionTest, AgentHangupIsUnavailable) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  agent.Hangup();
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(absl::StatusCode::kUnavailable, got.status().code());
  EXPECT_EQ("agent closed the handoff socket", got.status().message());
}

TEST(AgentSubscriptionTest, NonBlockingWithNothingPendingIsNullopt) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  sub->SetNonBlocking(true);
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->has_value());
}

TEST(AgentSubscriptionConnectTest, NoAgentAtPath) {
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s =
      AgentSubscription::Connect("/nonexistent/ktls/handoff.sock", "app", 1);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(absl::StatusCode::kNotFound, s.status().code());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("no agent socket at"));
}

TEST(AgentSubscriptionConnectTest, StaleSocketFile) {
  std::string path;
  {
    FakeAgent agent;  // bound and listening, then closed below
    path = agent.path() + ".stale";
    int s = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(0, bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
    close(s);
    absl::StatusOr<std::unique_ptr<AgentSubscription>> sub =
        AgentSubscription::Connect(path, "app", 1);
    ASSERT_FALSE(sub.ok());
    EXPECT_EQ(absl::StatusCode::kUnavailable, sub.status().code());
    EXPECT_THAT(std::string(sub.status().message()), HasSubstr("stale socket"));
    unlink(path.c_str());
  }
}

TEST(AgentSubscriptionConnectTest, BadPath) {
  EXPECT_EQ(absl::StatusCode::kInvalidArgument,
            AgentSubscription::Connect("", "app", 1).status().code());
  EXPECT_EQ(absl::StatusCode::kInvalidArgument,
            AgentSubscription::Connect(std::string(200, 'x'), "app", 1).status().code());
}

TEST(AgentSubscriptionConnectTest, ProtocolVersionMismatch) {
  FakeAgent agent;
  auto pending = std::async(std::launch::async,
                            [&] { return AgentSubscription::Connect(agent.path(), "app", 1); });
  agent.AcceptAndReadSubscribe();
  agent.SendSubscribed(/*version=*/99);
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s = pending.get();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(absl::StatusCode::kFailedPrecondition, s.status().code());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("protocol version mismatch"));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("speaks version 99"));
}

TEST(AgentSubscriptionConnectTest, RejectedWithProtocolError) {
  FakeAgent agent;
  auto pending = std::async(std::launch::async,
                            [&] { return AgentSubscription::Connect(agent.path(), "app", 1); });
  agent.AcceptAndReadSubscribe();
  v1::AgentToApp m;
  m.mutable_error()->set_message("app_name not allowed");
  agent.Send(m);
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s = pending.get();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(absl::StatusCode::kFailedPrecondition, s.status().code());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("app_name not allowed"));
}

TEST(AgentSubscriptionConnectTest, AgentThatNeverAnswersTimesOut) {
  FakeAgent agent;
  auto pending = std::async(std::launch::async, [&] {
    return AgentSubscription::Connect(agent.path(), "app", 1, absl::Milliseconds(200));
  });
  agent.AcceptAndReadSubscribe();
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s = pending.get();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(absl::StatusCode::kDeadlineExceeded, s.status().code());
}

TEST(AgentSubscriptionConnectTest, AgentThatHangsUpIsUnavailable) {
  FakeAgent agent;
  auto pending = std::async(std::launch::async,
                            [&] { return AgentSubscription::Connect(agent.path(), "app", 1); });
  agent.AcceptAndReadSubscribe();
  agent.Hangup();
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s = pending.get();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(absl::StatusCode::kUnavailable, s.status().code());
}

}  // namespace
}  // namespace ktls::client
