// The client side of TLS for outbound dials: one SSL_CTX per trust bundle, and a configured
// client SSL per dial. It exists apart from the dialer so that the dialer keeps only resolving,
// connecting and ticket draining, and apart from agent/tls_context.h (the server SSL_CTX) because
// the client contexts differ in what matters: they verify the peer against a per-request CA file
// or the system store, they keep no server-side state, and the secret kTLS RX needs is the
// server's (SERVER_TRAFFIC_SECRET_0), not the client's.
//
// Per dial: SNI, ALPN, the version bounds, host-name (or IP address) verification, and a
// session from the SessionCache to resume. Per context, shared by all dials with the same CA
// file: the offloadable suites, kTLS, the trust store, and two callbacks that reach the dial
// through its ClientTlsState (SSL ex_data): the keylog line with the server's application
// traffic secret (TLS 1.3, for manual kTLS RX), and each new session or ticket, which goes into
// the SessionCache under the dial's key.
//
// Not thread-safe: the dialer's loop thread creates sessions and runs the handshakes (and thus
// the callbacks).
#ifndef KTLS_AGENT_TLS_CLIENT_CONTEXT_H_
#define KTLS_AGENT_TLS_CLIENT_CONTEXT_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/openssl_ptr.h"
#include "agent/session_cache.h"

namespace ktls::agent {

// True for an IPv4 or IPv6 address literal (such a host gets no SNI, RFC 6066, and is verified
// as an IP address, not a DNS name).
bool IsIpLiteral(const std::string& host);

// What one dial asks of TLS (the dial request's fields, without the proto).
struct ClientTlsParams {
  std::string host;  // as dialed: a name or an IP literal
  uint32_t port = 0;
  std::string sni;                // "": none
  std::vector<std::string> alpn;  // client preference order; empty: no ALPN
  std::string ca_file;            // "": the system trust store
  std::string expected_name;      // the name (or IP) the server's certificate must carry
  std::string tls_version;        // "", "TLSv1.2" (exactly) or "TLSv1.3" (at least)
  bool insecure_skip_verify = false;

  // The request's defaults: SNI is the host unless it is an IP literal; the expected name is the
  // SNI, else the host.
  void ApplyDefaults();
  // The upstream's key in the SessionCache: every parameter that changes what the server sees or
  // what we accept, so a session is offered only to the upstream and trust it was made with.
  std::string SessionCacheKey() const;
};

// Per dial, owned by the dialer's connection and attached to its SSL by NewSession(); what the
// context's callbacks write. Must outlive the SSL or be detached (ClientTlsContexts::Detach).
struct ClientTlsState {
  // TLS 1.3 SERVER_TRAFFIC_SECRET_0 from the keylog callback: the kTLS RX key. Wiped by
  // WipeSecret() once RX is installed (or abandoned) and by the destructor.
  std::array<uint8_t, 64> server_app_secret{};
  size_t server_app_secret_len = 0;
  // A session (TLS 1.2) or ticket (TLS 1.3) arrived and went into the cache.
  bool got_ticket = false;
  // Set by NewSession(): where the new-session callback puts what arrives.
  SessionCache* sessions = nullptr;
  std::string cache_key;

  void WipeSecret();
  ~ClientTlsState();
};

class ClientTlsContexts {
 public:
  // `sessions` (not owned) receives new sessions and supplies the ones to resume. `enable_ktls`
  // sets SSL_OP_ENABLE_KTLS (every offload policy but off).
  ClientTlsContexts(SessionCache& sessions, bool enable_ktls)
      : sessions_(sessions), enable_ktls_(enable_ktls) {}

  // A client SSL for one dial with `state` attached (not owned), a cached session set when the
  // cache has one for the upstream. Errors: INVALID_ARGUMENT for a CA file that does not load
  // ("cannot load CA bundle <file>: ..."), a tls_version other than TLSv1.2/TLSv1.3, or an ALPN
  // name that is empty or longer than 255 bytes.
  absl::StatusOr<SslPtr> NewSession(const ClientTlsParams& params, ClientTlsState* state);

  // The SSL_CTX for `ca_file` ("" = system store), created on first use and kept (at most
  // kMaxContexts; beyond that the cache starts over: SSLs hold their own reference).
  absl::StatusOr<SSL_CTX*> ContextFor(const std::string& ca_file);
  size_t contexts() const { return ctxs_.size(); }
  static constexpr size_t kMaxContexts = 64;

  // Stops the callbacks from reaching `ssl`'s ClientTlsState: for an SSL that lives on (in the
  // relay) after its dial is done.
  static void Detach(SSL* ssl);

 private:
  SessionCache& sessions_;
  const bool enable_ktls_;
  std::map<std::string, SslCtxPtr> ctxs_;
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_TLS_CLIENT_CONTEXT_H_
