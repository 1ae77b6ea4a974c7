// Syscall half of the I/O helpers (ktls/ktls_client.h): ktls_recv/ktls_readv, ktls_shutdown and
// the kernel offload query. The decisions are made by the pure functions in tls_record.cc; this
// file only moves bytes and translates what happened into errno plus a static message.
//
// How kTLS RX reports records (net/tls/tls_sw.c): every recvmsg that is given a control buffer
// gets one SOL_TLS/TLS_GET_RECORD_TYPE message, and one call never mixes record types. A non-data
// record (alert, post-handshake message) is returned alone, and a plain recv() without a control
// buffer fails with EIO on it instead. A record larger than the caller's buffer is returned in
// pieces over several calls. Descriptors without kTLS RX return no such message: plain data.
//
// Peer KeyUpdate (TLS 1.3): before Linux 6.14 the kernel keeps decrypting with the old key, so the
// next record fails (EBADMSG); from 6.14 it returns the KeyUpdate record and then EKEYEXPIRED
// until new RX keys are set. Either way the app cannot continue (it never had the traffic secret):
// the KeyUpdate record itself, or the kernel's EKEYEXPIRED, becomes EKEYEXPIRED with a message
// that says which of the two situations this kernel is in.
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string_view>
#include <vector>

#include "client/lib/io.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

namespace ktls::client {
namespace {

// How long ktls_recv waits for the rest of an alert or post-handshake message that a peer split
// across records. A peer writes such a message in one go, so the rest is normally already here.
constexpr std::chrono::milliseconds kContinuationTimeout{1000};

struct RecvResult {
  ssize_t n = -1;
  int err = 0;  // errno when n < 0, captured right after the call
  RecordTypeCmsg record;
};

// One recvmsg with room for the record type. Descriptors that arrive unasked are closed.
RecvResult RecvOnce(RecvSysCalls& sys, int fd, const iovec* iov, int iovcnt, int flags) {
  alignas(cmsghdr) unsigned char control[kRecvControlBytes];
  msghdr m{};
  m.msg_iov = const_cast<iovec*>(iov);
  m.msg_iovlen = static_cast<size_t>(iovcnt);
  m.msg_control = control;
  m.msg_controllen = sizeof(control);
  RecvResult r;
  const IoResult io = sys.RecvMsg(fd, &m, flags | MSG_CMSG_CLOEXEC);
  r.n = io.rc;
  if (r.n < 0) {
    r.err = io.err;
    return r;
  }
  std::vector<int> stray;
  r.record = ParseRecordTypeCmsg(m, &stray);
  for (int s : stray) sys.Close(s);
  return r;
}

RecvResult RecvOnce(RecvSysCalls& sys, int fd, void* buf, size_t len, int flags) {
  iovec iov{buf, len};
  return RecvOnce(sys, fd, &iov, 1, flags);
}

// Copies the first `n` bytes spread over `iov` into `out`.
void Gather(const iovec* iov, int iovcnt, size_t n, std::vector<uint8_t>* out) {
  out->clear();
  out->reserve(n);
  for (int i = 0; i < iovcnt && out->size() < n; ++i) {
    const auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
    const size_t take = std::min(iov[i].iov_len, n - out->size());
    out->insert(out->end(), p, p + take);
  }
}

class RealSys final : public RecvSysCalls {
 public:
  IoResult RecvMsg(int fd, msghdr* msg, int flags) override {
    return Capture(::recvmsg(fd, msg, flags));
  }
  IoResult Shutdown(int fd, int how) override { return Capture(::shutdown(fd, how)); }
  IoResult Poll(pollfd* fds, nfds_t n, int timeout_ms) override {
    return Capture(::poll(fds, n, timeout_ms));
  }
  IoResult Close(int fd) override { return Capture(::close(fd)); }

 private:
  static IoResult Capture(ssize_t rc) { return {rc, rc < 0 ? errno : 0}; }
};

ssize_t Fail(ktls_record_info* info, int err, const char* message) {
  info->error = message;
  errno = err;
  return -1;
}

// Errors the kernel's TLS layer produces itself, in words.
const char* MessageForKernelErrno(int err) {
  switch (err) {
    case EIO:
      return "kernel refused to return a non-data TLS record (no room for its record type)";
    case EBADMSG:
      return "a TLS record failed authentication in the kernel (bad_record_mac)";
    case EMSGSIZE:
      return "a TLS record exceeded the maximum record size (record_overflow)";
    case EKEYEXPIRED:  // 6.14+: RX is paused after a KeyUpdate until new keys are set
      return kKeyUpdateNoSecretMessage;
    default:
      return nullptr;
  }
}

struct Failure {
  int err = 0;
  const char* message = nullptr;
};

// Grows `payload` (bytes of records of `type`) to `need` bytes, reading exactly what is missing
// so the read ends on a message boundary and nothing of a following record is taken.
Failure ReadContinuation(RecvSysCalls& sys, int fd, uint8_t type, size_t need,
                         std::vector<uint8_t>* payload) {
  const auto deadline = std::chrono::steady_clock::now() + kContinuationTimeout;
  while (payload->size() < need) {
    const size_t have = payload->size();
    payload->resize(need);
    RecvResult r = RecvOnce(sys, fd, payload->data() + have, need - have, MSG_DONTWAIT);
    payload->resize(have + (r.n > 0 ? r.n : 0));
    if (r.n < 0) {
      if (r.err == EINTR) continue;
      if (r.err == EAGAIN || r.err == EWOULDBLOCK) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
          return {EPROTO, "timed out waiting for the rest of a TLS alert or handshake message"};
        }
        pollfd p{fd, POLLIN, 0};
        sys.Poll(&p, 1, static_cast<int>(left.count()));
        continue;
      }
      const char* m = MessageForKernelErrno(r.err);
      return {r.err, m != nullptr ? m : "read failed inside a TLS alert or handshake message"};
    }
    if (r.record.error != nullptr) return {EPROTO, r.record.error};
    if (!r.record.found) {
      return {EPROTO, r.n == 0 ? "connection closed inside a TLS alert or handshake message"
                               : "record type missing inside a TLS alert or handshake message"};
    }
    if (r.record.type != type) {
      return {EPROTO, "TLS alert or handshake message interleaved with another record type"};
    }
    if (r.n == 0) return {EPROTO, "empty record inside a TLS alert or handshake message"};
  }
  return {};
}

// Reads only the 4-byte version/cipher header: the kernel answers that size without copying key
// material, and answers it for every cipher (a full-size struct of the wrong cipher is EINVAL).
// EBUSY (ULP set, keys not installed), ENOPROTOOPT (no tls ULP), EOPNOTSUPP (not TCP): no.
bool KernelHasKeys(RecvSysCalls& sys, int fd, int direction) {
  tls_crypto_info info{};
  socklen_t len = sizeof(info);
  return sys.GetSockOpt(fd, SOL_TLS, direction, &info, &len).rc == 0;
}

}  // namespace

RecvSysCalls& RealRecvSysCalls() {
  static RealSys* sys = new RealSys;  // never destroyed: usable from any static destructor
  return *sys;
}

IoResult RecvSysCalls::SendMsg(int fd, const msghdr* msg, int flags) {
  const ssize_t rc = ::sendmsg(fd, msg, flags);
  return {rc, rc < 0 ? errno : 0};
}

IoResult RecvSysCalls::GetSockOpt(int fd, int level, int name, void* value, socklen_t* len) {
  const int rc = ::getsockopt(fd, level, name, value, len);
  return {rc, rc < 0 ? errno : 0};
}

std::string RecvSysCalls::KernelRelease() {
  utsname u{};
  if (::uname(&u) != 0) return "";
  return u.release;
}

bool KernelReleaseHasRxRekey(std::string_view release) {
  // "MAJOR.MINOR[.PATCH][-suffix]"
  unsigned major = 0, minor = 0;
  size_t i = 0;
  auto number = [&](unsigned* out) {
    const size_t start = i;
    while (i < release.size() && release[i] >= '0' && release[i] <= '9' && i - start < 6) {
      *out = *out * 10 + static_cast<unsigned>(release[i] - '0');
      ++i;
    }
    return i > start;
  };
  if (!number(&major) || i >= release.size() || release[i] != '.') return false;
  ++i;
  if (!number(&minor)) return false;
  return major > 6 || (major == 6 && minor >= 14);
}

const char* KeyUpdateMessage(bool kernel_has_rx_rekey) {
  return kernel_has_rx_rekey ? kKeyUpdateNoSecretMessage : kKeyUpdateMessage;
}

KernelOffload QueryKernelOffload(int fd) {
  KernelOffload out;
  out.tx = KernelHasKeys(RealRecvSysCalls(), fd, TLS_TX);
  out.rx = KernelHasKeys(RealRecvSysCalls(), fd, TLS_RX);
  return out;
}

bool HasKtlsTx(RecvSysCalls& sys, int fd) {
  char ulp[16] = {};
  socklen_t len = sizeof(ulp);
  if (sys.GetSockOpt(fd, SOL_TCP, TCP_ULP, ulp, &len).rc != 0) return false;
  if (std::string_view(ulp, ::strnlen(ulp, len)) != "tls") return false;
  return KernelHasKeys(sys, fd, TLS_TX);
}

bool HasKtlsTx(int fd) { return HasKtlsTx(RealRecvSysCalls(), fd); }

int KtlsShutdown(RecvSysCalls& sys, int fd, int how) {
  if ((how == SHUT_WR || how == SHUT_RDWR) && HasKtlsTx(sys, fd)) {
    static const unsigned char kAlert[2] = {kAlertLevelWarning, kAlertCloseNotify};
    alignas(cmsghdr) unsigned char control[CMSG_SPACE(sizeof(unsigned char))] = {};
    iovec iov{const_cast<unsigned char*>(kAlert), sizeof(kAlert)};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_TLS;
    c->cmsg_type = TLS_SET_RECORD_TYPE;
    c->cmsg_len = CMSG_LEN(sizeof(unsigned char));
    *CMSG_DATA(c) = kRecordAlert;
    IoResult r;
    do {
      r = sys.SendMsg(fd, &m, MSG_NOSIGNAL);
    } while (r.rc < 0 && r.err == EINTR);
    if (r.rc < 0) {
      errno = r.err;
      return -1;
    }
    // kTLS sends a record whole or not at all; anything else means the record was mangled.
    if (r.rc != static_cast<ssize_t>(sizeof(kAlert))) {
      errno = EIO;
      return -1;
    }
  }
  const IoResult r = sys.Shutdown(fd, how);
  if (r.rc < 0) {
    errno = r.err;
    return -1;
  }
  return 0;
}

namespace {

// Takes a non-data record's bytes out of the caller's buffers into *payload (under MSG_PEEK it is
// still queued, so consume it for real; the kernel returns the same record again). The caller's
// buffers held control bytes only transiently: the call never returns them as data.
Failure TakeControlRecord(RecvSysCalls& sys, int fd, const iovec* iov, int iovcnt, int flags,
                          const RecvResult& r, std::vector<uint8_t>* payload) {
  if (!(flags & MSG_PEEK)) {
    Gather(iov, iovcnt, static_cast<size_t>(r.n), payload);
    return {};
  }
  payload->resize(r.n);
  RecvResult c =
      RecvOnce(sys, fd, payload->data(), payload->size(), (flags & ~MSG_PEEK) | MSG_DONTWAIT);
  if (c.n < 0) return {c.err, MessageForKernelErrno(c.err)};
  if (c.record.error != nullptr) return {EPROTO, c.record.error};
  if (!c.record.found || c.record.type != r.record.type) {
    return {EPROTO, "peeked TLS record changed while it was consumed"};
  }
  payload->resize(c.n);
  return {};
}

void SetAlert(const RecordVerdict& v, ktls_record_info* info) {
  info->alert_level = v.alert_level;
  info->alert_description = v.alert_description;
  info->alert_name = AlertName(v.alert_description);
}

// Acts on one non-data record (reading its continuation when it is split). Returns false when
// it was skipped (read the next record), true when it ends the call with *result.
bool HandleControlRecord(RecvSysCalls& sys, int fd, uint8_t type, std::vector<uint8_t>* payload,
                         ktls_record_info* info, ssize_t* result) {
  for (;;) {
    const RecordVerdict v = ClassifyRecord(type, *payload);
    // Records skipped on the way count once the verdict is final (not while more is needed).
    if (v.action != RecordAction::kNeedMore && v.action != RecordAction::kData) {
      info->skipped_records += v.skipped;
    }
    switch (v.action) {
      case RecordAction::kSkip:
        return false;
      case RecordAction::kEndOfStream:
        SetAlert(v, info);
        // Remember the end of stream in the kernel rather than in a per-fd table here: later
        // reads return 0, and a reused descriptor number cannot inherit stale state.
        sys.Shutdown(fd, SHUT_RD);
        *result = 0;
        return true;
      case RecordAction::kFatalAlert:
        SetAlert(v, info);
        *result = Fail(info, ECONNRESET, "peer aborted the connection with a TLS alert");
        return true;
      case RecordAction::kKeyUpdate:
        *result =
            Fail(info, EKEYEXPIRED, KeyUpdateMessage(KernelReleaseHasRxRekey(sys.KernelRelease())));
        return true;
      case RecordAction::kProtocolError:
        *result = Fail(info, ErrnoForVerdict(v), v.message);
        return true;
      case RecordAction::kNeedMore: {
        const Failure f = ReadContinuation(sys, fd, type, v.need, payload);
        if (f.err != 0) {
          *result = Fail(info, f.err, f.message);
          return true;
        }
        break;
      }
      case RecordAction::kData:  // ClassifyRecord only says so for type 23, handled by the caller
        *result = Fail(info, EPROTO, "internal error: data verdict for a control record");
        return true;
    }
  }
}

}  // namespace

ssize_t KtlsRecvV(RecvSysCalls& sys, int fd, const iovec* iov, int iovcnt, int flags,
                  ktls_record_info* info_out) {
  ktls_record_info local;
  ktls_record_info* info = info_out != nullptr ? info_out : &local;
  *info = ktls_record_info{};
  info->record_type = KTLS_RECORD_APPLICATION_DATA;
  if (iovcnt < 0 || (iovcnt > 0 && iov == nullptr)) {
    errno = EINVAL;
    return -1;
  }

  // Bytes of the current non-data record; allocated only when one arrives.
  std::vector<uint8_t> payload;
  for (;;) {
    RecvResult r = RecvOnce(sys, fd, iov, iovcnt, flags);
    if (r.n < 0) {
      if (r.err == EKEYEXPIRED) {
        return Fail(info, EKEYEXPIRED,
                    KeyUpdateMessage(KernelReleaseHasRxRekey(sys.KernelRelease())));
      }
      return Fail(info, r.err, MessageForKernelErrno(r.err));
    }
    if (r.record.error != nullptr) return Fail(info, EPROTO, r.record.error);
    if (!r.record.found) return r.n;  // no kTLS RX: plain data, or 0 at EOF
    info->tls_rx = true;
    info->record_type = r.record.type;
    if (r.record.type == kRecordApplicationData) {
      // A zero-length record is legal and is not end of stream (EOF carries no record type).
      // Read past it; a peek cannot (it would see the same record forever), so it reports that
      // nothing is readable yet.
      if (r.n == 0) {
        if (flags & MSG_PEEK) return Fail(info, EAGAIN, nullptr);
        continue;
      }
      return r.n;
    }
    if (const Failure f = TakeControlRecord(sys, fd, iov, iovcnt, flags, r, &payload); f.err != 0) {
      return Fail(info, f.err, f.message);
    }
    ssize_t result = 0;
    if (HandleControlRecord(sys, fd, r.record.type, &payload, info, &result)) return result;
  }
}

ssize_t KtlsRecv(RecvSysCalls& sys, int fd, void* buf, size_t len, int flags,
                 ktls_record_info* info_out) {
  iovec iov{buf, len};
  return KtlsRecvV(sys, fd, &iov, 1, flags, info_out);
}

}  // namespace ktls::client

extern "C" ssize_t ktls_recv(int fd, void* buf, size_t len, int flags, ktls_record_info* info_out) {
  return ktls::client::KtlsRecv(ktls::client::RealRecvSysCalls(), fd, buf, len, flags, info_out);
}

extern "C" ssize_t ktls_readv(int fd, const struct iovec* iov, int iovcnt, int flags,
                              ktls_record_info* info_out) {
  return ktls::client::KtlsRecvV(ktls::client::RealRecvSysCalls(), fd, iov, iovcnt, flags,
                                 info_out);
}

extern "C" int ktls_shutdown(int fd, int how) {
  return ktls::client::KtlsShutdown(ktls::client::RealRecvSysCalls(), fd, how);
}

extern "C" int ktls_close_notify(int fd) { return ktls_shutdown(fd, SHUT_WR); }

extern "C" bool ktls_fd_offload_state(int fd, bool* tx, bool* rx) {
  int type = 0;
  socklen_t len = sizeof(type);
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return false;
  const ktls::client::KernelOffload k = ktls::client::QueryKernelOffload(fd);
  if (tx != nullptr) *tx = k.tx;
  if (rx != nullptr) *rx = k.rx;
  return true;
}

extern "C" int ktls_kernel_has_rx_rekey(void) {
  return ktls::client::KernelReleaseHasRxRekey(ktls::client::RealRecvSysCalls().KernelRelease())
             ? 1
             : 0;
}
