// The control plane's own counters, declared in lists that carry their Prometheus names as the
// data plane's do (agent/stats.h, whose KTLS_LABELED_ENUM and CounterArray they share). Exported
// to Prometheus by server/metrics.cc; updated from gRPC threads, the directory watcher and
// start-up. Every label comes from a fixed set.
#ifndef KTLS_SERVER_CONTROL_METRICS_H_
#define KTLS_SERVER_CONTROL_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "agent/stats.h"

namespace ktls::control {

// Why the control plane rejected an input (metric label values). X(enum, label)
#define KTLS_VALIDATION_FAILURES(X)                                                            \
  X(kInvalidName, "invalid_name")                  /* certificate name, unknown field value */ \
  X(kTooLarge, "too_large")                        /* a field or list over its limit */        \
  X(kBadCertificatePem, "bad_certificate_pem")     /* chain does not parse */                  \
  X(kBadPrivateKey, "bad_private_key")             /* key does not parse */                    \
  X(kEncryptedPrivateKey, "encrypted_private_key") /* passphrase-protected key */              \
  X(kKeyMismatch, "key_mismatch")                  /* key is not the leaf's */                 \
  X(kInvalidServerName, "invalid_server_name")     /* malformed SNI name */                    \
  X(kNameNotCovered, "name_not_covered")           /* SAN does not cover a requested name */   \
  X(kExpired, "expired")                           /* notAfter in the past */                  \
  X(kNotYetValid, "not_yet_valid")                 /* notBefore in the future */               \
  X(kNotServerAuth, "not_server_auth")             /* EKU/keyUsage unfit for a TLS server */   \
  X(kNameConflict, "name_conflict")                /* another certificate serves the name */   \
  X(kBadCa, "bad_ca")                              /* trust bundle CA unusable */              \
  X(kBadCrl, "bad_crl")                            /* CRL unparsable, unsigned, expired */     \
  X(kBadTicketKey, "bad_ticket_key")               /* ticket key size, duplicate name */       \
  X(kOther, "other")

KTLS_LABELED_ENUM(ValidationFailure, KTLS_VALIDATION_FAILURES);
absl::string_view ValidationFailureLabel(ValidationFailure f);
agent::MetricLabels MetricLabelsOf(ValidationFailure f);  // reason

// Where a certificate change came from, and how it ended (ktls_certificate_reloads_total).
#define KTLS_RELOAD_SOURCES(X) X(kApi, "api") X(kCertDir, "cert_dir") X(kState, "state")
KTLS_LABELED_ENUM(ReloadSource, KTLS_RELOAD_SOURCES);
absl::string_view ReloadSourceLabel(ReloadSource s);

// The plain counters and gauges, as agent/stats.h declares the data plane's: X(field, family,
// help); an empty family is not exported.
#define KTLS_CONTROL_COUNTERS(X)                                                         \
  X(state_files_skipped, "ktls_state_files_skipped_total",                               \
    "State files skipped at start (corrupt or invalid; see the log and ktlsctl status)") \
  X(state_write_errors, "ktls_state_write_errors_total",                                 \
    "Changes refused because the state directory could not be written")                  \
  X(ticket_key_rotations, "ktls_session_ticket_key_updates_total",                       \
    "Session-ticket key sets and rotations")                                             \
  X(watch_streams_overflowed, "", "")
#define KTLS_CONTROL_GAUGES(X) \
  X(state_files_loaded, "ktls_state_files_loaded", "State files loaded at start")
// X(field, enum, family, help), as KTLS_AGENT_COUNTER_ARRAYS.
#define KTLS_CONTROL_COUNTER_ARRAYS(X)                                                \
  X(validation_failures, ValidationFailure, "ktls_control_validation_failures_total", \
    "Inputs the control plane rejected, by reason")

struct ControlMetrics {
#define KTLS_FIELD(field, ...) std::atomic<uint64_t> field{0};
  KTLS_CONTROL_COUNTERS(KTLS_FIELD)
  KTLS_CONTROL_GAUGES(KTLS_FIELD)
#undef KTLS_FIELD
#define KTLS_FIELD(field, Enum, ...) agent::CounterArray<Enum> field{};
  KTLS_CONTROL_COUNTER_ARRAYS(KTLS_FIELD)
#undef KTLS_FIELD
  // [source][0] = committed, [source][1] = rejected (ktls_certificate_reloads_total)
  std::array<std::array<std::atomic<uint64_t>, 2>, static_cast<size_t>(ReloadSource::kCount)>
      reloads{};

  void CountValidationFailure(ValidationFailure f) {
    validation_failures[static_cast<size_t>(f)].fetch_add(1, std::memory_order_relaxed);
  }
  void CountReload(ReloadSource s, bool ok) {
    reloads[static_cast<size_t>(s)][ok ? 0 : 1].fetch_add(1, std::memory_order_relaxed);
  }

  // Control requests by full method name ("/ktls.v1.CertificateService/CommitCertificate") and
  // gRPC status code name ("OK", "INVALID_ARGUMENT"). Methods are the registered ones, so the
  // label set is fixed by the API.
  void CountRequest(absl::string_view method, absl::string_view code);
  std::map<std::pair<std::string, std::string>, uint64_t> Requests() const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, uint64_t> requests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ktls::control

#endif  // KTLS_SERVER_CONTROL_METRICS_H_
