// Component tests of the assembled data plane (agent/agent.cc): the real agent in-process on
// loopback, every syscall through MockSysCalls (real by default, failing where a test says), a
// fake app speaking the handoff protocol, and an OpenSSL client.
#include "agent/agent.h"

#include <sys/stat.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "agent/config.h"
#include "tests/mocks/mock_syscalls.h"
#include "tests/unit/agent/agent_test_util.h"
#include "tests/unit/agent/test_config.h"
#include "tests/unit/temp_dir.h"

namespace ktls::agent::testing {
namespace {

using ::testing::_;
using ::testing::Invoke;
using ::testing::NiceMock;

class AgentTest : public ::testing::Test {
 protected:
  void TearDown() override {
    app_.reset();
    agent_.reset();
  }

  v1::AgentConfig Config() { return LoopbackTestConfig(dir_, "warning"); }

  void StartAgent(v1::AgentConfig c) {
    auto a = Agent::Create(c, sys_);
    ASSERT_TRUE(a.ok()) << a.status();
    agent_ = std::move(*a);
    agent_->Start();
    const std::string& addr = agent_->listen_addresses()[0];
    ASSERT_TRUE(absl::SimpleAtoi(addr.substr(addr.rfind(':') + 1), &port_));
  }

  // Starts the agent with `c` and subscribes app_ with `credits`.
  void StartWithApp(v1::AgentConfig c, uint32_t credits = 4) {
    ASSERT_NO_FATAL_FAILURE(StartAgent(std::move(c)));
    app_ = std::make_unique<FakeApp>(dir_ + "/handoff.sock");
    ASSERT_TRUE(app_->Subscribe(credits));
  }

  // Handshake + handoff through a subscribed fake app; returns the app's fd.
  int ConnectAndReceive(FakeApp& app, TestClient& client, v1::ConnectionInfo* info,
                        int version = TLS1_3_VERSION) {
    EXPECT_TRUE(client.ConnectTcp(port_));
    EXPECT_TRUE(client.Handshake(version)) << "handshake failed";
    return app.ReceiveHandoff(info);
  }

  // A fresh client's connection reaches `app` (handshake + handoff); the fd is closed again.
  ::testing::AssertionResult HandsOffANewConnection(FakeApp& app, v1::ConnectionInfo* info) {
    TestClient client;
    const int fd = ConnectAndReceive(app, client, info);
    if (fd < 0) return ::testing::AssertionFailure() << "no handoff";
    close(fd);
    return ::testing::AssertionSuccess();
  }

  // Plaintext both ways between the TLS peer and the app's fd, whatever the data path.
  static void ExpectPlaintextBothWays(TestClient& client, int fd) {
    ASSERT_TRUE(client.WriteAll("hello from the peer"));
    std::string got;
    ASSERT_TRUE(ReadFdN(fd, 19, &got));
    EXPECT_EQ("hello from the peer", got);
    ASSERT_EQ(5, write(fd, "howdy", 5));
    ASSERT_TRUE(client.ReadN(5, &got));
    EXPECT_EQ("howdy", got);
  }

  // Accept4 on the TCP listener fails with the errno `fail()` returns (0: the real call). The
  // broker's Unix listener (accepted first, by the app) passes no address and is never failed.
  void FailTcpAccepts(std::function<int()> fail) {
    ON_CALL(sys_, Accept4(_, _, _, _))
        .WillByDefault(Invoke([this, fail](int fd, sockaddr* a, socklen_t* l, int f) -> SysResult {
          if (a != nullptr) {
            if (const int err = fail(); err != 0) return SysResult{-1, err};
          }
          return sys_.real().Accept4(fd, a, l, f);
        }));
  }

  ::ktls::testing::ScopedTempDir tmp_{"ktls-agent-test"};  // removed after everything below
  const std::string dir_ = tmp_.path();
  NiceMock<MockSysCalls> sys_;
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<FakeApp> app_;  // StartWithApp's
  int port_ = 0;
};

TEST_F(AgentTest, HandsOffWithMetadataAndTheChosenDataPath) {
  ASSERT_NO_FATAL_FAILURE(StartWithApp(Config()));
  TestClient client;
  v1::ConnectionInfo info;
  int fd = ConnectAndReceive(*app_, client, &info);
  ASSERT_GE(fd, 0);
  EXPECT_EQ("TLSv1.3", info.tls_version());
  EXPECT_EQ(0x0304u, info.tls_version_code());
  EXPECT_EQ("localhost", info.sni());
  EXPECT_EQ("127.0.0.1", info.peer().address());
  EXPECT_EQ(static_cast<uint32_t>(port_), info.local().port());
  EXPECT_EQ("test", info.listener());
  EXPECT_FALSE(info.cipher().empty());
  if (agent_->probe().AnySupported()) {
    // A kernel with kTLS (the VM suite): the TCP socket itself, keys installed both ways.
    EXPECT_EQ(v1::DATA_PATH_KTLS, info.data_path()) << info.fallback_reason();
    EXPECT_EQ(v1::OFFLOAD_STATE_ACTIVE, info.ktls_tx());
    EXPECT_EQ(v1::OFFLOAD_STATE_ACTIVE, info.ktls_rx());
    EXPECT_EQ(1u, agent_->stats().offload_ktls.load());
  } else {
    EXPECT_EQ(v1::DATA_PATH_RELAY, info.data_path());
    EXPECT_EQ(agent_->probe().ulp_reason, info.fallback_reason());
    EXPECT_EQ(1u, agent_->stats().fallbacks[static_cast<size_t>(FallbackReason::kModuleMissing)]);
  }
  // Either way the app reads and writes plaintext with plain read()/write().
  ASSERT_NO_FATAL_FAILURE(ExpectPlaintextBothWays(client, fd));
  close(fd);
  EXPECT_EQ(1u, agent_->stats().handoffs_sent.load());
}

TEST_F(AgentTest, RelaysBothWaysWithHalfClose) {
  v1::AgentConfig c = Config();
  c.set_offload(v1::OFFLOAD_POLICY_OFF);
  ASSERT_NO_FATAL_FAILURE(StartWithApp(c));
  TestClient client;
  v1::ConnectionInfo info;
  int fd = ConnectAndReceive(*app_, client, &info);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(v1::DATA_PATH_RELAY, info.data_path());
  EXPECT_EQ("policy: offload=off", info.fallback_reason());
  ASSERT_NO_FATAL_FAILURE(ExpectPlaintextBothWays(client, fd));
  // Peer's close_notify -> EOF at the app; app's EOF -> close_notify at the peer.
  SSL_shutdown(client.ssl());
  EXPECT_TRUE(FdAtEof(fd));
  shutdown(fd, SHUT_WR);
  EXPECT_TRUE(client.ReadCloseNotify());
  close(fd);
  EXPECT_TRUE(WaitFor([&] { return agent_->stats().relay_closed.load() == 1; }));
  EXPECT_EQ(1u, agent_->stats().handoffs_sent.load());
  EXPECT_EQ(1u, agent_->stats().fallbacks[static_cast<size_t>(FallbackReason::kPolicyOff)]);
}

TEST_F(AgentTest, EmfileOnAcceptPausesAcceptingThenRecovers) {
  std::atomic<int> failures{3};
  FailTcpAccepts([&] { return failures.fetch_sub(1) > 0 ? EMFILE : 0; });
  ASSERT_NO_FATAL_FAILURE(StartWithApp(Config()));
  TestClient client;
  v1::ConnectionInfo info;
  int fd = ConnectAndReceive(*app_, client, &info);
  ASSERT_GE(fd, 0);
  close(fd);
  EXPECT_GE(agent_->stats().accept_pauses.load(), 1u);
}

TEST_F(AgentTest, EintrAndEagainEverywhereStillCompleteTheHandshakeAndRelay) {
  std::atomic<int> reads{0}, writes{0}, waits{0}, accepts{0};
  ON_CALL(sys_, Read(_, _, _)).WillByDefault(Invoke([&](int fd, void* b, size_t n) -> SysResult {
    int k = reads.fetch_add(1);
    if (k % 3 == 1) return SysResult{-1, EINTR};
    if (k % 3 == 2) return SysResult{-1, EAGAIN};
    return sys_.real().Read(fd, b, n);
  }));
  ON_CALL(sys_, Write(_, _, _))
      .WillByDefault(Invoke([&](int fd, const void* b, size_t n) -> SysResult {
        if (writes.fetch_add(1) % 4 == 1) return SysResult{-1, EAGAIN};
        return sys_.real().Write(fd, b, n);
      }));
  ON_CALL(sys_, EpollWait(_, _, _, _))
      .WillByDefault(Invoke([&](int ep, epoll_event* e, int m, int t) -> SysResult {
        if (waits.fetch_add(1) % 5 == 4) return SysResult{-1, EINTR};
        return sys_.real().EpollWait(ep, e, m, t);
      }));
  FailTcpAccepts([&] { return accepts.fetch_add(1) == 0 ? EINTR : 0; });
  ASSERT_NO_FATAL_FAILURE(StartWithApp(Config()));
  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    TestClient client;
    v1::ConnectionInfo info;
    int fd = ConnectAndReceive(*app_, client, &info, version);
    ASSERT_GE(fd, 0);
    std::string big(200000, 'x');
    ASSERT_TRUE(client.WriteAll(big));
    std::string got;
    ASSERT_TRUE(ReadFdN(fd, big.size(), &got));
    EXPECT_EQ(big, got);
    close(fd);
  }
  EXPECT_GT(reads.load(), 10);
}

TEST_F(AgentTest, SocketpairFailureClosesOnlyThatConnection) {
  std::atomic<int> failures{1};
  ON_CALL(sys_, SocketPair(_, _, _, _))
      .WillByDefault(Invoke([&](int d, int t, int p, int* fds) -> SysResult {
        if (failures.fetch_sub(1) > 0) return SysResult{-1, EMFILE};
        return sys_.real().SocketPair(d, t, p, fds);
      }));
  v1::AgentConfig c = Config();
  c.set_offload(v1::OFFLOAD_POLICY_OFF);  // every connection relays, so every one needs a pair
  ASSERT_NO_FATAL_FAILURE(StartWithApp(c));
  TestClient first;
  ASSERT_TRUE(first.ConnectTcp(port_));
  ASSERT_TRUE(first.Handshake());
  EXPECT_TRUE(first.ServerClosed());
  EXPECT_TRUE(WaitFor([&] { return agent_->stats().relay_errors.load() == 1; }));
  v1::ConnectionInfo info;
  ASSERT_TRUE(HandsOffANewConnection(*app_, &info));
  EXPECT_EQ("policy: offload=off", info.fallback_reason());
}

TEST_F(AgentTest, SilentClientTimesOut) {
  v1::AgentConfig c = Config();
  c.set_handshake_timeout_ms(200);
  ASSERT_NO_FATAL_FAILURE(StartWithApp(c));
  TestClient client;
  ASSERT_TRUE(client.ConnectTcp(port_));
  EXPECT_TRUE(client.ServerClosed());
  EXPECT_EQ(1u, agent_->stats().handshake_timeouts.load());
  EXPECT_EQ(0, agent_->stats().handshakes_in_progress.load());
}

TEST_F(AgentTest, GarbageClientHelloFailsAndIsCounted) {
  ASSERT_NO_FATAL_FAILURE(StartWithApp(Config()));
  TestClient client;
  ASSERT_TRUE(client.ConnectTcp(port_));
  ASSERT_EQ(9, send(client.fd(), "\x16\x03\x01\x00\x04garbage", 9, 0));
  EXPECT_TRUE(client.ServerClosed());
  EXPECT_TRUE(WaitFor([&] { return agent_->stats().handshakes_failed.load() == 1; }));
  // Another connection is unaffected.
  v1::ConnectionInfo info;
  EXPECT_TRUE(HandsOffANewConnection(*app_, &info));
}

TEST_F(AgentTest, NoSubscriberMeansNoAcceptUntilAnAppArrives) {
  StartAgent(Config());
  TestClient client;
  ASSERT_TRUE(client.ConnectTcp(port_));  // completes in the kernel's backlog
  SleepMs(300);
  EXPECT_EQ(0u, agent_->stats().connections_accepted.load());
  FakeApp app(dir_ + "/handoff.sock");
  ASSERT_TRUE(app.Subscribe(1));
  ASSERT_TRUE(client.Handshake());
  v1::ConnectionInfo info;
  int fd = app.ReceiveHandoff(&info);
  ASSERT_GE(fd, 0);
  close(fd);
}

TEST_F(AgentTest, ConnectionWaitingTooLongForCreditIsClosedCleanly) {
  v1::AgentConfig c = Config();
  c.set_handoff_wait_timeout_ms(300);
  ASSERT_NO_FATAL_FAILURE(StartWithApp(c, 1));
  // Both TCP connections are accepted while the single credit is unused; only one can be
  // handed off.
  TestClient a, b;
  ASSERT_TRUE(a.ConnectTcp(port_));
  ASSERT_TRUE(b.ConnectTcp(port_));
  std::thread ta([&] { EXPECT_TRUE(a.Handshake()); });
  std::thread tb([&] { EXPECT_TRUE(b.Handshake()); });
  ta.join();
  tb.join();
  v1::ConnectionInfo info;
  int fd = app_->ReceiveHandoff(&info);
  ASSERT_GE(fd, 0);
  TestClient& waiting = info.peer().port() ==
                                [&] {
                                  sockaddr_in s{};
                                  socklen_t l = sizeof(s);
                                  getsockname(a.fd(), reinterpret_cast<sockaddr*>(&s), &l);
                                  return static_cast<uint32_t>(ntohs(s.sin_port));
                                }()
                            ? b
                            : a;
  EXPECT_TRUE(waiting.ReadCloseNotify());
  EXPECT_EQ(1u, agent_->stats().handoffs_expired.load());
  close(fd);
}

TEST_F(AgentTest, MalformedAppMessagesAreRejectedAndOtherAppsServed) {
  StartAgent(Config());
  FakeApp bad(dir_ + "/handoff.sock");
  ASSERT_TRUE(bad.SendRaw(std::string("\xff\xff\xff\xff", 4)));
  v1::AgentToApp reply;
  std::vector<int> fds;
  ASSERT_TRUE(bad.Receive(&reply, &fds));
  EXPECT_TRUE(reply.has_error());
  FakeApp fd_sender(dir_ + "/handoff.sock");
  v1::AppToAgent sub;
  sub.mutable_subscribe()->set_protocol_version(wire::kProtocolVersion);
  ASSERT_TRUE(fd_sender.SendRaw(*wire::Serialize(sub), /*fd_to_send=*/0));
  ASSERT_TRUE(fd_sender.Receive(&reply, &fds));
  EXPECT_TRUE(reply.has_error());
  EXPECT_NE(std::string::npos, reply.error().message().find("descriptor"));
  FakeApp old_version(dir_ + "/handoff.sock");
  sub.mutable_subscribe()->set_protocol_version(99);
  ASSERT_TRUE(old_version.Send(sub));
  ASSERT_TRUE(old_version.Receive(&reply, &fds));
  EXPECT_NE(std::string::npos, reply.error().message().find("version"));
  EXPECT_TRUE(WaitFor([&] { return agent_->stats().app_protocol_errors.load() == 3; }));

  FakeApp good(dir_ + "/handoff.sock");
  ASSERT_TRUE(good.Subscribe(2));
  v1::ConnectionInfo info;
  EXPECT_TRUE(HandsOffANewConnection(good, &info));
}

TEST_F(AgentTest, VanishedAppLosesNoConnection) {
  StartAgent(Config());
  auto gone = std::make_unique<FakeApp>(dir_ + "/handoff.sock");
  ASSERT_TRUE(gone->Subscribe(100));
  FakeApp stays(dir_ + "/handoff.sock");
  ASSERT_TRUE(stays.Subscribe(1));
  gone.reset();  // vanishes with 100 unused credits
  v1::ConnectionInfo info;
  ASSERT_TRUE(HandsOffANewConnection(stays, &info));
}

TEST_F(AgentTest, UnknownSniGetsTheDefaultCertificateAndIsCounted) {
  ASSERT_NO_FATAL_FAILURE(StartWithApp(Config(), 2));
  TestClient client;
  ASSERT_TRUE(client.ConnectTcp(port_));
  ASSERT_TRUE(client.Handshake(TLS1_3_VERSION, "", "unknown.example"));
  v1::ConnectionInfo info;
  int fd = app_->ReceiveHandoff(&info);
  ASSERT_GE(fd, 0);
  EXPECT_EQ("unknown.example", info.sni());
  EXPECT_EQ(1u, agent_->stats().sni_unmatched.load());
  close(fd);
}

TEST_F(AgentTest, BadConfigIsAClearError) {
  v1::AgentConfig c = Config();
  c.mutable_listeners(0)->set_address("not-an-ip");
  auto a = Agent::Create(c, sys_);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(std::string::npos, a.status().message().find("not-an-ip"));
  c = Config();
  auto* cert = c.add_certificates();
  cert->set_cert_chain_file(dir_ + "/missing.pem");
  cert->set_private_key_file(dir_ + "/missing.key");
  a = Agent::Create(c, sys_);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(std::string::npos, a.status().message().find("missing.pem")) << a.status();
}

}  // namespace
}  // namespace ktls::agent::testing
