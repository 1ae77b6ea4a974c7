// The one TLS handshake engine, for both roles: the listener's accepted connections (accept) and
// the dialer's upstream connections (connect). Envoy drives client and server sockets through one
// SslHandshakerImpl::doHandshake and nginx through one ngx_ssl_handshake; before this file the
// agent had two copies of drive / re-arm / complete that had started to drift.
//
// A TlsSession owns the fd and the SSL from the start of the handshake until its owner takes them
// (to hand off or relay) or it fails. It registers the fd with the EventLoop, steps
// SSL_do_handshake on every event, turns SSL_get_error into want-read / want-write (re-arm epoll
// for that) / done / fail, enforces the deadline, and reports to its owner through
// TlsSessionOwner. The handler registered for the fd is the owner's (the worker and the dialer
// keep their objects by EventHandler), which passes its events to OnEvents().
//
// State machine (one driver, Step(); every transition checks where it comes from):
//   kIdle --Start()--> kHandshaking
//   kHandshaking --SSL_do_handshake()==1--> kEstablished --Release()--> kReleased
//   kHandshaking --error / peer EOF / deadline--> kClosed (fd and SSL freed, owner told why)
//   kEstablished --Close()--> kClosed
// In kEstablished the session still owns the fd and its registration; the owner may Rearm() it
// for its own reads (the dialer reads the server's NewSessionTickets before it hands off).
//
// OpenSSL's error queue is per call: it is cleared before each SSL call and drained into the
// failure reason after one, so a stale error from one connection never fails another.
//
// Lifetime: the owner holds the session and is destroyed through EventLoop::DeferDelete, never
// from inside a callback, so the session may still close itself after telling its owner.
#ifndef KTLS_AGENT_TLS_SESSION_H_
#define KTLS_AGENT_TLS_SESSION_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "agent/event_loop.h"
#include "agent/openssl_ptr.h"
#include "agent/stats.h"
#include "agent/syscalls.h"
#include "agent/unique_fd.h"

namespace ktls::agent {

// Which side of the handshake the agent plays.
enum class TlsRole { kAccept, kConnect };

// Why a handshake did not complete.
struct HandshakeFailure {
  // The metric label (kTimeout for the deadline, kPeerClosed for EOF with nothing queued).
  HandshakeFailureReason reason = HandshakeFailureReason::kProtocol;
  // Operator-facing: OpenSSL's first queued error, the socket error, "peer closed ...", or for a
  // connect the certificate verification error ("certificate verify failed: ...").
  std::string text;
  // Connect role: the server's certificate did not verify (text says why).
  bool verify_failed = false;
};

class TlsSession;

// What a session reports to whoever owns it (the listener's Connection, the dialer's Outbound).
// The owner may Release/Close the session, or ask for its own deferred deletion, from inside.
class TlsSessionOwner {
 public:
  virtual ~TlsSessionOwner() = default;
  // The handshake completed (state kEstablished); the fd is still registered with the loop.
  virtual void OnHandshakeDone() = 0;
  // The handshake failed or timed out (state kClosed). The fd and the SSL are closed when this
  // returns (or when the owner calls Close() inside), so what the owner counts is visible before
  // the peer sees the close.
  virtual void OnHandshakeFailed(const HandshakeFailure& failure) = 0;
};

// One step of a non-blocking handshake (either side). Clears OpenSSL's error queue first; a
// SSL_ERROR_SYSCALL with EAGAIN/EINTR is a want-read, not an error. On kFailed the queue still
// holds the cause and `saved_errno` the socket error (0: EOF).
enum class HandshakeProgress { kDone, kWantRead, kWantWrite, kFailed };
struct HandshakeStep {
  HandshakeProgress progress;
  int saved_errno = 0;
};
HandshakeStep StepHandshake(SSL* ssl);

// The text of the first error in OpenSSL's queue for this thread (or `fallback`), then clears
// the queue.
std::string DrainOpenSslErrors(absl::string_view fallback);

// The fd and the SSL of a completed handshake, taken from its session.
struct TlsStream {
  UniqueFd fd;
  SslPtr ssl;
};

class TlsSession {
 public:
  enum class State { kIdle, kHandshaking, kEstablished, kReleased, kClosed };

  // `ssl` is configured by the owner (certificates, SNI, ALPN, verification, ex_data); the
  // session attaches the agent's socket BIO (agent/socket_bio.h) for `fd` and sets the role.
  // `handler` is what the loop calls for the fd (the owner; it calls OnEvents()).
  TlsSession(EventLoop& loop, SysCalls& sys, TlsRole role, UniqueFd fd, SslPtr ssl,
             absl::Time started, absl::Time deadline, TlsSessionOwner* owner,
             EventHandler* handler);
  ~TlsSession();

  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // kIdle -> kHandshaking: attaches the BIO and sets the role. Accept: registers the fd for
  // EPOLLIN and waits for the ClientHello. Connect: the fd is already registered (the owner
  // waited for the connect to complete on it) and the ClientHello goes out at once; a handshake
  // that fails in that first step is reported through the owner like any other. An error
  // returned here made no callback; the owner closes the session.
  absl::Status Start();

  // Readiness on the fd (from the owner's OnEvents): steps the handshake in kHandshaking.
  void OnEvents(uint32_t events);

  // Fails the handshake with kTimeout if it is still in progress at `now` >= deadline().
  // Returns true if it did (the owner has been told).
  bool CheckDeadline(absl::Time now);
  // Fails the handshake with kTimeout now (the worker's deadline list already knows it is due).
  void Expire();

  // kEstablished: sets the epoll interest (with the role's hang-up bit) for the owner's reads.
  void Rearm(uint32_t events);

  // kEstablished -> kReleased: takes the connection off the loop and hands the fd and the SSL
  // to the caller (the data path). Empty in any other state.
  TlsStream Release();

  // -> kClosed (a released session stays kReleased) without a callback: off the loop, SSL and
  // fd freed. Idempotent.
  void Close();

  State state() const { return state_; }
  TlsRole role() const { return role_; }
  SSL* ssl() const { return ssl_.get(); }
  int fd() const { return fd_.get(); }
  absl::Time started() const { return started_; }
  absl::Time deadline() const { return deadline_; }
  // The epoll interest last set (without the hang-up bit).
  uint32_t ArmedForTest() const { return armed_; }

 private:
  void Step();
  void SetInterest(uint32_t events);
  void Fail(const HandshakeFailure& failure);
  void Unregister();

  EventLoop& loop_;
  SysCalls& sys_;
  TlsRole role_;
  UniqueFd fd_;
  SslPtr ssl_;
  absl::Time started_;
  absl::Time deadline_;
  TlsSessionOwner* owner_;
  EventHandler* handler_;
  // The listener also watches EPOLLRDHUP, so that a client that gives up mid-handshake is
  // noticed at once; a connect waits on the plain mask, as the dialer always has.
  uint32_t hangup_events_;
  State state_ = State::kIdle;
  uint32_t armed_ = 0;
  bool registered_ = false;
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_TLS_SESSION_H_
