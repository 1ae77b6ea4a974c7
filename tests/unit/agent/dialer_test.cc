// Outbound mode (agent/dialer.cc) end to end in-process: a fake app sends DialRequests over the
// handoff socket; the agent dials an in-process TLS echo server (certificate from a test CA),
// verifies it, installs kTLS (VM) or relays (host), resumes on the second dial, and hands the
// connection back. Reads go through the client library's ktls_recv, which skips the
// NewSessionTickets that may arrive after the handoff.
#include "agent/dialer.h"

#include <poll.h>

#include <atomic>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/agent.h"
#include "agent/config.h"
#include "ktls/ktls_client.h"
#include "tests/mocks/mock_syscalls.h"
#include "tests/unit/agent/agent_test_util.h"
#include "tests/unit/agent/test_certs.h"

namespace ktls::agent::testing {
namespace {

using ::testing::NiceMock;

// A blocking TLS echo server on 127.0.0.1:0, one thread per connection.
class EchoServer {
 public:
  EchoServer(const testcerts::TestCert& cert, int version) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx_, version);
    SSL_CTX_set_max_proto_version(ctx_, version);
    SSL_CTX_use_certificate(ctx_, cert.cert.get());
    SSL_CTX_use_PrivateKey(ctx_, cert.key.get());
    lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    listen(lfd_, 16);
    thread_ = std::thread([this] { Run(); });
  }
  ~EchoServer() {
    stop_ = true;
    shutdown(lfd_, SHUT_RDWR);
    close(lfd_);
    thread_.join();
    for (auto& t : conns_) t.join();
    SSL_CTX_free(ctx_);
  }
  int port() const { return port_; }

 private:
  void Run() {
    while (!stop_) {
      int fd = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      conns_.emplace_back([this, fd] {
        SSL* ssl = SSL_new(ctx_);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
          char buf[16384];
          for (;;) {
            int n = SSL_read(ssl, buf, sizeof(buf));
            if (n <= 0) break;
            if (SSL_write(ssl, buf, n) != n) break;
          }
          SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        close(fd);
      });
    }
  }
  SSL_CTX* ctx_;
  int lfd_;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<std::thread> conns_;
};

class DialerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ktls-dialer-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    ca_ = testcerts::MakeCa("dialer test CA");
    leaf_ = testcerts::MakeServerCert("upstream.test", ca_);
    ca_file_ = testcerts::WriteTempFile("ca.pem", ca_.cert_pem);
    v1::AgentConfig c = DefaultConfig();
    c.clear_listeners();
    auto* l = c.add_listeners();
    l->set_address("127.0.0.1");
    l->set_port(0);
    c.set_workers(1);
    c.set_handoff_socket(dir_ + "/handoff.sock");
    c.set_log_level("warning");
    auto a = Agent::Create(c, sys_);
    ASSERT_TRUE(a.ok()) << a.status();
    agent_ = std::move(*a);
    agent_->Start();
    app_ = std::make_unique<FakeApp>(dir_ + "/handoff.sock");
    ASSERT_TRUE(app_->Subscribe(1));
  }
  void TearDown() override {
    app_.reset();
    agent_.reset();
    (void)system(("rm -rf " + dir_).c_str());
  }

  v1::DialRequest Request(int port, uint64_t id) {
    v1::DialRequest r;
    r.set_request_id(id);
    r.set_host("127.0.0.1");
    r.set_port(port);
    r.set_sni("upstream.test");
    r.set_ca_file(ca_file_);
    r.set_timeout_ms(5000);
    return r;
  }

  // Sends the request and waits for its result; returns the fd (or -1).
  int Dial(const v1::DialRequest& req, v1::DialResult* result) {
    v1::AppToAgent m;
    *m.mutable_dial() = req;
    EXPECT_TRUE(app_->Send(m));
    v1::AgentToApp reply;
    std::vector<int> fds;
    EXPECT_TRUE(app_->Receive(&reply, &fds, 10000));
    EXPECT_TRUE(reply.has_dial_result()) << reply.DebugString();
    *result = reply.dial_result();
    EXPECT_EQ(req.request_id(), result->request_id());
    EXPECT_EQ(result->ok() ? 1u : 0u, fds.size());
    return fds.empty() ? -1 : fds[0];
  }

  // Writes `msg` to the handed fd and reads the echo back through ktls_recv.
  // Handed fds are non-blocking (as accepted), so writes and reads interleave with poll().
  void ExpectEcho(int fd, const std::string& msg) {
    std::string got;
    char buf[65536];
    size_t sent = 0;
    while (got.size() < msg.size()) {
      if (sent < msg.size()) {
        ssize_t w = write(fd, msg.data() + sent, msg.size() - sent);
        if (w > 0) sent += w;
        else ASSERT_EQ(EAGAIN, errno) << strerror(errno);
      }
      pollfd p{fd, static_cast<short>(POLLIN | (sent < msg.size() ? POLLOUT : 0)), 0};
      ASSERT_GT(poll(&p, 1, 5000), 0) << "no echo";
      if (!(p.revents & POLLIN)) continue;
      ktls_record_info info{};
      ssize_t n = ktls_recv(fd, buf, sizeof(buf), MSG_DONTWAIT, &info);
      if (n < 0 && errno == EAGAIN) continue;  // a ticket, consumed
      ASSERT_GT(n, 0) << strerror(errno);
      got.append(buf, n);
    }
    EXPECT_EQ(msg, got);
  }

  NiceMock<MockSysCalls> sys_;
  std::string dir_;
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<FakeApp> app_;
  testcerts::TestCert ca_;
  testcerts::TestCert leaf_;
  std::string ca_file_;
};

class DialerVersionTest : public DialerTest, public ::testing::WithParamInterface<int> {};

TEST_P(DialerVersionTest, VerifiesOffloadsAndResumesOnTheSecondDial) {
  EchoServer server(leaf_, GetParam());
  v1::DialResult first;
  int fd = Dial(Request(server.port(), 1), &first);
  ASSERT_TRUE(first.ok()) << first.error();
  ASSERT_GE(fd, 0);
  const v1::ConnectionInfo& info = first.connection();
  EXPECT_TRUE(info.outbound());
  EXPECT_EQ(1u, info.dial_request_id());
  EXPECT_EQ("upstream.test", info.sni());
  EXPECT_EQ(GetParam() == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2", info.tls_version());
  EXPECT_TRUE(info.peer_identity().verified());
  EXPECT_EQ(static_cast<uint32_t>(server.port()), info.peer().port());
  EXPECT_FALSE(info.resumed());
  if (agent_->probe().AnySupported()) {
    EXPECT_EQ(v1::DATA_PATH_KTLS, info.data_path()) << info.fallback_reason();
    bool tx = false, rx = false;
    ASSERT_TRUE(ktls_fd_offload_state(fd, &tx, &rx));
    EXPECT_TRUE(tx && rx);
  } else {
    EXPECT_EQ(v1::DATA_PATH_RELAY, info.data_path());
  }
  std::string big(300000, 'z');
  ExpectEcho(fd, "hello upstream");
  ExpectEcho(fd, big);
  close(fd);

  v1::DialResult second;
  fd = Dial(Request(server.port(), 2), &second);
  ASSERT_TRUE(second.ok()) << second.error();
  EXPECT_TRUE(second.connection().resumed()) << "second dial did not resume";
  ExpectEcho(fd, "again");
  close(fd);
  EXPECT_GE(agent_->stats().dials_resumed.load(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Versions, DialerVersionTest,
                         ::testing::Values(TLS1_3_VERSION, TLS1_2_VERSION), [](const auto& i) {
                           return i.param == TLS1_3_VERSION ? "Tls13" : "Tls12";
                         });

TEST_F(DialerTest, UntrustedServerIsRejectedWithTheReasonAndNoFd) {
  EchoServer server(leaf_, TLS1_3_VERSION);
  testcerts::TestCert other = testcerts::MakeCa("someone else");
  v1::DialRequest req = Request(server.port(), 7);
  req.set_ca_file(testcerts::WriteTempFile("other.pem", other.cert_pem));
  v1::DialResult r;
  EXPECT_EQ(-1, Dial(req, &r));
  EXPECT_FALSE(r.ok());
  EXPECT_NE(std::string::npos, r.error().find("certificate verify failed")) << r.error();
  EXPECT_EQ(1u, agent_->stats().dials_verify_failed.load());
}

TEST_F(DialerTest, WrongNameIsRejected) {
  EchoServer server(leaf_, TLS1_2_VERSION);
  v1::DialRequest req = Request(server.port(), 8);
  req.set_expected_name("other.test");
  v1::DialResult r;
  EXPECT_EQ(-1, Dial(req, &r));
  EXPECT_NE(std::string::npos, r.error().find("hostname mismatch")) << r.error();
}

TEST_F(DialerTest, RefusedAndTimedOutDialsSayWhy) {
  // A port nobody listens on.
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  int closed_port = ntohs(a.sin_port);
  close(s);
  v1::DialResult r;
  EXPECT_EQ(-1, Dial(Request(closed_port, 9), &r));
  EXPECT_NE(std::string::npos, r.error().find("Connection refused")) << r.error();

  // A listener that never answers the ClientHello.
  int silent = socket(AF_INET, SOCK_STREAM, 0);
  a.sin_port = 0;
  bind(silent, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  getsockname(silent, reinterpret_cast<sockaddr*>(&a), &len);
  listen(silent, 4);
  v1::DialRequest req = Request(ntohs(a.sin_port), 10);
  req.set_timeout_ms(300);
  EXPECT_EQ(-1, Dial(req, &r));
  EXPECT_NE(std::string::npos, r.error().find("timed out")) << r.error();
  close(silent);
}

TEST_F(DialerTest, BadRequestsAreAnsweredNotDropped) {
  v1::DialRequest req = Request(443, 11);
  req.set_port(0);
  v1::DialResult r;
  EXPECT_EQ(-1, Dial(req, &r));
  EXPECT_NE(std::string::npos, r.error().find("port")) << r.error();
  req = Request(1, 12);
  req.set_ca_file(dir_ + "/missing.pem");
  EXPECT_EQ(-1, Dial(req, &r));
}

}  // namespace
}  // namespace ktls::agent::testing
