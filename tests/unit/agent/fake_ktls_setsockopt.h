// Shared by the tests of the kTLS install (ktls_installer_test, data_path_test): a server-side
// handshake over the agent's socket BIO, and a SysCalls mock setup
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

#include <string>
#include <thread>

#include <gmock/gmock.h>

#include "agent/openssl_ptr.h"
#include "agent/socket_bio.h"
#include "tests/mocks/mock_syscalls.h"

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

}  // namespace ktls::agent::testing

#endif  // KTLS_TESTS_UNIT_AGENT_FAKE_KTLS_SETSOCKOPT_H_
