// I/O helpers that make a handed descriptor (kTLS socket or relay socketpair) behave like a plain
// stream socket. The C entry points are in ktls/ktls_client.h; this header adds the C++ view and
// the pure pieces ktls_recv is built from, so that the TLS record paths (which need a kernel with
// CONFIG_TLS to happen for real) are unit-tested without one.
//
// Grouped by file:
//   client/lib/tls_record.cc  pure: record-type cmsg parsing and record classification
//   client/lib/io.cc          syscalls: ktls_recv, ktls_readv, ktls_shutdown, ktls_fd_offload_state
#ifndef KTLS_CLIENT_IO_H_
#define KTLS_CLIENT_IO_H_

#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ktls/ktls_client.h"

namespace ktls::client {

// ---- client/lib/tls_record.cc -----------------------------------------------------------------

inline constexpr uint8_t kRecordChangeCipherSpec = KTLS_RECORD_CHANGE_CIPHER_SPEC;
inline constexpr uint8_t kRecordAlert = KTLS_RECORD_ALERT;
inline constexpr uint8_t kRecordHandshake = KTLS_RECORD_HANDSHAKE;
inline constexpr uint8_t kRecordApplicationData = KTLS_RECORD_APPLICATION_DATA;

inline constexpr uint8_t kAlertLevelWarning = 1;
inline constexpr uint8_t kAlertLevelFatal = 2;
inline constexpr uint8_t kAlertCloseNotify = 0;
inline constexpr uint8_t kAlertUserCanceled = 90;

inline constexpr uint8_t kHandshakeHelloRequest = 0;
inline constexpr uint8_t kHandshakeClientHello = 1;
inline constexpr uint8_t kHandshakeNewSessionTicket = 4;
inline constexpr uint8_t kHandshakeKeyUpdate = 24;

// A post-handshake message larger than this is refused (a NewSessionTicket is at most ~128 KiB:
// 2^16-1 ticket bytes plus 2^16-2 extension bytes and a small header).
inline constexpr size_t kMaxPostHandshakeMessageBytes = 192 * 1024;

inline constexpr const char* kKeyUpdateMessage = "peer KeyUpdate: kernel lacks TLS 1.3 rekey";

// RFC 8446 / RFC 5246 alert name, "unknown_alert" otherwise. Static string.
const char* AlertName(uint8_t description);

// What to do with the plaintext of a record whose content type the kernel reported.
enum class RecordAction {
  kData,           // application data: hand it to the caller
  kSkip,           // consumed silently (NewSessionTicket, HelloRequest, user_canceled); read on
  kEndOfStream,    // close_notify
  kFatalAlert,     // any other alert: the peer aborted the connection
  kKeyUpdate,      // TLS 1.3 KeyUpdate: the kernel cannot follow (no rekey before Linux ~6.14)
  kNeedMore,       // the payload ends inside an alert or handshake message: read `need` bytes
  kProtocolError,  // something kTLS cannot follow; `message` says what
};

struct RecordVerdict {
  RecordAction action = RecordAction::kProtocolError;
  // kNeedMore: the payload must grow to this many bytes before it can be classified.
  size_t need = 0;
  // kEndOfStream / kFatalAlert: the alert that decided it.
  uint8_t alert_level = 0;
  uint8_t alert_description = 0;
  // kKeyUpdate / kProtocolError: static text for logs.
  const char* message = nullptr;
  // Number of messages skipped before the deciding one (or all of them, for kSkip).
  uint32_t skipped = 0;
};

// Classifies `payload`, the decrypted bytes of one record of type `record_type` (or the start of
// the bytes of consecutive records of that type, because both alerts and handshake messages form
// a stream that may be split across recvmsg calls or records). Pure: no syscalls, no allocation.
RecordVerdict ClassifyRecord(uint8_t record_type, std::span<const uint8_t> payload);

// The record type as recvmsg reported it in its control data.
struct RecordTypeCmsg {
  bool found = false;  // a SOL_TLS / TLS_GET_RECORD_TYPE message was present and well formed
  uint8_t type = 0;
  const char* error = nullptr;  // static text: malformed or truncated control data
};

// Scans every control message of a received `msg` (after recvmsg). Descriptors passed with
// SCM_RIGHTS (a relay peer must never send any) are appended to `stray_fds` for the caller to
// close; other unknown control messages (timestamps ...) are ignored. MSG_CTRUNC is an error only
// when it may have cost the record type: a TLS record-type message that did arrive is trusted.
RecordTypeCmsg ParseRecordTypeCmsg(const msghdr& msg, std::vector<int>* stray_fds);

// errno ktls_recv reports for a verdict that ends the call with -1 (0 for kData/kSkip/kNeedMore/
// kEndOfStream).
int ErrnoForVerdict(const RecordVerdict& verdict);

// ---- client/lib/io.cc ------------------------------------------------------------------------

// Room for the record-type message plus a few others (timestamps) a caller may have enabled.
inline constexpr size_t kRecvControlBytes = 256;

// What ktls_recv reports for a peer KeyUpdate on a kernel that can take new RX keys (6.14+): the
// kernel could rekey, but the app does not hold the traffic secret to derive the keys from.
inline constexpr const char* kKeyUpdateNoSecretMessage =
    "peer KeyUpdate: kTLS RX needs new keys, and the traffic secret stayed with the agent";

// Result of one syscall, errno captured right after it.
struct IoResult {
  ssize_t rc = -1;
  int err = 0;  // errno when rc < 0
};

// The syscalls the I/O helpers make, so tests can play a kTLS kernel (records with
// TLS_GET_RECORD_TYPE control messages, split records, EAGAIN, EKEYEXPIRED, a full send buffer)
// on a host without CONFIG_TLS. The non-pure ones reach the real kernel unless overridden.
class RecvSysCalls {
 public:
  virtual ~RecvSysCalls() = default;
  virtual IoResult RecvMsg(int fd, msghdr* msg, int flags) = 0;
  virtual IoResult Shutdown(int fd, int how) = 0;
  virtual IoResult Poll(pollfd* fds, nfds_t n, int timeout_ms) = 0;
  virtual IoResult Close(int fd) = 0;
  virtual IoResult SendMsg(int fd, const msghdr* msg, int flags);
  virtual IoResult GetSockOpt(int fd, int level, int name, void* value, socklen_t* len);
  // uname -r, e.g. "6.1.0-56-cloud-amd64".
  virtual std::string KernelRelease();
};

// The real kernel. Stateless.
RecvSysCalls& RealRecvSysCalls();

// ktls_recv / ktls_readv over `sys` (the C functions use RealRecvSysCalls()).
ssize_t KtlsRecv(RecvSysCalls& sys, int fd, void* buf, size_t len, int flags,
                 ktls_record_info* info_out);
ssize_t KtlsRecvV(RecvSysCalls& sys, int fd, const iovec* iov, int iovcnt, int flags,
                  ktls_record_info* info_out);

// ktls_shutdown over `sys`.
int KtlsShutdown(RecvSysCalls& sys, int fd, int how);

// True when a kernel of this release (uname -r) accepts new kTLS RX keys after a KeyUpdate
// (Linux 6.14+). Pure; unparsable releases are "no".
bool KernelReleaseHasRxRekey(std::string_view release);

// The message for a peer KeyUpdate on this kernel (kKeyUpdateMessage or kKeyUpdateNoSecretMessage).
const char* KeyUpdateMessage(bool kernel_has_rx_rekey);

struct KernelOffload {
  bool tx = false;
  bool rx = false;
};

// What the kernel says about fd (see ktls_fd_offload_state); false/false for non-sockets.
KernelOffload QueryKernelOffload(int fd);

// True when fd is a TCP socket with the "tls" ULP and TLS_TX keys installed.
bool HasKtlsTx(int fd);
bool HasKtlsTx(RecvSysCalls& sys, int fd);

}  // namespace ktls::client

#endif  // KTLS_CLIENT_IO_H_
