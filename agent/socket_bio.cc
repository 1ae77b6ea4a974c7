#include "agent/socket_bio.h"

#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>

#include <openssl/ssl.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace ktls::agent {
namespace {

// OpenSSL's private BIO controls for kTLS (include/internal/bio.h). They are part of the contract
// between libssl and its socket BIO, stable across 3.x; bio.h documents the reserved numbers.
constexpr int kCtrlSetKtls = 72;
constexpr int kCtrlSetKtlsTxSendCtrlMsg = 74;
constexpr int kCtrlClearKtlsTxCtrlMsg = 75;

// OpenSSL's ktls_crypto_info_t on Linux (include/internal/ktls.h): the union of the kernel's
// crypto-info structs followed by the length to pass to setsockopt.
struct OpenSslKtlsCryptoInfo {
  union {
    tls12_crypto_info_aes_gcm_128 gcm128;
    tls12_crypto_info_aes_gcm_256 gcm256;
    tls12_crypto_info_aes_ccm_128 ccm128;
    tls12_crypto_info_chacha20_poly1305 chacha20poly1305;
  };
  size_t tls_crypto_info_len;
};

constexpr size_t kRecordHeaderLen = 5;  // SSL3_RT_HEADER_LENGTH
constexpr size_t kTagLen = 16;          // EVP_GCM_TLS_TAG_LEN

struct BioData {
  SysCalls* sys;
  int fd;
  SocketBioKtlsState ktls;
  bool send_ctrl_msg = false;
  unsigned char ctrl_record_type = 0;
  bool eof = false;
  // Record framing of the userspace byte stream (see SocketBioRecordCount).
  unsigned char header[kRecordHeaderLen] = {};
  size_t header_have = 0;
  size_t body_left = 0;
  uint64_t records = 0;
};

// Feeds bytes OpenSSL read into the record framer.
void TrackRecords(BioData* d, const unsigned char* p, size_t n) {
  while (n > 0) {
    if (d->header_have < kRecordHeaderLen) {
      size_t take = std::min(kRecordHeaderLen - d->header_have, n);
      memcpy(d->header + d->header_have, p, take);
      d->header_have += take;
      p += take;
      n -= take;
      if (d->header_have == kRecordHeaderLen) {
        d->body_left = (static_cast<size_t>(d->header[3]) << 8) | d->header[4];
        if (d->body_left == 0) {
          ++d->records;
          d->header_have = 0;
        }
      }
      continue;
    }
    size_t take = std::min(d->body_left, n);
    d->body_left -= take;
    p += take;
    n -= take;
    if (d->body_left == 0) {
      ++d->records;
      d->header_have = 0;
    }
  }
}

BioData* DataOf(BIO* b) { return static_cast<BioData*>(BIO_get_data(b)); }

bool Retriable(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

// Reads one record's plaintext from a kTLS RX socket and prepends the 5-byte header OpenSSL's
// record layer expects, with the record type the kernel reports in TLS_GET_RECORD_TYPE.
int KtlsReadRecord(BioData* d, unsigned char* out, size_t len) {
  if (len < kRecordHeaderLen + kTagLen) {
    errno = EINVAL;
    return -1;
  }
  union {
    cmsghdr hdr;
    unsigned char buf[CMSG_SPACE(sizeof(unsigned char))];
  } control;
  iovec iov{out + kRecordHeaderLen, len - kRecordHeaderLen - kTagLen};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof(control.buf);
  SysResult r = d->sys->RecvMsg(d->fd, &msg, 0);
  if (!r.ok()) {
    errno = r.err;
    return -1;
  }
  int n = static_cast<int>(r.rc);
  if (msg.msg_controllen > 0) {
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    if (c != nullptr && c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE) {
      out[0] = *CMSG_DATA(c);
      out[1] = 3;  // TLS1_2_VERSION_MAJOR: the legacy record version
      out[2] = 3;
      out[3] = static_cast<unsigned char>((n >> 8) & 0xff);
      out[4] = static_cast<unsigned char>(n & 0xff);
      n += kRecordHeaderLen;
    }
  }
  return n;
}

int BioRead(BIO* b, char* out, int len) {
  BioData* d = DataOf(b);
  if (out == nullptr || len <= 0) return 0;
  BIO_clear_retry_flags(b);
  int n;
  if (d->ktls.rx) {
    n = KtlsReadRecord(d, reinterpret_cast<unsigned char*>(out), static_cast<size_t>(len));
  } else {
    SysResult r = d->sys->Read(d->fd, out, static_cast<size_t>(len));
    n = static_cast<int>(r.rc);
    if (!r.ok()) errno = r.err;
    if (n > 0) TrackRecords(d, reinterpret_cast<const unsigned char*>(out), static_cast<size_t>(n));
  }
  if (n < 0 && Retriable(errno)) {
    BIO_set_retry_read(b);
  } else if (n == 0) {
    d->eof = true;
  }
  return n;
}

int BioWrite(BIO* b, const char* in, int len) {
  BioData* d = DataOf(b);
  BIO_clear_retry_flags(b);
  SysResult r;
  if (d->send_ctrl_msg) {
    // A non-application record (alert, handshake message) under kTLS TX.
    r = SendTlsRecord(*d->sys, d->fd, d->ctrl_record_type, in, static_cast<size_t>(len),
                      MSG_NOSIGNAL);
    if (r.ok()) {
      r.rc = len;
      d->send_ctrl_msg = false;
    }
  } else {
    r = d->sys->Write(d->fd, in, static_cast<size_t>(len));
  }
  if (!r.ok()) {
    errno = r.err;
    if (Retriable(r.err)) BIO_set_retry_write(b);
    return -1;
  }
  return static_cast<int>(r.rc);
}

bool SetUlp(BioData* d) {
  if (d->ktls.ulp_set) return true;
  if (d->ktls.ulp_errno != 0) return false;  // failed before; do not retry per direction
  static constexpr char kUlp[] = "tls";
  SysResult r =
      KtlsInstallSetSockOpt(*d->sys, d->ktls, d->fd, IPPROTO_TCP, TCP_ULP, kUlp, sizeof(kUlp) - 1);
  if (!r.ok()) {
    d->ktls.ulp_errno = r.err;
    return false;
  }
  d->ktls.ulp_set = true;
  return true;
}

long BioCtrl(BIO* b, int cmd, long num, void* ptr) {
  BioData* d = DataOf(b);
  switch (cmd) {
    case BIO_C_GET_FD:
      if (ptr != nullptr) *static_cast<int*>(ptr) = d->fd;
      return d->fd;
    case BIO_CTRL_FLUSH:
    case BIO_CTRL_DUP:
      return 1;
    case BIO_CTRL_EOF:
      return d->eof ? 1 : 0;
    case BIO_CTRL_GET_CLOSE:
      return BIO_NOCLOSE;
    case BIO_CTRL_SET_CLOSE:
      return 1;
    case kCtrlSetKtls: {
      // num != 0: TX. OpenSSL calls this once per direction when the application keys become
      // active; returning 0 makes it carry on in userspace for that direction.
      const bool is_tx = num != 0;
      auto* info = static_cast<OpenSslKtlsCryptoInfo*>(ptr);
      (is_tx ? d->ktls.tx_attempted : d->ktls.rx_attempted) = true;
      if (!SetUlp(d)) {
        (is_tx ? d->ktls.tx_errno : d->ktls.rx_errno) = d->ktls.ulp_errno;
        return 0;
      }
      SysResult r = KtlsInstallSetSockOpt(*d->sys, d->ktls, d->fd, SOL_TLS, is_tx ? TLS_TX : TLS_RX,
                                          info, static_cast<socklen_t>(info->tls_crypto_info_len));
      if (!r.ok()) {
        (is_tx ? d->ktls.tx_errno : d->ktls.rx_errno) = r.err;
        return 0;
      }
      (is_tx ? d->ktls.tx : d->ktls.rx) = true;
      return 1;
    }
    case BIO_CTRL_GET_KTLS_SEND:
      return d->ktls.tx ? 1 : 0;
    case BIO_CTRL_GET_KTLS_RECV:
      return d->ktls.rx ? 1 : 0;
    case kCtrlSetKtlsTxSendCtrlMsg:
      d->send_ctrl_msg = true;
      d->ctrl_record_type = static_cast<unsigned char>(num);
      return 0;
    case kCtrlClearKtlsTxCtrlMsg:
      d->send_ctrl_msg = false;
      return 0;
    default:
      return 0;
  }
}

int BioCreate(BIO* b) {
  BIO_set_init(b, 0);
  BIO_set_data(b, nullptr);
  return 1;
}

int BioDestroy(BIO* b) {
  delete DataOf(b);
  BIO_set_data(b, nullptr);
  BIO_set_init(b, 0);
  return 1;
}

int BioPuts(BIO* b, const char* s) { return BioWrite(b, s, static_cast<int>(strlen(s))); }

int g_bio_type = 0;

const BIO_METHOD* Method() {
  static BIO_METHOD* method = [] {
    // BIO_TYPE_DESCRIPTOR makes SSL_get_fd()/SSL_get_wfd() (used by SSL_sendfile) find us.
    int type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR;
    g_bio_type = type;
    BIO_METHOD* m = BIO_meth_new(type, "ktls-agent socket");
    BIO_meth_set_write(m, BioWrite);
    BIO_meth_set_read(m, BioRead);
    BIO_meth_set_puts(m, BioPuts);
    BIO_meth_set_ctrl(m, BioCtrl);
    BIO_meth_set_create(m, BioCreate);
    BIO_meth_set_destroy(m, BioDestroy);
    return m;  // lives for the process
  }();
  return method;
}

}  // namespace

SysResult KtlsInstallSetSockOpt(SysCalls& sys, SocketBioKtlsState& st, int fd, int level, int name,
                                const void* value, socklen_t len) {
  const auto t0 = std::chrono::steady_clock::now();  // vDSO clock, not a syscall
  SysResult r = sys.SetSockOpt(fd, level, name, value, len);
  st.kernel_install_ns += static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count());
  return r;
}

BioPtr NewSocketBio(SysCalls& sys, int fd) {
  BioPtr bio(BIO_new(Method()));
  if (!bio) return nullptr;
  BIO_set_data(bio.get(), new BioData{&sys, fd, {}});
  BIO_set_init(bio.get(), 1);
  return bio;
}

SocketBioKtlsState* SocketBioState(BIO* bio) {
  Method();  // makes sure g_bio_type is initialized
  if (bio == nullptr || BIO_method_type(bio) != g_bio_type) return nullptr;
  BioData* d = DataOf(bio);
  return d == nullptr ? nullptr : &d->ktls;
}

SysResult SendTlsRecord(SysCalls& sys, int fd, uint8_t record_type, const void* data, size_t len,
                        int flags) {
  union {
    cmsghdr hdr;
    unsigned char buf[CMSG_SPACE(sizeof(unsigned char))];
  } control{};
  iovec iov{const_cast<void*>(data), len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof(control.buf);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_TLS;
  c->cmsg_type = TLS_SET_RECORD_TYPE;
  c->cmsg_len = CMSG_LEN(sizeof(unsigned char));
  *CMSG_DATA(c) = record_type;
  msg.msg_controllen = c->cmsg_len;
  return sys.SendMsg(fd, &msg, flags);
}

RecordCount SocketBioRecordCount(BIO* bio) {
  if (SocketBioState(bio) == nullptr) return {};
  BioData* d = DataOf(bio);
  return RecordCount{d->records, d->header_have == 0};
}

bool EnsureUlp(BIO* bio) {
  if (SocketBioState(bio) == nullptr) return false;
  BioData* d = DataOf(bio);
  return d != nullptr && SetUlp(d);
}

}  // namespace ktls::agent
