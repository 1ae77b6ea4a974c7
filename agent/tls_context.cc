// The server SSL_CTX (see tls_context.h).
//
// Everything per connection reaches the callbacks through one SSL ex_data slot holding the
// connection's TlsConnectionState (StateOf); everything per context (the ALPN list) is owned by
// the SSL_CTX's own ex_data, so no callback depends on the TlsContext object staying alive.
#include "agent/tls_context.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include <cstring>
#include <string_view>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "agent/ktls_crypto_info.h"
#include "agent/pem.h"

namespace ktls::agent {
namespace {

constexpr char kDefaultTls13Suites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr unsigned char kSessionIdContext[] = "ktls-agent";

// One process-wide SSL ex_data slot for TlsConnectionState*; created on first use (C++ static
// initialisation is thread-safe) and never freed. The state is not owned by the SSL.
int StateIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// SSL_CTX ex_data slot owning the context's ALPN list (std::vector<uint8_t>*, wire format); the
// free callback deletes it with the SSL_CTX.
void FreeAlpnList(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/, long /*argl*/,
                  void* /*argp*/) {
  delete static_cast<std::vector<uint8_t>*>(ptr);
}
int AlpnIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeAlpnList);
  return index;
}

}  // namespace

// The current session-ticket keys, shared between the context and its ticket callback.
struct TlsContext::TicketKeyHolder {
  absl::Mutex mu;
  std::shared_ptr<const SessionTicketKeys> keys ABSL_GUARDED_BY(mu);
  std::shared_ptr<const SessionTicketKeys> Get() {
    absl::MutexLock lock(&mu);
    return keys;
  }
};

namespace {

void FreeTicketKeyHolder(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/,
                         long /*argl*/, void* /*argp*/) {
  delete static_cast<TlsContext::TicketKeyHolder*>(ptr);
}
int TicketIndex() {
  static const int index =
      SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeTicketKeyHolder);
  return index;
}

// RFC 5077 ticket protection with the current keys: the first key encrypts (AES-CBC, HMAC-SHA256
// over the ticket); any key decrypts, and a ticket under an older key is renewed (return 2).
// An unknown key name is no error: the client gets a full handshake (return 0).
int OnTicketKey(SSL* ssl, unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher_ctx,
                EVP_MAC_CTX* mac_ctx, int enc) {
  auto* holder = static_cast<TlsContext::TicketKeyHolder*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), TicketIndex()));
  if (holder == nullptr) return enc ? -1 : 0;
  const std::shared_ptr<const SessionTicketKeys> keys = holder->Get();
  if (keys == nullptr || keys->keys().empty()) return enc ? -1 : 0;
  const SessionTicketKey* key = enc ? &keys->keys().front() : keys->Find(key_name);
  if (key == nullptr) return 0;
  const EVP_CIPHER* cipher = key->key_len == 32 ? EVP_aes_256_cbc() : EVP_aes_128_cbc();
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(
          OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key->hmac_key.data()), key->key_len),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_MAC_CTX_set_params(mac_ctx, params) != 1) return -1;
  if (enc) {
    std::memcpy(key_name, key->name.data(), 16);
    if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(cipher)) != 1 ||
        EVP_EncryptInit_ex(cipher_ctx, cipher, nullptr, key->aes_key.data(), iv) != 1) {
      return -1;
    }
    return 1;
  }
  if (EVP_DecryptInit_ex(cipher_ctx, cipher, nullptr, key->aes_key.data(), iv) != 1) return -1;
  return key == &keys->keys().front() ? 1 : 2;
}

// Accepts every name the client asks for: selection happens in the certificate callback, which
// serves the default for an unknown name. Acknowledging also makes OpenSSL keep the name in a
// TLS 1.2 session, so a resumed handshake still reports it through SSL_get_servername.
int OnServerName(SSL* /*ssl*/, int* /*alert*/, void* /*arg*/) { return SSL_TLSEXT_ERR_OK; }

// Picks the certificate for the client's SNI from the set pinned in the connection state.
// Returning 0 aborts the handshake (internal_error alert).
int OnCertificate(SSL* ssl, void* /*arg*/) {
  TlsConnectionState* state = TlsContext::StateOf(ssl);
  if (state == nullptr || state->certificates == nullptr) return 0;
  const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  bool matched = false;
  const CertificateEntry* entry = state->certificates->Select(
      sni != nullptr ? std::string_view(sni) : std::string_view(), &matched);
  if (entry == nullptr) return 0;
  state->sni_matched = matched || sni == nullptr;
  state->served = entry;
  // Takes its own references on the leaf, key and chain; the set stays immutable.
  if (SSL_use_cert_and_key(ssl, entry->leaf.get(), entry->key.get(), entry->chain.get(),
                           /*override=*/1) != 1) {
    return 0;
  }
  return 1;
}

// Server preference: the first protocol of our list that the client also offered. Called only
// when the client sent ALPN. No overlap is fatal (no_application_protocol alert, RFC 7301).
int OnAlpnSelect(SSL* /*ssl*/, const unsigned char** out, unsigned char* outlen,
                 const unsigned char* in, unsigned int inlen, void* arg) {
  const auto* ours = static_cast<const std::vector<uint8_t>*>(arg);
  unsigned char* selected = nullptr;
  unsigned char selected_len = 0;
  if (SSL_select_next_proto(&selected, &selected_len, ours->data(),
                            static_cast<unsigned int>(ours->size()), in,
                            inlen) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  *out = selected;  // points into `ours`, which lives as long as the SSL_CTX
  *outlen = selected_len;
  return SSL_TLSEXT_ERR_OK;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool HexEquals(absl::string_view hex, const unsigned char* bytes, size_t len) {
  if (hex.size() != 2 * len) return false;
  for (size_t i = 0; i < len; ++i) {
    const int hi = HexValue(hex[2 * i]);
    const int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0 || ((hi << 4) | lo) != bytes[i]) return false;
  }
  return true;
}

// Captures CLIENT_TRAFFIC_SECRET_0 (TLS 1.3; on the server it is logged once the client's
// Finished is read) for manual kTLS RX. Every other line is ignored, and nothing from any line
// is ever logged. The hex is decoded straight into the connection state: no other copy exists.
void OnKeylogLine(const SSL* ssl, const char* line) {
  TlsConnectionState* state = TlsContext::StateOf(ssl);
  if (state == nullptr) return;
  CaptureKeylogSecret(ssl, line, "CLIENT_TRAFFIC_SECRET_0 ",
                      absl::MakeSpan(state->client_app_secret), &state->client_app_secret_len);
}

}  // namespace

void CaptureKeylogSecret(const SSL* ssl, absl::string_view line, absl::string_view label,
                         absl::Span<uint8_t> out, size_t* len) {
  if (!absl::StartsWith(line, label)) return;
  line.remove_prefix(label.size());
  const size_t space = line.find(' ');
  if (space == absl::string_view::npos) return;
  const absl::string_view random_hex = line.substr(0, space);
  const absl::string_view secret_hex = absl::StripTrailingAsciiWhitespace(line.substr(space + 1));

  unsigned char client_random[SSL3_RANDOM_SIZE];
  const size_t random_len = SSL_get_client_random(ssl, client_random, sizeof(client_random));
  if (!HexEquals(random_hex, client_random, random_len)) return;  // not this connection's
  const size_t n = secret_hex.size() / 2;
  if (secret_hex.empty() || secret_hex.size() % 2 != 0 || n > out.size()) return;
  OPENSSL_cleanse(out.data(), out.size());
  *len = 0;
  for (size_t i = 0; i < n; ++i) {
    const int hi = HexValue(secret_hex[2 * i]);
    const int lo = HexValue(secret_hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      OPENSSL_cleanse(out.data(), out.size());
      return;
    }
    out[i] = static_cast<uint8_t>((hi << 4) | lo);
  }
  *len = n;
}

absl::StatusOr<std::vector<uint8_t>> AlpnWire(const std::vector<std::string>& protocols) {
  std::vector<uint8_t> wire;
  for (const std::string& p : protocols) {
    if (p.empty() || p.size() > 255) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid ALPN protocol '", p, "': must be 1 to 255 bytes"));
    }
    wire.push_back(static_cast<uint8_t>(p.size()));
    wire.insert(wire.end(), p.begin(), p.end());
  }
  return wire;
}

namespace {

// offload=required: keeps, in configured order, only the TLS 1.2 ciphers and TLS 1.3 suites
// whose AEAD the probe found working for both TX and RX; a version left with nothing is
// disabled.
absl::Status RestrictToProbe(SSL_CTX* ctx, const TlsOptions& options,
                             const KernelProbeResult& probe) {
  std::vector<std::string> tls12;
  std::vector<std::string> tls13;
  STACK_OF(SSL_CIPHER)* configured = SSL_CTX_get_ciphers(ctx);  // not owned
  for (int i = 0; i < sk_SSL_CIPHER_num(configured); ++i) {
    const SSL_CIPHER* c = sk_SSL_CIPHER_value(configured, i);
    // "TLSv1.3" for TLS 1.3 suites, "TLSv1.2" for ciphers that exist only from TLS 1.2 (all
    // the AEAD ones); older ciphers map to no kTLS AEAD anyway.
    const std::string_view version = SSL_CIPHER_get_version(c);
    const bool is_tls13 = version == "TLSv1.3";
    if (!is_tls13 && version != "TLSv1.2") continue;
    const std::optional<KtlsCipher> aead =
        KtlsCipherFromSuiteId(static_cast<uint16_t>(SSL_CIPHER_get_protocol_id(c)));
    if (!aead.has_value()) continue;
    if (!probe.Supports(is_tls13 ? TlsVersion::kTls13 : TlsVersion::kTls12, *aead)) continue;
    (is_tls13 ? tls13 : tls12).push_back(SSL_CIPHER_get_name(c));
  }
  const bool tls12_allowed = options.min_version == TlsVersion::kTls12;
  if (tls13.empty() && (tls12.empty() || !tls12_allowed)) {
    std::string reason = probe.ulp_reason;
    if (reason.empty()) {
      reason = "none of the configured cipher suites passed the kernel probe for both TX and RX";
    }
    return absl::FailedPreconditionError(
        absl::StrCat("offload=required but the kernel supports no kTLS cipher: ", reason));
  }
  // An empty TLS 1.3 list disables TLS 1.3 suites; the cap makes that explicit.
  if (SSL_CTX_set_ciphersuites(ctx, absl::StrJoin(tls13, ":").c_str()) != 1 ||
      (tls13.empty() && SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION) != 1)) {
    return absl::InternalError(
        absl::StrCat("cannot restrict TLS 1.3 suites to the probe: ", TakeOpenSslError()));
  }
  // OpenSSL refuses an empty TLS 1.2 list, so TLS 1.2 is switched off by version instead.
  if (tls12.empty()) {
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1) {
      return absl::InternalError(absl::StrCat("cannot disable TLS 1.2: ", TakeOpenSslError()));
    }
  } else if (SSL_CTX_set_cipher_list(ctx, absl::StrJoin(tls12, ":").c_str()) != 1) {
    return absl::InternalError(
        absl::StrCat("cannot restrict TLS 1.2 ciphers to the probe: ", TakeOpenSslError()));
  }
  return absl::OkStatus();
}

}  // namespace

void TlsConnectionState::WipeSecrets() {
  OPENSSL_cleanse(client_app_secret.data(), client_app_secret.size());
  client_app_secret_len = 0;
}

TlsConnectionState::~TlsConnectionState() { WipeSecrets(); }

TlsConnectionState* TlsContext::StateOf(const SSL* ssl) {
  if (ssl == nullptr) return nullptr;
  return static_cast<TlsConnectionState*>(SSL_get_ex_data(ssl, StateIndex()));
}

namespace {

absl::Status OpenSslFailure(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", TakeOpenSslError()));
}

absl::Status CheckOptions(const TlsOptions& options) {
  if (options.min_version != TlsVersion::kTls12 && options.min_version != TlsVersion::kTls13) {
    return absl::InvalidArgumentError("min_version must be TLS 1.2 or TLS 1.3");
  }
  if (options.require_client_cert && options.client_ca_file.empty()) {
    return absl::InvalidArgumentError("require_client_cert needs client_ca_file");
  }
  return absl::OkStatus();
}

// Protocol versions and cipher lists (the configured ones or our AEAD defaults), restricted to
// what the kernel probe found working when offload is required.
absl::Status ConfigureProtocols(SSL_CTX* ctx, const TlsOptions& options,
                                const KernelProbeResult& probe) {
  if (SSL_CTX_set_min_proto_version(ctx, static_cast<int>(options.min_version)) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
    return OpenSslFailure("cannot set protocol versions");
  }
  const std::string tls12 =
      options.tls12_ciphers.empty() ? kDefaultTls12Ciphers : options.tls12_ciphers;
  if (SSL_CTX_set_cipher_list(ctx, tls12.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid TLS 1.2 cipher list '", tls12, "': ", TakeOpenSslError()));
  }
  const std::string tls13 =
      options.tls13_ciphersuites.empty() ? kDefaultTls13Suites : options.tls13_ciphersuites;
  if (SSL_CTX_set_ciphersuites(ctx, tls13.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid TLS 1.3 cipher suites '", tls13, "': ", TakeOpenSslError()));
  }
  if (options.restrict_to_probe) return RestrictToProbe(ctx, options, probe);
  return absl::OkStatus();
}

// Options, record-layer modes and the session id context: the settings kTLS and the handoff
// depend on.
absl::Status ConfigureRecordLayer(SSL_CTX* ctx, const TlsOptions& options) {
  uint64_t ssl_options =
      SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION;
  if (options.enable_ktls) ssl_options |= SSL_OP_ENABLE_KTLS;
  SSL_CTX_set_options(ctx, ssl_options);
  // Read-ahead stays off (OpenSSL's default, set explicitly so nobody turns it on): OpenSSL then
  // reads one record at a time, so application data the client sends right behind its Finished
  // stays in the kernel's socket buffer, where kTLS RX (installed after the handshake) decrypts
  // it. With read-ahead, OpenSSL could pull those records into its own buffer, where the kernel
  // never sees them and from which they cannot be handed over with the socket.
  SSL_CTX_set_read_ahead(ctx, 0);
  // Not SSL_MODE_RELEASE_BUFFERS: the buffers matter only during the handshake (afterwards the
  // kernel or the relay does the record I/O), and releasing them between reads would only add
  // allocations to every handshake step.
  SSL_CTX_clear_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  // The maximum send fragment stays at its default (16 KiB): kTLS requires the maximum record
  // size, since the kernel cuts records itself.

  // Server-side session cache with tickets (OpenSSL's defaults). The id context is required for
  // resumption once client certificates are verified, and harmless otherwise.
  if (SSL_CTX_set_session_id_context(ctx, kSessionIdContext, sizeof(kSessionIdContext) - 1) != 1) {
    return OpenSslFailure("cannot set the session id context");
  }
  return absl::OkStatus();
}

// The per-handshake callbacks: SNI, certificate selection, keylog, and ALPN when configured.
absl::Status InstallCallbacks(SSL_CTX* ctx, const TlsOptions& options) {
  SSL_CTX_set_tlsext_servername_callback(ctx, OnServerName);
  SSL_CTX_set_cert_cb(ctx, OnCertificate, nullptr);
  SSL_CTX_set_keylog_callback(ctx, OnKeylogLine);
  if (options.alpn.empty()) return absl::OkStatus();
  absl::StatusOr<std::vector<uint8_t>> wire = AlpnWire(options.alpn);
  if (!wire.ok()) return wire.status();
  auto owned = std::make_unique<std::vector<uint8_t>>(*std::move(wire));
  if (SSL_CTX_set_ex_data(ctx, AlpnIndex(), owned.get()) != 1) {
    return OpenSslFailure("cannot attach the ALPN list");
  }
  // Ownership moved into the SSL_CTX (FreeAlpnList deletes it).
  std::vector<uint8_t>* list = owned.release();
  SSL_CTX_set_alpn_select_cb(ctx, OnAlpnSelect, list);
  return absl::OkStatus();
}

// Client certificates from the configuration's CA file (the control plane can replace this
// trust per handshake, see NewServerSsl).
absl::Status LoadClientCaFile(SSL_CTX* ctx, const TlsOptions& options) {
  if (options.client_ca_file.empty()) return absl::OkStatus();
  const std::string& file = options.client_ca_file;
  if (SSL_CTX_load_verify_locations(ctx, file.c_str(), nullptr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load client CA file ", file, ": ", TakeOpenSslError()));
  }
  X509NameStackPtr names(SSL_load_client_CA_file(file.c_str()));
  if (names == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read CA names from client CA file ", file, ": ", TakeOpenSslError()));
  }
  SSL_CTX_set_client_CA_list(ctx, names.release());  // ownership moves into the SSL_CTX
  SSL_CTX_set_verify(
      ctx, SSL_VERIFY_PEER | (options.require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
      nullptr);
  return absl::OkStatus();
}

}  // namespace

// Session tickets under keys the control plane can set and rotate; one random key to start.
absl::Status TlsContext::InstallTicketKeys() {
  SSL_CTX* ctx = ctx_.get();
  absl::StatusOr<SessionTicketKey> first = SessionTicketKeys::RandomKey();
  if (!first.ok()) return first.status();
  absl::StatusOr<std::shared_ptr<const SessionTicketKeys>> keys =
      SessionTicketKeys::FromKeys({*first});
  if (!keys.ok()) return keys.status();
  auto holder = std::make_unique<TicketKeyHolder>();
  {
    absl::MutexLock lock(&holder->mu);
    holder->keys = *std::move(keys);
  }
  if (TicketIndex() < 0 || SSL_CTX_set_ex_data(ctx, TicketIndex(), holder.get()) != 1) {
    return OpenSslFailure("cannot attach the session ticket keys");
  }
  // Ownership moved into the SSL_CTX (FreeTicketKeyHolder deletes it).
  tickets_ = holder.release();
  if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, OnTicketKey) != 1) {
    return OpenSslFailure("cannot install the session ticket callback");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TlsContext>> TlsContext::Create(const TlsOptions& options,
                                                               const KernelProbeResult& probe) {
  ERR_clear_error();
  absl::Cleanup clear_errors = [] { ERR_clear_error(); };
  if (StateIndex() < 0 || AlpnIndex() < 0) {
    return OpenSslFailure("cannot allocate ex_data indexes");
  }
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;

  std::unique_ptr<TlsContext> context(new TlsContext());
  context->options_ = options;
  context->ctx_.reset(SSL_CTX_new(TLS_server_method()));
  SSL_CTX* ctx = context->ctx_.get();
  if (ctx == nullptr) return OpenSslFailure("SSL_CTX_new");
  if (absl::Status s = ConfigureProtocols(ctx, options, probe); !s.ok()) return s;
  if (absl::Status s = ConfigureRecordLayer(ctx, options); !s.ok()) return s;
  if (absl::Status s = context->InstallTicketKeys(); !s.ok()) return s;
  if (absl::Status s = InstallCallbacks(ctx, options); !s.ok()) return s;
  if (absl::Status s = LoadClientCaFile(ctx, options); !s.ok()) return s;
  return context;
}

absl::StatusOr<SslPtr> TlsContext::NewServerSsl(TlsConnectionState* state) const {
  if (state == nullptr) return absl::InvalidArgumentError("NewServerSsl needs a connection state");
  ERR_clear_error();
  SslPtr ssl(SSL_new(ctx_.get()));
  if (ssl == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("SSL_new: ", TakeOpenSslError()));
  }
  if (SSL_set_ex_data(ssl.get(), StateIndex(), state) != 1) {
    return absl::InternalError(absl::StrCat("SSL_set_ex_data: ", TakeOpenSslError()));
  }
  // Client-certificate trust set through the control plane replaces the context's own, for this
  // connection (it is pinned here, at accept, like the certificates).
  if (std::shared_ptr<const TrustBundle> trust = client_trust(); trust != nullptr) {
    X509NameStackPtr names(SSL_dup_CA_list(trust->ca_names.get()));
    if (names == nullptr || SSL_set1_verify_cert_store(ssl.get(), trust->store.get()) != 1 ||
        SSL_set_session_id_context(ssl.get(), trust->digest.data(),
                                   static_cast<unsigned int>(trust->digest.size())) != 1) {
      return absl::InternalError(absl::StrCat("applying client trust: ", TakeOpenSslError()));
    }
    SSL_set_client_CA_list(ssl.get(), names.release());  // ownership moves into the SSL
    SSL_set_verify(
        ssl.get(),
        SSL_VERIFY_PEER | (trust->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        nullptr);
  }
  // No fd or BIO here: the handshake engine attaches its own.
  SSL_set_accept_state(ssl.get());
  return ssl;
}

void TlsContext::SetClientTrust(std::shared_ptr<const TrustBundle> bundle) {
  std::shared_ptr<const TrustBundle> old;
  {
    absl::MutexLock lock(&trust_mu_);
    old = std::exchange(trust_, std::move(bundle));
  }
  // `old` is released outside the lock.
}

std::shared_ptr<const TrustBundle> TlsContext::client_trust() const {
  absl::MutexLock lock(&trust_mu_);
  return trust_;
}

void TlsContext::SetTicketKeys(std::shared_ptr<const SessionTicketKeys> keys) {
  if (keys == nullptr || keys->keys().empty()) return;
  std::shared_ptr<const SessionTicketKeys> old;
  {
    absl::MutexLock lock(&tickets_->mu);
    old = std::exchange(tickets_->keys, std::move(keys));
  }
}

std::shared_ptr<const SessionTicketKeys> TlsContext::ticket_keys() const { return tickets_->Get(); }

}  // namespace ktls::agent
