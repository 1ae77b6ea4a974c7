#include "agent/dialer.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/listener.h"
#include "agent/log.h"
#include "agent/socket_bio.h"

namespace ktls::agent {
namespace {

constexpr size_t kMaxInitialData = 32 * 1024;  // wire::kMaxInitialDataBytes

std::string ErrnoText(int err) {
  return absl::StrCat(strerrordesc_np(err), " (", strerrorname_np(err), ")");
}

}  // namespace

// One outbound connection until it is handed back (kTLS), given to a RelaySession, or failed.
// Resolve and connect are its own; the handshake is a TlsSession in the connect role (which
// takes over the fd once it is connected) and the data path is DecideDataPath's, as for the
// listener's connections; its SSL comes configured from ClientTlsContexts. What stays here
// after the handshake is TLS 1.3 ticket draining.
class Dialer::Outbound final : public EventHandler, private TlsSessionOwner {
 public:
  enum class State { kResolving, kConnecting, kHandshaking, kTickets, kDone };

  Outbound(Dialer* d, uint64_t subscriber_id, v1::DialRequest req, absl::Time deadline)
      : dialer_(d),
        subscriber_id_(subscriber_id),
        req_(std::move(req)),
        id_(d->next_id_.fetch_add(1, std::memory_order_relaxed)),
        started_(absl::Now()),
        deadline_(deadline) {
    tls_.host = req_.host();
    tls_.port = req_.port();
    tls_.sni = req_.sni();
    tls_.alpn.assign(req_.alpn().begin(), req_.alpn().end());
    tls_.ca_file = req_.ca_file();
    tls_.expected_name = req_.expected_name();
    tls_.tls_version = req_.tls_version();
    tls_.insecure_skip_verify = req_.insecure_skip_verify();
    tls_.ApplyDefaults();
  }

  absl::Time deadline() const { return deadline_; }
  State state() const { return state_; }

  void Begin() {
    if (req_.host().empty() || req_.port() == 0 || req_.port() > 65535) {
      Fail("dial request needs a host and a port in 1..65535");
      return;
    }
    if (IsIpLiteral(req_.host())) {
      auto addr = ParseListenAddress("", req_.host(), req_.port());
      if (!addr.ok()) {
        Fail(std::string(addr.status().message()));
        return;
      }
      addrs_.push_back(addr->addr);
      TryConnect();
      return;
    }
    // getaddrinfo blocks: resolve on a short-lived thread and come back through Post().
    state_ = State::kResolving;
    std::shared_ptr<Mailbox> mailbox = dialer_->mailbox_;
    uint64_t id = id_;
    std::string host = req_.host();
    uint32_t port = req_.port();
    std::thread([mailbox, id, host, port] {
      addrinfo hints{};
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = AI_ADDRCONFIG;
      addrinfo* res = nullptr;
      int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
      std::vector<sockaddr_storage> addrs;
      std::string error;
      if (rc != 0) {
        error = absl::StrCat("resolve ", host, ": ", gai_strerror(rc));
      } else {
        for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
          sockaddr_storage ss{};
          memcpy(&ss, a->ai_addr, a->ai_addrlen);
          addrs.push_back(ss);
        }
        freeaddrinfo(res);
      }
      absl::MutexLock lock(&mailbox->mu);
      Dialer* dialer = mailbox->dialer;
      if (dialer == nullptr) return;  // the agent is shutting down
      dialer->loop_->Post([dialer, id, addrs = std::move(addrs), error = std::move(error)] {
        for (auto& [key, h] : dialer->live_) {
          auto* o = dynamic_cast<Outbound*>(key);
          if (o != nullptr && o->id_ == id && o->state_ == State::kResolving) {
            o->OnResolved(addrs, error);
            return;
          }
        }
      });
    }).detach();
  }

  void OnResolved(const std::vector<sockaddr_storage>& addrs, const std::string& error) {
    if (!error.empty()) {
      Fail(error);
      return;
    }
    addrs_ = addrs;
    TryConnect();
  }

  void OnEvents(uint32_t events) override {
    switch (state_) {
      case State::kConnecting:
        OnConnectable();
        return;
      case State::kHandshaking:
        session_->OnEvents(events);
        return;
      case State::kTickets:
        DrainTickets();
        return;
      default:
        return;
    }
  }

  void OnTick(absl::Time now) {
    switch (state_) {
      case State::kDone:
        return;
      case State::kHandshaking:
        session_->CheckDeadline(now);  // reports through OnHandshakeFailed
        return;
      case State::kTickets:
        if (now >= ticket_deadline_) {
          Complete();  // no (more) tickets in time: hand off what we have
          return;
        }
        break;
      default:
        break;
    }
    if (now >= deadline_) {
      Fail(absl::StrCat("timed out after ", absl::FormatDuration(deadline_ - started_)));
    }
  }

 private:
  void TryConnect() {
    SysCalls& sys = dialer_->sys_;
    while (next_addr_ < addrs_.size()) {
      const sockaddr_storage& ss = addrs_[next_addr_++];
      SysResult s = sys.Socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (!s.ok()) {
        last_error_ = absl::StrCat("socket: ", ErrnoText(s.err));
        continue;
      }
      if (fd_.valid()) dialer_->loop_->Remove(fd_.get());
      fd_ = UniqueFd(sys, static_cast<int>(s.rc));
      int one = 1;
      sys.SetSockOpt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      const socklen_t len = ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
      SysResult c = sys.Connect(fd_.get(), reinterpret_cast<const sockaddr*>(&ss), len);
      if (c.ok() || c.err == EINPROGRESS) {
        state_ = State::kConnecting;
        peer_ = ss;
        if (!dialer_->loop_->Add(fd_.get(), EPOLLOUT, this).ok()) {
          Fail("epoll registration failed");
          return;
        }
        return;
      }
      std::string a;
      uint32_t p;
      FormatSockaddr(reinterpret_cast<const sockaddr*>(&ss), &a, &p);
      last_error_ = absl::StrCat("connect ", a, ":", p, ": ", ErrnoText(c.err));
      fd_.reset();
    }
    Fail(last_error_.empty() ? "no address to connect to" : last_error_);
  }

  void OnConnectable() {
    int err = 0;
    socklen_t len = sizeof(err);
    SysResult r = dialer_->sys_.GetSockOpt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (!r.ok()) err = r.err;
    if (err != 0) {
      std::string a;
      uint32_t p;
      FormatSockaddr(reinterpret_cast<const sockaddr*>(&peer_), &a, &p);
      last_error_ = absl::StrCat("connect ", a, ":", p, ": ", ErrnoText(err));
      dialer_->loop_->Remove(fd_.get());
      fd_.reset();
      TryConnect();
      return;
    }
    StartTls();
  }

  void StartTls() {
    absl::StatusOr<SslPtr> ssl = dialer_->client_tls_.NewSession(tls_, &tls_state_);
    if (!ssl.ok()) {
      Fail(std::string(ssl.status().message()));
      return;
    }
    // The session takes the fd and its EPOLLOUT registration (this object stays the handler).
    session_.emplace(*dialer_->loop_, dialer_->sys_, TlsRole::kConnect, std::move(fd_),
                     std::move(*ssl), started_, deadline_, static_cast<TlsSessionOwner*>(this),
                     this);
    state_ = State::kHandshaking;
    if (absl::Status s = session_->Start(); !s.ok()) Fail(std::string(s.message()));
  }

  void OnHandshakeFailed(const HandshakeFailure& f) override {
    if (state_ != State::kHandshaking) return;
    if (f.verify_failed) Inc(dialer_->stats_.dials_verify_failed);
    const bool plain = f.verify_failed || f.reason == HandshakeFailureReason::kTimeout;
    Fail(plain ? f.text : absl::StrCat("TLS handshake: ", f.text));
  }

  void OnHandshakeDone() override {
    if (state_ != State::kHandshaking) return;
    SSL* ssl = session_->ssl();
    if (SSL_version(ssl) != TLS1_3_VERSION) {
      Complete();  // TLS 1.2: the session (and RX keys) came with the handshake
      return;
    }
    // TLS 1.3: read the server's NewSessionTickets (they follow its Finished) before handing off.
    RecordCount rc = SocketBioRecordCount(SSL_get_rbio(ssl));
    base_records_ = rc.records;
    state_ = State::kTickets;
    ticket_deadline_ = std::min(deadline_, absl::Now() + dialer_->options_.ticket_wait);
    session_->Rearm(EPOLLIN);
    DrainTickets();
  }

  void DrainTickets() {
    SSL* ssl = session_->ssl();
    char buf[16384];
    for (;;) {
      ERR_clear_error();
      int n = SSL_read(ssl, buf, sizeof(buf));
      if (n > 0) {
        // The server spoke first: keep what OpenSSL decrypted for the app, and stop reading so
        // that the kernel takes the rest.
        if (initial_data_.size() + n > kMaxInitialData) {
          Fail("server sent more than 32 KiB before the connection could be handed off");
          return;
        }
        initial_data_.append(buf, n);
        if (SSL_pending(ssl) > 0) continue;
        Complete();
        return;
      }
      int err = SSL_get_error(ssl, n);
      if (err == SSL_ERROR_WANT_READ) break;
      if (err == SSL_ERROR_ZERO_RETURN) {
        Fail("server closed the connection right after the handshake");
        return;
      }
      if (err == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EINTR)) break;
      Fail(absl::StrCat("reading session tickets: ", DrainOpenSslErrors("connection error")));
      return;
    }
    // Nothing more to read now. Once a ticket arrived and OpenSSL is between records, hand off.
    if (tls_state_.got_ticket && SocketBioRecordCount(SSL_get_rbio(ssl)).at_boundary) Complete();
  }

  void Complete() {
    if (state_ != State::kHandshaking && state_ != State::kTickets) return;
    Dialer* d = dialer_;
    SSL* ssl = session_->ssl();
    RecordCount rc = SocketBioRecordCount(SSL_get_rbio(ssl));
    DataPathDecision dec = DecideDataPath(
        d->sys_, d->stats_, d->options_.policy, TlsRole::kConnect, ssl, session_->fd(),
        Tls13RxKey{absl::MakeConstSpan(tls_state_.server_app_secret.data(),
                                       tls_state_.server_app_secret_len),
                   rc.records - base_records_, rc.at_boundary});
    tls_state_.WipeSecret();
    if (SSL_session_reused(ssl)) Inc(d->stats_.dials_resumed);
    v1::DialResult result;
    result.set_request_id(req_.request_id());
    FillInfo(dec.offload, result.mutable_connection());
    ClientTlsContexts::Detach(ssl);  // a relayed SSL outlives us: its callbacks must not reach us
    absl::StatusOr<UniqueFd> app_fd =
        EnterDataPath(*d->relay_ctx_, dec, id_, session_->Release(), nullptr);
    if (!app_fd.ok()) {
      Fail(std::string(app_fd.status().message()));
      return;
    }
    result.set_ok(true);
    Deliver(std::move(result), std::move(*app_fd));
  }

  void FillInfo(const OffloadDecision& dec, v1::ConnectionInfo* info) {
    info->set_connection_id(id_);
    info->set_outbound(true);
    info->set_dial_request_id(req_.request_id());
    info->set_sni(tls_.sni);
    FillSessionInfo(dialer_->sys_, session_->ssl(), session_->fd(), peer_, dec, info);
    info->set_initial_data(initial_data_);
    info->set_handshake_micros(
        static_cast<uint64_t>(absl::ToInt64Microseconds(absl::Now() - started_)));
  }

  void Deliver(v1::DialResult result, UniqueFd fd) {
    state_ = State::kDone;
    Inc(dialer_->stats_.dials_succeeded);
    dialer_->on_result_(subscriber_id_, std::move(result), std::move(fd));
    dialer_->Finish(this);
  }

  void Fail(std::string error) {
    if (state_ == State::kDone) return;
    state_ = State::kDone;
    tls_state_.WipeSecret();
    Inc(dialer_->stats_.dials_failed);
    KTLS_LOG(kDebug, "dial ", req_.host(), ":", req_.port(), " failed: ", error);
    if (session_) session_->Close();
    if (fd_.valid()) dialer_->loop_->Remove(fd_.get());
    fd_.reset();
    v1::DialResult result;
    result.set_request_id(req_.request_id());
    result.set_ok(false);
    result.set_error(std::move(error));
    dialer_->on_result_(subscriber_id_, std::move(result), UniqueFd());
    dialer_->Finish(this);
  }

  Dialer* dialer_;
  uint64_t subscriber_id_;
  v1::DialRequest req_;
  uint64_t id_;
  absl::Time started_;
  absl::Time deadline_;
  absl::Time ticket_deadline_;
  State state_ = State::kConnecting;
  ClientTlsParams tls_;
  std::vector<sockaddr_storage> addrs_;
  size_t next_addr_ = 0;
  sockaddr_storage peer_{};
  std::string last_error_;
  UniqueFd fd_;  // while resolving and connecting; then the session's
  // Declared before session_: the SSL's callbacks point at it until the session is gone.
  ClientTlsState tls_state_;
  std::optional<TlsSession> session_;
  uint64_t base_records_ = 0;
  std::string initial_data_;
};

Dialer::Dialer(SysCalls& sys, DialerOptions options, AgentStats& stats,
               std::atomic<uint64_t>& next_id, DialCallback on_result)
    : sys_(sys),
      options_(options),
      stats_(stats),
      next_id_(next_id),
      on_result_(std::move(on_result)),
      sessions_(options.session_cache_upstreams, options.sessions_per_upstream),
      client_tls_(sessions_, options.policy != OffloadPolicy::kOff) {}

absl::StatusOr<std::unique_ptr<Dialer>> Dialer::Create(SysCalls& sys, DialerOptions options,
                                                       AgentStats& stats,
                                                       std::atomic<uint64_t>& next_id,
                                                       DialCallback on_result,
                                                       RelayDeps relay_deps) {
  std::unique_ptr<Dialer> d(new Dialer(sys, options, stats, next_id, std::move(on_result)));
  auto loop = EventLoop::Create(sys);
  if (!loop.ok()) return loop.status();
  d->loop_ = std::move(*loop);
  Dialer* raw = d.get();
  d->relay_ctx_ = std::make_unique<DataPlaneContext>(DataPlaneContext{
      sys, *d->loop_, relay_deps.tls, relay_deps.certs, stats, relay_deps.broker, options.policy,
      options.relay_buffer_bytes, next_id, [raw](EventHandler* h) { raw->Finish(h); },
      [raw](std::unique_ptr<EventHandler> h) {
        EventHandler* key = h.get();
        raw->live_[key] = std::move(h);
      }});
  d->loop_->SetTicker(absl::Milliseconds(20), [raw](absl::Time now) { raw->OnTick(now); });
  {
    absl::MutexLock lock(&d->mailbox_->mu);
    d->mailbox_->dialer = raw;
  }
  return d;
}

Dialer::~Dialer() {
  {
    absl::MutexLock lock(&mailbox_->mu);
    mailbox_->dialer = nullptr;
  }
  Stop();
  live_.clear();
}

void Dialer::Start() {
  thread_ = std::thread([this] { loop_->Run(); });
}

void Dialer::Stop() {
  if (thread_.joinable()) {
    loop_->Stop();
    thread_.join();
  }
}

void Dialer::Dial(uint64_t subscriber_id, v1::DialRequest request) {
  Inc(stats_.dials_started);
  loop_->Post([this, subscriber_id, request = std::move(request)]() mutable {
    StartDial(subscriber_id, std::move(request));
  });
}

void Dialer::StartDial(uint64_t subscriber_id, v1::DialRequest request) {
  absl::Duration timeout = request.timeout_ms() > 0 ? absl::Milliseconds(request.timeout_ms())
                                                    : options_.default_timeout;
  if (live_.size() >= options_.max_concurrent_dials) {
    Inc(stats_.dials_failed);
    v1::DialResult r;
    r.set_request_id(request.request_id());
    r.set_error(absl::StrCat("too many dials in progress (", options_.max_concurrent_dials, ")"));
    on_result_(subscriber_id, std::move(r), UniqueFd());
    return;
  }
  auto o =
      std::make_unique<Outbound>(this, subscriber_id, std::move(request), absl::Now() + timeout);
  Outbound* raw = o.get();
  live_[raw] = std::move(o);
  raw->Begin();
}

void Dialer::Finish(EventHandler* h) {
  auto it = live_.find(h);
  if (it == live_.end()) return;
  loop_->DeferDelete(std::move(it->second));
  live_.erase(it);
}

void Dialer::OnTick(absl::Time now) {
  std::vector<Outbound*> outbound;
  for (auto& [key, h] : live_) {
    if (auto* o = dynamic_cast<Outbound*>(key)) outbound.push_back(o);
  }
  for (Outbound* o : outbound) o->OnTick(now);
}

}  // namespace ktls::agent
