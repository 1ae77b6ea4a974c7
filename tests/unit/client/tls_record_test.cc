// The pure half of ktls_recv: record classification and record-type cmsg parsing. These are the
// paths a kernel without CONFIG_TLS cannot produce.
#include <linux/tls.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "client/lib/io.h"

namespace ktls::client {
namespace {

using Bytes = std::vector<uint8_t>;

RecordVerdict Classify(uint8_t type, const Bytes& b) { return ClassifyRecord(type, b); }

// A handshake message of `type` with a `body`-byte body.
Bytes HandshakeMessage(uint8_t type, size_t body) {
  Bytes m = {type, static_cast<uint8_t>(body >> 16), static_cast<uint8_t>(body >> 8),
             static_cast<uint8_t>(body)};
  m.resize(4 + body, 0x5a);
  return m;
}

Bytes Concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(ClassifyRecordTest, ApplicationDataIsData) {
  EXPECT_EQ(RecordAction::kData, Classify(kRecordApplicationData, {'h', 'i'}).action);
}

TEST(ClassifyRecordTest, CloseNotifyIsEndOfStream) {
  RecordVerdict v = Classify(kRecordAlert, {kAlertLevelWarning, kAlertCloseNotify});
  EXPECT_EQ(RecordAction::kEndOfStream, v.action);
  EXPECT_EQ(kAlertLevelWarning, v.alert_level);
  EXPECT_EQ(kAlertCloseNotify, v.alert_description);
  EXPECT_EQ(0, ErrnoForVerdict(v));
  // Some stacks send close_notify at fatal level; it still ends the stream cleanly.
  EXPECT_EQ(RecordAction::kEndOfStream, Classify(kRecordAlert, {2, 0}).action);
}

TEST(ClassifyRecordTest, FatalAlertsAreNamedAndMapToConnReset) {
  struct Case {
    uint8_t description;
    const char* name;
  };
  for (const Case& c :
       {Case{40, "handshake_failure"}, Case{20, "bad_record_mac"}, Case{10, "unexpected_message"},
        Case{42, "bad_certificate"}, Case{48, "unknown_ca"}, Case{80, "internal_error"},
        Case{116, "certificate_required"}, Case{120, "no_application_protocol"},
        Case{255, "unknown_alert"}}) {
    RecordVerdict v = Classify(kRecordAlert, {kAlertLevelFatal, c.description});
    EXPECT_EQ(RecordAction::kFatalAlert, v.action) << c.name;
    EXPECT_EQ(c.description, v.alert_description);
    EXPECT_STREQ(c.name, AlertName(v.alert_description));
    EXPECT_STREQ(c.name, ktls_alert_name(c.description));
    EXPECT_EQ(ECONNRESET, ErrnoForVerdict(v));
  }
  // Warning level does not make an error alert harmless (RFC 8446 6.2).
  EXPECT_EQ(RecordAction::kFatalAlert, Classify(kRecordAlert, {1, 100}).action);
}

TEST(ClassifyRecordTest, UserCanceledWarningIsSkippedThenCloseNotifyEnds) {
  RecordVerdict v = Classify(kRecordAlert, {1, kAlertUserCanceled});
  EXPECT_EQ(RecordAction::kSkip, v.action);
  EXPECT_EQ(1u, v.skipped);
  v = Classify(kRecordAlert, {1, kAlertUserCanceled, 1, kAlertCloseNotify});
  EXPECT_EQ(RecordAction::kEndOfStream, v.action);
  EXPECT_EQ(1u, v.skipped);
}

TEST(ClassifyRecordTest, PartialAndEmptyAlerts) {
  RecordVerdict v = Classify(kRecordAlert, {1});
  EXPECT_EQ(RecordAction::kNeedMore, v.action);
  EXPECT_EQ(2u, v.need);
  v = Classify(kRecordAlert, {1, kAlertUserCanceled, 1});
  EXPECT_EQ(RecordAction::kNeedMore, v.action);
  EXPECT_EQ(4u, v.need);
  v = Classify(kRecordAlert, {});
  EXPECT_EQ(RecordAction::kProtocolError, v.action);
  EXPECT_EQ(EPROTO, ErrnoForVerdict(v));
}

TEST(ClassifyRecordTest, NewSessionTicketsAreSkipped) {
  RecordVerdict v = Classify(kRecordHandshake, HandshakeMessage(kHandshakeNewSessionTicket, 200));
  EXPECT_EQ(RecordAction::kSkip, v.action);
  EXPECT_EQ(1u, v.skipped);
  // OpenSSL sends two tickets by default; they may share a record.
  v = Classify(kRecordHandshake, Concat(HandshakeMessage(kHandshakeNewSessionTicket, 200),
                                        HandshakeMessage(kHandshakeNewSessionTicket, 180)));
  EXPECT_EQ(RecordAction::kSkip, v.action);
  EXPECT_EQ(2u, v.skipped);
  // HelloRequest (TLS 1.2) may be ignored.
  EXPECT_EQ(RecordAction::kSkip, Classify(kRecordHandshake, {0, 0, 0, 0}).action);
}

TEST(ClassifyRecordTest, TruncatedHandshakeMessagesAskForExactlyTheRest) {
  Bytes ticket = HandshakeMessage(kHandshakeNewSessionTicket, 200);
  RecordVerdict v = Classify(kRecordHandshake, Bytes(ticket.begin(), ticket.begin() + 50));
  EXPECT_EQ(RecordAction::kNeedMore, v.action);
  EXPECT_EQ(204u, v.need);
  v = Classify(kRecordHandshake, Bytes(ticket.begin(), ticket.begin() + 2));
  EXPECT_EQ(RecordAction::kNeedMore, v.action);
  EXPECT_EQ(4u, v.need);
  // A complete ticket then the start of a second: the need ends the second.
  Bytes two = Concat(ticket, {kHandshakeNewSessionTicket, 0, 0, 10, 1});
  v = Classify(kRecordHandshake, two);
  EXPECT_EQ(RecordAction::kNeedMore, v.action);
  EXPECT_EQ(ticket.size() + 14, v.need);
  EXPECT_EQ(1u, v.skipped);
}

TEST(ClassifyRecordTest, KeyUpdateIsReportedAsExpiredKey) {
  RecordVerdict v = Classify(kRecordHandshake, {kHandshakeKeyUpdate, 0, 0, 1, 0});
  EXPECT_EQ(RecordAction::kKeyUpdate, v.action);
  EXPECT_EQ(EKEYEXPIRED, ErrnoForVerdict(v));
  EXPECT_STREQ("peer KeyUpdate: kernel lacks TLS 1.3 rekey", v.message);
  // Decided from the header alone, and after tickets in the same record.
  v = Classify(kRecordHandshake, Concat(HandshakeMessage(kHandshakeNewSessionTicket, 20),
                                        {kHandshakeKeyUpdate, 0, 0, 1}));
  EXPECT_EQ(RecordAction::kKeyUpdate, v.action);
  EXPECT_EQ(1u, v.skipped);
}

TEST(ClassifyRecordTest, ThingsKtlsCannotFollowAreProtocolErrors) {
  EXPECT_EQ(RecordAction::kProtocolError,
            Classify(kRecordHandshake, HandshakeMessage(kHandshakeClientHello, 100)).action);
  EXPECT_EQ(RecordAction::kProtocolError,
            Classify(kRecordHandshake, HandshakeMessage(13, 10)).action);  // CertificateRequest
  EXPECT_EQ(RecordAction::kProtocolError, Classify(kRecordHandshake, {}).action);
  EXPECT_EQ(RecordAction::kProtocolError,
            Classify(kRecordHandshake, {kHandshakeNewSessionTicket, 0x10, 0, 0}).action);  // 1 MiB
  EXPECT_EQ(RecordAction::kProtocolError, Classify(kRecordHandshake, {0, 0, 0, 1, 0}).action);
  EXPECT_EQ(RecordAction::kProtocolError, Classify(kRecordChangeCipherSpec, {1}).action);
  EXPECT_EQ(RecordAction::kProtocolError, Classify(99, {1}).action);
  RecordVerdict v = Classify(kRecordHandshake, HandshakeMessage(kHandshakeClientHello, 4));
  ASSERT_NE(nullptr, v.message);
  EXPECT_NE(nullptr, std::strstr(v.message, "renegotiation"));
}

// ---- ParseRecordTypeCmsg ----

class ControlBuilder {
 public:
  ControlBuilder() {
    msg_.msg_control = buf_;
    msg_.msg_controllen = sizeof(buf_);
  }
  // Appends a control message with `payload` (len = CMSG_LEN(payload size)).
  ControlBuilder& Add(int level, int type, const Bytes& payload) {
    cmsghdr* c = reinterpret_cast<cmsghdr*>(buf_ + used_);
    c->cmsg_level = level;
    c->cmsg_type = type;
    c->cmsg_len = CMSG_LEN(payload.size());
    if (!payload.empty()) std::memcpy(CMSG_DATA(c), payload.data(), payload.size());
    used_ += CMSG_SPACE(payload.size());
    return *this;
  }
  ControlBuilder& Flags(int flags) {
    msg_.msg_flags = flags;
    return *this;
  }
  const msghdr& msg() {
    msg_.msg_controllen = used_;
    if (used_ == 0) msg_.msg_control = nullptr;
    return msg_;
  }

 private:
  alignas(cmsghdr) unsigned char buf_[512] = {};
  size_t used_ = 0;
  msghdr msg_{};
};

Bytes FdBytes(std::initializer_list<int> fds) {
  Bytes b(fds.size() * sizeof(int));
  size_t i = 0;
  for (int fd : fds) std::memcpy(b.data() + sizeof(int) * i++, &fd, sizeof(int));
  return b;
}

TEST(ParseRecordTypeCmsgTest, NoControlDataMeansPlainStream) {
  ControlBuilder b;
  std::vector<int> stray;
  RecordTypeCmsg r = ParseRecordTypeCmsg(b.msg(), &stray);
  EXPECT_FALSE(r.found);
  EXPECT_EQ(nullptr, r.error);
}

TEST(ParseRecordTypeCmsgTest, ReadsTheRecordType) {
  ControlBuilder b;
  b.Add(SOL_TLS, TLS_GET_RECORD_TYPE, {kRecordAlert});
  std::vector<int> stray;
  RecordTypeCmsg r = ParseRecordTypeCmsg(b.msg(), &stray);
  EXPECT_TRUE(r.found);
  EXPECT_EQ(kRecordAlert, r.type);
  EXPECT_EQ(nullptr, r.error);
}

TEST(ParseRecordTypeCmsgTest, SeveralControlMessages) {
  ControlBuilder b;
  b.Add(SOL_SOCKET, SCM_TIMESTAMP, Bytes(16, 0))
      .Add(SOL_TLS, TLS_GET_RECORD_TYPE, {kRecordHandshake})
      .Add(SOL_SOCKET, SCM_RIGHTS, FdBytes({7, 9}));
  std::vector<int> stray;
  RecordTypeCmsg r = ParseRecordTypeCmsg(b.msg(), &stray);
  EXPECT_TRUE(r.found);
  EXPECT_EQ(kRecordHandshake, r.type);
  EXPECT_EQ((std::vector<int>{7, 9}), stray);  // for the caller to close
}

TEST(ParseRecordTypeCmsgTest, CtruncWithoutRecordTypeIsAnError) {
  ControlBuilder b;
  b.Flags(MSG_CTRUNC);
  std::vector<int> stray;
  RecordTypeCmsg r = ParseRecordTypeCmsg(b.msg(), &stray);
  EXPECT_FALSE(r.found);
  ASSERT_NE(nullptr, r.error);
  EXPECT_NE(nullptr, std::strstr(r.error, "MSG_CTRUNC"));
}

TEST(ParseRecordTypeCmsgTest, CtruncAfterTheRecordTypeArrivedIsTolerated) {
  ControlBuilder b;
  b.Add(SOL_TLS, TLS_GET_RECORD_TYPE, {kRecordApplicationData}).Flags(MSG_CTRUNC);
  std::vector<int> stray;
  RecordTypeCmsg r = ParseRecordTypeCmsg(b.msg(), &stray);
  EXPECT_TRUE(r.found);
  EXPECT_EQ(nullptr, r.error);
}

TEST(ParseRecordTypeCmsgTest, MalformedRecordTypeMessages) {
  std::vector<int> stray;
  {
    ControlBuilder b;  // no type byte
    b.Add(SOL_TLS, TLS_GET_RECORD_TYPE, {});
    RecordTypeCmsg r = ParseRecordTypeCmsg(b.msg(), &stray);
    EXPECT_FALSE(r.found);
    EXPECT_NE(nullptr, r.error);
  }
  {
    ControlBuilder b;  // type 0 is not a content type
    b.Add(SOL_TLS, TLS_GET_RECORD_TYPE, {0});
    EXPECT_NE(nullptr, ParseRecordTypeCmsg(b.msg(), &stray).error);
  }
  {
    ControlBuilder b;  // two different types in one read
    b.Add(SOL_TLS, TLS_GET_RECORD_TYPE, {kRecordApplicationData})
        .Add(SOL_TLS, TLS_GET_RECORD_TYPE, {kRecordAlert});
    EXPECT_NE(nullptr, ParseRecordTypeCmsg(b.msg(), &stray).error);
  }
}

}  // namespace
}  // namespace ktls::client
