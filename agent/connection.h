// One accepted TLS connection, from accept to the decision "hand off with kTLS", "relay" or
// "refuse". The handshake itself is driven by a TlsSession in the accept role (agent/tls_session.h)
// and the decision is made by DecideDataPath (agent/data_path.h), the same engine and decision the
// dialer uses for outbound connections; what stays here is what only the listener has: the
// activity log entry, the inbound handshake metrics (in progress, completed, failed by reason,
// timeouts, resumed, SNI, suites, per certificate) and the handoff to the broker.
//
// State machine (one driver, the session; transitions check where they come from):
//   kHandshaking --handshake done--> kDone (handed to the broker, or to a RelaySession)
//   kHandshaking --error / timeout / peer EOF--> kDone (closed, counted)
#ifndef KTLS_AGENT_CONNECTION_H_
#define KTLS_AGENT_CONNECTION_H_

#include <sys/socket.h>

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "agent/activity.h"
#include "agent/data_path.h"
#include "agent/event_loop.h"
#include "agent/handoff_broker.h"
#include "agent/tls_context.h"
#include "agent/tls_session.h"
#include "agent/unique_fd.h"

namespace ktls::agent {

class Connection final : public EventHandler, private TlsSessionOwner {
 public:
  enum class State { kHandshaking, kDone };

  Connection(DataPlaneContext& ctx, UniqueFd fd, std::string listener, const sockaddr_storage& peer,
             absl::Time deadline);
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
  // TlsSessionOwner.
  void OnHandshakeDone() override;
  void OnHandshakeFailed(const HandshakeFailure& failure) override;

  void CountCompletedHandshake();
  void Finish();
  // Takes the connection off the activity log's list of handshakes in progress (once).
  void Unlist();
  v1::ConnectionInfo BuildInfo(const OffloadDecision& d) const;

  DataPlaneContext& ctx_;
  UniqueFd fd_;  // until Start() gives it to the session
  std::string listener_;
  sockaddr_storage peer_;
  absl::Time started_;
  absl::Time deadline_;
  uint64_t id_;
  State state_ = State::kHandshaking;
  bool listed_ = false;
  std::unique_ptr<TlsConnectionState> tls_state_;
  std::optional<TlsSession> session_;
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_CONNECTION_H_
