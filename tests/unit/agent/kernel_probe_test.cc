#include "agent/kernel_probe.h"

#include <dirent.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/mocks/mock_syscalls.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace ktls::agent {
namespace {

using ::ktls::agent::testing::MockSysCalls;
using ::testing::_;
using ::testing::AllOf;
using ::testing::AnyNumber;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::NiceMock;
using ::testing::Not;
using ::testing::Return;
using ::testing::StartsWith;

constexpr SysResult kOk{0, 0};
SysResult Err(int e) { return SysResult{-1, e}; }

constexpr TlsVersion kVersions[] = {TlsVersion::kTls12, TlsVersion::kTls13};
constexpr KtlsCipher kCiphers[] = {KtlsCipher::kAes128Gcm, KtlsCipher::kAes256Gcm,
                                   KtlsCipher::kChaCha20Poly1305};

bool IsUlpTls(const void* val) { return std::memcmp(val, "tls", 3) == 0; }

// A mock kernel that forwards to the real one and tracks every descriptor it hands out, so a
// test can prove that each one was closed.
class KernelProbeTest : public ::testing::Test {
 protected:
  KernelProbeTest() {
    ON_CALL(sys_, Socket).WillByDefault([this](int d, int t, int p) {
      return Track(sys_.real().Socket(d, t, p));
    });
    ON_CALL(sys_, Accept4).WillByDefault([this](int fd, sockaddr* a, socklen_t* l, int f) {
      return Track(sys_.real().Accept4(fd, a, l, f));
    });
    ON_CALL(sys_, Close).WillByDefault([this](int fd) {
      EXPECT_EQ(open_.erase(fd), 1u) << "closed fd " << fd << " not opened by the probe";
      ++closed_;
      return sys_.real().Close(fd);
    });
    // Any setsockopt not singled out by a test (e.g. SO_SNDTIMEO) is allowed and hits the kernel.
    EXPECT_CALL(sys_, SetSockOpt).Times(AnyNumber());
  }

  SysResult Track(SysResult r) {
    if (r.ok()) {
      open_.insert(static_cast<int>(r.rc));
      ++opened_;
    }
    return r;
  }

  // A kernel with kTLS: TCP_ULP "tls" and SOL_TLS succeed (the host kernel can't do either).
  void AcceptUlp() {
    ON_CALL(sys_, SetSockOpt(_, IPPROTO_TCP, TCP_ULP, _, _)).WillByDefault(Return(kOk));
  }
  void AcceptTls(int name) {
    ON_CALL(sys_, SetSockOpt(_, SOL_TLS, name, _, _)).WillByDefault(Return(kOk));
  }

  void ExpectNoFdLeak() {
    EXPECT_TRUE(open_.empty()) << open_.size() << " descriptors left open";
    EXPECT_EQ(opened_, closed_);
  }

  NiceMock<MockSysCalls> sys_;
  std::set<int> open_;
  int opened_ = 0;
  int closed_ = 0;
};

void ExpectAllCellsPresent(const KernelProbeResult& r) {
  ASSERT_EQ(r.cells.size(), 12u);
  for (TlsVersion v : kVersions) {
    for (KtlsCipher c : kCiphers) {
      for (Direction d : {Direction::kTx, Direction::kRx}) {
        EXPECT_THAT(r.cells, ::testing::Contains(AllOf(Field(&ProbeCell::version, v),
                                                       Field(&ProbeCell::cipher, c),
                                                       Field(&ProbeCell::direction, d))));
      }
    }
  }
}

TEST_F(KernelProbeTest, UlpEnoentFailsEveryCellWithOneSocketPair) {
  EXPECT_CALL(sys_, SetSockOpt(_, IPPROTO_TCP, TCP_ULP, ::testing::Truly(IsUlpTls), 3))
      .WillOnce(Return(Err(ENOENT)));
  EXPECT_CALL(sys_, SetSockOpt(_, SOL_TLS, _, _, _)).Times(0);
  EXPECT_CALL(sys_, Socket).Times(2);  // listener + client of the first pair, then nothing
  EXPECT_CALL(sys_, Accept4).Times(1);

  const KernelProbeResult r = ProbeKernel(sys_);

  EXPECT_FALSE(r.ulp_available);
  EXPECT_EQ(r.ulp_errno, ENOENT);
  EXPECT_EQ(r.ulp_reason, "kernel tls module not loaded (TCP_ULP: ENOENT)");
  ExpectAllCellsPresent(r);
  for (const ProbeCell& cell : r.cells) {
    EXPECT_FALSE(cell.ok);
    EXPECT_EQ(cell.err, ENOENT);
    EXPECT_THAT(cell.reason, HasSubstr("tls module not loaded"));
  }
  EXPECT_FALSE(r.AnySupported());
  EXPECT_FALSE(r.Supports(TlsVersion::kTls13, KtlsCipher::kAes128Gcm));
  ExpectNoFdLeak();
}

struct TlsCall {
  int name;
  socklen_t len;
  uint16_t version;
  uint16_t cipher_type;
};

TEST_F(KernelProbeTest, KernelWithKtlsSupportsEverything) {
  AcceptUlp();
  std::vector<TlsCall> calls;
  ON_CALL(sys_, SetSockOpt(_, SOL_TLS, _, _, _))
      .WillByDefault([&calls](int, int, int name, const void* val, socklen_t len) {
        const auto* info = static_cast<const tls_crypto_info*>(val);
        calls.push_back({name, len, info->version, info->cipher_type});
        return kOk;
      });

  const KernelProbeResult r = ProbeKernel(sys_);

  EXPECT_TRUE(r.ulp_available);
  EXPECT_EQ(r.ulp_errno, 0);
  EXPECT_TRUE(r.ulp_reason.empty());
  ExpectAllCellsPresent(r);
  for (const ProbeCell& cell : r.cells) {
    EXPECT_TRUE(cell.ok) << cell.reason;
    EXPECT_EQ(cell.err, 0);
    EXPECT_TRUE(cell.reason.empty());
  }
  for (TlsVersion v : kVersions) {
    for (KtlsCipher c : kCiphers) EXPECT_TRUE(r.Supports(v, c));
  }
  EXPECT_TRUE(r.AnySupported());

  // Each version x cipher x direction was installed once, with the kernel's struct for it.
  ASSERT_EQ(calls.size(), 12u);
  std::set<std::tuple<int, uint16_t, uint16_t>> seen;
  for (const TlsCall& c : calls) {
    EXPECT_TRUE(c.name == TLS_TX || c.name == TLS_RX);
    EXPECT_TRUE(c.version == TLS_1_2_VERSION || c.version == TLS_1_3_VERSION);
    switch (c.cipher_type) {
      case TLS_CIPHER_AES_GCM_128:
        EXPECT_EQ(c.len, sizeof(tls12_crypto_info_aes_gcm_128));
        break;
      case TLS_CIPHER_AES_GCM_256:
        EXPECT_EQ(c.len, sizeof(tls12_crypto_info_aes_gcm_256));
        break;
      case TLS_CIPHER_CHACHA20_POLY1305:
        EXPECT_EQ(c.len, sizeof(tls12_crypto_info_chacha20_poly1305));
        break;
      default:
        ADD_FAILURE() << "unexpected cipher_type " << c.cipher_type;
    }
    seen.insert({c.name, c.version, c.cipher_type});
  }
  EXPECT_EQ(seen.size(), 12u);

  const std::string table = r.FormatTable();
  EXPECT_THAT(table, HasSubstr("TCP_ULP \"tls\" available"));
  EXPECT_THAT(table, HasSubstr("TLSv1.3  AES-128-GCM        tx=ok          rx=ok"));
  EXPECT_THAT(table, HasSubstr("TLSv1.2  CHACHA20-POLY1305  tx=ok          rx=ok"));
  EXPECT_THAT(table, Not(HasSubstr("failure")));
  ExpectNoFdLeak();
}

TEST_F(KernelProbeTest, RxEnoprotooptFailsOnlyRxCells) {
  AcceptUlp();
  AcceptTls(TLS_TX);
  EXPECT_CALL(sys_, SetSockOpt(_, SOL_TLS, TLS_RX, _, _))
      .Times(6)
      .WillRepeatedly(Return(Err(ENOPROTOOPT)));

  const KernelProbeResult r = ProbeKernel(sys_);

  EXPECT_TRUE(r.ulp_available);
  ExpectAllCellsPresent(r);
  for (const ProbeCell& cell : r.cells) {
    if (cell.direction == Direction::kTx) {
      EXPECT_TRUE(cell.ok) << cell.reason;
    } else {
      EXPECT_FALSE(cell.ok);
      EXPECT_EQ(cell.err, ENOPROTOOPT);
      EXPECT_EQ(cell.reason, "kernel has no kTLS (SOL_TLS TLS_RX: ENOPROTOOPT)");
    }
  }
  EXPECT_TRUE(r.Supports(TlsVersion::kTls13, KtlsCipher::kAes256Gcm, Direction::kTx));
  EXPECT_FALSE(r.Supports(TlsVersion::kTls13, KtlsCipher::kAes256Gcm, Direction::kRx));
  EXPECT_FALSE(r.Supports(TlsVersion::kTls13, KtlsCipher::kAes256Gcm));
  EXPECT_TRUE(r.AnySupported());

  const std::string table = r.FormatTable();
  EXPECT_THAT(table, HasSubstr("TLSv1.2  AES-256-GCM        tx=ok          rx=ENOPROTOOPT"));
  EXPECT_THAT(table, HasSubstr("failure: kernel has no kTLS (SOL_TLS TLS_RX: ENOPROTOOPT)"));
  ExpectNoFdLeak();
}

TEST_F(KernelProbeTest, TxEinvalForOneCipherIsReportedPerCell) {
  AcceptUlp();
  AcceptTls(TLS_RX);
  ON_CALL(sys_, SetSockOpt(_, SOL_TLS, TLS_TX, _, _))
      .WillByDefault([](int, int, int, const void* val, socklen_t) {
        const auto* info = static_cast<const tls_crypto_info*>(val);
        return info->cipher_type == TLS_CIPHER_CHACHA20_POLY1305 ? Err(EINVAL) : kOk;
      });

  const KernelProbeResult r = ProbeKernel(sys_);

  for (TlsVersion v : kVersions) {
    EXPECT_TRUE(r.Supports(v, KtlsCipher::kAes128Gcm));
    EXPECT_TRUE(r.Supports(v, KtlsCipher::kChaCha20Poly1305, Direction::kRx));
    EXPECT_FALSE(r.Supports(v, KtlsCipher::kChaCha20Poly1305, Direction::kTx));
  }
  for (const ProbeCell& cell : r.cells) {
    if (!cell.ok) {
      EXPECT_EQ(cell.reason, "kernel rejected the cipher or version (SOL_TLS TLS_TX: EINVAL)");
    }
  }
  ExpectNoFdLeak();
}

// Each way making the loopback pair can fail: the cells fail with a reason naming the step and
// the errno, TCP_ULP is never tried, nothing crashes and nothing leaks.
struct SetupFailureCase {
  const char* name;
  int err;
  const char* want_in_reason;
};
void PrintTo(const SetupFailureCase& c, std::ostream* os) { *os << c.name; }

class KernelProbeSetupFailureTest : public KernelProbeTest,
                                    public ::testing::WithParamInterface<SetupFailureCase> {};

TEST_P(KernelProbeSetupFailureTest, CellsFailWithReasonAndNoLeak) {
  const SetupFailureCase& c = GetParam();
  const std::string step = c.name;
  int socket_calls = 0;
  ON_CALL(sys_, Socket).WillByDefault([&, this](int d, int t, int p) {
    ++socket_calls;
    const bool fail =
        (step == "socket-listener") || (step == "socket-client" && socket_calls % 2 == 0);
    return fail ? Err(c.err) : Track(sys_.real().Socket(d, t, p));
  });
  if (step == "bind") ON_CALL(sys_, Bind).WillByDefault(Return(Err(c.err)));
  if (step == "listen") ON_CALL(sys_, Listen).WillByDefault(Return(Err(c.err)));
  if (step == "getsockname") ON_CALL(sys_, GetSockName).WillByDefault(Return(Err(c.err)));
  if (step == "connect") ON_CALL(sys_, Connect).WillByDefault(Return(Err(c.err)));
  if (step == "accept4") ON_CALL(sys_, Accept4).WillByDefault(Return(Err(c.err)));
  EXPECT_CALL(sys_, SetSockOpt(_, IPPROTO_TCP, TCP_ULP, _, _)).Times(0);
  EXPECT_CALL(sys_, SetSockOpt(_, SOL_TLS, _, _, _)).Times(0);

  const KernelProbeResult r = ProbeKernel(sys_);

  ExpectAllCellsPresent(r);
  for (const ProbeCell& cell : r.cells) {
    EXPECT_FALSE(cell.ok);
    EXPECT_EQ(cell.err, c.err);
    EXPECT_THAT(cell.reason, HasSubstr("loopback TCP pair"));
    EXPECT_THAT(cell.reason, HasSubstr(c.want_in_reason));
  }
  EXPECT_FALSE(r.ulp_available);
  EXPECT_EQ(r.ulp_errno, c.err);
  EXPECT_THAT(r.ulp_reason, StartsWith("not probed: "));
  EXPECT_THAT(r.ulp_reason, HasSubstr(c.want_in_reason));
  EXPECT_FALSE(r.AnySupported());
  EXPECT_THAT(r.FormatTable(), HasSubstr("unavailable: not probed"));
  ExpectNoFdLeak();
}

INSTANTIATE_TEST_SUITE_P(
    Steps, KernelProbeSetupFailureTest,
    ::testing::Values(
        SetupFailureCase{"socket-listener", EMFILE, "out of file descriptors, socket: EMFILE"},
        SetupFailureCase{"socket-client", EMFILE, "out of file descriptors, socket: EMFILE"},
        SetupFailureCase{"bind", EADDRNOTAVAIL, "bind 127.0.0.1:0: EADDRNOTAVAIL"},
        SetupFailureCase{"listen", ENOBUFS, "listen: ENOBUFS"},
        SetupFailureCase{"getsockname", ENOBUFS, "getsockname: ENOBUFS"},
        SetupFailureCase{"connect", ECONNREFUSED, "connect to 127.0.0.1: ECONNREFUSED"},
        SetupFailureCase{"accept4", EMFILE, "accept4: EMFILE"}),
    [](const ::testing::TestParamInfo<SetupFailureCase>& info) {
      std::string name = info.param.name;
      for (char& ch : name) {
        if (ch == '-') ch = '_';
      }
      return name;
    });

TEST_F(KernelProbeTest, TransientEmfileFailsOnlyTheAffectedPair) {
  AcceptUlp();
  AcceptTls(TLS_TX);
  AcceptTls(TLS_RX);
  int socket_calls = 0;
  ON_CALL(sys_, Socket).WillByDefault([&, this](int d, int t, int p) {
    return ++socket_calls == 1 ? Err(EMFILE) : Track(sys_.real().Socket(d, t, p));
  });

  const KernelProbeResult r = ProbeKernel(sys_);

  EXPECT_TRUE(r.ulp_available);
  EXPECT_FALSE(r.Supports(TlsVersion::kTls12, KtlsCipher::kAes128Gcm, Direction::kTx));
  EXPECT_FALSE(r.Supports(TlsVersion::kTls12, KtlsCipher::kAes128Gcm, Direction::kRx));
  EXPECT_TRUE(r.Supports(TlsVersion::kTls12, KtlsCipher::kAes256Gcm));
  EXPECT_TRUE(r.Supports(TlsVersion::kTls13, KtlsCipher::kChaCha20Poly1305));
  EXPECT_THAT(r.FormatTable(), HasSubstr("TLSv1.2  AES-128-GCM        tx=EMFILE      rx=EMFILE"));
  ExpectNoFdLeak();
}

// ---- DescribeKtlsErrno ---------------------------------------------------------------------

TEST(DescribeKtlsErrnoTest, DocumentedExamples) {
  EXPECT_EQ(DescribeKtlsErrno("ulp", ENOENT), "kernel tls module not loaded (TCP_ULP: ENOENT)");
  EXPECT_EQ(DescribeKtlsErrno("tx", ENOPROTOOPT),
            "kernel has no kTLS (SOL_TLS TLS_TX: ENOPROTOOPT)");
  EXPECT_EQ(DescribeKtlsErrno("rx", EINVAL),
            "kernel rejected the cipher or version (SOL_TLS TLS_RX: EINVAL)");
}

TEST(DescribeKtlsErrnoTest, EveryMessageNamesStepAndErrno) {
  struct Case {
    const char* step;
    int err;
    const char* meaning;
    const char* tail;
  };
  const Case kCases[] = {
      {"ulp", EEXIST, "ULP is already set", "(TCP_ULP: EEXIST)"},
      {"ulp", ENOPROTOOPT, "kernel has no kTLS", "(TCP_ULP: ENOPROTOOPT)"},
      {"ulp", ENOTCONN, "not a connected TCP socket", "(TCP_ULP: ENOTCONN)"},
      {"ulp", EPERM, "CAP_NET_ADMIN", "(TCP_ULP: EPERM)"},
      {"ulp", EACCES, "modprobe tls", "(TCP_ULP: EACCES)"},
      {"tx", EBUSY, "already installed", "(SOL_TLS TLS_TX: EBUSY)"},
      {"rx", ENOMEM, "out of memory", "(SOL_TLS TLS_RX: ENOMEM)"},
      {"tx", ENOENT, "crypto algorithm", "(SOL_TLS TLS_TX: ENOENT)"},
      {"rx", ENOTCONN, "not a connected TCP socket", "(SOL_TLS TLS_RX: ENOTCONN)"},
      {"rx", EPERM, "not permitted", "(SOL_TLS TLS_RX: EPERM)"},
      {"tx", 524, "does not support", "(SOL_TLS TLS_TX: ENOTSUPP)"},
      {"tx", 9999, "kTLS setup failed", "(SOL_TLS TLS_TX: errno 9999)"},
  };
  for (const Case& c : kCases) {
    const std::string msg = DescribeKtlsErrno(c.step, c.err);
    EXPECT_THAT(msg, HasSubstr(c.meaning)) << c.step << " " << c.err;
    EXPECT_THAT(msg, ::testing::EndsWith(c.tail)) << c.step << " " << c.err;
  }
}

// ---- FormatTable ---------------------------------------------------------------------------

TEST(FormatTableTest, HeaderRowsAndUlpLine) {
  KernelProbeResult r;
  r.ulp_available = false;
  r.ulp_errno = ENOENT;
  r.ulp_reason = DescribeKtlsErrno("ulp", ENOENT);
  for (TlsVersion v : kVersions) {
    for (KtlsCipher c : kCiphers) {
      for (Direction d : {Direction::kTx, Direction::kRx}) {
        r.cells.push_back({v, c, d, false, ENOENT, r.ulp_reason});
      }
    }
  }
  EXPECT_EQ(r.FormatTable(),
            "kTLS kernel probe: TCP_ULP \"tls\" unavailable: kernel tls module not loaded "
            "(TCP_ULP: ENOENT)\n"
            "  version  cipher             tx             rx\n"
            "  TLSv1.2  AES-128-GCM        tx=ENOENT      rx=ENOENT\n"
            "  TLSv1.2  AES-256-GCM        tx=ENOENT      rx=ENOENT\n"
            "  TLSv1.2  CHACHA20-POLY1305  tx=ENOENT      rx=ENOENT\n"
            "  TLSv1.3  AES-128-GCM        tx=ENOENT      rx=ENOENT\n"
            "  TLSv1.3  AES-256-GCM        tx=ENOENT      rx=ENOENT\n"
            "  TLSv1.3  CHACHA20-POLY1305  tx=ENOENT      rx=ENOENT\n");
}

// ---- The real kernel of this host ----------------------------------------------------------

int CountOpenFds() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d) != nullptr) ++n;
    closedir(d);
  }
  return n;
}

// Passes on a kernel with or without kTLS, but the result must be self-consistent. With
// KTLS_EXPECT_OFFLOAD=1 (the VM suite) "no kTLS" is a failure, not a pass.
TEST(KernelProbeRealKernelTest, ResultIsConsistent) {
  const int fds_before = CountOpenFds();
  const KernelProbeResult r = ProbeKernel(RealSysCalls());
  EXPECT_EQ(CountOpenFds(), fds_before);
  std::cout << r.FormatTable();

  ExpectAllCellsPresent(r);
  if (r.ulp_available) {
    EXPECT_EQ(r.ulp_errno, 0);
    EXPECT_TRUE(r.AnySupported()) << r.FormatTable();
  } else {
    EXPECT_NE(r.ulp_errno, 0);
    EXPECT_FALSE(r.ulp_reason.empty());
    EXPECT_FALSE(r.AnySupported());
    if (r.ulp_errno == ENOENT) {
      EXPECT_EQ(r.ulp_reason, "kernel tls module not loaded (TCP_ULP: ENOENT)");
    }
  }
  for (const ProbeCell& cell : r.cells) {
    EXPECT_EQ(cell.ok, cell.reason.empty()) << cell.reason;
    EXPECT_EQ(cell.ok, cell.err == 0);
  }

  const char* expect = std::getenv("KTLS_EXPECT_OFFLOAD");
  if (expect != nullptr && std::string(expect) == "1") {
    EXPECT_TRUE(r.ulp_available) << r.FormatTable();
    for (TlsVersion v : kVersions) {
      for (KtlsCipher c : kCiphers) {
        EXPECT_TRUE(r.Supports(v, c)) << TlsVersionName(v) << " " << KtlsCipherName(c) << "\n"
                                      << r.FormatTable();
      }
    }
  }
}

}  // namespace
}  // namespace ktls::agent
