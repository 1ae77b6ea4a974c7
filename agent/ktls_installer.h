// Completes the kTLS install after a server handshake and decides, once per connection, the
// data path: hand off the TCP socket with kTLS TX+RX, or relay (nginx decides its recv/send
// functions once when the handshake completes; so do we, and we record why).
//
// TX: OpenSSL installs it itself (SSL_OP_ENABLE_KTLS) through agent/socket_bio, which records the
// errno of any failed setsockopt. RX: OpenSSL 3.0 installs it for TLS 1.2; for TLS 1.3 we
// install it here from CLIENT_TRAFFIC_SECRET_0 (captured by the keylog callback) with record
// sequence 0. That is only correct if OpenSSL has consumed no record under the client application
// key: read-ahead is off, so OpenSSL stopped reading right after the client Finished, and we
// check SSL_has_pending() to be sure; anything the client sent behind its Finished is still in the
// kernel's receive queue and will be decrypted by the kernel.
#ifndef KTLS_AGENT_KTLS_INSTALLER_H_
#define KTLS_AGENT_KTLS_INSTALLER_H_

#include <string>

#include <openssl/ssl.h>

#include "absl/types/span.h"
#include "agent/openssl_ptr.h"
#include "agent/stats.h"
#include "agent/syscalls.h"
#include "agent/tls_context.h"

namespace ktls::agent {

enum class OffloadPolicy { kPreferred, kRequired, kOff };
absl::string_view OffloadPolicyName(OffloadPolicy p);

struct OffloadDecision {
  bool ktls = false;  // true: hand off the TCP socket itself; TX and RX are both installed
  bool tx = false;    // kTLS TX is installed (also possible with ktls == false)
  bool rx = false;
  FallbackReason reason = FallbackReason::kPolicyOff;  // meaningful when !ktls
  std::string
      reason_text;  // operator-facing, e.g. "kernel tls module not loaded (TCP_ULP: ENOENT)"
};

// Call exactly once, right after SSL_do_handshake() returned 1 on a connection whose BIO came
// from NewSocketBio(), before any SSL_read. Wipes the captured traffic secret in every case.
OffloadDecision CompleteKtlsInstall(SysCalls& sys, SSL* ssl, int fd, OffloadPolicy policy);

// The same for either side, with the TLS 1.3 RX traffic secret given explicitly (the server's
// CLIENT_TRAFFIC_SECRET_0, or for an outbound connection the SERVER_TRAFFIC_SECRET_0) and the
// sequence number of the next record the kernel will decrypt (records OpenSSL consumed under
// that key, e.g. NewSessionTickets an outbound connection read before handing off). The caller
// wipes the secret. `rx_at_record_boundary` false means OpenSSL stopped inside a record: RX
// cannot be installed.
OffloadDecision CompleteKtlsInstallWithSecret(SysCalls& sys, SSL* ssl, int fd, OffloadPolicy policy,
                                              absl::Span<const uint8_t> tls13_rx_secret,
                                              uint64_t rx_record_seq, bool rx_at_record_boundary);

// Frees the SSL of a connection handed off with kTLS, writing nothing. OpenSSL treats an SSL
// freed without a shutdown as a broken session and makes it non-resumable (ssl_clear_bad_session
// -> SSL_CTX_remove_session -> not_resumable), which would kill session resumption for every
// offloaded connection on both sides. Marking the shutdown as done only sets flags: no
// close_notify is sent; the app owns the TLS stream and closes it itself.
void ReleaseSslAfterHandoff(SslPtr ssl);

// Counts what CompleteKtlsInstall* left on `ssl`'s socket: TX/RX installed or failed, and the
// time the kernel's setsockopts took (ktls_install_duration, sockets whose TCP_ULP succeeded).
void CountKtlsInstall(AgentStats& stats, SSL* ssl);

}  // namespace ktls::agent

#endif  // KTLS_AGENT_KTLS_INSTALLER_H_
