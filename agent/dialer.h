// Outbound mode: dials upstreams on an app's behalf, completes the TLS handshake as a client
// (verifying the server), installs kTLS (or falls back to the relay) and returns the connection
// to the app that asked, with the same metadata as an inbound handoff.
//
// The handshake engine (agent/tls_session.h, connect role) and the data-path decision
// (agent/data_path.h) are the listener's, and the client SSL (SNI, ALPN, verification, resumed
// session, the keylog secret) is configured by ClientTlsContexts (agent/tls_client_context.h);
// the dialer itself only resolves, connects, drains TLS 1.3 tickets and answers the request with
// a DialResult.
//
// Runs on its own thread and EventLoop (the same threading and lifetime rules as a worker, see
// agent/event_loop.h); relayed outbound connections live there too. Name resolution uses
// getaddrinfo on a short-lived thread (it blocks) and posts the result back; IP literals skip it.
//
// TLS 1.3 resumption needs the server's NewSessionTickets, which arrive after the handshake.
// The dialer reads them (for at most `ticket_wait`) before installing kTLS RX, counting the
// records OpenSSL consumed through the agent's BIO: that count is the RX record sequence. Any
// application data the server sent meanwhile becomes ConnectionInfo.initial_data. Tickets that
// arrive later reach the app's kTLS socket, where the client library skips them.
#ifndef KTLS_AGENT_DIALER_H_
#define KTLS_AGENT_DIALER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/data_path.h"
#include "agent/event_loop.h"
#include "agent/ktls_installer.h"
#include "agent/session_cache.h"
#include "agent/stats.h"
#include "agent/tls_client_context.h"
#include "agent/unique_fd.h"
#include "ktls/v1/handoff.pb.h"

namespace ktls::agent {

struct DialerOptions {
  OffloadPolicy policy = OffloadPolicy::kPreferred;
  absl::Duration default_timeout = absl::Seconds(10);
  absl::Duration ticket_wait = absl::Milliseconds(200);
  size_t relay_buffer_bytes = 65536;
  size_t session_cache_upstreams = 1024;
  size_t sessions_per_upstream = 4;
  size_t max_concurrent_dials = 1024;
};

// What the dialer reports for each request; `fd` is valid only when result.ok().
using DialCallback =
    std::function<void(uint64_t subscriber_id, v1::DialResult result, UniqueFd fd)>;

// What relayed outbound connections share with inbound ones (RelaySession's context).
struct RelayDeps {
  const TlsContext& tls;
  CertStore& certs;
  HandoffBroker& broker;
};

class Dialer {
 public:
  static absl::StatusOr<std::unique_ptr<Dialer>> Create(SysCalls& sys, DialerOptions options,
                                                        AgentStats& stats,
                                                        std::atomic<uint64_t>& next_id,
                                                        DialCallback on_result,
                                                        RelayDeps relay_deps);
  ~Dialer();
  void Start();
  void Stop();

  // Thread-safe: dial for the app `subscriber_id`. Exactly one callback follows.
  void Dial(uint64_t subscriber_id, v1::DialRequest request);

  SessionCache& sessions() { return sessions_; }

 private:
  class Outbound;
  friend class Outbound;
  Dialer(SysCalls& sys, DialerOptions options, AgentStats& stats, std::atomic<uint64_t>& next_id,
         DialCallback on_result);
  void StartDial(uint64_t subscriber_id, v1::DialRequest request);
  void Finish(EventHandler* h);
  void OnTick(absl::Time now);

  SysCalls& sys_;
  DialerOptions options_;
  AgentStats& stats_;
  std::atomic<uint64_t>& next_id_;
  DialCallback on_result_;
  SessionCache sessions_;
  ClientTlsContexts client_tls_;  // loop thread only
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<DataPlaneContext> relay_ctx_;  // for relayed outbound connections
  std::unordered_map<EventHandler*, std::unique_ptr<EventHandler>> live_;
  std::thread thread_;
  // Resolver threads post back through this; the destructor detaches it so a late resolver
  // never touches a destroyed Dialer.
  struct Mailbox {
    absl::Mutex mu;
    Dialer* dialer ABSL_GUARDED_BY(mu) = nullptr;
  };
  std::shared_ptr<Mailbox> mailbox_ = std::make_shared<Mailbox>();
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_DIALER_H_
