#include "agent/dialer.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/listener.h"
#include "agent/log.h"
#include "agent/socket_bio.h"

namespace ktls::agent {
namespace {

constexpr size_t kMaxInitialData = 32 * 1024;  // wire::kMaxInitialDataBytes

int OutboundExIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

bool IsIpLiteral(const std::string& host) {
  in6_addr a6;
  in_addr a4;
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

std::string ErrnoText(int err) {
  return absl::StrCat(strerrordesc_np(err), " (", strerrorname_np(err), ")");
}

}  // namespace

// One outbound connection until it is handed back (kTLS), given to a RelaySession, or failed.
// Resolve and connect are its own; the handshake is a TlsSession in the connect role (which
// takes over the fd once it is connected) and the data path is DecideDataPath's, as for the
// listener's connections. What stays here after the handshake is TLS 1.3 ticket draining.
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
    sni_ = req_.sni().empty() && !IsIpLiteral(req_.host()) ? req_.host() : req_.sni();
    expected_name_ = !req_.expected_name().empty() ? req_.expected_name()
                     : !sni_.empty()               ? sni_
                                                   : req_.host();
    cache_key_ =
        absl::StrCat(req_.host(), ":", req_.port(), "|", sni_, "|", absl::StrJoin(req_.alpn(), ","),
                     "|", req_.ca_file(), "|", expected_name_, "|", req_.tls_version(), "|",
                     req_.insecure_skip_verify());
  }
  ~Outbound() override { WipeSecret(); }

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

  // Keylog / session callbacks (OpenSSL calls them on this thread, inside SSL calls).
  void OnKeylog(const char* line) {
    static constexpr char kPrefix[] = "SERVER_TRAFFIC_SECRET_0 ";
    if (strncmp(line, kPrefix, sizeof(kPrefix) - 1) != 0) return;
    const char* hex = strrchr(line, ' ');
    if (hex == nullptr) return;
    ++hex;
    const size_t len = strlen(hex) / 2;
    if (len == 0 || len > secret_.size()) return;
    for (size_t i = 0; i < len; ++i) {
      auto nib = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) {
        WipeSecret();
        return;
      }
      secret_[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    secret_len_ = len;
  }
  void OnNewSession(SSL_SESSION* session) {
    dialer_->sessions_.Put(cache_key_, session);
    got_ticket_ = true;
  }

 private:
  void WipeSecret() {
    OPENSSL_cleanse(secret_.data(), secret_.size());
    secret_len_ = 0;
  }

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

  // The client SSL for this request: versions, SNI, ALPN, verification, a cached session.
  absl::StatusOr<SslPtr> NewClientSsl() {
    absl::StatusOr<SSL_CTX*> ctx = dialer_->ClientContext(req_.ca_file());
    if (!ctx.ok()) return ctx.status();
    SslPtr owned(SSL_new(*ctx));
    if (!owned) return absl::InternalError("SSL_new failed");
    SSL* ssl = owned.get();
    SSL_set_ex_data(ssl, OutboundExIndex(), this);
    if (req_.tls_version() == "TLSv1.2") {
      SSL_set_min_proto_version(ssl, TLS1_2_VERSION);
      SSL_set_max_proto_version(ssl, TLS1_2_VERSION);
    } else if (req_.tls_version() == "TLSv1.3") {
      SSL_set_min_proto_version(ssl, TLS1_3_VERSION);
    } else if (!req_.tls_version().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls_version '", req_.tls_version(), "' is not TLSv1.2 or TLSv1.3"));
    }
    if (!sni_.empty()) SSL_set_tlsext_host_name(ssl, sni_.c_str());
    if (req_.alpn_size() > 0) {
      std::string wire;
      for (const auto& p : req_.alpn()) {
        if (p.empty() || p.size() > 255) {
          return absl::InvalidArgumentError("alpn: protocol names must be 1..255 bytes");
        }
        wire.push_back(static_cast<char>(p.size()));
        wire += p;
      }
      SSL_set_alpn_protos(ssl, reinterpret_cast<const unsigned char*>(wire.data()), wire.size());
    }
    if (!req_.insecure_skip_verify()) {
      SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
      if (IsIpLiteral(expected_name_)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), expected_name_.c_str());
      } else {
        SSL_set1_host(ssl, expected_name_.c_str());
      }
    } else {
      SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
    }
    if (SslSessionPtr s = dialer_->sessions_.Take(cache_key_)) {
      SSL_set_session(ssl, s.get());  // takes its own reference
    }
    return owned;
  }

  void StartTls() {
    absl::StatusOr<SslPtr> ssl = NewClientSsl();
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
    if (got_ticket_ && SocketBioRecordCount(SSL_get_rbio(ssl)).at_boundary) Complete();
  }

  void Complete() {
    if (state_ != State::kHandshaking && state_ != State::kTickets) return;
    Dialer* d = dialer_;
    SSL* ssl = session_->ssl();
    RecordCount rc = SocketBioRecordCount(SSL_get_rbio(ssl));
    DataPathDecision dec = DecideDataPath(
        d->sys_, d->stats_, d->options_.policy, TlsRole::kConnect, ssl, session_->fd(),
        Tls13RxKey{absl::MakeConstSpan(secret_.data(), secret_len_), rc.records - base_records_,
                   rc.at_boundary});
    WipeSecret();
    if (SSL_session_reused(ssl)) Inc(d->stats_.dials_resumed);
    v1::DialResult result;
    result.set_request_id(req_.request_id());
    FillInfo(dec.offload, result.mutable_connection());
    SSL_set_ex_data(ssl, OutboundExIndex(), nullptr);  // callbacks must not reach us any more
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
    info->set_sni(sni_);
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
    WipeSecret();
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
  std::string sni_;
  std::string expected_name_;
  std::string cache_key_;
  std::vector<sockaddr_storage> addrs_;
  size_t next_addr_ = 0;
  sockaddr_storage peer_{};
  std::string last_error_;
  UniqueFd fd_;  // while resolving and connecting; then the session's
  std::optional<TlsSession> session_;
  std::array<uint8_t, 64> secret_{};
  size_t secret_len_ = 0;
  bool got_ticket_ = false;
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
      sessions_(options.session_cache_upstreams, options.sessions_per_upstream) {}

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

absl::StatusOr<SSL_CTX*> Dialer::ClientContext(const std::string& ca_file) {
  auto it = client_ctxs_.find(ca_file);
  if (it != client_ctxs_.end()) return it->second.get();
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return absl::InternalError("SSL_CTX_new failed");
  SSL_CTX* c = ctx.get();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  // Offloadable AEAD suites only, as on the server side.
  SSL_CTX_set_cipher_list(c,
                          "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                          "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                          "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305");
  if (options_.policy != OffloadPolicy::kOff) SSL_CTX_set_options(c, SSL_OP_ENABLE_KTLS);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION);
  // Read-ahead stays off: kTLS RX needs OpenSSL to stop at record boundaries (see
  // agent/ktls_installer.h).
  ERR_clear_error();
  if (ca_file.empty()) {
    SSL_CTX_set_default_verify_paths(c);
  } else if (SSL_CTX_load_verify_locations(c, ca_file.c_str(), nullptr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("cannot load CA bundle ", ca_file, ": ",
                                                   DrainOpenSslErrors("not a PEM bundle")));
  }
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(c, [](SSL* ssl, SSL_SESSION* session) -> int {
    if (auto* o = static_cast<Outbound*>(SSL_get_ex_data(ssl, OutboundExIndex()))) {
      o->OnNewSession(session);
    }
    return 0;  // we did not keep OpenSSL's reference (the cache takes its own)
  });
  SSL_CTX_set_keylog_callback(c, [](const SSL* ssl, const char* line) {
    if (auto* o = static_cast<Outbound*>(SSL_get_ex_data(ssl, OutboundExIndex()))) {
      o->OnKeylog(line);
    }
  });
  SSL_CTX* raw = ctx.get();
  if (client_ctxs_.size() >= 64) client_ctxs_.clear();  // bounded; rebuilt on demand
  client_ctxs_[ca_file] = std::move(ctx);
  return raw;
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
