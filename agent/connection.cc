#include "agent/connection.h"

#include "absl/strings/str_cat.h"
#include "agent/ktls_crypto_info.h"
#include "agent/log.h"

namespace ktls::agent {

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
  session_.emplace(ctx_.loop, ctx_.sys, TlsRole::kAccept, std::move(fd_), std::move(*ssl), started_,
                   deadline_, static_cast<TlsSessionOwner*>(this), this);
  if (absl::Status s = session_->Start(); !s.ok()) return s;
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

void Connection::OnEvents(uint32_t events) {
  if (state_ != State::kHandshaking) return;
  session_->OnEvents(events);
}

void Connection::OnDeadline() {
  if (state_ != State::kHandshaking) return;
  session_->Expire();
}

void Connection::OnHandshakeFailed(const HandshakeFailure& failure) {
  if (state_ != State::kHandshaking) return;
  if (failure.reason == HandshakeFailureReason::kTimeout) {
    Inc(ctx_.stats.handshake_timeouts);
    KTLS_LOG(kDebug, "conn ", id_, ": handshake timed out");
  } else {
    Inc(ctx_.stats.handshakes_failed);
    KTLS_LOG(kDebug, "conn ", id_, ": handshake failed: ", failure.text);
  }
  ctx_.stats.CountHandshakeFailure(failure.reason);
  Finish();
}

void Connection::Finish() {
  Unlist();
  if (state_ == State::kHandshaking) Add(ctx_.stats.handshakes_in_progress, -1);
  state_ = State::kDone;
  if (session_) session_->Close();
  tls_state_.reset();
  ctx_.on_finished(this);
}

v1::ConnectionInfo Connection::BuildInfo(const OffloadDecision& d) const {
  v1::ConnectionInfo info;
  info.set_connection_id(id_);
  info.set_listener(listener_);
  SSL* ssl = session_->ssl();
  if (const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) info.set_sni(sni);
  FillSessionInfo(ctx_.sys, ssl, session_->fd(), peer_, d, &info);
  info.set_handshake_micros(
      static_cast<uint64_t>(absl::ToInt64Microseconds(absl::Now() - started_)));
  return info;
}

void Connection::CountCompletedHandshake() {
  SSL* ssl = session_->ssl();
  Inc(ctx_.stats.handshakes_completed);
  ctx_.stats.handshake_duration.Observe(absl::ToDoubleSeconds(absl::Now() - started_));
  if (SSL_session_reused(ssl)) Inc(ctx_.stats.handshakes_resumed);
  if (!tls_state_->sni_matched) Inc(ctx_.stats.sni_unmatched);
  if (const SSL_CIPHER* c = SSL_get_current_cipher(ssl)) {
    ctx_.stats.CountSuite(
        TlsSuiteOf(SSL_version(ssl), static_cast<uint16_t>(SSL_CIPHER_get_protocol_id(c))));
  }
  if (tls_state_->served != nullptr) {
    tls_state_->served->handshakes->fetch_add(1, std::memory_order_relaxed);
  }
}

void Connection::OnHandshakeDone() {
  if (state_ != State::kHandshaking) return;
  Unlist();
  Add(ctx_.stats.handshakes_in_progress, -1);
  state_ = State::kDone;
  CountCompletedHandshake();

  DataPathDecision d = DecideDataPath(ctx_.sys, ctx_.stats, ctx_.policy, TlsRole::kAccept,
                                      session_->ssl(), session_->fd());
  v1::ConnectionInfo info = BuildInfo(d.offload);
  if (d.path == DataPath::kHandoff) {
    KTLS_LOG(kDebug, "conn ", id_, ": ", info.tls_version(), " ", info.cipher(),
             " kTLS TX+RX installed; handing off");
  }
  absl::StatusOr<UniqueFd> app_fd =
      EnterDataPath(ctx_, d, id_, session_->Release(), std::move(tls_state_));
  if (app_fd.ok()) {
    ctx_.broker.Submit(ReadyConnection{std::move(*app_fd), d.path == DataPath::kHandoff,
                                       std::move(info), absl::Now()});
  }
  Finish();
}

}  // namespace ktls::agent
