#include "agent/tls_session.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/socket_bio.h"

namespace ktls::agent {

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

// What a failed step means, from OpenSSL's queue (drained here) and the socket's errno.
HandshakeFailure ExplainStepFailure(TlsRole role, SSL* ssl, int saved_errno) {
  HandshakeFailure f;
  // With nothing in OpenSSL's queue the cause is the socket: an error, or EOF (errno 0).
  const unsigned long queued = ERR_peek_error();
  f.reason = queued != 0 ? ClassifyHandshakeError(queued) : HandshakeFailureReason::kPeerClosed;
  if (role == TlsRole::kConnect) {
    // A client's most useful answer is the verification error, which the queue only hints at.
    const long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
      ERR_clear_error();
      f.verify_failed = true;
      f.text = absl::StrCat("certificate verify failed: ", X509_verify_cert_error_string(verify));
      return f;
    }
  }
  const char* closed =
      role == TlsRole::kAccept ? "peer closed the connection" : "server closed the connection";
  f.text = DrainOpenSslErrors(saved_errno != 0 ? strerror(saved_errno) : closed);
  return f;
}

}  // namespace

TlsSession::TlsSession(EventLoop& loop, SysCalls& sys, TlsRole role, UniqueFd fd, SslPtr ssl,
                       absl::Time started, absl::Time deadline, TlsSessionOwner* owner,
                       EventHandler* handler)
    : loop_(loop),
      sys_(sys),
      role_(role),
      fd_(std::move(fd)),
      ssl_(std::move(ssl)),
      started_(started),
      deadline_(deadline),
      owner_(owner),
      handler_(handler),
      hangup_events_(role == TlsRole::kAccept ? EPOLLRDHUP : 0) {}

TlsSession::~TlsSession() { Close(); }

absl::Status TlsSession::Start() {
  if (state_ != State::kIdle) return absl::FailedPreconditionError("TLS session already started");
  BioPtr bio = NewSocketBio(sys_, fd_.get());
  if (!bio) return absl::ResourceExhaustedError("BIO allocation failed");
  // SSL_set_bio takes ownership of the BIO (one reference, used for both directions).
  SSL_set_bio(ssl_.get(), bio.get(), bio.get());
  (void)bio.release();
  if (role_ == TlsRole::kAccept) {
    SSL_set_accept_state(ssl_.get());
    if (absl::Status s = loop_.Add(fd_.get(), EPOLLIN | hangup_events_, handler_); !s.ok()) {
      return s;
    }
    armed_ = EPOLLIN;
    registered_ = true;
    state_ = State::kHandshaking;
    return absl::OkStatus();
  }
  // Connect: the owner registered the fd for EPOLLOUT to learn that the connect completed.
  SSL_set_connect_state(ssl_.get());
  armed_ = EPOLLOUT;
  registered_ = true;
  state_ = State::kHandshaking;
  Step();
  return absl::OkStatus();
}

void TlsSession::OnEvents(uint32_t events) {
  if (state_ != State::kHandshaking) return;
  Step();
}

void TlsSession::Step() {
  HandshakeStep step = StepHandshake(ssl_.get());
  switch (step.progress) {
    case HandshakeProgress::kDone:
      state_ = State::kEstablished;
      owner_->OnHandshakeDone();
      return;
    case HandshakeProgress::kWantRead:
      SetInterest(EPOLLIN);
      return;
    case HandshakeProgress::kWantWrite:
      SetInterest(EPOLLOUT);
      return;
    case HandshakeProgress::kFailed:
      break;
  }
  Fail(ExplainStepFailure(role_, ssl_.get(), step.saved_errno));
}

void TlsSession::SetInterest(uint32_t events) {
  if (events == armed_ || !registered_) return;
  armed_ = events;
  loop_.Modify(fd_.get(), events | hangup_events_, handler_);
}

void TlsSession::Rearm(uint32_t events) {
  if (state_ != State::kEstablished) return;
  SetInterest(events);
}

bool TlsSession::CheckDeadline(absl::Time now) {
  if (state_ != State::kHandshaking || now < deadline_) return false;
  Expire();
  return true;
}

void TlsSession::Expire() {
  if (state_ != State::kHandshaking) return;
  HandshakeFailure f;
  f.reason = HandshakeFailureReason::kTimeout;
  f.text = absl::StrCat("timed out after ", absl::FormatDuration(deadline_ - started_));
  // No alert is forced: a timeout just closes.
  Fail(f);
}

void TlsSession::Fail(const HandshakeFailure& failure) {
  // OpenSSL has already queued/sent whatever alert the failure called for. The owner counts and
  // logs before the socket closes: a peer that sees the close may read the counters at once.
  state_ = State::kClosed;
  owner_->OnHandshakeFailed(failure);
  Close();  // a no-op if the owner closed it already; owners are deleted deferred, never here
}

TlsStream TlsSession::Release() {
  if (state_ != State::kEstablished) return {};
  Unregister();
  state_ = State::kReleased;
  return TlsStream{std::move(fd_), std::move(ssl_)};
}

void TlsSession::Close() {
  Unregister();
  ssl_.reset();  // before the fd: the BIO refers to it
  fd_.reset();
  if (state_ != State::kReleased) state_ = State::kClosed;
}

void TlsSession::Unregister() {
  if (!registered_) return;
  registered_ = false;
  if (fd_.valid()) loop_.Remove(fd_.get());
}

}  // namespace ktls::agent
