// Pure half of ktls_recv: what the kernel's TLS_GET_RECORD_TYPE control message says, and what a
// non-data record means for the reader. No syscalls, so every path is unit-tested on a kernel
// without CONFIG_TLS (tests/unit/client/tls_record_test.cc).
#include <linux/tls.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "client/lib/io.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace ktls::client {
namespace {

RecordVerdict Verdict(RecordAction action) {
  RecordVerdict v;
  v.action = action;
  return v;
}

RecordVerdict ProtocolError(const char* message, uint32_t skipped = 0) {
  RecordVerdict v = Verdict(RecordAction::kProtocolError);
  v.message = message;
  v.skipped = skipped;
  return v;
}

RecordVerdict NeedMore(size_t need, uint32_t skipped) {
  RecordVerdict v = Verdict(RecordAction::kNeedMore);
  v.need = need;
  v.skipped = skipped;
  return v;
}

// Alerts are two bytes each; a record may carry several (in practice one).
RecordVerdict ClassifyAlerts(std::span<const uint8_t> p) {
  if (p.empty()) return ProtocolError("empty alert record");
  uint32_t skipped = 0;
  size_t off = 0;
  for (; off + 2 <= p.size(); off += 2) {
    const uint8_t level = p[off];
    const uint8_t description = p[off + 1];
    if (description == kAlertCloseNotify) {
      RecordVerdict v = Verdict(RecordAction::kEndOfStream);
      v.alert_level = level;
      v.alert_description = description;
      v.skipped = skipped;
      return v;
    }
    // user_canceled is a closure alert that both RFCs say is followed by close_notify; as a
    // warning it ends nothing by itself. Every other alert is an error alert (RFC 8446 6.2 says
    // to treat them as fatal whatever the level; TLS 1.2 warnings other than these two are not
    // sent after the handshake by any peer we serve).
    if (description == kAlertUserCanceled && level == kAlertLevelWarning) {
      ++skipped;
      continue;
    }
    RecordVerdict v = Verdict(RecordAction::kFatalAlert);
    v.alert_level = level;
    v.alert_description = description;
    v.skipped = skipped;
    return v;
  }
  if (off < p.size()) return NeedMore(off + 2, skipped);
  RecordVerdict v = Verdict(RecordAction::kSkip);
  v.skipped = skipped;
  return v;
}

// Handshake messages: 1-byte type, 3-byte length, body. Several may share a record and one may
// span records, so the payload is treated as a stream from its first byte.
RecordVerdict ClassifyHandshake(std::span<const uint8_t> p) {
  if (p.empty()) return ProtocolError("empty handshake record");
  uint32_t skipped = 0;
  size_t off = 0;
  while (off < p.size()) {
    if (p.size() - off < 4) return NeedMore(off + 4, skipped);
    const uint8_t type = p[off];
    const size_t body = (size_t{p[off + 1]} << 16) | (size_t{p[off + 2]} << 8) | p[off + 3];
    switch (type) {
      case kHandshakeKeyUpdate: {
        // Decided by the type alone: whatever the body says, the kernel's RX key is now stale.
        RecordVerdict v = Verdict(RecordAction::kKeyUpdate);
        v.message = kKeyUpdateMessage;
        v.skipped = skipped;
        return v;
      }
      case kHandshakeClientHello:
        return ProtocolError("peer started a TLS renegotiation, which kTLS cannot follow", skipped);
      case 13:  // certificate_request
      case 11:  // certificate (post-handshake authentication answer)
        return ProtocolError("post-handshake authentication is not supported with kTLS", skipped);
      case kHandshakeNewSessionTicket:
      case kHandshakeHelloRequest:
        break;
      default:
        return ProtocolError("unexpected post-handshake message", skipped);
    }
    if (4 + body > kMaxPostHandshakeMessageBytes) {
      return ProtocolError("post-handshake message too large", skipped);
    }
    if (type == kHandshakeHelloRequest && body != 0) {
      return ProtocolError("malformed HelloRequest", skipped);
    }
    if (p.size() - off < 4 + body) return NeedMore(off + 4 + body, skipped);
    // NewSessionTicket: session resumption is the agent's business (it holds the TLS state the
    // ticket refers to); the app has no use for it. HelloRequest may be ignored (RFC 5246 7.4.1.1).
    off += 4 + body;
    ++skipped;
  }
  RecordVerdict v = Verdict(RecordAction::kSkip);
  v.skipped = skipped;
  return v;
}

}  // namespace

const char* AlertName(uint8_t description) {
  switch (description) {
    case 0:
      return "close_notify";
    case 10:
      return "unexpected_message";
    case 20:
      return "bad_record_mac";
    case 21:
      return "decryption_failed";
    case 22:
      return "record_overflow";
    case 30:
      return "decompression_failure";
    case 40:
      return "handshake_failure";
    case 41:
      return "no_certificate";
    case 42:
      return "bad_certificate";
    case 43:
      return "unsupported_certificate";
    case 44:
      return "certificate_revoked";
    case 45:
      return "certificate_expired";
    case 46:
      return "certificate_unknown";
    case 47:
      return "illegal_parameter";
    case 48:
      return "unknown_ca";
    case 49:
      return "access_denied";
    case 50:
      return "decode_error";
    case 51:
      return "decrypt_error";
    case 60:
      return "export_restriction";
    case 70:
      return "protocol_version";
    case 71:
      return "insufficient_security";
    case 80:
      return "internal_error";
    case 86:
      return "inappropriate_fallback";
    case 90:
      return "user_canceled";
    case 100:
      return "no_renegotiation";
    case 109:
      return "missing_extension";
    case 110:
      return "unsupported_extension";
    case 111:
      return "certificate_unobtainable";
    case 112:
      return "unrecognized_name";
    case 113:
      return "bad_certificate_status_response";
    case 114:
      return "bad_certificate_hash_value";
    case 115:
      return "unknown_psk_identity";
    case 116:
      return "certificate_required";
    case 120:
      return "no_application_protocol";
    default:
      return "unknown_alert";
  }
}

RecordVerdict ClassifyRecord(uint8_t record_type, std::span<const uint8_t> payload) {
  switch (record_type) {
    case kRecordApplicationData:
      return Verdict(RecordAction::kData);
    case kRecordAlert:
      return ClassifyAlerts(payload);
    case kRecordHandshake:
      return ClassifyHandshake(payload);
    case kRecordChangeCipherSpec:
      return ProtocolError(
          "change_cipher_spec after the handshake (renegotiation is not supported)");
    default:
      return ProtocolError("record of unknown content type");
  }
}

RecordTypeCmsg ParseRecordTypeCmsg(const msghdr& msg, std::vector<int>* stray_fds) {
  RecordTypeCmsg out;
  // CMSG_NXTHDR takes a non-const msghdr even though it only reads it.
  auto* m = const_cast<msghdr*>(&msg);
  for (cmsghdr* c = CMSG_FIRSTHDR(m); c != nullptr; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_len < CMSG_LEN(0)) {
      out.error = "control message shorter than its header";
      break;
    }
    const size_t payload = c->cmsg_len - CMSG_LEN(0);
    if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE) {
      if (payload < 1) {
        out.error = "TLS record-type control message without a type byte";
        continue;
      }
      const uint8_t type = *CMSG_DATA(c);
      if (type == 0) {
        out.error = "TLS record-type control message with type 0";
      } else if (out.found && out.type != type) {
        out.error = "two different TLS record types in one read";
      } else {
        out.found = true;
        out.type = type;
      }
    } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      for (size_t i = 0; i + sizeof(int) <= payload; i += sizeof(int)) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i, sizeof(int));
        stray_fds->push_back(fd);
      }
    }
  }
  if ((msg.msg_flags & MSG_CTRUNC) && !out.found && out.error == nullptr) {
    out.error = "control data truncated (MSG_CTRUNC): the TLS record type may have been lost";
  }
  if (out.error != nullptr) out.found = false;
  return out;
}

int ErrnoForVerdict(const RecordVerdict& verdict) {
  switch (verdict.action) {
    case RecordAction::kFatalAlert:
      return ECONNRESET;
    case RecordAction::kKeyUpdate:
      return EKEYEXPIRED;
    case RecordAction::kProtocolError:
      return EPROTO;
    default:
      return 0;
  }
}

}  // namespace ktls::client

extern "C" const char* ktls_alert_name(uint8_t description) {
  return ktls::client::AlertName(description);
}
