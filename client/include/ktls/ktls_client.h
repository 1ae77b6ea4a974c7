/* ktls_client.h: the C API of ktls-sidecar's application library (libktls_client).
 *
 * ktls-agent terminates TLS, installs the session keys in the kernel (kTLS) and hands the
 * connected socket to the application over a Unix socket. Where kTLS cannot be installed it hands
 * over one end of a socketpair and relays. This API is everything an application needs:
 *
 *   subscribe     ktls_agent_connect()      one subscription = one Unix socket to the agent
 *   take          ktls_agent_accept()       a ktls_conn: descriptor + metadata + already-read bytes
 *   credits       ktls_agent_grant()        "I can take n more connections"
 *   restart       ktls_agent_reconnect()    after the agent restarted; nothing the app holds is
 * lost outbound      ktls_agent_dial()         the agent dials host:port as a TLS client for the
 * app I/O           ktls_conn_read(), ktls_recv(), ktls_readv(): plaintext in; write()/writev()/
 *                 sendfile() plaintext out; ktls_shutdown() for a clean close (close_notify)
 *
 * Guide with examples in C, C++ and Python: docs/app-integration.md.
 *
 * ABI: stable. Handles are opaque; structs the library returns (ktls_conn_info) only ever grow at
 * the end and are owned by the library; structs the caller passes in (ktls_dial_options) start
 * with their size; ktls_record_info has reserved room. Functions are never removed or changed,
 * only added (ktls_client_api_version() tells which set a library has). No C++ types cross it.
 *
 * Errors: functions that work on handles return an int status, KTLS_OK (0) or a negative
 * KTLS_E_* code; ktls_last_error() is the message for the last failure on the calling thread.
 * The I/O functions (ktls_recv, ktls_readv, ktls_conn_read, ktls_shutdown) work like their
 * syscalls instead: -1 with errno, details in ktls_record_info.
 *
 * Threads: a ktls_agent belongs to one thread at a time (no internal locking). ktls_conn handles
 * are independent of each other and of the agent that produced them. The I/O functions keep no
 * state in the library and may be used from any thread.
 */
#ifndef KTLS_CLIENT_KTLS_CLIENT_H_
#define KTLS_CLIENT_KTLS_CLIENT_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#if defined(__GNUC__)
#define KTLS_API __attribute__((visibility("default")))
#else
#define KTLS_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this API. 1: the functions below. */
#define KTLS_CLIENT_API_VERSION 1
KTLS_API int ktls_client_api_version(void);

/* ==== Status codes ============================================================================ */

#define KTLS_OK 0
/* Non-blocking and nothing to return yet. Not an error: wait until ktls_agent_fd() is readable. */
#define KTLS_E_AGAIN (-1)
/* A NULL handle, an empty or too long socket path, a missing host ... (a caller bug). */
#define KTLS_E_INVALID_ARGUMENT (-2)
/* No socket at the path: the agent is not running, or the path is wrong. Retry later. */
#define KTLS_E_NOT_FOUND (-3)
/* The agent is not there (stale socket) or hung up (it exited or restarted). Call
 * ktls_agent_reconnect() until it succeeds; connections already taken keep working. */
#define KTLS_E_UNAVAILABLE (-4)
/* The socket exists but this process may not connect to it (owner/mode). */
#define KTLS_E_PERMISSION (-5)
/* The agent refused this app: protocol version mismatch, or a ProtocolError (text in the
 * message). Usually a deployment error (library and agent from incompatible releases). */
#define KTLS_E_PROTOCOL (-6)
/* No answer in time. */
#define KTLS_E_TIMEOUT (-7)
/* The agent sent a message this library refused (unparsable, wrong descriptors). Every
 * descriptor it carried was closed; the subscription stays usable: call again. */
#define KTLS_E_MALFORMED (-8)
/* The agent could not dial: connect, name resolution, certificate verification, handshake or
 * timeout. The message is the agent's reason. No descriptor was produced. */
#define KTLS_E_DIAL (-9)
/* Out of memory or descriptors (EMFILE) in this process. */
#define KTLS_E_RESOURCE (-10)
/* A bug in the library or the agent. */
#define KTLS_E_INTERNAL (-11)

/* "KTLS_OK", "KTLS_E_UNAVAILABLE" ... (static string). */
KTLS_API const char* ktls_status_name(int status);
/* Message of the last failed ktls_* call on this thread, "" if none. Valid until the next failing
 * call on this thread; copy it to keep it. */
KTLS_API const char* ktls_last_error(void);

/* ==== Records (what a read saw) =============================================================== */

/* TLS record content types (RFC 8446 section 5.1). */
#define KTLS_RECORD_CHANGE_CIPHER_SPEC 20
#define KTLS_RECORD_ALERT 21
#define KTLS_RECORD_HANDSHAKE 22
#define KTLS_RECORD_APPLICATION_DATA 23

/* What a read saw. Pointers are static strings (never free them). */
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
  /* When a read returns -1 for a TLS-level reason: what happened, for logs, e.g.
   * "peer KeyUpdate: kernel lacks TLS 1.3 rekey". NULL for ordinary socket errors (EAGAIN ...). */
  const char* error;
  /* Records consumed silently during this call (NewSessionTicket, user_canceled). */
  uint32_t skipped_records;
  /* Zeroed; room for fields added later without changing the struct's size. */
  uint32_t reserved32;
  uint64_t reserved[4];
} ktls_record_info;

/* ==== Subscription ============================================================================ */

typedef struct ktls_agent ktls_agent; /* a subscription to one agent */
typedef struct ktls_conn ktls_conn;   /* one connection handed over by the agent */

/* Connects to the agent's handoff socket (default /run/ktls/handoff.sock), subscribes as
 * `app_name` (free text, for the agent's logs and metrics) with `initial_credits` (how many
 * connections the agent may hand over before the app grants more; 0 for an app that only dials),
 * and waits up to `timeout_ms` (<= 0: 5000) for the agent's answer.
 * Returns KTLS_OK and *out, or KTLS_E_NOT_FOUND / _UNAVAILABLE / _PERMISSION / _PROTOCOL /
 * _TIMEOUT / _INVALID_ARGUMENT / _RESOURCE. The handle starts in blocking mode. */
KTLS_API int ktls_agent_connect(const char* socket_path, const char* app_name,
                                uint32_t initial_credits, int timeout_ms, ktls_agent** out);

/* Closes the subscription and frees the handle. Connections queued inside it and not yet taken
 * are closed; connections already taken are not affected. NULL is a no-op. */
KTLS_API void ktls_agent_close(ktls_agent* agent);

/* A descriptor for poll/epoll (level-triggered, EPOLLIN): readable whenever ktls_agent_accept()
 * has something to return (a connection, or the news that the agent went away). It stays the
 * same descriptor across ktls_agent_reconnect(), so register it once. Do not read it or close it.
 */
KTLS_API int ktls_agent_fd(const ktls_agent* agent);

/* Non-blocking mode (non_blocking != 0): ktls_agent_accept() returns KTLS_E_AGAIN instead of
 * waiting. Survives ktls_agent_reconnect(). */
KTLS_API int ktls_agent_set_nonblocking(ktls_agent* agent, int non_blocking);

/* Takes the next connection: KTLS_OK and *out (free it with ktls_conn_free). Otherwise:
 *   KTLS_E_AGAIN        non-blocking and nothing waiting
 *   KTLS_E_UNAVAILABLE  the agent went away (reported once; then the handle is disconnected and
 *                       ktls_agent_fd() stops being readable): ktls_agent_reconnect()
 *   KTLS_E_MALFORMED    one message was refused (its descriptors closed): just call again
 *   KTLS_E_PROTOCOL     the agent sent ProtocolError (it drops the subscription afterwards)
 * Connections that arrived while ktls_agent_dial() waited come out here first, in order. */
KTLS_API int ktls_agent_accept(ktls_agent* agent, ktls_conn** out);

/* Grants `n` more connections (n == 0: no-op). Each handed connection uses one credit; the agent
 * never hands more than were granted and not used. Grants beyond the agent's limit are clamped.
 * While disconnected (KTLS_E_UNAVAILABLE) the grant is remembered and sent with the next
 * subscription, so credit accounting survives a reconnect. */
KTLS_API int ktls_agent_grant(ktls_agent* agent, uint32_t n);

/* Credits granted and not yet used, as this side counts them. */
KTLS_API uint64_t ktls_agent_outstanding_credits(const ktls_agent* agent);

/* 1 while subscribed, 0 after the agent went away (until ktls_agent_reconnect succeeds). */
KTLS_API int ktls_agent_connected(const ktls_agent* agent);

/* Subscribes again at the same path with the same app name, granting the credits that were
 * outstanding when the agent went away. Kept across it: the handle, ktls_agent_fd(), the
 * blocking mode, connections queued and not yet taken, and every connection already taken.
 * Returns as ktls_agent_connect(); on failure the handle stays disconnected and can retry.
 * May also be called while connected (drops the old subscription first). */
KTLS_API int ktls_agent_reconnect(ktls_agent* agent, int timeout_ms);

/* What the agent said when subscribing: its version string (static for the handle's life) and
 * the id it gave this subscription. */
KTLS_API const char* ktls_agent_version(const ktls_agent* agent);
KTLS_API uint64_t ktls_agent_subscriber_id(const ktls_agent* agent);

/* ==== Outbound connections =====================================================================
 */

typedef struct ktls_dial_options {
  /* sizeof(ktls_dial_options), set by the caller (KTLS_DIAL_OPTIONS_INIT does). */
  size_t struct_size;
  const char* host;          /* IP literal or DNS name (required) */
  uint16_t port;             /* required */
  const char* sni;           /* NULL/"": host when it is a DNS name, none for IP literals */
  const char* alpn;          /* comma-separated preference list, e.g. "h2,http/1.1"; NULL: none */
  const char* ca_file;       /* PEM bundle the AGENT can read; NULL: the system trust store */
  const char* expected_name; /* name the certificate must match; NULL: sni, else host */
  int insecure_skip_verify;  /* tests only: no verification (peer_cert_verified is false) */
  uint32_t timeout_ms;       /* connect + handshake, enforced by the agent; 0: 10000 */
  const char* tls_version;   /* NULL/"": negotiate; "TLSv1.2" or "TLSv1.3": pin one */
} ktls_dial_options;

#define KTLS_DIAL_OPTIONS_INIT \
  { sizeof(ktls_dial_options), NULL, 0, NULL, NULL, NULL, NULL, 0, 0, NULL }

/* Asks the agent to connect to host:port, handshake as a TLS client (verifying the server),
 * install kTLS (or relay) and hand the connection back; waits for the answer (the agent's timeout
 * plus 5 s). Returns KTLS_OK and *out, whose info has outbound = true (and resumed = true when
 * the agent resumed a cached session), or:
 *   KTLS_E_DIAL         the agent tried and failed; ktls_last_error() says why, e.g.
 *                       "dial example.com:443: certificate verify failed: ..."
 *   KTLS_E_TIMEOUT      no answer in time (a late answer is discarded and its descriptor closed)
 *   KTLS_E_UNAVAILABLE  the agent went away: ktls_agent_reconnect(), then dial again
 *   KTLS_E_PROTOCOL     the agent refused the request (an agent without outbound support answers
 *                       ProtocolError and drops the subscription)
 * Connections handed over while waiting are queued, not lost: ktls_agent_accept() returns them
 * (and ktls_agent_fd() is readable). Dials use no credits. Blocking even in non-blocking mode:
 * an event-loop app dials from a helper thread with its own ktls_agent (credits 0). */
KTLS_API int ktls_agent_dial(ktls_agent* agent, const ktls_dial_options* options, ktls_conn** out);

/* ==== Connections ==============================================================================
 */

#define KTLS_DATA_PATH_UNSPECIFIED 0
#define KTLS_DATA_PATH_KTLS 1  /* the TCP socket itself, kTLS TX and RX installed */
#define KTLS_DATA_PATH_RELAY 2 /* one end of a socketpair; the agent does the TLS */

#define KTLS_OFFLOAD_UNSPECIFIED 0
#define KTLS_OFFLOAD_ACTIVE 1   /* the kernel holds this direction's keys */
#define KTLS_OFFLOAD_INACTIVE 2 /* the agent's relay does this direction */

/* Metadata of a connection, as the agent reported it. Owned by the ktls_conn (valid until
 * ktls_conn_free). Strings are never NULL ("" when absent). Fields are only ever added at the
 * end. */
typedef struct ktls_conn_info {
  uint64_t connection_id;   /* unique within one agent process */
  const char* listener;     /* listener name from the agent's configuration ("" outbound) */
  const char* peer_address; /* client (inbound) or upstream (outbound) address, no brackets */
  uint32_t peer_port;
  const char* local_address;
  uint32_t local_port;
  const char* sni;           /* server name the client asked for (inbound) / sent (outbound) */
  const char* alpn;          /* negotiated protocol, "" if none */
  const char* tls_version;   /* "TLSv1.2" or "TLSv1.3" */
  uint32_t tls_version_code; /* 0x0303 or 0x0304 */
  const char* cipher;        /* IANA name, e.g. "TLS_AES_128_GCM_SHA256" */
  int32_t data_path;         /* KTLS_DATA_PATH_* */
  int32_t ktls_tx;           /* KTLS_OFFLOAD_* */
  int32_t ktls_rx;
  const char* fallback_reason; /* why relayed instead of kTLS, "" for kTLS */
  bool resumed;                /* TLS session resumption was used */
  uint64_t handshake_micros;   /* accept (or connect) to handshake done */
  bool peer_cert_presented;    /* the peer sent a certificate */
  bool peer_cert_verified;  /* and it verified (client CA bundle inbound, server trust outbound) */
  const char* peer_subject; /* RFC 2253 */
  const char* peer_issuer;
  const char* peer_sha256_fingerprint; /* hex, of the DER certificate */
  size_t peer_dns_san_count;
  const char* const* peer_dns_sans;
  size_t peer_uri_san_count;
  const char* const* peer_uri_sans; /* e.g. SPIFFE IDs */
  size_t initial_data_bytes;        /* plaintext the agent read before the handoff (see pending) */
  bool outbound;                    /* produced by ktls_agent_dial */
  uint64_t dial_request_id;         /* outbound: the request it answers */
} ktls_conn_info;

KTLS_API const ktls_conn_info* ktls_conn_get_info(const ktls_conn* conn);
/* The same metadata as one JSON object (keys as the struct fields, plus "data_path_name"), for
 * scripting languages. Owned by the conn. */
KTLS_API const char* ktls_conn_info_json(const ktls_conn* conn);

/* The connected descriptor: blocking, close-on-exec. Owned by the conn unless released. Write to
 * it with write()/writev()/sendfile()/splice(); read it with ktls_conn_read (or, once
 * ktls_conn_pending() is empty, ktls_recv/ktls_readv). */
KTLS_API int ktls_conn_fd(const ktls_conn* conn);

/* Takes the descriptor out of the conn (the caller closes it; ktls_conn_free then leaves it
 * open). Consume ktls_conn_pending() first: it comes before anything read from the descriptor. */
KTLS_API int ktls_conn_release_fd(ktls_conn* conn);

/* Plaintext the agent read before the handoff and the app has not consumed yet: *data points into
 * the conn (valid until the next ktls_conn_read/ktls_conn_free). epoll does not see these bytes,
 * so process them as soon as the connection is taken (ktls_conn_read returns them first). */
KTLS_API size_t ktls_conn_pending(const ktls_conn* conn, const void** data);

/* Reads plaintext: pending bytes first, then ktls_recv() on the descriptor. Same results. */
KTLS_API ssize_t ktls_conn_read(ktls_conn* conn, void* buf, size_t len, int flags,
                                ktls_record_info* info_out);
KTLS_API ssize_t ktls_conn_readv(ktls_conn* conn, const struct iovec* iov, int iovcnt, int flags,
                                 ktls_record_info* info_out);

/* Closes the descriptor (unless released) and frees the conn. Closing does not send
 * close_notify: call ktls_shutdown(fd, SHUT_WR) first for a clean end. NULL is a no-op. */
KTLS_API void ktls_conn_free(ktls_conn* conn);

/* ==== I/O on handed descriptors ================================================================
 */

/* Reads plaintext application data, like recv(2), on a kTLS socket, a relay socketpair or any
 * stream socket. It reads with recvmsg and a control buffer, so the kernel reports each record's
 * type (a plain read() fails with EIO at the first non-data record):
 *   > 0  bytes of application data in buf (never bytes of a control record).
 *   0    end of stream: the peer sent close_notify, or closed TCP (relay: the agent closed the pair
 *        after the peer's close_notify). After close_notify the read side is shut down
 *        (shutdown(SHUT_RD)), so later calls return 0 as well.
 *   -1   errno set (docs/app-integration.md has the table with what to do):
 *        EAGAIN/EWOULDBLOCK  non-blocking and no application data is available, also when the
 *                            readiness came from a control record that was consumed (a
 *                            NewSessionTicket): data is never reported that was not read;
 *        ECONNRESET          the peer sent a fatal alert (info_out->alert_name says which), or
 *                            reset TCP (alert_name NULL);
 *        EKEYEXPIRED         the peer sent a TLS 1.3 KeyUpdate: kTLS RX cannot follow it here
 *                            (info_out->error says why); the connection is unusable, close it;
 *        EBADMSG             a record failed authentication in the kernel (bad_record_mac);
 *        EMSGSIZE            a record exceeded the TLS limit (record_overflow);
 *        EPROTO              anything else the peer did that kTLS cannot follow (renegotiation,
 *                            post-handshake auth, malformed or truncated control data);
 *        EIO                 the kernel refused to return a non-data record (not expected: a
 *                            control buffer is always passed);
 *        other               as recvmsg(2).
 * flags are recvmsg flags (MSG_DONTWAIT, MSG_PEEK ...). MSG_PEEK peeks data only: non-data
 * records at the head are consumed and acted on as without it. info_out may be NULL. */
KTLS_API ssize_t ktls_recv(int fd, void* buf, size_t len, int flags, ktls_record_info* info_out);

/* ktls_recv into several buffers (like readv(2)/recvmsg with an iovec array). */
KTLS_API ssize_t ktls_readv(int fd, const struct iovec* iov, int iovcnt, int flags,
                            ktls_record_info* info_out);

/* shutdown(2) that ends the TLS stream cleanly: for SHUT_WR and SHUT_RDWR, on a socket with kTLS
 * TX it first sends a close_notify alert record, then calls shutdown(fd, how); on anything else
 * (relay socketpair, plain TCP) only shutdown (the relay turns EOF into close_notify). SHUT_RD:
 * only shutdown. Returns 0 or -1 with errno; EAGAIN (non-blocking, send buffer full): nothing was
 * sent, call again when writable. Does not close fd. After it the app may keep reading (TLS 1.3
 * half-close). */
KTLS_API int ktls_shutdown(int fd, int how);

/* ktls_shutdown(fd, SHUT_WR). */
KTLS_API int ktls_close_notify(int fd);

/* Asks the kernel whether kTLS TX / RX keys are installed on fd (getsockopt SOL_TLS TLS_TX /
 * TLS_RX, reading only the version/cipher header, never key material). Returns false with errno
 * (EBADF, ENOTSOCK) when fd is not a socket; otherwise true, with *tx and *rx set (either pointer
 * may be NULL). A relay socketpair reports false/false. */
KTLS_API bool ktls_fd_offload_state(int fd, bool* tx, bool* rx);

/* RFC name of an alert description ("close_notify", "bad_record_mac" ...), "unknown_alert" if
 * the value is not assigned. Static string. */
KTLS_API const char* ktls_alert_name(uint8_t description);

/* 1 when the running kernel can take new kTLS RX keys after a peer KeyUpdate (Linux 6.14+,
 * judged by the kernel version), else 0. Even then a handed connection cannot rekey: the app does
 * not hold the traffic secret (the agent wipes it after the handoff), so a peer KeyUpdate ends the
 * connection either way; this only selects the message ktls_recv reports. */
KTLS_API int ktls_kernel_has_rx_rekey(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KTLS_CLIENT_KTLS_CLIENT_H_ */
