// One accepted TLS connection, from accept to the decision "hand off with kTLS" or "relay".
//
// State machine (one driver, Drive(); transitions check where they come from):
//   kHandshaking --SSL_do_handshake()==1--> kDone (handed to the broker, or to a RelaySession)
//   kHandshaking --error / timeout / peer EOF--> kDone (closed, counted)
// SSL_get_error() becomes want-read / want-write (re-arm epoll for that) / fail; a
// SSL_ERROR_SYSCALL whose errno is EAGAIN/EINTR is a want, not an error. OpenSSL's error queue is
// cleared before each SSL call and drained into the failure reason after one, so a stale error
// from one connection never fails another.
#ifndef KTLS_AGENT_CONNECTION_H_
#define KTLS_AGENT_CONNECTION_H_

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "agent/activity.h"
#include "agent/event_loop.h"
#include "agent/handoff_broker.h"
#include "agent/ktls_installer.h"
#include "agent/stats.h"
#include "agent/tls_context.h"
#include "agent/unique_fd.h"

namespace ktls {

// What a worker shares with its connections. Everything here is either immutable, thread-safe,
// or owned by the worker's thread.
struct DataPlaneContext {
  SysCalls& sys;
  EventLoop& loop;
  const TlsContext& tls;
  CertStore& certs;
  AgentStats& stats;
  HandoffBroker& broker;
  OffloadPolicy policy;
  size_t relay_buffer_bytes;
  std::atomic<uint64_t>& next_connection_id;
  // Called (on the loop thread) when a connection object is finished; the worker removes it
  // from its tables and defers its deletion.
  std::function<void(EventHandler*)> on_finished;
  // Takes ownership of a relayed connection's session object.
  std::function<void(std::unique_ptr<EventHandler>)> adopt;
  // Where handshakes in progress are listed for the control plane (optional).
  ActivityLog* activity = nullptr;
  int worker_index = 0;
};

class Connection final : public EventHandler {
 public:
  enum class State { kHandshaking, kDone };

  Connection(DataPlaneContext& ctx, UniqueFd fd, std::string listener,
             const sockaddr_storage& peer, absl::Time deadline);
  ~Connection() override;

  // Creates the SSL and registers with the loop. On error the connection is unusable and the
  // caller drops it.
  absl::Status Start();
  void OnEvents(uint32_t events) override;
  // Closes the connection if the handshake has not finished by its deadline.
  void OnDeadline();

  absl::Time deadline() const { return deadline_; }
  State state() const { return state_; }
  uint64_t id() const { return id_; }
  // Position in the worker's deadline-ordered list (the worker owns the list).
  std::list<Connection*>::iterator deadline_pos;

 private:
  void Drive();
  void OnHandshakeComplete();
  void Fail(absl::string_view reason);
  void Finish();
  void Rearm(uint32_t events);
  // Takes the connection off the activity log's list of handshakes in progress (once).
  void Unlist();
  v1::ConnectionInfo BuildInfo(const OffloadDecision& d) const;

  DataPlaneContext& ctx_;
  UniqueFd fd_;
  std::string listener_;
  sockaddr_storage peer_;
  absl::Time started_;
  absl::Time deadline_;
  uint64_t id_;
  State state_ = State::kHandshaking;
  uint32_t armed_ = 0;
  bool listed_ = false;
  std::unique_ptr<TlsConnectionState> tls_state_;
  SslPtr ssl_;
};

// Subject, issuer, SANs, fingerprint and verification result of the peer's certificate.
void FillPeerIdentityFromSsl(SSL* ssl, v1::PeerIdentity* id);

// The ConnectionInfo fields both directions share, from a completed handshake and its offload
// decision: peer/local addresses (of `fd`), ALPN, version, cipher, data path and offload state,
// fallback reason, peer identity, resumption. Callers add what is theirs (id, SNI, listener ...).
void FillSessionInfo(SysCalls& sys, SSL* ssl, int fd, const sockaddr_storage& peer,
                     const OffloadDecision& decision, v1::ConnectionInfo* info);

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

}  // namespace ktls

#endif  // KTLS_AGENT_CONNECTION_H_
