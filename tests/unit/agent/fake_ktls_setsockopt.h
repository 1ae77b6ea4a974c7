// A SysCalls mock setup shared by the tests of the kTLS install (ktls_installer_test,
// data_path_test): TCP_ULP fails with ENOENT, so OpenSSL keeps every direction in userspace
// during the handshake, and setsockopt(SOL_TLS, TLS_RX) is recorded and answered with a result
// the test chooses; every other setsockopt reaches the kernel.
#ifndef KTLS_TESTS_UNIT_AGENT_FAKE_KTLS_SETSOCKOPT_H_
#define KTLS_TESTS_UNIT_AGENT_FAKE_KTLS_SETSOCKOPT_H_

#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <string>

#include <gmock/gmock.h>

#include "tests/mocks/mock_syscalls.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace ktls::agent::testing {

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
