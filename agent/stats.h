// The data plane's counters and gauges, declared in one list (Envoy's ALL_*_STATS idea) that the
// exporter, stats RPC and shutdown summary read; each entry names its Prometheus family, help and
// labels. Updated with relaxed atomics from any worker thread; read as a consistent-enough copy.
#ifndef KTLS_AGENT_STATS_H_
#define KTLS_AGENT_STATS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "agent/histogram.h"

namespace ktls::agent {

// Each entry carries how /metrics exports it: X(field, family, help, labels...). `field` is the
// AgentStats member (and the stats RPC's key), `family` the Prometheus family, `help` the family's
// help text, and the optional labels ({"name", "value"} pairs) tell apart the entries that share
// one family (their help is the family's, so it is the same for each). An empty family means the
// counter is exported only in a labeled breakdown below (KTLS_AGENT_COUNTER_ARRAYS).
inline constexpr char kKtlsInstallsHelp[] =
    "kTLS key installs by direction (tx, rx) and result (ok, failed)";
inline constexpr char kRelayBytesHelp[] = "Plaintext bytes relayed, by direction (to_app, to_peer)";
#define KTLS_AGENT_COUNTERS(X)                                                                    \
  X(connections_accepted, "ktls_connections_accepted_total", "TCP connections accepted")          \
  X(accept_errors, "ktls_accept_errors_total", "accept() failures other than EAGAIN/EINTR")       \
  X(accept_pauses, "ktls_accept_pauses_total",                                                    \
    "times accepting paused for lack of fds or memory (EMFILE, ENFILE, ENOMEM)")                  \
  X(connections_rejected_limit, "ktls_connections_rejected_limit_total",                          \
    "connections closed at accept: max connections/handshakes")                                   \
  X(handshakes_completed, "", "TLS handshakes completed")    /* by suite: connections_by_suite */ \
  X(handshakes_failed, "", "TLS handshakes failed")          /* by reason: handshake_failures */  \
  X(handshake_timeouts, "", "TLS handshakes that timed out") /* reason="timeout" */               \
  X(handshakes_resumed, "ktls_handshakes_resumed_total", "TLS handshakes that resumed a session") \
  X(sni_unmatched, "ktls_sni_unmatched_total",                                                    \
    "handshakes whose SNI matched no certificate (default served)")                               \
  X(ktls_tx_installed, "ktls_kernel_tls_installs_total", ::ktls::agent::kKtlsInstallsHelp,        \
    {"direction", "tx"}, {"result", "ok"})                                                        \
  X(ktls_tx_failed, "ktls_kernel_tls_installs_total", ::ktls::agent::kKtlsInstallsHelp,           \
    {"direction", "tx"}, {"result", "failed"})                                                    \
  X(ktls_rx_installed, "ktls_kernel_tls_installs_total", ::ktls::agent::kKtlsInstallsHelp,        \
    {"direction", "rx"}, {"result", "ok"})                                                        \
  X(ktls_rx_failed, "ktls_kernel_tls_installs_total", ::ktls::agent::kKtlsInstallsHelp,           \
    {"direction", "rx"}, {"result", "failed"})                                                    \
  X(offload_ktls, "ktls_offload_ktls_total", "connections handed off with kTLS TX and RX")        \
  X(offload_relay, "ktls_offload_relay_total",                                                    \
    "connections handed off through the userspace relay")                                         \
  X(offload_refused, "ktls_offload_refused_total",                                                \
    "connections closed because offload=required and kTLS failed")                                \
  X(handoffs_sent, "ktls_handoffs_sent_total", "connections handed to an app")                    \
  X(handoffs_expired, "ktls_handoffs_expired_total",                                              \
    "ready connections closed after waiting too long for an app")                                 \
  X(handoffs_requeued, "ktls_handoffs_requeued_total",                                            \
    "handoffs retried on another app after a send failure")                                       \
  X(handoffs_dropped, "ktls_handoffs_dropped_total",                                              \
    "ready connections dropped (queue full or agent stopping)")                                   \
  X(app_protocol_errors, "ktls_app_protocol_errors_total",                                        \
    "malformed or unexpected messages from apps")                                                 \
  X(apps_subscribed, "ktls_apps_subscribed_total", "app subscriptions accepted")                  \
  X(apps_disconnected, "ktls_apps_disconnected_total", "app subscriptions that ended")            \
  X(app_subscribers_refused, "ktls_app_subscribers_refused_total",                                \
    "app connections refused: peer uid/gid not allowed to subscribe (SO_PEERCRED)")               \
  X(app_connections_over_limit, "ktls_app_connections_over_limit_total",                          \
    "app connections refused: max_app_connections reached")                                       \
  X(app_subscribe_timeouts, "ktls_app_subscribe_timeouts_total",                                  \
    "app connections closed for not subscribing in time")                                         \
  X(relay_bytes_to_app, "ktls_relay_bytes_total", ::ktls::agent::kRelayBytesHelp,                 \
    {"direction", "to_app"})                                                                      \
  X(relay_bytes_to_peer, "ktls_relay_bytes_total", ::ktls::agent::kRelayBytesHelp,                \
    {"direction", "to_peer"})                                                                     \
  X(relay_closed, "ktls_relay_closed_total", "relayed connections finished")                      \
  X(relay_errors, "ktls_relay_errors_total", "relayed connections ended by an error")             \
  X(dials_started, "ktls_dials_started_total", "outbound dials requested by apps")                \
  X(dials_succeeded, "ktls_dials_succeeded_total", "outbound dials handed back to the app")       \
  X(dials_failed, "ktls_dials_failed_total",                                                      \
    "outbound dials that failed (connect, handshake, verify, timeout)")                           \
  X(dials_verify_failed, "ktls_dials_verify_failed_total",                                        \
    "outbound dials whose server certificate failed verification")                                \
  X(dials_resumed, "ktls_dials_resumed_total", "outbound dials that resumed a cached TLS session")

// X(field, family, help)
#define KTLS_AGENT_GAUGES(X)                                                                    \
  X(handshakes_in_progress, "ktls_handshakes_in_progress", "TLS handshakes in progress")        \
  X(connections_open, "ktls_connections_open",                                                  \
    "connections the agent holds (handshaking, waiting, relayed)")                              \
  X(pending_handoffs, "ktls_pending_handoffs", "ready connections waiting for an app's credit") \
  X(apps_connected, "ktls_apps_connected", "apps subscribed now")                               \
  X(relay_active, "ktls_relay_active", "connections being relayed now")

// Counters kept per value of a small enum (declared below), one sample each, labeled by
// MetricLabelsOf(enum value). X(field, enum, family, help)
#define KTLS_AGENT_COUNTER_ARRAYS(X)                                                           \
  X(fallbacks, ::ktls::agent::FallbackReason, "ktls_fallbacks_total",                          \
    "Connections relayed in userspace instead of kTLS, by reason")                             \
  X(handshake_failures, ::ktls::agent::HandshakeFailureReason, "ktls_handshakes_failed_total", \
    "TLS handshakes that failed, by reason (timeout included)")                                \
  X(connections_by_suite, ::ktls::agent::TlsSuite, "ktls_handshakes_completed_total",          \
    "TLS handshakes completed, by protocol version and cipher suite")

// X(field, bucket upper bounds, family, help)
#define KTLS_AGENT_HISTOGRAMS(X)                                                           \
  X(handshake_duration, ::ktls::agent::HandshakeDurationBuckets(),                         \
    "ktls_handshake_duration_seconds", "TLS handshake duration, accept to Finished")       \
  X(ktls_install_duration, ::ktls::agent::KtlsInstallDurationBuckets(),                    \
    "ktls_install_duration_seconds",                                                       \
    "Time in the kernel's kTLS setsockopts (TCP_ULP, TLS_TX, TLS_RX) per connection that " \
    "reached the kernel's TLS code")

// An enum whose values are metric label values, from a list of X(enumerator, label) entries:
// declares `enum class Name { ..., kCount }` and `kNameLabels`, each value's label in order.
#define KTLS_ENUM_VALUE(e, label) e,
#define KTLS_ENUM_LABEL(e, label) label,
#define KTLS_LABELED_ENUM(Name, LIST)               \
  enum class Name { LIST(KTLS_ENUM_VALUE) kCount }; \
  inline constexpr absl::string_view k##Name##Labels[] = {LIST(KTLS_ENUM_LABEL)}

// The label of `e` in a table made by KTLS_LABELED_ENUM; `fallback` for a value outside it.
template <typename Enum, size_t N>
absl::string_view EnumLabel(const absl::string_view (&labels)[N], Enum e,
                            absl::string_view fallback) {
  const size_t i = static_cast<size_t>(e);
  return i < N ? labels[i] : fallback;
}

// The labels of one sample of a per-enum counter array.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// Why a connection was relayed instead of offloaded: a small fixed set (metric label values).
#define KTLS_FALLBACK_REASONS(X)                  \
  X(kPolicyOff, "policy_off")                     \
  X(kModuleMissing, "tls_module_missing")         \
  X(kCipherUnsupported, "cipher_unsupported")     \
  X(kTxInstallFailed, "tx_install_failed")        \
  X(kRxInstallFailed, "rx_install_failed")        \
  X(kBufferedRecords, "openssl_buffered_records") \
  X(kNoSecret, "traffic_secret_unavailable")

// Why a handshake failed: a small fixed set (metric label values). Classified from OpenSSL's
// first queued error (connection.cc), or from the event that ended it.
#define KTLS_HANDSHAKE_FAILURE_REASONS(X)                                                      \
  X(kTimeout, "timeout")                      /* exceeded handshake_timeout_ms */              \
  X(kPeerClosed, "peer_closed")               /* EOF or socket error mid-handshake */          \
  X(kNotTls, "not_tls")                       /* plaintext HTTP, garbage, bad record header */ \
  X(kVersion, "unsupported_version")          /* no common protocol version */                 \
  X(kNoSharedCipher, "no_shared_cipher")      /* no common suite, group or signature alg */    \
  X(kNoAlpn, "no_application_protocol")       /* ALPN offered, no overlap */                   \
  X(kClientCertificate, "client_certificate") /* missing or unverifiable client cert */        \
  X(kPeerAlert, "peer_alert")                 /* the client aborted with an alert */           \
  X(kInternal, "internal")                    /* our side: certificate callback, memory */     \
  X(kProtocol, "protocol_error")              /* any other TLS protocol violation */

KTLS_LABELED_ENUM(HandshakeFailureReason, KTLS_HANDSHAKE_FAILURE_REASONS);
absl::string_view HandshakeFailureReasonLabel(HandshakeFailureReason r);
MetricLabels MetricLabelsOf(HandshakeFailureReason r);  // reason

// Completed handshakes by protocol version and cipher suite: the suites the agent negotiates by
// default, and "other" for anything configured beyond them. X(enum, version, IANA name, id)
#define KTLS_TLS_SUITES(X)                                                                   \
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
MetricLabels MetricLabelsOf(TlsSuite s);  // version, cipher
// The suite for a negotiated protocol version (TLS1_2_VERSION ...) and IANA cipher id.
TlsSuite TlsSuiteOf(int version, uint16_t cipher_id);

// Handshake duration (accept to Finished) bucket bounds, seconds.
inline std::vector<double> HandshakeDurationBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

// Time in the kernel's kTLS setsockopts per offloaded connection, seconds (10 µs .. 100 ms: the
// upper buckets are for emulated or heavily loaded machines).
inline std::vector<double> KtlsInstallDurationBuckets() {
  return {10e-6,  25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3,
          2.5e-3, 5e-3,  10e-3, 25e-3,  50e-3,  100e-3};
}

KTLS_LABELED_ENUM(FallbackReason, KTLS_FALLBACK_REASONS);
absl::string_view FallbackReasonLabel(FallbackReason r);
MetricLabels MetricLabelsOf(FallbackReason r);  // reason

// One counter per value of `Enum`, indexed by it.
template <typename Enum>
using CounterArray = std::array<std::atomic<uint64_t>, static_cast<size_t>(Enum::kCount)>;

struct AgentStats {
#define KTLS_FIELD(field, ...) std::atomic<uint64_t> field{0};
  KTLS_AGENT_COUNTERS(KTLS_FIELD)
#undef KTLS_FIELD
#define KTLS_FIELD(field, ...) std::atomic<int64_t> field{0};
  KTLS_AGENT_GAUGES(KTLS_FIELD)
#undef KTLS_FIELD
#define KTLS_FIELD(field, Enum, ...) CounterArray<Enum> field{};
  KTLS_AGENT_COUNTER_ARRAYS(KTLS_FIELD)
#undef KTLS_FIELD
#define KTLS_FIELD(field, buckets, ...) Histogram field{buckets};
  KTLS_AGENT_HISTOGRAMS(KTLS_FIELD)
#undef KTLS_FIELD

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

}  // namespace ktls::agent

#endif  // KTLS_AGENT_STATS_H_
