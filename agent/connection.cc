#include "agent/connection.h"

#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "agent/ktls_crypto_info.h"
#include "agent/listener.h"
#include "agent/log.h"
#include "agent/relay.h"
#include "agent/socket_bio.h"

namespace ktls {

std::string DrainOpenSslErrors(absl::string_view fallback) {
  unsigned long e = ERR_get_error();
  std::string out;
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    out = buf;
  } else {
    out = std::string(fallback);
  }
  ERR_clear_error();
  return out;
}

namespace {

// The failure reason label for OpenSSL's first queued error (peeked, not consumed).
HandshakeFailureReason ClassifyHandshakeError(unsigned long err) {
  if (err == 0 || ERR_GET_LIB(err) != ERR_LIB_SSL) return HandshakeFailureReason::kProtocol;
  const int reason = ERR_GET_REASON(err);
  if (reason >= SSL_AD_REASON_OFFSET) return HandshakeFailureReason::kPeerAlert;
  switch (reason) {
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_ENCRYPTED_LENGTH_TOO_LONG:
      return HandshakeFailureReason::kNotTls;
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
      return HandshakeFailureReason::kVersion;
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
    case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
      return HandshakeFailureReason::kNoSharedCipher;
    case SSL_R_NO_APPLICATION_PROTOCOL:
      return HandshakeFailureReason::kNoAlpn;
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      return HandshakeFailureReason::kClientCertificate;
    case SSL_R_CALLBACK_FAILED:
    case SSL_R_CERT_CB_ERROR:
    case ERR_R_MALLOC_FAILURE:
    case ERR_R_INTERNAL_ERROR:
      return HandshakeFailureReason::kInternal;
    default:
      return HandshakeFailureReason::kProtocol;
  }
}

}  // namespace

void FillPeerIdentityFromSsl(SSL* ssl, v1::PeerIdentity* id) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) return;
  id->set_presented(true);
  id->set_verified(SSL_get_verify_result(ssl) == X509_V_OK);
  auto name_text = [](X509_NAME* n) {
    BioPtr mem(BIO_new(BIO_s_mem()));
    X509_NAME_print_ex(mem.get(), n, 0, XN_FLAG_RFC2253);
    char* data = nullptr;
    long len = BIO_get_mem_data(mem.get(), &data);
    return std::string(data, len > 0 ? len : 0);
  };
  id->set_subject(name_text(X509_get_subject_name(cert)));
  id->set_issuer(name_text(X509_get_issuer_name(cert)));
  GeneralNamesPtr sans(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), i);
    if (gn->type == GEN_DNS) {
      id->add_dns_sans(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                       ASN1_STRING_length(gn->d.dNSName));
    } else if (gn->type == GEN_URI) {
      id->add_uri_sans(
          reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier)),
          ASN1_STRING_length(gn->d.uniformResourceIdentifier));
    }
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &md_len)) {
    id->set_sha256_fingerprint(
        absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(md), md_len)));
  }
}

Connection::Connection(DataPlaneContext& ctx, UniqueFd fd, std::string listener,
                       const sockaddr_storage& peer, absl::Time deadline)
    : ctx_(ctx),
      fd_(std::move(fd)),
      listener_(std::move(listener)),
      peer_(peer),
      started_(absl::Now()),
      deadline_(deadline),
      id_(ctx.next_connection_id.fetch_add(1, std::memory_order_relaxed)) {
  Add(ctx_.stats.handshakes_in_progress, 1);
  Add(ctx_.stats.connections_open, 1);
}

Connection::~Connection() {
  Unlist();
  if (state_ == State::kHandshaking) Add(ctx_.stats.handshakes_in_progress, -1);
  Add(ctx_.stats.connections_open, -1);
}

absl::Status Connection::Start() {
  tls_state_ = std::make_unique<TlsConnectionState>();
  tls_state_->certificates = ctx_.certs.Current();
  absl::StatusOr<SslPtr> ssl = ctx_.tls.NewServerSsl(tls_state_.get());
  if (!ssl.ok()) return ssl.status();
  ssl_ = std::move(*ssl);
  BioPtr bio = NewSocketBio(ctx_.sys, fd_.get());
  if (!bio) return absl::ResourceExhaustedError("BIO allocation failed");
  // SSL_set_bio takes ownership of the BIO (one reference, used for both directions).
  SSL_set_bio(ssl_.get(), bio.get(), bio.get());
  bio.release();
  SSL_set_accept_state(ssl_.get());
  armed_ = EPOLLIN;
  if (absl::Status s = ctx_.loop.Add(fd_.get(), EPOLLIN | EPOLLRDHUP, this); !s.ok()) return s;
  if (ctx_.activity != nullptr) {
    LiveHandshake h;
    h.id = id_;
    h.listener = listener_;
    h.peer = peer_;
    h.started = started_;
    h.worker = ctx_.worker_index;
    ctx_.activity->HandshakeStarted(h);
    listed_ = true;
  }
  return absl::OkStatus();
}

void Connection::Unlist() {
  if (!listed_) return;
  listed_ = false;
  ctx_.activity->HandshakeEnded(id_);
}

void Connection::Rearm(uint32_t events) {
  if (events == armed_) return;
  armed_ = events;
  ctx_.loop.Modify(fd_.get(), events | EPOLLRDHUP, this);
}

void Connection::OnEvents(uint32_t events) {
  if (state_ != State::kHandshaking) return;
  Drive();
}

void Connection::OnDeadline() {
  if (state_ != State::kHandshaking) return;
  Inc(ctx_.stats.handshake_timeouts);
  ctx_.stats.CountHandshakeFailure(HandshakeFailureReason::kTimeout);
  KTLS_LOG(kDebug, "conn ", id_, ": handshake timed out");
  Fail("");
}

void Connection::Drive() {
  HandshakeStep step = StepHandshake(ssl_.get());
  switch (step.progress) {
    case HandshakeProgress::kDone:
      OnHandshakeComplete();
      return;
    case HandshakeProgress::kWantRead:
      Rearm(EPOLLIN);
      return;
    case HandshakeProgress::kWantWrite:
      Rearm(EPOLLOUT);
      return;
    case HandshakeProgress::kFailed:
      break;
  }
  Inc(ctx_.stats.handshakes_failed);
  // With nothing in OpenSSL's queue the cause is the socket: an error, or EOF (errno 0).
  const unsigned long queued = ERR_peek_error();
  ctx_.stats.CountHandshakeFailure(queued != 0 ? ClassifyHandshakeError(queued)
                                               : HandshakeFailureReason::kPeerClosed);
  std::string why = DrainOpenSslErrors(step.saved_errno ? strerror(step.saved_errno)
                                                        : "peer closed the connection");
  KTLS_LOG(kDebug, "conn ", id_, ": handshake failed: ", why);
  Fail(why);
}

void Connection::Fail(absl::string_view reason) {
  // No alert is forced here: OpenSSL has already queued/sent whatever alert the failure called
  // for; a timeout just closes.
  Finish();
}

void Connection::Finish() {
  Unlist();
  if (state_ == State::kHandshaking) Add(ctx_.stats.handshakes_in_progress, -1);
  state_ = State::kDone;
  if (fd_.valid()) ctx_.loop.Remove(fd_.get());
  ssl_.reset();
  fd_.reset();
  tls_state_.reset();
  ctx_.on_finished(this);
}

void FillSessionInfo(SysCalls& sys, SSL* ssl, int fd, const sockaddr_storage& peer,
                     const OffloadDecision& d, v1::ConnectionInfo* info) {
  std::string addr;
  uint32_t port = 0;
  FormatSockaddr(reinterpret_cast<const sockaddr*>(&peer), &addr, &port);
  info->mutable_peer()->set_address(addr);
  info->mutable_peer()->set_port(port);
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  if (sys.GetSockName(fd, reinterpret_cast<sockaddr*>(&local), &len).ok()) {
    FormatSockaddr(reinterpret_cast<const sockaddr*>(&local), &addr, &port);
    info->mutable_local()->set_address(addr);
    info->mutable_local()->set_port(port);
  }
  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  if (alpn_len > 0) info->set_alpn(std::string(reinterpret_cast<const char*>(alpn), alpn_len));
  info->set_tls_version(SSL_get_version(ssl));
  info->set_tls_version_code(static_cast<uint32_t>(SSL_version(ssl)));
  if (const SSL_CIPHER* c = SSL_get_current_cipher(ssl)) {
    const char* std_name = SSL_CIPHER_standard_name(c);
    info->set_cipher(std_name ? std_name : SSL_CIPHER_get_name(c));
  }
  info->set_data_path(d.ktls ? v1::DATA_PATH_KTLS : v1::DATA_PATH_RELAY);
  info->set_ktls_tx(d.ktls ? v1::OFFLOAD_STATE_ACTIVE : v1::OFFLOAD_STATE_INACTIVE);
  info->set_ktls_rx(d.ktls ? v1::OFFLOAD_STATE_ACTIVE : v1::OFFLOAD_STATE_INACTIVE);
  if (!d.ktls) info->set_fallback_reason(d.reason_text);
  FillPeerIdentityFromSsl(ssl, info->mutable_peer_identity());
  info->set_resumed(SSL_session_reused(ssl) == 1);
}

HandshakeStep StepHandshake(SSL* ssl) {
  ERR_clear_error();
  const int rc = SSL_do_handshake(ssl);
  if (rc == 1) return {HandshakeProgress::kDone};
  const int saved_errno = errno;
  switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ:
      return {HandshakeProgress::kWantRead};
    case SSL_ERROR_WANT_WRITE:
      return {HandshakeProgress::kWantWrite};
    case SSL_ERROR_SYSCALL:
      if (saved_errno == EAGAIN || saved_errno == EINTR) return {HandshakeProgress::kWantRead};
      return {HandshakeProgress::kFailed, saved_errno};
    default:
      return {HandshakeProgress::kFailed, 0};
  }
}

v1::ConnectionInfo Connection::BuildInfo(const OffloadDecision& d) const {
  v1::ConnectionInfo info;
  info.set_connection_id(id_);
  info.set_listener(listener_);
  if (const char* sni = SSL_get_servername(ssl_.get(), TLSEXT_NAMETYPE_host_name)) {
    info.set_sni(sni);
  }
  FillSessionInfo(ctx_.sys, ssl_.get(), fd_.get(), peer_, d, &info);
  info.set_handshake_micros(
      static_cast<uint64_t>(absl::ToInt64Microseconds(absl::Now() - started_)));
  return info;
}

void Connection::OnHandshakeComplete() {
  Unlist();
  Add(ctx_.stats.handshakes_in_progress, -1);
  state_ = State::kDone;
  Inc(ctx_.stats.handshakes_completed);
  ctx_.stats.handshake_duration.Observe(absl::ToDoubleSeconds(absl::Now() - started_));
  if (SSL_session_reused(ssl_.get())) Inc(ctx_.stats.handshakes_resumed);
  if (!tls_state_->sni_matched) Inc(ctx_.stats.sni_unmatched);
  if (const SSL_CIPHER* c = SSL_get_current_cipher(ssl_.get())) {
    ctx_.stats.CountSuite(TlsSuiteOf(SSL_version(ssl_.get()),
                                     static_cast<uint16_t>(SSL_CIPHER_get_protocol_id(c))));
  }
  if (tls_state_->served != nullptr) {
    tls_state_->served->handshakes->fetch_add(1, std::memory_order_relaxed);
  }

  OffloadDecision d = CompleteKtlsInstall(ctx_.sys, ssl_.get(), fd_.get(), ctx_.policy);
  CountKtlsInstall(ctx_.stats, ssl_.get());
  ctx_.loop.Remove(fd_.get());
  v1::ConnectionInfo info = BuildInfo(d);

  if (d.ktls) {
    Inc(ctx_.stats.offload_ktls);
    KTLS_LOG(kDebug, "conn ", id_, ": ", info.tls_version(), " ", info.cipher(),
             " kTLS TX+RX installed; handing off");
    ReadyConnection ready{std::move(fd_), true, std::move(info), absl::Now()};
    // Nothing more may be written by OpenSSL: the kernel and the app own the TLS stream.
    ReleaseSslAfterHandoff(std::move(ssl_));
    ctx_.broker.Submit(std::move(ready));
    Finish();
    return;
  }

  if (ctx_.policy == OffloadPolicy::kRequired) {
    Inc(ctx_.stats.offload_refused);
    LogWarningOncePerKey(absl::StrCat("refused-", d.reason_text),
                         absl::StrCat("offload=required: refusing connection: ", d.reason_text));
    ERR_clear_error();
    SSL_shutdown(ssl_.get());  // close_notify, best effort
    Finish();
    return;
  }

  // Relay fallback.
  Inc(ctx_.stats.offload_relay);
  ctx_.stats.CountFallback(d.reason);
  LogWarningOncePerKey(absl::StrCat("fallback-", FallbackReasonLabel(d.reason)),
                       absl::StrCat("relaying instead of kTLS: ", d.reason_text));
  int pair[2];
  SysResult r = ctx_.sys.SocketPair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair);
  if (!r.ok()) {
    Inc(ctx_.stats.relay_errors);
    LogWarningOncePerKey(absl::StrCat("socketpair-", r.err),
                         absl::StrCat("socketpair for relay: ", strerror(r.err)));
    Finish();
    return;
  }
  UniqueFd agent_end(ctx_.sys, pair[0]);
  UniqueFd app_end(ctx_.sys, pair[1]);
  auto relay = std::make_unique<RelaySession>(ctx_, id_, std::move(fd_), std::move(ssl_),
                                              std::move(tls_state_), std::move(agent_end));
  absl::Status s = relay->Start();
  if (!s.ok()) {
    Inc(ctx_.stats.relay_errors);
    KTLS_LOG(kWarning, "conn ", id_, ": relay start: ", s.message());
    Finish();
    return;
  }
  ctx_.adopt(std::move(relay));
  ctx_.broker.Submit(ReadyConnection{std::move(app_end), false, std::move(info), absl::Now()});
  Finish();
}

}  // namespace ktls
