// The handshake engine (agent/tls_session.cc) in both roles, on a real loopback TCP connection
// driven by a real EventLoop, with the syscalls it makes visible through MockSysCalls: a
// completed handshake, an unverifiable server, a client that does not speak TLS, EAGAIN on the
// handshake's read (re-arm for read, once), and the deadline (closes the fd, reports kTimeout).
#include "agent/tls_session.h"

#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <optional>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/cert_store.h"
#include "agent/event_loop.h"
#include "agent/tls_context.h"
#include "tests/mocks/mock_syscalls.h"
#include "tests/unit/agent/agent_test_util.h"
#include "tests/unit/agent/loopback_listener.h"

namespace ktls::agent::testing {
namespace {

using ::testing::_;
using ::testing::AnyNumber;
using ::testing::Invoke;
using ::testing::NiceMock;
using ::testing::Return;

// What a session reported to its owner.
struct Recorder : TlsSessionOwner {
  void OnHandshakeDone() override { ++done; }
  void OnHandshakeFailed(const HandshakeFailure& f) override {
    ++failed;
    failure = f;
  }
  int done = 0;
  int failed = 0;
  HandshakeFailure failure;
};

// The loop's handler for a session's fd: passes the events on, as Connection and the dialer do.
struct Forwarder : EventHandler {
  void OnEvents(uint32_t events) override { session->OnEvents(events); }
  TlsSession* session = nullptr;
};

class TlsSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loop = EventLoop::Create(sys_);
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = std::move(*loop);
    auto tls = TlsContext::Create(TlsOptions{}, KernelProbeResult{});
    ASSERT_TRUE(tls.ok()) << tls.status();
    tls_ = std::move(*tls);
    auto certs = CertificateSet::CreateDevelopment();
    ASSERT_TRUE(certs.ok());
    state_.certificates = *certs;
    client_ctx_.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_verify(client_ctx_.get(), SSL_VERIFY_NONE, nullptr);
    MakeTcpPair();
  }

  // A connected, non-blocking loopback pair: server_fd_ (accepted) and client_fd_.
  void MakeTcpPair() {
    LoopbackListener listener;
    ASSERT_TRUE(listener.ok());
    client_fd_ = listener.Connect();
    ASSERT_GE(client_fd_, 0);
    server_fd_ = listener.Accept();
    ASSERT_GE(server_fd_, 0);
  }

  std::unique_ptr<TlsSession> AcceptSession(absl::Time deadline) {
    auto ssl = tls_->NewServerSsl(&state_);
    EXPECT_TRUE(ssl.ok());
    auto s = std::make_unique<TlsSession>(*loop_, sys_, TlsRole::kAccept,
                                          UniqueFd(sys_, server_fd_), std::move(*ssl), absl::Now(),
                                          deadline, &server_, &server_handler_);
    server_handler_.session = s.get();
    return s;
  }

  // The connect role takes over a registration for EPOLLOUT (the dialer's wait for connect).
  std::unique_ptr<TlsSession> ConnectSession(SslPtr ssl) {
    EXPECT_TRUE(loop_->Add(client_fd_, EPOLLOUT, &client_handler_).ok());
    auto s = std::make_unique<TlsSession>(
        *loop_, sys_, TlsRole::kConnect, UniqueFd(sys_, client_fd_), std::move(ssl), absl::Now(),
        absl::Now() + absl::Seconds(5), &client_, &client_handler_);
    client_handler_.session = s.get();
    return s;
  }

  // Runs the loop until `pred` holds (checked every 5 ms) or 5 s passed.
  template <typename Pred>
  bool RunUntil(Pred pred) {
    const absl::Time limit = absl::Now() + absl::Seconds(5);
    bool met = false;
    loop_->SetTicker(absl::Milliseconds(5), [&](absl::Time now) {
      met = pred();
      if (met || now > limit) loop_->Stop();
    });
    loop_->Run();
    return met;
  }

  NiceMock<MockSysCalls> sys_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<TlsContext> tls_;
  TlsConnectionState state_;
  SslCtxPtr client_ctx_;
  int server_fd_ = -1;  // owned by the accept session once made
  int client_fd_ = -1;  // owned by the connect session once made
  Recorder server_;
  Recorder client_;
  Forwarder server_handler_;
  Forwarder client_handler_;
};

TEST_F(TlsSessionTest, BothRolesCompleteAndReleaseTheStream) {
  auto server = AcceptSession(absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(server->Start().ok());
  EXPECT_EQ(TlsSession::State::kHandshaking, server->state());
  auto client = ConnectSession(SslPtr(SSL_new(client_ctx_.get())));
  ASSERT_TRUE(client->Start().ok());  // sends the ClientHello at once
  ASSERT_TRUE(RunUntil([&] { return server_.done + client_.done == 2; }))
      << server_.failure.text << " / " << client_.failure.text;
  EXPECT_EQ(0, server_.failed + client_.failed);
  EXPECT_EQ(TlsSession::State::kEstablished, server->state());
  EXPECT_EQ(TlsSession::State::kEstablished, client->state());
  EXPECT_EQ(TLS1_3_VERSION, SSL_version(client->ssl()));

  TlsStream stream = server->Release();
  EXPECT_EQ(TlsSession::State::kReleased, server->state());
  EXPECT_TRUE(stream.fd.valid());
  ASSERT_NE(nullptr, stream.ssl);
  EXPECT_TRUE(SSL_is_init_finished(stream.ssl.get()));
  EXPECT_EQ(-1, server->fd());
  // Released once: a second Release() gets nothing.
  TlsStream again = server->Release();
  EXPECT_FALSE(again.fd.valid());
  EXPECT_EQ(nullptr, again.ssl);
}

TEST_F(TlsSessionTest, ConnectRoleSaysWhyTheServerDidNotVerify) {
  auto server = AcceptSession(absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(server->Start().ok());
  SslPtr ssl(SSL_new(client_ctx_.get()));
  SSL_set_verify(ssl.get(), SSL_VERIFY_PEER, nullptr);  // and nothing trusted
  auto client = ConnectSession(std::move(ssl));
  ASSERT_TRUE(client->Start().ok());
  ASSERT_TRUE(RunUntil([&] { return client_.failed == 1 && server_.failed == 1; }));
  EXPECT_TRUE(client_.failure.verify_failed);
  EXPECT_THAT(client_.failure.text, ::testing::StartsWith("certificate verify failed: "));
  EXPECT_EQ(TlsSession::State::kClosed, client->state());
  // The server got the client's alert.
  EXPECT_EQ(HandshakeFailureReason::kPeerAlert, server_.failure.reason) << server_.failure.text;
  EXPECT_FALSE(server_.failure.verify_failed);
  EXPECT_EQ(0, server_.done + client_.done);
}

TEST_F(TlsSessionTest, AcceptRoleClassifiesAClientThatDoesNotSpeakTls) {
  auto server = AcceptSession(absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(server->Start().ok());
  const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(static_cast<ssize_t>(sizeof(req) - 1), write(client_fd_, req, sizeof(req) - 1));
  ASSERT_TRUE(RunUntil([&] { return server_.failed == 1; }));
  EXPECT_EQ(HandshakeFailureReason::kNotTls, server_.failure.reason) << server_.failure.text;
  EXPECT_EQ(TlsSession::State::kClosed, server->state());
  close(client_fd_);
}

TEST_F(TlsSessionTest, EagainOnTheHandshakeReadRearmsForReadOnce) {
  // The ClientHello goes out, then every read of the reply would block.
  EXPECT_CALL(sys_, Read(client_fd_, _, _)).WillRepeatedly(Return(SysResult{-1, EAGAIN}));
  EXPECT_CALL(sys_, EpollCtl(_, _, _, _)).Times(AnyNumber());
  EXPECT_CALL(sys_, EpollCtl(_, EPOLL_CTL_MOD, client_fd_, _))
      .WillOnce(Invoke([this](int epfd, int op, int fd, epoll_event* ev) {
        EXPECT_EQ(static_cast<uint32_t>(EPOLLIN), ev->events);  // no EPOLLOUT, no RDHUP
        return sys_.real().EpollCtl(epfd, op, fd, ev);
      }));
  auto client = ConnectSession(SslPtr(SSL_new(client_ctx_.get())));
  ASSERT_TRUE(client->Start().ok());
  EXPECT_EQ(TlsSession::State::kHandshaking, client->state());
  EXPECT_EQ(static_cast<uint32_t>(EPOLLIN), client->ArmedForTest());
  // Another readiness report that still finds nothing: a want-read again, no second epoll_ctl.
  client->OnEvents(EPOLLIN);
  EXPECT_EQ(TlsSession::State::kHandshaking, client->state());
  EXPECT_EQ(0, client_.failed + client_.done);
  close(server_fd_);
}

TEST_F(TlsSessionTest, TheDeadlineClosesTheSocketAndReportsATimeout) {
  const absl::Time deadline = absl::Now() + absl::Milliseconds(50);
  auto server = AcceptSession(deadline);
  ASSERT_TRUE(server->Start().ok());
  EXPECT_FALSE(server->CheckDeadline(deadline - absl::Milliseconds(1)));
  EXPECT_EQ(0, server_.failed);

  EXPECT_CALL(sys_, EpollCtl(_, _, _, _)).Times(AnyNumber());
  EXPECT_CALL(sys_, EpollCtl(_, EPOLL_CTL_DEL, server_fd_, _))
      .WillOnce(Invoke(&sys_.real(), &SysCalls::EpollCtl));
  EXPECT_CALL(sys_, Close(_)).Times(AnyNumber());
  EXPECT_CALL(sys_, Close(server_fd_)).WillOnce(Invoke(&sys_.real(), &SysCalls::Close));
  EXPECT_TRUE(server->CheckDeadline(deadline));
  EXPECT_EQ(1, server_.failed);
  EXPECT_EQ(HandshakeFailureReason::kTimeout, server_.failure.reason);
  EXPECT_THAT(server_.failure.text, ::testing::StartsWith("timed out after"));
  EXPECT_EQ(TlsSession::State::kClosed, server->state());
  EXPECT_EQ(-1, server->fd());
  // Once closed, nothing more happens: no second report, no step.
  EXPECT_FALSE(server->CheckDeadline(deadline + absl::Seconds(1)));
  server->Expire();
  server->OnEvents(EPOLLIN);
  EXPECT_EQ(1, server_.failed);
  EXPECT_TRUE(FdAtEof(client_fd_));
  close(client_fd_);
}

// A BIO that takes every write and fails every read with `g_read_errno` and no retry flag:
// OpenSSL then reports SSL_ERROR_SYSCALL, as with a socket read interrupted or drained under it.
int g_read_errno = 0;
BIO_METHOD* ErrnoBioMethod() {
  static BIO_METHOD* m = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "errno test bio");
    BIO_meth_set_write(m, [](BIO*, const char*, int len) { return len; });
    BIO_meth_set_read(m, [](BIO*, char*, int) {
      errno = g_read_errno;
      return -1;
    });
    BIO_meth_set_ctrl(m, [](BIO*, int cmd, long, void*) -> long { return cmd == BIO_CTRL_FLUSH; });
    BIO_meth_set_create(m, [](BIO* b) {
      BIO_set_init(b, 1);
      return 1;
    });
    return m;
  }();
  return m;
}

HandshakeStep StepWithReadErrno(SSL_CTX* ctx, int err) {
  SslPtr ssl(SSL_new(ctx));
  BIO* bio = BIO_new(ErrnoBioMethod());
  SSL_set_bio(ssl.get(), bio, bio);  // the SSL owns the BIO
  SSL_set_connect_state(ssl.get());
  g_read_errno = err;
  return StepHandshake(ssl.get());
}

TEST_F(TlsSessionTest, EagainAndEintrInSslErrorSyscallAreWantsOtherErrnosFail) {
  EXPECT_EQ(HandshakeProgress::kWantRead, StepWithReadErrno(client_ctx_.get(), EAGAIN).progress);
  EXPECT_EQ(HandshakeProgress::kWantRead, StepWithReadErrno(client_ctx_.get(), EINTR).progress);
  HandshakeStep reset = StepWithReadErrno(client_ctx_.get(), ECONNRESET);
  EXPECT_EQ(HandshakeProgress::kFailed, reset.progress);
  EXPECT_EQ(ECONNRESET, reset.saved_errno);
}

}  // namespace
}  // namespace ktls::agent::testing
