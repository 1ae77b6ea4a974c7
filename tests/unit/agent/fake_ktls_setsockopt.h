// Shared by the tests of the kTLS install (ktls_installer_test, data_path_test): their fixture, a
// server-side handshake over the agent's socket BIO, and a SysCalls mock setup
// in which TCP_ULP fails with ENOENT, so OpenSSL keeps every direction in userspace
// during the handshake, and setsockopt(SOL_TLS, TLS_RX) is recorded and answered with a result
// the test chooses; every other setsockopt reaches the kernel.
#ifndef KTLS_TESTS_UNIT_AGENT_FAKE_KTLS_SETSOCKOPT_H_
#define KTLS_TESTS_UNIT_AGENT_FAKE_KTLS_SETSOCKOPT_H_

#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <openssl/ssl.h>
#include <poll.h>

#include <memory>
#include <string>
#include <thread>

#include <gmock/gmock.h>

#include "agent/cert_store.h"
#include "agent/kernel_probe.h"
#include "agent/openssl_ptr.h"
#include "agent/socket_bio.h"
#include "agent/tls_context.h"
#include "tests/mocks/mock_syscalls.h"
#include "tests/unit/agent/agent_test_util.h"
#include "tests/unit/agent/loopback_listener.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace ktls::agent::testing {

// Completes a server-side handshake on `ssl` (non-blocking, over the agent's socket BIO on
// `fd`) while `client_side` runs the peer in a thread; the result says which side failed.
template <typename ClientSide>
::testing::AssertionResult ServerHandshake(SysCalls& sys, SSL* ssl, int fd,
                                           ClientSide client_side) {
  BioPtr bio = NewSocketBio(sys, fd);
  SSL_set_bio(ssl, bio.get(), bio.get());  // the SSL owns the BIO
  (void)bio.release();
  SSL_set_accept_state(ssl);
  bool client_ok = false;
  std::thread t([&] { client_ok = client_side(); });
  int last_error = 0;
  for (int i = 0; i < 2000; ++i) {
    const int rc = SSL_do_handshake(ssl);
    if (rc == 1) {
      last_error = 0;
      break;
    }
    last_error = SSL_get_error(ssl, rc);
    if (last_error != SSL_ERROR_WANT_READ && last_error != SSL_ERROR_WANT_WRITE) break;
    pollfd p{fd, static_cast<short>(last_error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0};
    poll(&p, 1, 50);
  }
  t.join();
  if (last_error != 0) return ::testing::AssertionFailure() << "server: SSL error " << last_error;
  if (!client_ok) return ::testing::AssertionFailure() << "the client's handshake failed";
  return ::testing::AssertionSuccess();
}

// `rx_info` receives the bytes passed to TLS_RX; `*rx_result` is returned for it. Both must
// outlive the mock's use.
inline void FakeKtlsSetSockOpt(MockSysCalls& sys, std::string* rx_info,
                               const SysResult* rx_result) {
  ON_CALL(sys, SetSockOpt(::testing::_, ::testing::_, ::testing::_, ::testing::_, ::testing::_))
      .WillByDefault(
          ::testing::Invoke([&sys, rx_info, rx_result](int fd, int level, int name, const void* v,
                                                       socklen_t l) -> SysResult {
            if (level == IPPROTO_TCP && name == TCP_ULP) return SysResult{-1, ENOENT};
            if (level == SOL_TLS && name == TLS_RX) {
              rx_info->assign(static_cast<const char*>(v), l);
              return *rx_result;
            }
            return sys.real().SetSockOpt(fd, level, name, v, l);
          }));
}

// The fixture of both kTLS install tests: a TLS context with the development certificate, a
// loopback TCP connection (TestClient on one end, server_fd_ on the other) and the SetSockOpt
// fake above. Base is ::testing::Test or a TestWithParam.
template <typename Base>
class KtlsInstallFixture : public Base {
 protected:
  void SetUp() override {
    FakeKtlsSetSockOpt(sys_, &rx_info_, &rx_result_);
    auto ctx = TlsContext::Create(TlsOptions{}, KernelProbeResult{});
    ASSERT_TRUE(ctx.ok()) << ctx.status();
    tls_ = std::move(*ctx);
    auto certs = CertificateSet::CreateDevelopment();
    ASSERT_TRUE(certs.ok());
    state_.certificates = *certs;
    LoopbackListener listener;
    ASSERT_TRUE(listener.ok());
    port_ = listener.port();
    ASSERT_TRUE(client_.ConnectTcp(port_));
    server_fd_ = listener.Accept();
    ASSERT_GE(server_fd_, 0);
  }
  void TearDown() override {
    ssl_.reset();
    if (server_fd_ >= 0) close(server_fd_);
  }

  // The handshake, client in a thread and the server non-blocking here.
  void Handshake(int version, const std::string& cipher = "") {
    auto ssl = tls_->NewServerSsl(&state_);
    ASSERT_TRUE(ssl.ok());
    ssl_ = std::move(*ssl);
    ASSERT_TRUE(ServerHandshake(sys_, ssl_.get(), server_fd_,
                                [&] { return client_.Handshake(version, cipher); }));
  }

  // Pretends the kernel took TX during the handshake.
  void PretendTxInstalled() {
    SocketBioKtlsState* st = SocketBioState(SSL_get_wbio(ssl_.get()));
    ASSERT_NE(nullptr, st);
    st->ulp_set = true;
    st->ulp_errno = 0;
    st->tx = true;
    st->tx_errno = 0;
  }

  ::testing::NiceMock<MockSysCalls> sys_;
  std::unique_ptr<TlsContext> tls_;
  TlsConnectionState state_;
  TestClient client_;
  int server_fd_ = -1;
  int port_ = 0;
  SslPtr ssl_;
  std::string rx_info_;
  SysResult rx_result_{0, 0};
};

}  // namespace ktls::agent::testing

#endif  // KTLS_TESTS_UNIT_AGENT_FAKE_KTLS_SETSOCKOPT_H_
