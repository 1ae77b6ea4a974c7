// Operator-facing validation of certificates and trust bundles, and their description for the
// API (never any key material).
//
// The data plane's parser (agent/cert_store.h) already checks that the PEM parses, the key
// matches the leaf and the names are well formed. Here, on top, what an operator needs before a
// certificate is served: request limits, dates, that it is meant for TLS servers, that its SANs
// cover every requested name; warnings for what works but deserves a look (expires within 7
// days, self-signed, chain out of order). Every rejection carries a metric label
// (ValidationFailure) and a message that says which field and what is wrong.
#ifndef KTLS_SERVER_CERT_VALIDATION_H_
#define KTLS_SERVER_CERT_VALIDATION_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/cert_store.h"
#include "agent/client_trust.h"
#include "ktls/v1/control.pb.h"
#include "server/control_metrics.h"

namespace ktls::control {

// Limits on every input (docs/operations.md lists them).
inline constexpr size_t kMaxChainPemBytes = 512 * 1024;
inline constexpr size_t kMaxKeyPemBytes = 64 * 1024;
inline constexpr size_t kMaxServerNames = 100;
inline constexpr size_t kMaxServerNameBytes = 253;
inline constexpr size_t kMaxCaPemBytes = 1 << 20;
inline constexpr size_t kMaxCrlPemBytes = 4 << 20;
inline constexpr absl::Duration kExpiryWarning = absl::Hours(24 * 7);

// A rejected input: the status for the caller and the label for the counter.
struct Rejection {
  ValidationFailure reason = ValidationFailure::kOther;
  absl::Status status;
};

// Certificate names: [A-Za-z0-9][A-Za-z0-9._-]{0,63} (they are file names in the state dir).
absl::Status ValidateCertificateName(const std::string& name);

// Field sizes and counts of a certificate to stage, and the PEM armor of the chain and key (an
// encrypted key is refused here, with its own message). Messages name the API's fields
// (cert_chain_pem, private_key_pem, server_names). OK or the rejection.
std::optional<Rejection> CheckStageRequest(const agent::CertificateSource& certificate);

// The label for an error returned by CertificateSet::Create/FromEntries (their messages are
// specific; this only classifies them for the counter).
ValidationFailure ClassifyParseError(const absl::Status& status);

// Checks a parsed certificate for serving at `now`: dates, serverAuth, keyUsage, SAN coverage
// of `requested_names` (as the operator gave them; empty: the names came from the SANs).
// Appends warnings.
std::optional<Rejection> ValidateForServing(const agent::CertificateEntry& entry,
                                            const std::vector<std::string>& requested_names,
                                            absl::Time now, std::vector<std::string>* warnings);

// Everything about a certificate except its key.
v1::Certificate DescribeCertificate(const agent::CertificateEntry& entry);

// Checks a parsed trust bundle (from its PEM): every CA currently valid, every CRL signed by one
// of the CAs and not past its nextUpdate. Warnings: a CA that is not marked CA, CAs without CRL
// when CRLs are given. Fills `description` (cas, crls, sha256, require flag).
std::optional<Rejection> ValidateTrustBundle(const std::string& ca_pem, const std::string& crl_pem,
                                             const agent::TrustBundle& bundle, absl::Time now,
                                             std::vector<std::string>* warnings,
                                             v1::TrustBundle* description);

// RFC 3339, UTC, seconds ("2026-01-02T03:04:05Z").
std::string FormatRfc3339(absl::Time t);
void SetTimestamp(absl::Time t, google::protobuf::Timestamp* out);

}  // namespace ktls::control

#endif  // KTLS_SERVER_CERT_VALIDATION_H_
