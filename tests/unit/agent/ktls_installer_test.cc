// kTLS installer (agent/ktls_installer.cc): the data-path decision after a real handshake, with
// the kernel's answers injected through MockSysCalls. The host kernel has no kTLS, so TX is made
// to fail during the handshake (OpenSSL then stays in userspace), and the test flips the BIO's
// TX state afterwards to reach the TLS 1.3 manual-RX step, whose setsockopt it intercepts.
#include "agent/ktls_installer.h"

#include <linux/tls.h>
#include <netinet/tcp.h>
#include <poll.h>

#include <cstring>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "agent/cert_store.h"
#include "agent/ktls_crypto_info.h"
#include "agent/socket_bio.h"
#include "agent/tls_context.h"
#include "tests/mocks/mock_syscalls.h"
#include "tests/unit/agent/agent_test_util.h"
#include "tests/unit/agent/fake_ktls_setsockopt.h"
#include "tests/unit/agent/loopback_listener.h"

namespace ktls::agent::testing {
namespace {

using ::testing::_;
using ::testing::Invoke;
using ::testing::NiceMock;

class KtlsInstallerTest : public KtlsInstallFixture<::testing::TestWithParam<const char*>> {};

TEST_P(KtlsInstallerTest, Tls13RxKeysAreDerivedFromTheClientTrafficSecretWithSequenceZero) {
  Handshake(TLS1_3_VERSION, GetParam());
  PretendTxInstalled();
  ASSERT_GT(state_.client_app_secret_len, 0u);
  OffloadDecision d = CompleteKtlsInstall(sys_, ssl_.get(), server_fd_, OffloadPolicy::kPreferred);
  EXPECT_TRUE(d.ktls) << d.reason_text;
  EXPECT_TRUE(d.rx);
  // What went to setsockopt(TLS_RX) equals an independent derivation from the CLIENT's keylog.
  std::string secret = absl::HexStringToBytes(client_.ClientTrafficSecretHex());
  ASSERT_FALSE(secret.empty());
  auto cipher =
      KtlsCipherFromSuiteId(SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(ssl_.get())));
  ASSERT_TRUE(cipher.has_value());
  auto expected = CryptoInfo::FromTls13TrafficSecret(
      Direction::kRx, *cipher,
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(secret.data()), secret.size()), 0);
  ASSERT_TRUE(expected.ok());
  ASSERT_EQ(expected->size(), rx_info_.size());
  EXPECT_EQ(0, memcmp(expected->data(), rx_info_.data(), rx_info_.size()));
  const auto* base = reinterpret_cast<const tls_crypto_info*>(rx_info_.data());
  EXPECT_EQ(TLS_1_3_VERSION, base->version);
  // The secret is wiped once used.
  EXPECT_EQ(0u, state_.client_app_secret_len);
  for (uint8_t b : state_.client_app_secret) ASSERT_EQ(0, b);
}

TEST_P(KtlsInstallerTest, Tls13RxEnoprotooptFallsBackToRelayWithTheReason) {
  Handshake(TLS1_3_VERSION, GetParam());
  PretendTxInstalled();
  rx_result_ = SysResult{-1, ENOPROTOOPT};
  OffloadDecision d = CompleteKtlsInstall(sys_, ssl_.get(), server_fd_, OffloadPolicy::kPreferred);
  EXPECT_FALSE(d.ktls);
  EXPECT_TRUE(d.tx);
  EXPECT_FALSE(d.rx);
  EXPECT_EQ(FallbackReason::kRxInstallFailed, d.reason);
  EXPECT_NE(std::string::npos, d.reason_text.find("ENOPROTOOPT")) << d.reason_text;
  EXPECT_EQ(0u, state_.client_app_secret_len);
}

INSTANTIATE_TEST_SUITE_P(Tls13Suites, KtlsInstallerTest,
                         ::testing::Values("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                           "TLS_CHACHA20_POLY1305_SHA256"));

class KtlsInstallerPlainTest : public KtlsInstallerTest {};

TEST_F(KtlsInstallerPlainTest, MissingModuleIsReportedAsSuch) {
  Handshake(TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256");
  OffloadDecision d = CompleteKtlsInstall(sys_, ssl_.get(), server_fd_, OffloadPolicy::kPreferred);
  EXPECT_FALSE(d.ktls);
  EXPECT_EQ(FallbackReason::kModuleMissing, d.reason);
  EXPECT_NE(std::string::npos, d.reason_text.find("tls module not loaded")) << d.reason_text;
}

TEST_F(KtlsInstallerPlainTest, PolicyOffNeverOffloads) {
  Handshake(TLS1_3_VERSION, "");
  PretendTxInstalled();
  OffloadDecision d = CompleteKtlsInstall(sys_, ssl_.get(), server_fd_, OffloadPolicy::kOff);
  EXPECT_FALSE(d.ktls);
  EXPECT_EQ(FallbackReason::kPolicyOff, d.reason);
  EXPECT_TRUE(rx_info_.empty()) << "no RX install may be attempted with offload=off";
  EXPECT_EQ(0u, state_.client_app_secret_len);
}

TEST_F(KtlsInstallerPlainTest, InstallTimeIsTheKernelsSetsockoptTimeAndOnlyWhereTheUlpWasSet) {
  // A kernel whose TLS_RX takes 3 ms: the histogram gets one observation of at least that.
  Handshake(TLS1_3_VERSION, "");
  PretendTxInstalled();
  ON_CALL(sys_, SetSockOpt(_, SOL_TLS, TLS_RX, _, _))
      .WillByDefault(Invoke([](int, int, int, const void*, socklen_t) -> SysResult {
        SleepMs(3);
        return SysResult{0, 0};
      }));
  OffloadDecision d = CompleteKtlsInstall(sys_, ssl_.get(), server_fd_, OffloadPolicy::kPreferred);
  ASSERT_TRUE(d.ktls) << d.reason_text;
  AgentStats stats;
  CountKtlsInstall(stats, ssl_.get());
  Histogram::Snapshot h = stats.ktls_install_duration.Take();
  EXPECT_EQ(1u, h.count);
  EXPECT_GE(h.sum, 0.003);
  EXPECT_LT(h.sum, 1.0);
  EXPECT_EQ(1u, stats.ktls_tx_installed.load());
  EXPECT_EQ(1u, stats.ktls_rx_installed.load());
}

TEST_F(KtlsInstallerPlainTest, NoInstallTimeWhenTheModuleIsMissing) {
  Handshake(TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256");
  OffloadDecision d = CompleteKtlsInstall(sys_, ssl_.get(), server_fd_, OffloadPolicy::kPreferred);
  ASSERT_FALSE(d.ktls);
  AgentStats stats;
  CountKtlsInstall(stats, ssl_.get());
  EXPECT_EQ(0u, stats.ktls_install_duration.Take().count);
  EXPECT_EQ(1u, stats.ktls_tx_failed.load());
  EXPECT_EQ(0u, stats.ktls_tx_installed.load());
}

TEST_F(KtlsInstallerPlainTest, BufferedRecordsPreventManualRx) {
  Handshake(TLS1_3_VERSION, "");
  PretendTxInstalled();
  // Data behind the Finished, and read-ahead forced on for this SSL so OpenSSL buffers it:
  // the RX sequence would then be unknown, so the installer must refuse.
  ASSERT_TRUE(client_.WriteAll("early bytes"));
  SleepMs(50);
  SSL_set_read_ahead(ssl_.get(), 1);
  char c;
  SSL_peek(ssl_.get(), &c, 1);
  ASSERT_TRUE(SSL_has_pending(ssl_.get()));
  OffloadDecision d = CompleteKtlsInstall(sys_, ssl_.get(), server_fd_, OffloadPolicy::kPreferred);
  EXPECT_FALSE(d.ktls);
  EXPECT_EQ(FallbackReason::kBufferedRecords, d.reason);
  EXPECT_TRUE(rx_info_.empty());
}

}  // namespace
}  // namespace ktls::agent::testing
