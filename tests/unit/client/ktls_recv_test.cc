// ktls_recv's loop against a fake kTLS kernel (records with TLS_GET_RECORD_TYPE control
// messages, split records, EAGAIN), and against real socketpairs and loopback TCP, where the host
// kernel (no CONFIG_TLS) returns plain streams.
#include <fcntl.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "client/lib/io.h"
#include "ktls/ktls_client.h"
#include "ktls/wire.h"
#include "tests/unit/client/fake_agent.h"

namespace ktls::client {
namespace {

using Bytes = std::vector<uint8_t>;

// Plays net/tls/tls_sw.c's recvmsg: one record type per call; consecutive data records are
// merged up to the caller's length, a non-data record is returned alone; a record longer than the
// buffer is returned in pieces; without room for the type, a non-data record fails with EIO.
class FakeKtlsKernel : public RecvSysCalls {
 public:
  struct Record {
    uint8_t type = 0;  // 0: plain bytes with no control message (a non-kTLS socket)
    Bytes bytes;
    int err = 0;  // != 0: recvmsg fails with this errno (consumed)
    bool ctrunc_without_type = false;
    bool ctrunc_after_type = false;  // the type arrived, a later control message did not fit
    int stray_fd = -1;               // sent along as SCM_RIGHTS
    bool timestamp_first = false;    // an SCM_TIMESTAMP message before the record type
  };

  void Push(Record r) { queue_.push_back(std::move(r)); }
  void PushRecord(uint8_t type, Bytes b) { Push(Record{type, std::move(b)}); }
  // Records that "arrive" the first time ktls_recv polls.
  void PushLater(uint8_t type, Bytes b) { later_.push_back(Record{type, std::move(b)}); }
  void PushError(int err) {
    Record r;
    r.err = err;
    Push(std::move(r));
  }
  void SetEof() { eof_ = true; }

  IoResult RecvMsg(int fd, msghdr* msg, int flags) override {
    ++recv_calls;
    flags_seen.push_back(flags);
    msg->msg_flags = 0;
    const size_t controllen = msg->msg_controllen;
    msg->msg_controllen = 0;
    if (shut_rd || queue_.empty()) {
      if (shut_rd || eof_) return {0, 0};
      return {-1, EAGAIN};
    }
    Record& head = queue_.front();
    if (head.err != 0) {
      const int err = head.err;
      queue_.pop_front();
      return {-1, err};
    }
    const bool peek = flags & MSG_PEEK;
    size_t len = 0;
    for (size_t i = 0; i < msg->msg_iovlen; ++i) len += msg->msg_iov[i].iov_len;
    const uint8_t type = head.type;
    if (!WriteControl(msg, controllen, head, peek)) return {-1, EIO};
    std::string gathered(len, '\0');
    const size_t copied = TakeRecords(type, peek, &gathered);
    // Scatter over the caller's buffers, as the kernel does for readv-style calls.
    size_t off = 0;
    for (size_t i = 0; i < msg->msg_iovlen && off < copied; ++i) {
      const size_t n = std::min(msg->msg_iov[i].iov_len, copied - off);
      std::memcpy(msg->msg_iov[i].iov_base, gathered.data() + off, n);
      off += n;
    }
    return {static_cast<ssize_t>(copied), 0};
  }

  // The control messages for the record at the head of the queue; false when a non-data record
  // has no room for its type (the kernel's EIO).
  static bool WriteControl(msghdr* msg, size_t controllen, Record& head, bool peek) {
    size_t used = 0;
    if (head.timestamp_first && controllen >= CMSG_SPACE(sizeof(timeval))) {
      cmsghdr* c = static_cast<cmsghdr*>(msg->msg_control);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_TIMESTAMP;
      c->cmsg_len = CMSG_LEN(sizeof(timeval));
      const timeval tv{1, 2};
      std::memcpy(CMSG_DATA(c), &tv, sizeof(tv));
      used = CMSG_SPACE(sizeof(timeval));
    }
    if (head.ctrunc_without_type) {
      msg->msg_flags |= MSG_CTRUNC;
    } else if (head.type != 0) {
      if (controllen < CMSG_SPACE(1)) {
        if (head.type != KTLS_RECORD_APPLICATION_DATA) return false;
      } else {
        cmsghdr* c = reinterpret_cast<cmsghdr*>(static_cast<char*>(msg->msg_control) + used);
        c->cmsg_level = SOL_TLS;
        c->cmsg_type = TLS_GET_RECORD_TYPE;
        c->cmsg_len = CMSG_LEN(1);
        *CMSG_DATA(c) = head.type;
        used += CMSG_SPACE(1);
      }
      if (head.ctrunc_after_type) msg->msg_flags |= MSG_CTRUNC;
    }
    if (head.stray_fd >= 0 && controllen >= used + CMSG_SPACE(sizeof(int))) {
      cmsghdr* c = reinterpret_cast<cmsghdr*>(static_cast<char*>(msg->msg_control) + used);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &head.stray_fd, sizeof(int));
      used += CMSG_SPACE(sizeof(int));
      if (!peek) head.stray_fd = -1;
    }
    msg->msg_controllen = used;
    return true;
  }

  // Copies records of `type` from the queue into *out (consuming them unless peeking); returns
  // the bytes copied. Only data records (and plain bytes) are merged; a control record ends it.
  size_t TakeRecords(uint8_t type, bool peek, std::string* out) {
    const size_t len = out->size();
    size_t copied = 0;
    size_t index = 0;
    while (index < queue_.size() && copied < len) {
      Record& r = queue_[index];
      if (r.type != type || r.err != 0 || r.ctrunc_without_type) break;
      const size_t n = std::min(len - copied, r.bytes.size());
      std::memcpy(out->data() + copied, r.bytes.data(), n);
      copied += n;
      const bool whole = n == r.bytes.size();
      if (!peek) {
        r.bytes.erase(r.bytes.begin(), r.bytes.begin() + n);
        if (whole) {
          queue_.erase(queue_.begin() + index);
        } else {
          ++index;
        }
      } else {
        ++index;
      }
      if (type != KTLS_RECORD_APPLICATION_DATA && type != 0) break;
      if (!whole) break;
    }
    return copied;
  }

  IoResult Shutdown(int fd, int how) override {
    shutdowns.push_back(how);
    if (how == SHUT_RD) shut_rd = true;
    return {0, 0};
  }

  IoResult Poll(pollfd* fds, nfds_t n, int timeout_ms) override {
    ++poll_calls;
    if (!later_.empty()) {
      for (Record& r : later_) queue_.push_back(std::move(r));
      later_.clear();
      return {1, 0};
    }
    // Nothing will arrive: time passes as it would in the kernel.
    std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
    return {0, 0};
  }

  IoResult Close(int fd) override {
    closed.push_back(fd);
    return {0, 0};
  }

  // ktls_shutdown's side: a socket with the tls ULP and TX keys unless told otherwise; sendmsg
  // results are taken from `send_results` (default: the whole 2-byte record went out).
  IoResult SendMsg(int fd, const msghdr* msg, int flags) override {
    sent.emplace_back(static_cast<const char*>(msg->msg_iov[0].iov_base), msg->msg_iov[0].iov_len);
    const cmsghdr* c = CMSG_FIRSTHDR(msg);
    sent_record_types.push_back(c != nullptr && c->cmsg_level == SOL_TLS &&
                                        c->cmsg_type == TLS_SET_RECORD_TYPE
                                    ? *CMSG_DATA(c)
                                    : 0);
    if (!send_results.empty()) {
      IoResult r = send_results.front();
      send_results.pop_front();
      return r;
    }
    return {static_cast<ssize_t>(msg->msg_iov[0].iov_len), 0};
  }
  IoResult GetSockOpt(int fd, int level, int name, void* value, socklen_t* len) override {
    if (level == SOL_TCP && name == TCP_ULP) {
      if (!tls_ulp) return {-1, ENOENT};
      std::memcpy(value, "tls", 4);
      *len = 4;
      return {0, 0};
    }
    if (level == SOL_TLS && name == TLS_TX) return tx_keys ? IoResult{0, 0} : IoResult{-1, EBUSY};
    if (level == SOL_TLS && name == TLS_RX) return {0, 0};
    return {-1, ENOPROTOOPT};
  }
  std::string KernelRelease() override { return release; }

  std::string release = "6.1.0-56-cloud-amd64";
  bool tls_ulp = true;
  bool tx_keys = true;
  std::deque<IoResult> send_results;
  std::vector<std::string> sent;
  std::vector<uint8_t> sent_record_types;

  int recv_calls = 0;
  int poll_calls = 0;
  bool shut_rd = false;
  std::vector<int> flags_seen;
  std::vector<int> closed;
  std::vector<int> shutdowns;

 private:
  std::deque<Record> queue_;
  std::deque<Record> later_;
  bool eof_ = false;
};

constexpr int kFd = 42;  // any number: the fake does not look at it

Bytes Text(const std::string& s) { return Bytes(s.begin(), s.end()); }

Bytes Ticket(size_t body) {
  Bytes m = {kHandshakeNewSessionTicket, static_cast<uint8_t>(body >> 16),
             static_cast<uint8_t>(body >> 8), static_cast<uint8_t>(body)};
  m.resize(4 + body, 0x77);
  return m;
}

// ktls_recv against one fake kernel; each read leaves its result in n_ and info_.
class KtlsRecvTest : public ::testing::Test {
 protected:
  // Reads into a buffer of `len` bytes: what was read.
  std::string Recv(size_t len, int flags = 0) {
    std::string buf(len, '\0');
    n_ = KtlsRecv(k_, kFd, buf.data(), buf.size(), flags, &info_);
    buf.resize(n_ > 0 ? n_ : 0);
    return buf;
  }
  // Reads into a buffer of `len` bytes and expects -1 with errno `err`.
  ::testing::AssertionResult RecvFails(size_t len, int err, int flags = 0) {
    Recv(len, flags);
    const int got = errno;
    if (n_ != -1) return ::testing::AssertionFailure() << "returned " << n_ << ", not -1";
    if (got != err) {
      return ::testing::AssertionFailure()
             << "errno " << got << " (" << std::strerror(got) << "), expected " << err << " ("
             << std::strerror(err) << ")";
    }
    return ::testing::AssertionSuccess();
  }

  FakeKtlsKernel k_;
  ktls_record_info info_{};
  ssize_t n_ = 0;
};

TEST_F(KtlsRecvTest, ReturnsApplicationData) {
  k_.PushRecord(kRecordApplicationData, Text("hello "));
  k_.PushRecord(kRecordApplicationData, Text("world"));
  EXPECT_EQ("hello world", Recv(64));  // data records merge, as in the kernel
  EXPECT_TRUE(info_.tls_rx);
  EXPECT_EQ(KTLS_RECORD_APPLICATION_DATA, info_.record_type);
  EXPECT_EQ(nullptr, info_.error);
}

TEST_F(KtlsRecvTest, PlainBytesWithoutRecordTypeArePassedThrough) {
  k_.PushRecord(0, Text("relay bytes"));
  EXPECT_EQ("relay bytes", Recv(64));
  EXPECT_FALSE(info_.tls_rx);
  EXPECT_EQ(KTLS_RECORD_APPLICATION_DATA, info_.record_type);
}

TEST_F(KtlsRecvTest, SessionTicketsAreSkippedSilently) {
  k_.PushRecord(kRecordHandshake, Ticket(180));
  k_.PushRecord(kRecordHandshake, Ticket(180));
  k_.PushRecord(kRecordApplicationData, Text("GET /"));
  EXPECT_EQ("GET /", Recv(4096));
  EXPECT_EQ(2u, info_.skipped_records);
}

TEST_F(KtlsRecvTest, TicketWithNothingBehindItIsEagainNotData) {
  k_.PushRecord(kRecordHandshake, Ticket(100));
  EXPECT_TRUE(RecvFails(4096, EAGAIN, MSG_DONTWAIT));
  EXPECT_EQ(1u, info_.skipped_records);
  EXPECT_EQ(nullptr, info_.error);
}

TEST_F(KtlsRecvTest, CloseNotifyIsEofAndIsRemembered) {
  k_.PushRecord(kRecordAlert, {1, 0});
  k_.PushRecord(kRecordApplicationData, Text("after close_notify"));  // must never be seen
  Recv(4096);
  EXPECT_EQ(0, n_);
  EXPECT_EQ(KTLS_RECORD_ALERT, info_.record_type);
  EXPECT_STREQ("close_notify", info_.alert_name);
  EXPECT_TRUE(k_.shut_rd);
  Recv(4096);
  EXPECT_EQ(0, n_);
}

TEST_F(KtlsRecvTest, FatalAlertIsConnResetWithItsName) {
  k_.PushRecord(kRecordAlert, {2, 20});
  EXPECT_TRUE(RecvFails(4096, ECONNRESET));
  EXPECT_EQ(2, info_.alert_level);
  EXPECT_EQ(20, info_.alert_description);
  EXPECT_STREQ("bad_record_mac", info_.alert_name);
  EXPECT_NE(nullptr, info_.error);
}

TEST_F(KtlsRecvTest, KeyUpdateIsEkeyexpired) {
  k_.PushRecord(kRecordHandshake, {kHandshakeKeyUpdate, 0, 0, 1, 1});
  EXPECT_TRUE(RecvFails(4096, EKEYEXPIRED));
  EXPECT_STREQ("peer KeyUpdate: kernel lacks TLS 1.3 rekey", info_.error);
}

TEST_F(KtlsRecvTest, SmallBufferReadsTheWholeControlRecordFirst) {
  // A 3-byte buffer gets the ticket in pieces; the rest is fetched without blocking and only up
  // to the end of the message, so the data record behind it is untouched.
  k_.PushRecord(kRecordHandshake, Ticket(150));
  k_.PushRecord(kRecordApplicationData, Text("abcdef"));
  EXPECT_EQ("abc", Recv(3));
  EXPECT_EQ(1u, info_.skipped_records);
  for (size_t i = 1; i + 1 < k_.flags_seen.size(); ++i) {
    EXPECT_TRUE(k_.flags_seen[i] & MSG_DONTWAIT) << "continuation read " << i << " may block";
  }
  EXPECT_EQ("def", Recv(3));
}

TEST_F(KtlsRecvTest, HandshakeMessageSplitAcrossRecordsWaitsForTheRest) {
  Bytes ticket = Ticket(300);
  k_.PushRecord(kRecordHandshake, Bytes(ticket.begin(), ticket.begin() + 100));
  k_.PushLater(kRecordHandshake, Bytes(ticket.begin() + 100, ticket.end()));
  k_.PushLater(kRecordApplicationData, Text("data"));
  EXPECT_EQ("data", Recv(4096));
  EXPECT_EQ(1u, info_.skipped_records);
  EXPECT_GE(k_.poll_calls, 1);
}

TEST_F(KtlsRecvTest, HandshakeMessageThatNeverCompletesTimesOut) {
  k_.PushRecord(kRecordHandshake, Bytes{kHandshakeNewSessionTicket, 0, 1, 0, 9});
  EXPECT_TRUE(RecvFails(4096, EPROTO));
  ASSERT_NE(nullptr, info_.error);
  EXPECT_NE(nullptr, std::strstr(info_.error, "timed out"));
}

TEST_F(KtlsRecvTest, DataInsideAHandshakeMessageIsAProtocolError) {
  k_.PushRecord(kRecordHandshake, Bytes{kHandshakeNewSessionTicket, 0, 0, 50, 1});
  k_.PushRecord(kRecordApplicationData, Text("interleaved"));
  EXPECT_TRUE(RecvFails(4096, EPROTO));
  EXPECT_NE(nullptr, std::strstr(info_.error, "interleaved"));
}

TEST_F(KtlsRecvTest, PeekSeesDataBehindConsumedControlRecords) {
  k_.PushRecord(kRecordHandshake, Ticket(40));
  k_.PushRecord(kRecordApplicationData, Text("peek me"));
  EXPECT_EQ("peek me", Recv(64, MSG_PEEK));
  EXPECT_EQ(1u, info_.skipped_records);
  EXPECT_EQ("peek me", Recv(64));
  EXPECT_EQ(0u, info_.skipped_records);
}

TEST_F(KtlsRecvTest, KernelErrorsGetMessages) {
  for (int err : {EIO, EBADMSG, EMSGSIZE}) {
    k_.PushError(err);  // consumed by the failing read
    EXPECT_TRUE(RecvFails(64, err));
    EXPECT_NE(nullptr, info_.error) << err;
  }
  k_.PushError(ECONNRESET);  // ordinary socket errors pass through without a TLS message
  EXPECT_TRUE(RecvFails(64, ECONNRESET));
  EXPECT_EQ(nullptr, info_.error);
}

TEST_F(KtlsRecvTest, TruncatedControlDataIsAnError) {
  FakeKtlsKernel::Record r;
  r.bytes = Text("??");
  r.ctrunc_without_type = true;
  k_.Push(r);
  EXPECT_TRUE(RecvFails(64, EPROTO));
  EXPECT_NE(nullptr, std::strstr(info_.error, "MSG_CTRUNC"));
}

TEST_F(KtlsRecvTest, DescriptorsSentAlongAreClosed) {
  FakeKtlsKernel::Record r;
  r.bytes = Text("x");
  r.stray_fd = 1234;
  k_.Push(r);
  EXPECT_EQ("x", Recv(64));
  EXPECT_EQ(std::vector<int>{1234}, k_.closed);
}

// ---- injected kernel behaviour: what the issue lists (EIO, EAGAIN, MSG_CTRUNC, several cmsgs,
// EKEYEXPIRED), readv, and ktls_shutdown ----

TEST_F(KtlsRecvTest, KeyUpdateMessageSaysWhetherTheKernelCouldRekey) {
  k_.release = "6.14.2-amd64";
  k_.PushRecord(kRecordHandshake, {kHandshakeKeyUpdate, 0, 0, 1, 0});
  EXPECT_TRUE(RecvFails(4096, EKEYEXPIRED));
  EXPECT_STREQ(kKeyUpdateNoSecretMessage, info_.error);
  EXPECT_EQ(KTLS_RECORD_HANDSHAKE, info_.record_type);
}

TEST_F(KtlsRecvTest, KernelEkeyexpiredAfterAKeyUpdateIsReportedAsSuch) {
  // 6.14+: once the KeyUpdate record has been read, the kernel pauses RX with EKEYEXPIRED.
  k_.release = "6.14.0";
  k_.PushError(EKEYEXPIRED);
  EXPECT_TRUE(RecvFails(64, EKEYEXPIRED));
  EXPECT_STREQ(kKeyUpdateNoSecretMessage, info_.error);
}

TEST_F(KtlsRecvTest, KernelReleaseParsing) {
  EXPECT_FALSE(KernelReleaseHasRxRekey("6.1.0-56-cloud-amd64"));
  EXPECT_FALSE(KernelReleaseHasRxRekey("6.12.117+deb12-cloud-amd64"));
  EXPECT_FALSE(KernelReleaseHasRxRekey("6.13.9"));
  EXPECT_TRUE(KernelReleaseHasRxRekey("6.14.0"));
  EXPECT_TRUE(KernelReleaseHasRxRekey("6.14-rc1"));
  EXPECT_TRUE(KernelReleaseHasRxRekey("7.0.1"));
  EXPECT_FALSE(KernelReleaseHasRxRekey("5.15.0"));
  EXPECT_FALSE(KernelReleaseHasRxRekey(""));
  EXPECT_FALSE(KernelReleaseHasRxRekey("garbage"));
  EXPECT_FALSE(KernelReleaseHasRxRekey("6"));
  EXPECT_STREQ(kKeyUpdateMessage, KeyUpdateMessage(false));
}

TEST_F(KtlsRecvTest, EioFromTheKernelIsExplained) {
  k_.PushError(EIO);
  k_.PushRecord(kRecordApplicationData, Text("after"));
  EXPECT_TRUE(RecvFails(64, EIO));
  EXPECT_NE(nullptr, std::strstr(info_.error, "non-data TLS record"));
  // The error is per call: the next read gets the data.
  EXPECT_EQ("after", Recv(64));
}

TEST_F(KtlsRecvTest, EagainPassesThroughWithoutAMessage) {
  EXPECT_TRUE(RecvFails(64, EAGAIN, MSG_DONTWAIT));
  EXPECT_EQ(nullptr, info_.error);
  EXPECT_EQ(0u, info_.skipped_records);
}

TEST_F(KtlsRecvTest, ReadinessFromATicketAloneGivesEagainAndNoBytes) {
  // epoll said readable because a NewSessionTicket arrived; the read must not invent data.
  k_.PushRecord(kRecordHandshake, Ticket(200));
  std::string buf(64, 'Z');
  EXPECT_EQ(-1, KtlsRecv(k_, kFd, buf.data(), buf.size(), MSG_DONTWAIT, &info_));
  EXPECT_EQ(EAGAIN, errno);
  EXPECT_EQ(1u, info_.skipped_records);
  EXPECT_EQ(KTLS_RECORD_HANDSHAKE, info_.record_type);
  // The next record is data again, and only its bytes are reported.
  k_.PushRecord(kRecordApplicationData, Text("real"));
  EXPECT_EQ("real", Recv(64, MSG_DONTWAIT));
  EXPECT_EQ(KTLS_RECORD_APPLICATION_DATA, info_.record_type);
}

TEST_F(KtlsRecvTest, SeveralControlMessagesWithTheRecordTypeSecond) {
  FakeKtlsKernel::Record r;
  r.type = kRecordAlert;
  r.bytes = {kAlertLevelFatal, 40};
  r.timestamp_first = true;  // SO_TIMESTAMP enabled by the app
  k_.Push(r);
  EXPECT_TRUE(RecvFails(64, ECONNRESET));
  EXPECT_STREQ("handshake_failure", info_.alert_name);
}

TEST_F(KtlsRecvTest, CtruncAfterTheRecordTypeArrivedStillReadsTheRecord) {
  FakeKtlsKernel::Record r;
  r.type = kRecordApplicationData;
  r.bytes = Text("data");
  r.ctrunc_after_type = true;
  k_.Push(r);
  EXPECT_EQ("data", Recv(64));
  EXPECT_TRUE(info_.tls_rx);
}

TEST_F(KtlsRecvTest, ReadvScattersDataAndGathersControlRecords) {
  // A ticket split so that it lands across both buffers, then data.
  k_.PushRecord(kRecordHandshake, Ticket(10));
  k_.PushRecord(kRecordApplicationData, Text("0123456789"));
  char a[6], b[32];
  iovec iov[2] = {{a, sizeof(a)}, {b, sizeof(b)}};
  ASSERT_EQ(10, KtlsRecvV(k_, kFd, iov, 2, 0, &info_));
  EXPECT_EQ("012345", std::string(a, 6));
  EXPECT_EQ("6789", std::string(b, 4));
  EXPECT_EQ(1u, info_.skipped_records);

  // An alert split across the two buffers is still understood.
  k_.PushRecord(kRecordAlert, {kAlertLevelWarning, kAlertCloseNotify});
  char one[1], two[8];
  iovec small[2] = {{one, 1}, {two, sizeof(two)}};
  EXPECT_EQ(0, KtlsRecvV(k_, kFd, small, 2, 0, &info_));
  EXPECT_STREQ("close_notify", info_.alert_name);

  EXPECT_EQ(-1, KtlsRecvV(k_, kFd, nullptr, 1, 0, &info_));
  EXPECT_EQ(EINVAL, errno);
}

TEST(KtlsShutdownTest, SendsCloseNotifyThenShutsDownWrite) {
  FakeKtlsKernel k;
  ASSERT_EQ(0, KtlsShutdown(k, kFd, SHUT_WR));
  ASSERT_EQ(1u, k.sent.size());
  EXPECT_EQ(std::string("\x01\x00", 2), k.sent[0]);
  EXPECT_EQ(KTLS_RECORD_ALERT, k.sent_record_types[0]);
  EXPECT_EQ(std::vector<int>{SHUT_WR}, k.shutdowns);
}

TEST(KtlsShutdownTest, FullSendBufferIsEagainAndNothingIsShutDown) {
  FakeKtlsKernel k;
  k.send_results.push_back({-1, EAGAIN});
  EXPECT_EQ(-1, KtlsShutdown(k, kFd, SHUT_WR));
  EXPECT_EQ(EAGAIN, errno);
  EXPECT_TRUE(k.shutdowns.empty());  // the caller retries when writable
  ASSERT_EQ(0, KtlsShutdown(k, kFd, SHUT_WR));
  EXPECT_EQ(2u, k.sent.size());
}

TEST(KtlsShutdownTest, EintrIsRetriedAndAShortRecordIsAnError) {
  FakeKtlsKernel k;
  k.send_results.push_back({-1, EINTR});
  EXPECT_EQ(0, KtlsShutdown(k, kFd, SHUT_RDWR));
  EXPECT_EQ(2u, k.sent.size());
  EXPECT_EQ(std::vector<int>{SHUT_RDWR}, k.shutdowns);

  FakeKtlsKernel s;
  s.send_results.push_back({1, 0});
  EXPECT_EQ(-1, KtlsShutdown(s, kFd, SHUT_WR));
  EXPECT_EQ(EIO, errno);
}

TEST(KtlsShutdownTest, NoAlertWithoutKtlsTxOrForTheReadSide) {
  FakeKtlsKernel relay;
  relay.tls_ulp = false;  // a relay socketpair or plain TCP
  EXPECT_EQ(0, KtlsShutdown(relay, kFd, SHUT_WR));
  EXPECT_TRUE(relay.sent.empty());
  EXPECT_EQ(std::vector<int>{SHUT_WR}, relay.shutdowns);

  FakeKtlsKernel rx_only;
  rx_only.tx_keys = false;
  EXPECT_EQ(0, KtlsShutdown(rx_only, kFd, SHUT_WR));
  EXPECT_TRUE(rx_only.sent.empty());

  FakeKtlsKernel k;
  EXPECT_EQ(0, KtlsShutdown(k, kFd, SHUT_RD));
  EXPECT_TRUE(k.sent.empty());
  EXPECT_EQ(std::vector<int>{SHUT_RD}, k.shutdowns);
}

// ---- the real kernel: relay socketpairs and plain TCP ----

using ::ktls::client::testing::StreamPair;

TEST(KtlsRecvSocketTest, PlainDataAndEofOnASocketpair) {
  StreamPair p;
  ASSERT_EQ(5, write(p.fd[1], "hello", 5));
  char buf[64];
  ktls_record_info info;
  EXPECT_EQ(5, ktls_recv(p.fd[0], buf, sizeof(buf), 0, &info));
  EXPECT_EQ("hello", std::string(buf, 5));
  EXPECT_FALSE(info.tls_rx);
  EXPECT_EQ(KTLS_RECORD_APPLICATION_DATA, info.record_type);

  EXPECT_EQ(-1, ktls_recv(p.fd[0], buf, sizeof(buf), MSG_DONTWAIT, nullptr));
  EXPECT_EQ(EAGAIN, errno);

  ASSERT_EQ(3, write(p.fd[1], "abc", 3));
  EXPECT_EQ(3, ktls_recv(p.fd[0], buf, sizeof(buf), MSG_PEEK, nullptr));
  EXPECT_EQ(3, ktls_recv(p.fd[0], buf, sizeof(buf), 0, nullptr));

  ASSERT_EQ(0, ktls_close_notify(p.fd[1]));  // relay: just shutdown(SHUT_WR)
  EXPECT_EQ(0, ktls_recv(p.fd[0], buf, sizeof(buf), 0, &info));
  // The write side of the closing end still... is closed; its read side is not.
  ASSERT_EQ(2, write(p.fd[0], "ok", 2));
  EXPECT_EQ(2, ktls_recv(p.fd[1], buf, sizeof(buf), 0, nullptr));
}

TEST(KtlsRecvSocketTest, DescriptorsSmuggledOverTheRelayAreClosed) {
  StreamPair p;
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(devnull, 0);
  wire::OutgoingMessage one_byte_and_fd("x", devnull);  // SCM_RIGHTS, as an agent would send
  ASSERT_EQ(1, sendmsg(p.fd[1], one_byte_and_fd.header(), 0));
  close(devnull);
  // The received copy gets the lowest free number, which is devnull's again.
  char buf[8];
  EXPECT_EQ(1, ktls_recv(p.fd[0], buf, sizeof(buf), 0, nullptr));
  EXPECT_EQ(-1, fcntl(devnull, F_GETFD));
  EXPECT_EQ(EBADF, errno);
}

TEST(KtlsRecvSocketTest, LoopbackTcpIsAPlainStream) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(0, bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
  ASSERT_EQ(0, listen(listener, 1));
  socklen_t len = sizeof(addr);
  ASSERT_EQ(0, getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len));
  int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(0, connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
  int server = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(server, 0);

  bool tx = true, rx = true;
  EXPECT_TRUE(ktls_fd_offload_state(server, &tx, &rx));
  EXPECT_FALSE(tx);
  EXPECT_FALSE(rx);
  EXPECT_FALSE(HasKtlsTx(server));

  ASSERT_EQ(4, write(client, "ping", 4));
  char buf[16];
  ktls_record_info info;
  EXPECT_EQ(4, ktls_recv(server, buf, sizeof(buf), 0, &info));
  EXPECT_FALSE(info.tls_rx);
  EXPECT_EQ(0, ktls_close_notify(client));
  EXPECT_EQ(0, ktls_recv(server, buf, sizeof(buf), 0, &info));
  close(server);
  close(client);
  close(listener);
}

TEST(KtlsOffloadStateTest, SocketpairHasNoOffloadAndNonSocketsFail) {
  StreamPair p;
  bool tx = true, rx = true;
  EXPECT_TRUE(ktls_fd_offload_state(p.fd[0], &tx, &rx));
  EXPECT_FALSE(tx);
  EXPECT_FALSE(rx);
  EXPECT_TRUE(ktls_fd_offload_state(p.fd[0], nullptr, nullptr));

  int pipefd[2];
  ASSERT_EQ(0, pipe2(pipefd, O_CLOEXEC));
  EXPECT_FALSE(ktls_fd_offload_state(pipefd[0], &tx, &rx));
  EXPECT_EQ(ENOTSOCK, errno);
  close(pipefd[0]);
  close(pipefd[1]);
  EXPECT_FALSE(ktls_fd_offload_state(-1, &tx, &rx));
  EXPECT_EQ(EBADF, errno);
}

}  // namespace
}  // namespace ktls::client
