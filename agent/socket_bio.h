// An OpenSSL BIO over a connected, non-blocking TCP socket whose every syscall goes through
// SysCalls, and that answers OpenSSL's kTLS controls exactly as OpenSSL's own socket BIO does
// (crypto/bio/bss_sock.c + include/internal/ktls.h): OpenSSL 3.0 installs kTLS TX (and TLS 1.2
// RX) by sending BIO_CTRL_SET_KTLS with its crypto info, asks BIO_get_ktls_send/recv, sends
// non-data records under kTLS TX through a "control message" flag, and expects kTLS RX reads to
// come back with a synthesized 5-byte record header.
//
// Why not SSL_set_fd: with OpenSSL's socket BIO the handshake's reads/writes and the TCP_ULP /
// TLS_TX / TLS_RX setsockopts bypass the injectable SysCalls, so tests could not make them fail,
// and the agent could not learn the errno of a failed install to report its meaning.
#ifndef KTLS_AGENT_SOCKET_BIO_H_
#define KTLS_AGENT_SOCKET_BIO_H_

#include <cstdint>

#include "agent/openssl_ptr.h"
#include "agent/syscalls.h"

namespace ktls::agent {

// What happened to kTLS on this BIO's socket. Errnos are those of the failing setsockopt.
struct SocketBioKtlsState {
  bool ulp_set = false;
  bool tx = false;  // TLS_TX installed
  bool rx = false;  // TLS_RX installed (by OpenSSL through this BIO, or by MarkKtlsRx)
  int ulp_errno = 0;
  int tx_errno = 0;
  int rx_errno = 0;
  bool tx_attempted = false;
  bool rx_attempted = false;
  // Time spent inside the kTLS setsockopts (TCP_ULP, TLS_TX, TLS_RX) on this socket, whoever
  // made them (OpenSSL through this BIO, or the installer by hand): the kernel's share of an
  // offload (it allocates the AEAD transforms and expands the keys), exported as
  // ktls_install_duration_seconds so the cost of kTLS per connection is visible.
  uint64_t kernel_install_ns = 0;
};

// setsockopt for a kTLS install step (TCP_ULP, TLS_TX, TLS_RX) on a socket whose kTLS state is
// `st`: the time it took is added to st.kernel_install_ns.
SysResult KtlsInstallSetSockOpt(SysCalls& sys, SocketBioKtlsState& st, int fd, int level, int name,
                                const void* value, socklen_t len);

// A new BIO for `fd` (not owned: closing the fd is the caller's business). Returns nullptr on
// allocation failure.
BioPtr NewSocketBio(SysCalls& sys, int fd);

// The kTLS state of a BIO made by NewSocketBio, or nullptr for any other BIO.
SocketBioKtlsState* SocketBioState(BIO* bio);

// TLS records OpenSSL has read completely through this BIO in userspace, and whether the byte
// stream is at a record boundary. With read-ahead off OpenSSL reads exactly one record at a time,
// so the difference between two readings is the number of records consumed in between: the
// kTLS RX sequence number for records read after the application key became active (outbound
// TLS 1.3 connections read the server's NewSessionTickets before handing off).
struct RecordCount {
  uint64_t records = 0;
  bool at_boundary = true;
};
RecordCount SocketBioRecordCount(BIO* bio);

// Sends one TLS record of `record_type` (21 alert, 22 handshake, ...) on a kTLS TX socket: the
// kernel frames and encrypts it with the type given in a TLS_SET_RECORD_TYPE cmsg.
SysResult SendTlsRecord(SysCalls& sys, int fd, uint8_t record_type, const void* data, size_t len,
                        int flags);

// Sets TCP_ULP "tls" on the BIO's socket if it is not set yet (irreversible: afterwards the
// socket can still carry plain TCP, but never another ULP). Records the errno on failure.
bool EnsureUlp(BIO* bio);

}  // namespace ktls::agent

#endif  // KTLS_AGENT_SOCKET_BIO_H_
