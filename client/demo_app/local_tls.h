// ktls-demo-app without the agent: the same HTTP server on sockets it accepts itself, either
// terminating TLS in process with OpenSSL (--tls_listen, the benchmarks' "app does TLS" baseline)
// or speaking plain HTTP (--plain_listen, e.g. behind stunnel). Only the transport differs from
// handed-over connections: requests, routes and responses go through the same code (server.cc).
//
// The listening sockets and the TLS context are created once, before the worker processes are
// forked, so the workers share one accept queue per listener and one set of session-ticket keys
// (a resumed session works whichever worker accepts it).
#ifndef KTLS_CLIENT_DEMO_APP_LOCAL_TLS_H_
#define KTLS_CLIENT_DEMO_APP_LOCAL_TLS_H_

#include <sys/types.h>
#include <sys/uio.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "options.h"

typedef struct ssl_st SSL;

namespace ktls::demo {

struct LocalListeners {
  int tls_fd = -1;  // listening, non-blocking, or -1
  int plain_fd = -1;
  std::string tls_address;  // as bound, e.g. 127.0.0.1:43211
  std::string plain_address;
};

// Opens --tls_listen / --plain_listen (port 0 picks one) and, for TLS, loads --tls_cert/--tls_key
// into the process-wide server context: TLS 1.2 and 1.3, OpenSSL's default session tickets,
// read-ahead on (as nginx sets it), partial writes.
absl::StatusOr<LocalListeners> OpenLocalListeners(const Options& options);

// One connection's TLS, server side, on a non-blocking socket. The handshake happens inside the
// first Read/Write calls. Every call returns like the syscall it replaces: n >= 0, or -1 with
// errno: EAGAIN when OpenSSL waits for the socket in either direction, EPROTO for a TLS-level
// failure, else the socket's errno. A peer that closes without close_notify reads as EOF.
class LocalTlsSession {
 public:
  // nullptr when the context is missing or OpenSSL fails (errno ENOMEM).
  static std::unique_ptr<LocalTlsSession> Create(int fd);
  ~LocalTlsSession();
  LocalTlsSession(const LocalTlsSession&) = delete;
  LocalTlsSession& operator=(const LocalTlsSession&) = delete;

  ssize_t Read(void* buf, size_t len);
  ssize_t Write(const void* buf, size_t len);
  // Small pieces (response heads and short bodies) are gathered into one record of up to 16 KiB.
  ssize_t Writev(const iovec* iov, int count);
  // close_notify, then shutdown(SHUT_WR). -1/EAGAIN: call again when writable.
  int CloseNotify();

 private:
  LocalTlsSession(SSL* ssl, int fd) : ssl_(ssl), fd_(fd) {}
  ssize_t Result(int rc, bool reading);

  SSL* ssl_;  // owned
  int fd_;    // not owned
  std::string gather_;
};

}  // namespace ktls::demo

#endif  // KTLS_CLIENT_DEMO_APP_LOCAL_TLS_H_
