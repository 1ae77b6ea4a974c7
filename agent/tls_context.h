// The server SSL_CTX and everything configured on it: versions and suites, kTLS, ALPN, client
// certificate verification, certificate selection by SNI (from a pinned CertificateSet), and the
// keylog hook that captures the TLS 1.3 client application traffic secret for manual kTLS RX.
#ifndef KTLS_AGENT_TLS_CONTEXT_H_
#define KTLS_AGENT_TLS_CONTEXT_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "agent/cert_store.h"
#include "agent/client_trust.h"
#include "agent/kernel_probe.h"
#include "agent/openssl_ptr.h"
#include "agent/session_tickets.h"

namespace ktls::agent {

struct TlsOptions {
  TlsVersion min_version = TlsVersion::kTls12;
  std::string tls12_ciphers;       // empty: ECDHE AEAD suites (AES-GCM, ChaCha20-Poly1305)
  std::string tls13_ciphersuites;  // empty: the three AEAD suites
  std::vector<std::string> alpn;   // server preference order; empty: no ALPN
  std::string client_ca_file;      // non-empty: request and verify client certificates
  bool require_client_cert = false;
  // Sets SSL_OP_ENABLE_KTLS (offload=preferred|required).
  bool enable_ktls = true;
  // offload=required: restrict TLS 1.2 ciphers and TLS 1.3 suites to what `probe` found working
  // for TX and RX. Create() fails if that leaves nothing.
  bool restrict_to_probe = false;
};

// Per-connection data the context's callbacks read and write, attached by NewServerSsl().
// Owned by the connection; must outlive the SSL's handshake.
struct TlsConnectionState {
  std::shared_ptr<const CertificateSet> certificates;  // pinned at accept
  // false: the default certificate was served for an unknown name. A client that sent no SNI
  // (e.g. connecting by IP address) asked for no name: true.
  bool sni_matched = true;
  // The certificate the certificate callback picked (points into `certificates`), or nullptr.
  const CertificateEntry* served = nullptr;
  // TLS 1.3 CLIENT_TRAFFIC_SECRET_0, captured from the keylog callback. Wiped by the destructor
  // and by WipeSecrets() as soon as kTLS RX is installed (or abandoned).
  std::array<uint8_t, 64> client_app_secret{};
  size_t client_app_secret_len = 0;
  void WipeSecrets();
  ~TlsConnectionState();
};

// What the server context shares with the client contexts (agent/tls_client_context.h), so that
// both sides offer the same offloadable suites and read keylog lines and ALPN lists one way.
//
// The TLS 1.2 ciphers offered when none are configured: ECDHE with an AEAD kTLS can offload.
inline constexpr char kDefaultTls12Ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
// `protocols` in ALPN wire format (length-prefixed); INVALID_ARGUMENT for a name that is empty or
// longer than 255 bytes.
absl::StatusOr<std::vector<uint8_t>> AlpnWire(const std::vector<std::string>& protocols);
// For a keylog line "<label> <client random hex> <secret hex>" of `ssl`'s own connection (the
// label includes its trailing space): decodes the secret into `out` and sets *len (0 when the hex
// is malformed, with `out` wiped). Other lines, and secrets longer than `out`, leave both as they
// were. Nothing from the line is logged or copied elsewhere (OpenSSL wipes it after the callback).
void CaptureKeylogSecret(const SSL* ssl, absl::string_view line, absl::string_view label,
                         absl::Span<uint8_t> out, size_t* len);

class TlsContext {
 public:
  static absl::StatusOr<std::unique_ptr<TlsContext>> Create(const TlsOptions& options,
                                                            const KernelProbeResult& probe);

  // A new server-side SSL for an accepted connection with `state` attached (not owned).
  absl::StatusOr<SslPtr> NewServerSsl(TlsConnectionState* state) const;

  SSL_CTX* ctx() const { return ctx_.get(); }
  const TlsOptions& options() const { return options_; }

  // Client-certificate trust for handshakes that start from now on (see client_trust.h).
  // nullptr restores what the options configured (client_ca_file, or no verification).
  void SetClientTrust(std::shared_ptr<const TrustBundle> bundle);
  std::shared_ptr<const TrustBundle> client_trust() const;

  // Session-ticket keys for tickets issued and accepted from now on (see session_tickets.h).
  // Create() installs one random key; `keys` must hold at least one.
  void SetTicketKeys(std::shared_ptr<const SessionTicketKeys> keys);
  std::shared_ptr<const SessionTicketKeys> ticket_keys() const;

  // The state attached to `ssl`, or nullptr.
  static TlsConnectionState* StateOf(const SSL* ssl);

  struct TicketKeyHolder;  // defined in tls_context.cc (the ticket callback's view of the keys)

 private:
  TlsContext() = default;
  // Attaches one random session-ticket key and the ticket callback to ctx_.
  absl::Status InstallTicketKeys();

  SslCtxPtr ctx_;
  TlsOptions options_;
  mutable absl::Mutex trust_mu_;
  std::shared_ptr<const TrustBundle> trust_ ABSL_GUARDED_BY(trust_mu_);
  // Owned by ctx_ (ex_data) like the ALPN list: the ticket callback may run for an SSL that
  // outlives this object.
  TicketKeyHolder* tickets_ = nullptr;
  // The ALPN list (wire format) that the select callback reads is owned by ctx_ itself (ex_data),
  // so an SSL that outlives this object (it holds a reference on the SSL_CTX) stays safe.
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_TLS_CONTEXT_H_
