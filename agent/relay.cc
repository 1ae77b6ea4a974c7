#include "agent/relay.h"

#include <openssl/err.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/log.h"

namespace ktls::agent {

char* RelayBuffer::tail(size_t* len) {
  if (data_ == nullptr) data_ = std::make_unique_for_overwrite<char[]>(capacity_);
  if (end_ == capacity_ && begin_ > 0) {
    std::memmove(data_.get(), data_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  *len = capacity_ - end_;
  return data_.get() + end_;
}

void RelayBuffer::Consumed(size_t n) {
  begin_ += n;
  if (begin_ == end_) begin_ = end_ = 0;
}

// Receives events for the app's end of the socketpair.
class RelaySession::AppSide final : public EventHandler {
 public:
  explicit AppSide(RelaySession* s) : session_(s) {}
  void OnEvents(uint32_t events) override {
    if (session_->closed_) return;
    session_->Pump();
    // EPOLLHUP/EPOLLERR are reported whatever the interest mask. HUP on the app's end means
    // both directions are shut (or the app closed it): nothing more can be read from it, so stop
    // watching it and let the TLS side finish (flush, close_notify) on its own events.
    if ((events & (EPOLLHUP | EPOLLERR)) && !session_->closed_) session_->DetachApp();
  }

 private:
  RelaySession* session_;
};

RelaySession::RelaySession(DataPlaneContext& ctx, uint64_t id, UniqueFd tls_fd, SslPtr ssl,
                           std::unique_ptr<TlsConnectionState> tls_state, UniqueFd app_fd)
    : ctx_(ctx),
      id_(id),
      tls_fd_(std::move(tls_fd)),
      ssl_(std::move(ssl)),
      tls_state_(std::move(tls_state)),
      app_fd_(std::move(app_fd)),
      app_side_(std::make_unique<AppSide>(this)),
      to_app_(ctx.relay_buffer_bytes),
      to_peer_(ctx.relay_buffer_bytes) {
  Add(ctx_.stats.relay_active, 1);
  Add(ctx_.stats.connections_open, 1);
  // Partial writes let SSL_write consume what fits; the buffer may move between retries.
  SSL_set_mode(ssl_.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

RelaySession::~RelaySession() {
  Add(ctx_.stats.relay_active, -1);
  Add(ctx_.stats.connections_open, -1);
}

absl::Status RelaySession::Start() {
  tls_armed_ = EPOLLIN;
  app_armed_ = EPOLLIN;
  absl::Status s = ctx_.loop.Add(tls_fd_.get(), tls_armed_, this);
  if (!s.ok()) return s;
  s = ctx_.loop.Add(app_fd_.get(), app_armed_, app_side_.get());
  if (!s.ok()) {
    ctx_.loop.Remove(tls_fd_.get());
    return s;
  }
  // Data may already be buffered in the SSL object or the kernel.
  ctx_.loop.Post([this] {
    if (!closed_) Pump();
  });
  return absl::OkStatus();
}

void RelaySession::OnEvents(uint32_t events) {
  if (closed_) return;
  Pump();
  if (closed_) return;
  if (events & EPOLLERR) {
    Close(true, "TLS socket error");
  } else if (events & EPOLLHUP) {
    // Both directions of the TCP connection are shut; what is buffered for the app is still
    // delivered on the app side's events.
    peer_eof_ = true;
    ctx_.loop.Remove(tls_fd_.get());
    tls_registered_ = false;
    Pump();
  }
}

void RelaySession::DetachApp() {
  ctx_.loop.Remove(app_fd_.get());
  app_registered_ = false;
  app_eof_ = true;
  Pump();
}

// One pass moves data as far as it can in both directions; passes repeat while any step made
// progress, because one step's progress can unblock another (draining to_app_ makes room for
// SSL_read, a delivered EOF lets the session finish). A step that fails closes the session.
void RelaySession::Pump() {
  using Step = bool (RelaySession::*)();
  static constexpr Step kSteps[] = {&RelaySession::ReadFromPeer,   &RelaySession::WriteToApp,
                                    &RelaySession::ForwardPeerEof, &RelaySession::ReadFromApp,
                                    &RelaySession::WriteToPeer,    &RelaySession::ForwardAppEof};
  bool progress = true;
  while (progress && !closed_) {
    progress = false;
    for (Step step : kSteps) {
      if ((this->*step)()) progress = true;
      if (closed_) return;
    }
    if (app_shut_wr_ && close_notify_sent_) {  // both directions finished
      Close(false, "");
      return;
    }
  }
  UpdateInterest();
}

bool RelaySession::ReadFromPeer() {
  ssl_read_wants_write_ = false;
  bool progress = false;
  while (!peer_eof_ && to_app_.space() > 0) {
    size_t len;
    char* p = to_app_.tail(&len);
    ERR_clear_error();
    int n = SSL_read(ssl_.get(), p, static_cast<int>(len));
    if (n > 0) {
      to_app_.Produced(n);
      Inc(ctx_.stats.relay_bytes_to_app, n);
      progress = true;
      continue;
    }
    int saved = errno;
    int err = SSL_get_error(ssl_.get(), n);
    if (err == SSL_ERROR_WANT_READ) break;
    if (err == SSL_ERROR_WANT_WRITE) {
      ssl_read_wants_write_ = true;
      break;
    }
    if (err == SSL_ERROR_ZERO_RETURN) {
      peer_eof_ = true;  // close_notify
    } else if (err == SSL_ERROR_SYSCALL && (saved == EAGAIN || saved == EINTR)) {
      break;
    } else if (err == SSL_ERROR_SYSCALL && saved == 0) {
      peer_eof_ = true;  // TCP EOF without close_notify: truncation, still an EOF to the app
      Inc(ctx_.stats.relay_errors);
      ERR_clear_error();
    } else {
      Close(true, DrainOpenSslErrors(saved ? strerror(saved) : "TLS error"));
      return progress;
    }
    return true;
  }
  return progress;
}

bool RelaySession::WriteToApp() {
  bool progress = false;
  while (!to_app_.empty()) {
    SysResult w = ctx_.sys.Write(app_fd_.get(), to_app_.head(), to_app_.size());
    if (w.ok()) {
      to_app_.Consumed(w.rc);
      progress = true;
      continue;
    }
    if (w.would_block()) break;
    if (w.err == EINTR) continue;
    // The app closed its socket: nobody will read what the peer sends.
    Close(w.err != EPIPE && w.err != ECONNRESET, absl::StrCat("write to app: ", strerror(w.err)));
    break;
  }
  return progress;
}

bool RelaySession::ForwardPeerEof() {
  if (!peer_eof_ || !to_app_.empty() || app_shut_wr_) return false;
  ctx_.sys.Shutdown(app_fd_.get(), SHUT_WR);
  app_shut_wr_ = true;
  return true;
}

bool RelaySession::ReadFromApp() {
  bool progress = false;
  while (!app_eof_ && to_peer_.space() > 0) {
    size_t len;
    char* p = to_peer_.tail(&len);
    SysResult r = ctx_.sys.Read(app_fd_.get(), p, len);
    if (r.ok() && r.rc > 0) {
      to_peer_.Produced(r.rc);
      progress = true;
      continue;
    }
    if (r.ok()) {
      app_eof_ = true;
      return true;
    }
    if (r.would_block()) break;
    if (r.err == EINTR) continue;
    Close(true, absl::StrCat("read from app: ", strerror(r.err)));
    break;
  }
  return progress;
}

bool RelaySession::WriteToPeer() {
  ssl_write_wants_write_ = false;
  bool progress = false;
  while (!to_peer_.empty() && !close_notify_sent_) {
    ERR_clear_error();
    int n = SSL_write(ssl_.get(), to_peer_.head(), static_cast<int>(to_peer_.size()));
    if (n > 0) {
      to_peer_.Consumed(n);
      Inc(ctx_.stats.relay_bytes_to_peer, n);
      progress = true;
      continue;
    }
    int saved = errno;
    int err = SSL_get_error(ssl_.get(), n);
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ ||
        (err == SSL_ERROR_SYSCALL && (saved == EAGAIN || saved == EINTR))) {
      ssl_write_wants_write_ = true;
      break;
    }
    Close(true, absl::StrCat("TLS write: ", DrainOpenSslErrors(strerror(saved))));
    break;
  }
  return progress;
}

bool RelaySession::ForwardAppEof() {
  if (!app_eof_ || !to_peer_.empty() || close_notify_sent_) return false;
  ERR_clear_error();
  int rc = SSL_shutdown(ssl_.get());
  if (rc >= 0) {
    close_notify_sent_ = true;
    ctx_.sys.Shutdown(tls_fd_.get(), SHUT_WR);
    return true;
  }
  int err = SSL_get_error(ssl_.get(), rc);
  if (err == SSL_ERROR_WANT_WRITE) {
    ssl_write_wants_write_ = true;
  } else {
    close_notify_sent_ = true;  // peer gone; nothing more to say
    ERR_clear_error();
  }
  return false;
}

void RelaySession::UpdateInterest() {
  uint32_t tls = 0;
  if (!peer_eof_ && to_app_.space() > 0) tls |= EPOLLIN;
  if (ssl_read_wants_write_ || ssl_write_wants_write_) tls |= EPOLLOUT;
  uint32_t app = 0;
  if (!app_eof_ && to_peer_.space() > 0) app |= EPOLLIN;
  if (!to_app_.empty()) app |= EPOLLOUT;
  if (tls_registered_ && tls != tls_armed_) {
    tls_armed_ = tls;
    ctx_.loop.Modify(tls_fd_.get(), tls, this);
  }
  if (app_registered_ && app != app_armed_) {
    app_armed_ = app;
    ctx_.loop.Modify(app_fd_.get(), app, app_side_.get());
  }
}

void RelaySession::Close(bool error, absl::string_view why) {
  if (closed_) return;
  closed_ = true;
  if (error) {
    Inc(ctx_.stats.relay_errors);
    KTLS_LOG(kDebug, "conn ", id_, ": relay ended: ", why);
  }
  Inc(ctx_.stats.relay_closed);
  ctx_.loop.Remove(tls_fd_.get());
  ctx_.loop.Remove(app_fd_.get());
  ssl_.reset();
  tls_fd_.reset();
  app_fd_.reset();
  ctx_.on_finished(this);
}

}  // namespace ktls::agent
