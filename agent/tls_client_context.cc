// Client SSL_CTXs per trust bundle and the client SSL per dial (see tls_client_context.h).
//
// The callbacks find the dial through one SSL ex_data slot holding its ClientTlsState, never
// through the ClientTlsContexts object, so an SSL that outlives its dial (a relayed connection)
// is safe once detached.
#include "agent/tls_client_context.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "agent/tls_context.h"
#include "agent/tls_session.h"

namespace ktls::agent {
namespace {

// Process-wide SSL ex_data slot for ClientTlsState* (not owned by the SSL), created on first use.
int StateIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

ClientTlsState* StateOf(const SSL* ssl) {
  return static_cast<ClientTlsState*>(SSL_get_ex_data(ssl, StateIndex()));
}

// The server's application traffic secret (TLS 1.3): with it and the record count the dialer
// installs kTLS RX itself, as OpenSSL does not for data it has already read.
void OnKeylogLine(const SSL* ssl, const char* line) {
  ClientTlsState* state = StateOf(ssl);
  if (state == nullptr) return;
  CaptureKeylogSecret(ssl, line, "SERVER_TRAFFIC_SECRET_0 ",
                      absl::MakeSpan(state->server_app_secret), &state->server_app_secret_len);
}

// Called for the TLS 1.2 session after the handshake and for each TLS 1.3 ticket.
int OnNewSession(SSL* ssl, SSL_SESSION* session) {
  ClientTlsState* state = StateOf(ssl);
  if (state != nullptr && state->sessions != nullptr) {
    state->sessions->Put(state->cache_key, session);
    state->got_ticket = true;
  }
  return 0;  // we did not keep OpenSSL's reference (the cache takes its own)
}

// Versions: TLSv1.2 pins the version (the upstream is known to need it); TLSv1.3 only raises the
// floor, as the context's ceiling already is TLS 1.3.
absl::Status SetVersion(SSL* ssl, const std::string& version) {
  if (version == "TLSv1.2") {
    SSL_set_min_proto_version(ssl, TLS1_2_VERSION);
    SSL_set_max_proto_version(ssl, TLS1_2_VERSION);
  } else if (version == "TLSv1.3") {
    SSL_set_min_proto_version(ssl, TLS1_3_VERSION);
  } else if (!version.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls_version '", version, "' is not TLSv1.2 or TLSv1.3"));
  }
  return absl::OkStatus();
}

absl::Status SetAlpn(SSL* ssl, const std::vector<std::string>& alpn) {
  if (alpn.empty()) return absl::OkStatus();
  absl::StatusOr<std::vector<uint8_t>> wire = AlpnWire(alpn);
  if (!wire.ok()) return absl::InvalidArgumentError("alpn: protocol names must be 1..255 bytes");
  // SSL_set_alpn_protos returns 0 on success.
  if (SSL_set_alpn_protos(ssl, wire->data(), static_cast<unsigned int>(wire->size())) != 0) {
    return absl::InternalError(absl::StrCat("cannot set ALPN: ", DrainOpenSslErrors("failed")));
  }
  return absl::OkStatus();
}

// Peer verification: the chain against the context's trust store, and the leaf against the
// expected name, as an IP address when it is a literal (a DNS check of "10.0.0.1" would look for
// a DNS SAN of that text, which is not how certificates name addresses).
void SetVerification(SSL* ssl, const ClientTlsParams& params) {
  if (params.insecure_skip_verify) {
    SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
    return;
  }
  SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
  if (IsIpLiteral(params.expected_name)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), params.expected_name.c_str());
  } else {
    SSL_set1_host(ssl, params.expected_name.c_str());
  }
}

}  // namespace

bool IsIpLiteral(const std::string& host) {
  in6_addr a6;
  in_addr a4;
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

void ClientTlsParams::ApplyDefaults() {
  if (sni.empty() && !IsIpLiteral(host)) sni = host;
  if (expected_name.empty()) expected_name = !sni.empty() ? sni : host;
}

std::string ClientTlsParams::SessionCacheKey() const {
  return absl::StrCat(host, ":", port, "|", sni, "|", absl::StrJoin(alpn, ","), "|", ca_file, "|",
                      expected_name, "|", tls_version, "|", insecure_skip_verify);
}

void ClientTlsState::WipeSecret() {
  OPENSSL_cleanse(server_app_secret.data(), server_app_secret.size());
  server_app_secret_len = 0;
}

ClientTlsState::~ClientTlsState() { WipeSecret(); }

absl::StatusOr<SSL_CTX*> ClientTlsContexts::ContextFor(const std::string& ca_file) {
  auto it = ctxs_.find(ca_file);
  if (it != ctxs_.end()) return it->second.get();
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return absl::InternalError("SSL_CTX_new failed");
  SSL_CTX* c = ctx.get();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  // Offloadable AEAD suites only, as on the server side.
  SSL_CTX_set_cipher_list(c, kDefaultTls12Ciphers);
  uint64_t options = SSL_OP_NO_RENEGOTIATION;
  if (enable_ktls_) options |= SSL_OP_ENABLE_KTLS;
  SSL_CTX_set_options(c, options);
  // Read-ahead stays off: kTLS RX needs OpenSSL to stop at record boundaries (see
  // agent/ktls_installer.h).
  ERR_clear_error();
  if (ca_file.empty()) {
    SSL_CTX_set_default_verify_paths(c);
  } else if (SSL_CTX_load_verify_locations(c, ca_file.c_str(), nullptr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("cannot load CA bundle ", ca_file, ": ",
                                                   DrainOpenSslErrors("not a PEM bundle")));
  }
  // Sessions live in our SessionCache (keyed per upstream), not in OpenSSL's.
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(c, OnNewSession);
  SSL_CTX_set_keylog_callback(c, OnKeylogLine);
  if (ctxs_.size() >= kMaxContexts) ctxs_.clear();  // bounded; rebuilt on demand
  ctxs_[ca_file] = std::move(ctx);
  return c;
}

absl::StatusOr<SslPtr> ClientTlsContexts::NewSession(const ClientTlsParams& params,
                                                     ClientTlsState* state) {
  absl::StatusOr<SSL_CTX*> ctx = ContextFor(params.ca_file);
  if (!ctx.ok()) return ctx.status();
  SslPtr ssl(SSL_new(*ctx));
  if (!ssl) return absl::InternalError("SSL_new failed");
  if (absl::Status s = SetVersion(ssl.get(), params.tls_version); !s.ok()) return s;
  if (!params.sni.empty()) SSL_set_tlsext_host_name(ssl.get(), params.sni.c_str());
  if (absl::Status s = SetAlpn(ssl.get(), params.alpn); !s.ok()) return s;
  SetVerification(ssl.get(), params);
  state->sessions = &sessions_;
  state->cache_key = params.SessionCacheKey();
  SSL_set_ex_data(ssl.get(), StateIndex(), state);
  if (SslSessionPtr cached = sessions_.Take(state->cache_key)) {
    SSL_set_session(ssl.get(), cached.get());  // takes its own reference
  }
  return ssl;
}

void ClientTlsContexts::Detach(SSL* ssl) { SSL_set_ex_data(ssl, StateIndex(), nullptr); }

}  // namespace ktls::agent
