/* C API for reading and closing descriptors handed over by ktls-agent.
 *
 * A handed descriptor is either a TCP socket with kTLS installed (the kernel decrypts what the app
 * reads and encrypts what it writes) or one end of a socketpair that the agent relays. These
 * functions make both look like a plain stream socket, so application code is the same either
 * way. Write with write()/writev()/sendfile() as usual; read with ktls_recv(); close with
 * ktls_close_notify() then close().
 *
 * Implemented in client/lib/io.cc (C++), callable from C. Thread-safe: no library state; the
 * only per-descriptor memory is in the kernel (see ktls_recv and close_notify).
 */
#ifndef KTLS_CLIENT_KTLS_CLIENT_H_
#define KTLS_CLIENT_KTLS_CLIENT_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* TLS record content types (RFC 8446 section 5.1). */
#define KTLS_RECORD_CHANGE_CIPHER_SPEC 20
#define KTLS_RECORD_ALERT 21
#define KTLS_RECORD_HANDSHAKE 22
#define KTLS_RECORD_APPLICATION_DATA 23

/* What ktls_recv saw. All pointers are static strings (never free them). */
typedef struct ktls_record_info {
  /* Content type of the record the call returned or failed on; APPLICATION_DATA for plain data
   * and for descriptors without kTLS RX (relay socketpairs, plain TCP). */
  uint8_t record_type;
  /* true when the kernel reported a record type, i.e. the descriptor has kTLS RX. */
  bool tls_rx;
  /* For alerts (record_type == KTLS_RECORD_ALERT): level (1 warning, 2 fatal), description and
   * its RFC name, e.g. "close_notify", "handshake_failure", "bad_record_mac". NULL otherwise. */
  uint8_t alert_level;
  uint8_t alert_description;
  const char* alert_name;
  /* When ktls_recv returns -1 for a TLS-level reason: what happened, for logs, e.g.
   * "peer KeyUpdate: kernel lacks TLS 1.3 rekey". NULL for ordinary socket errors (EAGAIN ...). */
  const char* error;
  /* Records consumed silently during this call (NewSessionTicket, user_canceled). */
  uint32_t skipped_records;
} ktls_record_info;

/* Reads plaintext application data, like recv(2).
 *   > 0  bytes of application data in buf.
 *   0    end of stream: the peer sent close_notify, or closed TCP (relay: the agent closed the
 *        pair after the peer's close_notify). After close_notify the read side is shut down
 *        (shutdown(SHUT_RD)), so later calls return 0 as well.
 *   -1   errno set:
 *        EAGAIN/EWOULDBLOCK  non-blocking and no application data is available (also when only
 *                            a NewSessionTicket was consumed: data is never reported that was
 *                            not read);
 *        ECONNRESET          the peer sent a fatal alert (info_out->alert_name says which);
 *        EKEYEXPIRED         the peer sent a TLS 1.3 KeyUpdate, which this kernel cannot follow:
 *                            the connection is unusable, close it;
 *        EBADMSG             a record failed authentication in the kernel (bad_record_mac);
 *        EMSGSIZE            a record exceeded the TLS limit (record_overflow);
 *        EPROTO              anything else the peer did that kTLS cannot follow (renegotiation,
 *                            unexpected post-handshake messages, malformed control data);
 *        EIO                 the kernel refused to return a non-data record (should not happen:
 *                            a control buffer is always passed);
 *        other               as recvmsg(2).
 * flags are recvmsg flags (MSG_DONTWAIT, MSG_PEEK ...). MSG_PEEK peeks data only: non-data
 * records at the head are consumed and acted on as without it. info_out may be NULL. */
ssize_t ktls_recv(int fd, void* buf, size_t len, int flags, ktls_record_info* info_out);

/* Ends the write direction cleanly. On a socket with kTLS TX, sends a close_notify alert record
 * and then shutdown(SHUT_WR); on anything else (relay socketpair, plain TCP) only
 * shutdown(SHUT_WR) (the relay turns EOF into close_notify). Returns 0, or -1 with errno; with
 * EAGAIN (non-blocking, send buffer full) nothing was sent: call again when writable. Does not
 * close fd. */
int ktls_close_notify(int fd);

/* Asks the kernel whether kTLS TX / RX keys are installed on fd (getsockopt SOL_TLS TLS_TX /
 * TLS_RX, reading only the version/cipher header, never key material). Returns false with errno
 * (EBADF, ENOTSOCK) when fd is not a socket; otherwise true, with *tx and *rx set (either pointer
 * may be NULL). A relay socketpair reports false/false. */
bool ktls_fd_offload_state(int fd, bool* tx, bool* rx);

/* RFC name of an alert description ("close_notify", "bad_record_mac" ...), "unknown_alert" if
 * the value is not assigned. Static string. */
const char* ktls_alert_name(uint8_t description);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* KTLS_CLIENT_KTLS_CLIENT_H_ */
