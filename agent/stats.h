// The data plane's counters and gauges, declared in one list (Envoy's ALL_*_STATS idea) so the
// Prometheus exporter, the stats RPC and the shutdown summary all read the same names.
// Updated with relaxed atomics from any worker thread; read as a consistent-enough snapshot.
#ifndef KTLS_AGENT_STATS_H_
#define KTLS_AGENT_STATS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

namespace ktls {

// X(name, help)
#define KTLS_AGENT_COUNTERS(X)                                                              \
  X(connections_accepted, "TCP connections accepted")                                       \
  X(accept_errors, "accept() failures other than EAGAIN/EINTR")                             \
  X(accept_pauses, "times accepting paused for lack of fds or memory (EMFILE, ENFILE, ENOMEM)") \
  X(connections_rejected_limit, "connections closed at accept: max connections/handshakes") \
  X(handshakes_completed, "TLS handshakes completed")                                       \
  X(handshakes_failed, "TLS handshakes failed (bad ClientHello, alert, verify error, ...)")  \
  X(handshake_timeouts, "TLS handshakes that exceeded the handshake timeout")               \
  X(handshakes_resumed, "TLS handshakes that resumed a session")                            \
  X(sni_unmatched, "handshakes whose SNI matched no certificate (default served)")          \
  X(ktls_tx_installed, "connections with kTLS TX installed")                                \
  X(ktls_tx_failed, "connections where installing kTLS TX failed")                          \
  X(ktls_rx_installed, "connections with kTLS RX installed")                                \
  X(ktls_rx_failed, "connections where installing kTLS RX failed")                          \
  X(offload_ktls, "connections handed off with kTLS TX and RX")                             \
  X(offload_relay, "connections handed off through the userspace relay")                    \
  X(offload_refused, "connections closed because offload=required and kTLS failed")        \
  X(handoffs_sent, "connections handed to an app")                                          \
  X(handoffs_expired, "ready connections closed after waiting too long for an app")         \
  X(handoffs_requeued, "handoffs retried on another app after a send failure")              \
  X(handoffs_dropped, "ready connections dropped (queue full or agent stopping)")           \
  X(app_protocol_errors, "malformed or unexpected messages from apps")                      \
  X(apps_subscribed, "app subscriptions accepted")                                          \
  X(apps_disconnected, "app subscriptions that ended")                                      \
  X(relay_bytes_to_app, "plaintext bytes relayed from TLS peers to apps")                   \
  X(relay_bytes_to_peer, "plaintext bytes relayed from apps to TLS peers")                  \
  X(relay_closed, "relayed connections finished")                                           \
  X(relay_errors, "relayed connections ended by an error")

#define KTLS_AGENT_GAUGES(X)                                                 \
  X(handshakes_in_progress, "TLS handshakes in progress")                    \
  X(connections_open, "connections the agent holds (handshaking, waiting, relayed)") \
  X(pending_handoffs, "ready connections waiting for an app's credit")      \
  X(apps_connected, "apps subscribed now")                                   \
  X(relay_active, "connections being relayed now")

// Why a connection was relayed instead of offloaded: a small fixed set (metric label values).
#define KTLS_FALLBACK_REASONS(X)                                       \
  X(kPolicyOff, "policy_off")                                          \
  X(kModuleMissing, "tls_module_missing")                              \
  X(kCipherUnsupported, "cipher_unsupported")                          \
  X(kTxInstallFailed, "tx_install_failed")                             \
  X(kRxInstallFailed, "rx_install_failed")                             \
  X(kBufferedRecords, "openssl_buffered_records")                      \
  X(kNoSecret, "traffic_secret_unavailable")

enum class FallbackReason {
#define KTLS_ENUM(e, label) e,
  KTLS_FALLBACK_REASONS(KTLS_ENUM)
#undef KTLS_ENUM
      kCount
};
absl::string_view FallbackReasonLabel(FallbackReason r);

struct AgentStats {
#define KTLS_FIELD(name, help) std::atomic<uint64_t> name{0};
  KTLS_AGENT_COUNTERS(KTLS_FIELD)
#undef KTLS_FIELD
#define KTLS_FIELD(name, help) std::atomic<int64_t> name{0};
  KTLS_AGENT_GAUGES(KTLS_FIELD)
#undef KTLS_FIELD
  std::array<std::atomic<uint64_t>, static_cast<size_t>(FallbackReason::kCount)> fallbacks{};

  void CountFallback(FallbackReason r) {
    fallbacks[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed);
  }
  // Multi-line human summary ("offload: 120 kTLS, 3 relay (policy_off=3) ...").
  std::string Summary() const;
};

inline void Inc(std::atomic<uint64_t>& c, uint64_t n = 1) {
  c.fetch_add(n, std::memory_order_relaxed);
}
inline void Add(std::atomic<int64_t>& g, int64_t n) { g.fetch_add(n, std::memory_order_relaxed); }

}  // namespace ktls

#endif  // KTLS_AGENT_STATS_H_
