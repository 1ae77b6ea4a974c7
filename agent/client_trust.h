// Client-certificate trust that can be replaced while serving: CA certificates and CRLs parsed
// into one X509_STORE, and whether a client certificate is required.
//
// A TrustBundle is immutable once built. TlsContext holds the current one and applies it to each
// new SSL (SSL_set1_verify_cert_store, the CA names, the verify mode), so a swap changes only
// handshakes that start afterwards, exactly as a certificate swap does. Sessions are bound to
// the bundle through the session id context (a hash of the bundle's content): a session
// established under another trust bundle is not resumed, it gets a full handshake and is
// verified against the current one. Replicas with the same bundle compute the same context, so
// shared ticket keys still let them resume each other's sessions.
#ifndef KTLS_AGENT_CLIENT_TRUST_H_
#define KTLS_AGENT_CLIENT_TRUST_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "agent/openssl_ptr.h"
#include "agent/pem.h"

namespace ktls::agent {

struct TrustBundle {
  X509StorePtr store;         // CAs and CRLs; CRL checking (leaf) is on when there are CRLs
  X509NameStackPtr ca_names;  // subjects of the CAs, sent in the CertificateRequest
  bool require_client_cert = false;
  int ca_count = 0;
  int crl_count = 0;
  // SHA-256 over the canonical content (DER of every CA and CRL, the require flag).
  std::array<unsigned char, 32> digest{};

  // Parses PEM CA certificates (at least one) and PEM CRLs (optional). Errors name the block
  // ("CA certificate 2: ...", "CRL 1: ..."). Nothing else is checked here (see server/ for the
  // operator-facing validation).
  static absl::StatusOr<std::shared_ptr<const TrustBundle>> Create(std::string_view ca_pem,
                                                                   std::string_view crl_pem,
                                                                   bool require_client_cert);
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_CLIENT_TRUST_H_
