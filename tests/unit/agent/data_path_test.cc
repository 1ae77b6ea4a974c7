// The data-path decision (agent/data_path.cc) after a real TLS 1.3 handshake, with the kernel's
// answers injected through MockSysCalls: the host has no kTLS, so TX is made to fail during the
// handshake and the test flips the BIO's TX state afterwards to reach the manual RX install,
// whose setsockopt(TLS_RX) it answers. One failure (ENOPROTOOPT) relays with its reason under
// offload=preferred and refuses under offload=required; each outcome is counted once.
#include "agent/data_path.h"

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
#include "tests/mocks/mock_syscalls.h"
#include "tests/unit/agent/agent_test_util.h"
#include "tests/unit/agent/fake_ktls_setsockopt.h"
#include "tests/unit/agent/loopback_listener.h"

namespace ktls::agent::testing {
namespace {

using ::testing::_;
using ::testing::NiceMock;
using ::testing::Return;

uint64_t Fallbacks(const AgentStats& s, FallbackReason r) {
  return s.fallbacks[static_cast<size_t>(r)].load();
}

class DataPathTest : public KtlsInstallFixture<::testing::Test> {
 protected:
  void SetUp() override {
    KtlsInstallFixture::SetUp();
    if (HasFatalFailure()) return;
    // A server-side TLS 1.3 handshake (client in a thread), TX then pretended installed.
    Handshake(TLS1_3_VERSION);
    if (HasFatalFailure()) return;
    ASSERT_NE(nullptr, SocketBioState(SSL_get_wbio(ssl_.get())));
    real_ktls_ = *SocketBioState(SSL_get_wbio(ssl_.get()));
    PretendTxInstalled();
  }

  // What the host really left: no ULP (ENOENT), so no TX; OpenSSL writes records itself.
  void UndoPretendedTx() { *SocketBioState(SSL_get_wbio(ssl_.get())) = real_ktls_; }

  DataPathDecision Decide(OffloadPolicy policy, std::optional<Tls13RxKey> rx = std::nullopt) {
    return DecideDataPath(sys_, stats_, policy, TlsRole::kAccept, ssl_.get(), server_fd_, rx);
  }

  AgentStats stats_;
  SocketBioKtlsState real_ktls_;
};

TEST_F(DataPathTest, InstalledKtlsHandsOff) {
  DataPathDecision d = Decide(OffloadPolicy::kPreferred);
  EXPECT_EQ(DataPath::kHandoff, d.path) << d.offload.reason_text;
  EXPECT_TRUE(d.offload.ktls);
  EXPECT_EQ(1u, stats_.offload_ktls.load());
  EXPECT_EQ(0u, stats_.offload_relay.load());
  EXPECT_EQ(1u, stats_.ktls_rx_installed.load());
  EXPECT_FALSE(rx_info_.empty());
}

TEST_F(DataPathTest, RxEnoprotooptRelaysWithTheReason) {
  rx_result_ = SysResult{-1, ENOPROTOOPT};
  DataPathDecision d = Decide(OffloadPolicy::kPreferred);
  EXPECT_EQ(DataPath::kRelay, d.path);
  EXPECT_EQ(FallbackReason::kRxInstallFailed, d.offload.reason);
  EXPECT_NE(std::string::npos, d.offload.reason_text.find("ENOPROTOOPT")) << d.offload.reason_text;
  EXPECT_EQ(1u, stats_.offload_relay.load());
  EXPECT_EQ(1u, Fallbacks(stats_, FallbackReason::kRxInstallFailed));
  EXPECT_EQ(1u, stats_.ktls_rx_failed.load());
  EXPECT_EQ(0u, stats_.offload_ktls.load());
  EXPECT_EQ(0u, stats_.offload_refused.load());
  // The server's captured secret was used and wiped.
  EXPECT_EQ(0u, state_.client_app_secret_len);
}

TEST_F(DataPathTest, RxEnoprotooptUnderOffloadRequiredRefuses) {
  rx_result_ = SysResult{-1, ENOPROTOOPT};
  DataPathDecision d = Decide(OffloadPolicy::kRequired);
  EXPECT_EQ(DataPath::kRefuse, d.path);
  EXPECT_EQ(FallbackReason::kRxInstallFailed, d.offload.reason);
  EXPECT_EQ(1u, stats_.offload_refused.load());
  EXPECT_EQ(0u, stats_.offload_relay.load());
  EXPECT_EQ(0u, Fallbacks(stats_, FallbackReason::kRxInstallFailed));
}

TEST_F(DataPathTest, AnExplicitKeyIsInstalledWithItsRecordSequence) {
  // The dialer's way: its own captured secret and the records it read under it (here the
  // client's secret, as the server would see it, and 3 records).
  std::string secret = absl::HexStringToBytes(client_.ClientTrafficSecretHex());
  ASSERT_FALSE(secret.empty());
  Tls13RxKey key{
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(secret.data()), secret.size()), 3, true};
  DataPathDecision d = Decide(OffloadPolicy::kPreferred, key);
  ASSERT_EQ(DataPath::kHandoff, d.path) << d.offload.reason_text;
  auto cipher =
      KtlsCipherFromSuiteId(SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(ssl_.get())));
  ASSERT_TRUE(cipher.has_value());
  auto expected = CryptoInfo::FromTls13TrafficSecret(Direction::kRx, *cipher, key.secret, 3);
  ASSERT_TRUE(expected.ok());
  ASSERT_EQ(expected->size(), rx_info_.size());
  EXPECT_EQ(0, memcmp(expected->data(), rx_info_.data(), rx_info_.size()));
}

TEST_F(DataPathTest, AKeyInsideARecordIsNotInstalled) {
  std::string secret = absl::HexStringToBytes(client_.ClientTrafficSecretHex());
  Tls13RxKey key{
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(secret.data()), secret.size()), 1,
      /*at_record_boundary=*/false};
  DataPathDecision d = Decide(OffloadPolicy::kPreferred, key);
  EXPECT_EQ(DataPath::kRelay, d.path);
  EXPECT_EQ(FallbackReason::kBufferedRecords, d.offload.reason);
  EXPECT_TRUE(rx_info_.empty());
}

// EnterDataPath carries the decision out on the stream a session released.
class EnterDataPathTest : public DataPathTest {
 protected:
  void SetUp() override {
    DataPathTest::SetUp();
    auto loop = EventLoop::Create(sys_);
    ASSERT_TRUE(loop.ok());
    loop_ = std::move(*loop);
    certs_ = std::make_unique<CertStore>(state_.certificates);
    dir_ = mkdtemp(tmpl_);
    HandoffBrokerOptions bo;
    bo.socket_path = dir_ + "/handoff.sock";
    auto broker = HandoffBroker::Create(sys_, bo, stats_);
    ASSERT_TRUE(broker.ok()) << broker.status();
    broker_ = std::move(*broker);
    ctx_ = std::make_unique<DataPlaneContext>(DataPlaneContext{
        sys_, *loop_, *tls_, *certs_, stats_, *broker_, OffloadPolicy::kPreferred, 65536, next_id_,
        [](EventHandler*) {}, [this](std::unique_ptr<EventHandler>) { ++adopted_; }});
  }
  void TearDown() override {
    broker_.reset();
    (void)system(("rm -rf " + dir_).c_str());
    DataPathTest::TearDown();
  }
  TlsStream Stream() {
    TlsStream s{UniqueFd(sys_, server_fd_), std::move(ssl_)};
    server_fd_ = -1;
    return s;
  }

  char tmpl_[40] = "/tmp/ktls-data-path-test-XXXXXX";
  std::string dir_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<CertStore> certs_;
  std::unique_ptr<HandoffBroker> broker_;
  std::atomic<uint64_t> next_id_{1};
  std::unique_ptr<DataPlaneContext> ctx_;
  int adopted_ = 0;
};

TEST_F(EnterDataPathTest, HandoffGivesTheSocketItself) {
  DataPathDecision d = Decide(OffloadPolicy::kPreferred);
  ASSERT_EQ(DataPath::kHandoff, d.path);
  const int fd = server_fd_;
  absl::StatusOr<UniqueFd> out = EnterDataPath(*ctx_, d, 1, Stream(), nullptr);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(fd, out->get());
  EXPECT_EQ(0, adopted_);
}

TEST_F(EnterDataPathTest, RefusalSendsCloseNotifyAndSaysWhy) {
  // The close_notify must be written by OpenSSL in userspace: no pretended kTLS TX here.
  UndoPretendedTx();
  DataPathDecision d = Decide(OffloadPolicy::kRequired);
  ASSERT_EQ(DataPath::kRefuse, d.path);
  EXPECT_EQ(FallbackReason::kModuleMissing, d.offload.reason);
  absl::StatusOr<UniqueFd> out = EnterDataPath(*ctx_, d, 1, Stream(), nullptr);
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), ::testing::StartsWith("offload=required: "));
  EXPECT_NE(std::string::npos, out.status().message().find("ENOENT")) << out.status();
  EXPECT_TRUE(client_.ReadCloseNotify());
  EXPECT_EQ(0, adopted_);
}

TEST_F(EnterDataPathTest, ARelayWithoutASocketpairIsARelayError) {
  rx_result_ = SysResult{-1, ENOPROTOOPT};
  DataPathDecision d = Decide(OffloadPolicy::kPreferred);
  ASSERT_EQ(DataPath::kRelay, d.path);
  EXPECT_CALL(sys_, SocketPair(_, _, _, _)).WillOnce(Return(SysResult{-1, EMFILE}));
  absl::StatusOr<UniqueFd> out = EnterDataPath(*ctx_, d, 1, Stream(), nullptr);
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), ::testing::StartsWith("socketpair for relay: "));
  EXPECT_EQ(1u, stats_.relay_errors.load());
  EXPECT_EQ(0, adopted_);
  EXPECT_TRUE(client_.ServerClosed());
}

}  // namespace
}  // namespace ktls::agent::testing
