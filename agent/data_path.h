// The data-path decision, made once per connection right after its handshake, for inbound
// (listener) and outbound (dialer) connections alike: hand the TCP socket off with kTLS, relay
// it through a socketpair, or refuse it (offload=required and kTLS failed). nginx decides its
// recv/send functions once when the handshake completes; so do we, in this one place, and record
// why (a typed FallbackReason that is also a metric label).
//
//   DecideDataPath()  installs kTLS (agent/ktls_installer.h), counts the install and the outcome
//                     (offload_ktls / offload_relay + fallback reason / offload_refused) and
//                     warns once per reason. The SSL and the fd are still the session's, so the
//                     owner can describe the connection (FillSessionInfo) before it moves them.
//   EnterDataPath()   carries the decision out on the released stream: the socket itself for a
//                     handoff, the app's end of a new relay socketpair (the RelaySession is
//                     adopted by the owner's loop), or nothing for a refusal (close_notify sent).
#ifndef KTLS_AGENT_DATA_PATH_H_
#define KTLS_AGENT_DATA_PATH_H_

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agent/activity.h"
#include "agent/event_loop.h"
#include "agent/handoff_broker.h"
#include "agent/ktls_installer.h"
#include "agent/stats.h"
#include "agent/tls_context.h"
#include "agent/tls_session.h"
#include "agent/unique_fd.h"
#include "ktls/v1/handoff.pb.h"

namespace ktls::agent {

// What a worker (or the dialer) shares with its connections and relays. Everything here is
// either immutable, thread-safe, or owned by the loop's thread.
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
  // Called (on the loop thread) when a connection object is finished; the owner removes it
  // from its tables and defers its deletion.
  std::function<void(EventHandler*)> on_finished;
  // Takes ownership of a relayed connection's session object.
  std::function<void(std::unique_ptr<EventHandler>)> adopt;
  // Where handshakes in progress are listed for the control plane (optional).
  ActivityLog* activity = nullptr;
  int worker_index = 0;
};

enum class DataPath { kHandoff, kRelay, kRefuse };
absl::string_view DataPathName(DataPath p);

struct DataPathDecision {
  DataPath path = DataPath::kRefuse;
  // What the install did; when the path is not kHandoff, offload.reason and offload.reason_text
  // say why kTLS could not be used.
  OffloadDecision offload;
};

// The TLS 1.3 receive key for the manual RX install when the caller captured it itself (the
// dialer: SERVER_TRAFFIC_SECRET_0, and the NewSessionTickets it read as records consumed).
struct Tls13RxKey {
  absl::Span<const uint8_t> secret;
  uint64_t record_seq = 0;
  bool at_record_boundary = true;
};

// Installs kTLS on a completed handshake's socket and decides its data path under `policy`;
// counts and warns as above. `rx` empty: the secret the server context captured for this SSL
// (TlsConnectionState, wiped here) with sequence 0. Call once, before any SSL_read of
// application data.
DataPathDecision DecideDataPath(SysCalls& sys, AgentStats& stats, OffloadPolicy policy,
                                TlsRole role, SSL* ssl, int fd,
                                std::optional<Tls13RxKey> rx = std::nullopt);

// Carries out `decision` on the stream released from its session. Returns the fd to give the
// app (the kTLS socket, or the app's end of the relay); for a refusal, or a relay that could not
// start (counted as relay_errors), an error that says why, with the stream closed. Relays are
// created on ctx.loop and handed to ctx.adopt; `tls_state` stays alive with the relay's SSL.
absl::StatusOr<UniqueFd> EnterDataPath(DataPlaneContext& ctx, const DataPathDecision& decision,
                                       uint64_t id, TlsStream stream,
                                       std::unique_ptr<TlsConnectionState> tls_state);

// Subject, issuer, SANs, fingerprint and verification result of the peer's certificate.
void FillPeerIdentityFromSsl(SSL* ssl, v1::PeerIdentity* id);

// The ConnectionInfo fields both directions share, from a completed handshake and its offload
// decision: peer/local addresses (of `fd`), ALPN, version, cipher, data path and offload state,
// fallback reason, peer identity, resumption. Callers add what is theirs (id, SNI, listener ...).
void FillSessionInfo(SysCalls& sys, SSL* ssl, int fd, const sockaddr_storage& peer,
                     const OffloadDecision& decision, v1::ConnectionInfo* info);

}  // namespace ktls::agent

#endif  // KTLS_AGENT_DATA_PATH_H_
