// The data plane's counters and gauges, declared in one list (Envoy's ALL_*_STATS idea) so the
// Prometheus exporter, the stats RPC and the shutdown summary all read the same names.
// Updated with relaxed atomics from any worker thread; read as a consistent-enough snapshot.
#ifndef KTLS_AGENT_STATS_H_
#define KTLS_AGENT_STATS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "agent/histogram.h"

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
  X(app_subscribers_refused, "app connections refused: peer uid/gid not allowed (SO_PEERCRED)") \
  X(app_connections_over_limit, "app connections refused: max_app_connections reached")     \
  X(app_subscribe_timeouts, "app connections closed for not subscribing in time")           \
  X(relay_bytes_to_app, "plaintext bytes relayed from TLS peers to apps")                   \
  X(relay_bytes_to_peer, "plaintext bytes relayed from apps to TLS peers")                  \
  X(relay_closed, "relayed connections finished")                                           \
  X(relay_errors, "relayed connections ended by an error")                                  \
  X(dials_started, "outbound dials requested by apps")                                     \
  X(dials_succeeded, "outbound dials handed back to the app")                              \
  X(dials_failed, "outbound dials that failed (connect, handshake, verify, timeout)")      \
  X(dials_verify_failed, "outbound dials whose server certificate failed verification")    \
  X(dials_resumed, "outbound dials that resumed a cached TLS session")

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

// Why a handshake failed: a small fixed set (metric label values). Classified from OpenSSL's
// first queued error (connection.cc), or from the event that ended it.
#define KTLS_HANDSHAKE_FAILURE_REASONS(X)                                              \
  X(kTimeout, "timeout")                 /* exceeded handshake_timeout_ms */             \
  X(kPeerClosed, "peer_closed")          /* EOF or socket error mid-handshake */         \
  X(kNotTls, "not_tls")                  /* plaintext HTTP, garbage, bad record header */ \
  X(kVersion, "unsupported_version")     /* no common protocol version */                \
  X(kNoSharedCipher, "no_shared_cipher") /* no common suite, group or signature alg */   \
  X(kNoAlpn, "no_application_protocol")  /* ALPN offered, no overlap */                  \
  X(kClientCertificate, "client_certificate") /* missing or unverifiable client cert */  \
  X(kPeerAlert, "peer_alert")            /* the client aborted with an alert */          \
  X(kInternal, "internal")               /* our side: certificate callback, memory */    \
  X(kProtocol, "protocol_error")         /* any other TLS protocol violation */

enum class HandshakeFailureReason {
#define KTLS_ENUM(e, label) e,
  KTLS_HANDSHAKE_FAILURE_REASONS(KTLS_ENUM)
#undef KTLS_ENUM
      kCount
};
absl::string_view HandshakeFailureReasonLabel(HandshakeFailureReason r);

// Completed handshakes by protocol version and cipher suite: the suites the agent negotiates by
// default, and "other" for anything configured beyond them. X(enum, version, IANA name, id)
#define KTLS_TLS_SUITES(X)                                                                    \
  X(kTls13Aes128Gcm, "TLSv1.3", "TLS_AES_128_GCM_SHA256", 0x1301)                            \
  X(kTls13Aes256Gcm, "TLSv1.3", "TLS_AES_256_GCM_SHA384", 0x1302)                            \
  X(kTls13ChaCha20, "TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256", 0x1303)                       \
  X(kTls12EcdsaAes128Gcm, "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xC02B)      \
  X(kTls12EcdsaAes256Gcm, "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xC02C)      \
  X(kTls12EcdsaChaCha20, "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0xCCA9) \
  X(kTls12RsaAes128Gcm, "TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xC02F)          \
  X(kTls12RsaAes256Gcm, "TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xC030)          \
  X(kTls12RsaChaCha20, "TLSv1.2", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xCCA8)     \
  X(kOther, "other", "other", 0)

enum class TlsSuite {
#define KTLS_ENUM(e, version, name, id) e,
  KTLS_TLS_SUITES(KTLS_ENUM)
#undef KTLS_ENUM
      kCount
};
struct TlsSuiteLabels {
  absl::string_view version;
  absl::string_view cipher;
};
TlsSuiteLabels TlsSuiteLabel(TlsSuite s);
// The suite for a negotiated protocol version (TLS1_2_VERSION ...) and IANA cipher id.
TlsSuite TlsSuiteOf(int version, uint16_t cipher_id);

// Handshake duration (accept to Finished) bucket bounds, seconds.
inline std::vector<double> HandshakeDurationBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

// Time in the kernel's kTLS setsockopts per offloaded connection, seconds (10 µs .. 100 ms: the
// upper buckets are for emulated or heavily loaded machines).
inline std::vector<double> KtlsInstallDurationBuckets() {
  return {10e-6, 25e-6, 50e-6,  100e-6, 250e-6, 500e-6, 1e-3,
          2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3};
}

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
  std::array<std::atomic<uint64_t>, static_cast<size_t>(HandshakeFailureReason::kCount)>
      handshake_failures{};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(TlsSuite::kCount)> connections_by_suite{};
  Histogram handshake_duration{HandshakeDurationBuckets()};
  Histogram ktls_install_duration{KtlsInstallDurationBuckets()};

  void CountFallback(FallbackReason r) {
    fallbacks[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed);
  }
  void CountHandshakeFailure(HandshakeFailureReason r) {
    handshake_failures[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed);
  }
  void CountSuite(TlsSuite s) {
    connections_by_suite[static_cast<size_t>(s)].fetch_add(1, std::memory_order_relaxed);
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
