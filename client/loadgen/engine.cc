#include "client/loadgen/engine.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/lib/openssl_errors.h"
#include "client/loadgen/http_response.h"
#include "client/loadgen/proc_stats.h"
#include "client/loadgen/verify.h"

namespace ktls::loadgen {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadBuffer = 64 * 1024;
constexpr auto kSweepInterval = std::chrono::milliseconds(10);
constexpr auto kFirstBackoff = std::chrono::milliseconds(10);
constexpr auto kMaxBackoff = std::chrono::seconds(1);

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

double Seconds(const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

// What every thread shares. Written before the threads start, except the atomics.
struct Shared {
  explicit Shared(const Options& options) : o(options) {}
  const Options& o;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  SslCtxPtr ctx;
  // The request: `prefix` is the head plus the first `body_in_prefix` body bytes; the rest of the
  // body (pattern bytes) is streamed.
  std::string prefix;
  size_t head_size = 0;
  uint64_t body_size = 0;
  uint64_t body_in_prefix = 0;
  bool close_each = false;  // kClose: one connection per request
  std::function<std::unique_ptr<BodyCheck>()> make_check;
  Clock::time_point measure_start;
  Clock::time_point measure_end;  // the duration cap
  std::chrono::nanoseconds timeout{0};

  std::atomic<uint64_t> tickets{0};      // --requests tickets claimed
  std::atomic<uint64_t> done{0};         // ticketed requests finished (ok or failed)
  std::atomic<uint64_t> completed{0};    // all successful requests (progress line)
  std::atomic<uint64_t> failed{0};       // all errors (progress line)
  std::atomic<int64_t> last_done_ns{0};  // completion time of the last ticketed request
  std::atomic<bool> stop{false};
};

enum class ConnState { kIdle, kWaitRetry, kConnecting, kHandshaking, kActive };

struct Conn {
  int fd = -1;
  SSL* ssl = nullptr;
  ConnState state = ConnState::kIdle;
  ResponseParser parser;
  std::unique_ptr<BodyCheck> check;
  uint64_t sent = 0;       // request bytes written (prefix, then streamed body)
  uint64_t seen_body = 0;  // response body bytes already counted
  bool writing = false;    // request not fully written
  bool response_done = false;
  bool ticket = false;       // holds a --requests ticket
  bool has_request = false;  // a request is in progress (BeginRequest called)
  Clock::time_point request_start;
  Clock::time_point deadline;
  Clock::time_point retry_at;
  SSL_SESSION* session = nullptr;  // owned; the session to resume (kClose --resume)
  int failures = 0;                // consecutive failures: back-off
};

class Worker {
 public:
  Worker(Shared* shared, int connections) : s_(*shared), conns_(connections), buf_(kReadBuffer) {}
  ~Worker() {
    for (Conn& c : conns_) {
      Close(&c, false);
      if (c.session != nullptr) SSL_SESSION_free(c.session);
    }
    if (ep_ >= 0) ::close(ep_);
  }

  void Run();
  const Results& results() const { return r_; }

 private:
  bool InWindow(Clock::time_point t) const { return t >= s_.measure_start && t < s_.measure_end; }
  bool Bounded() const { return s_.o.requests > 0; }
  bool Counts(const Conn* c, Clock::time_point t) const {
    return Bounded() ? c->ticket : InWindow(t);
  }

  void Connect(Conn* c);
  void OnConnected(Conn* c);
  void StartRequests(Conn* c);
  void Handshake(Conn* c);
  bool BeginRequest(Conn* c);
  void SendRequest(Conn* c);
  void Pump(Conn* c);
  int WriteSome(Conn* c);  // -1 failed, 0 blocked, 1 request fully written
  int ReadSome(Conn* c);   // -1 failed, 0 blocked, 1 response complete
  bool Complete(Conn* c);  // true: the next request is under way on this connection
  void Fail(Conn* c, ErrorKind kind, const std::string& why);
  void Close(Conn* c, bool graceful);
  void Sweep();
  void FinishTicket(Conn* c);

  Shared& s_;
  std::vector<Conn> conns_;
  std::vector<char> buf_;
  int ep_ = -1;
  Clock::time_point now_;
  Results r_;
  bool stopping_ = false;
};

void Worker::Run() {
  ep_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) {
    r_.first_error = absl::StrCat("epoll_create1: ", std::strerror(errno));
    return;
  }
  now_ = Clock::now();
  for (Conn& c : conns_) {
    c.check = s_.make_check();
    Connect(&c);
  }
  auto next_sweep = now_ + kSweepInterval;
  epoll_event events[256];
  while (!s_.stop.load(std::memory_order_relaxed)) {
    const int n = ::epoll_wait(ep_, events, 256, 10);
    now_ = Clock::now();
    if (!Bounded() && now_ >= s_.measure_end) break;
    for (int i = 0; i < n; ++i) {
      Conn* c = static_cast<Conn*>(events[i].data.ptr);
      switch (c->state) {
        case ConnState::kConnecting:
          if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            int err = 0;
            socklen_t len = sizeof(err);
            ::getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err != 0) {
              Fail(c, ErrorKind::kConnect, absl::StrCat("connect: ", std::strerror(err)));
            } else {
              OnConnected(c);
            }
          }
          break;
        case ConnState::kHandshaking:
          Handshake(c);
          break;
        case ConnState::kActive:
          Pump(c);
          break;
        default:
          break;
      }
    }
    if (now_ >= next_sweep) {
      Sweep();
      next_sweep = now_ + kSweepInterval;
    }
  }
  stopping_ = true;
}

void Worker::Sweep() {
  for (Conn& c : conns_) {
    switch (c.state) {
      case ConnState::kWaitRetry:
        if (now_ >= c.retry_at) Connect(&c);
        break;
      case ConnState::kConnecting:
      case ConnState::kHandshaking:
      case ConnState::kActive:
        if (now_ >= c.deadline) {
          Fail(&c, ErrorKind::kTimeout,
               absl::StrCat("no complete response within ", s_.o.timeout_s, "s (",
                            c.state == ConnState::kConnecting    ? "connecting"
                            : c.state == ConnState::kHandshaking ? "in the TLS handshake"
                            : c.writing                          ? "sending the request"
                                                                 : "reading the response",
                            ")"));
        }
        break;
      default:
        break;
    }
  }
}

// Claims the right to start one request now. False: the --requests bound is reached.
bool Worker::BeginRequest(Conn* c) {
  c->ticket = false;
  // Nothing starts after the window (or the duration cap of a --requests run) or once the run is
  // stopping. This is also what hands control back to the event loop from a connection whose
  // server answers early and keeps up with the upload: Pump() then never waits, and would
  // otherwise go on from request to request.
  if (now_ >= s_.measure_end || s_.stop.load(std::memory_order_relaxed)) return false;
  if (Bounded() && now_ >= s_.measure_start) {
    if (s_.tickets.fetch_add(1, std::memory_order_relaxed) >= s_.o.requests) return false;
    c->ticket = true;
  }
  c->has_request = true;
  c->request_start = now_;
  c->deadline = now_ + s_.timeout;
  return true;
}

void Worker::FinishTicket(Conn* c) {
  if (!c->ticket) return;
  c->ticket = false;
  s_.last_done_ns.store(
      std::chrono::duration_cast<std::chrono::nanoseconds>(now_.time_since_epoch()).count(),
      std::memory_order_relaxed);
  s_.done.fetch_add(1, std::memory_order_relaxed);
}

void Worker::Connect(Conn* c) {
  if (stopping_) return;
  c->state = ConnState::kIdle;
  if (s_.close_each) {
    if (!BeginRequest(c)) return;  // bound reached: this connection stays idle
  } else {
    c->has_request = false;
    c->deadline = now_ + s_.timeout;
  }
  const int fd = ::socket(s_.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    Fail(c, ErrorKind::kConnect, absl::StrCat("socket: ", std::strerror(errno)));
    return;
  }
  c->fd = fd;
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&s_.addr), s_.addr_len);
  if (rc != 0 && errno != EINPROGRESS) {
    Fail(c, ErrorKind::kConnect, absl::StrCat("connect: ", std::strerror(errno)));
    return;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = c;
  if (::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    Fail(c, ErrorKind::kConnect, absl::StrCat("epoll_ctl: ", std::strerror(errno)));
    return;
  }
  // Even when connect() completed at once, wait for the EPOLLOUT edge that registering a writable
  // socket produces: no recursion from Complete() into a new request.
  c->state = ConnState::kConnecting;
}

// Connected (and, with TLS, handshaken): the first request goes out now, except in close mode,
// where Connect() already began the request before opening the connection.
void Worker::StartRequests(Conn* c) {
  c->state = ConnState::kActive;
  if (!s_.close_each && !BeginRequest(c)) {
    Close(c, true);
    return;
  }
  SendRequest(c);
  Pump(c);
}

void Worker::OnConnected(Conn* c) {
  if (!s_.o.tls) {
    if (InWindow(now_)) ++r_.handshakes;
    StartRequests(c);
    return;
  }
  c->ssl = SSL_new(s_.ctx.get());
  if (c->ssl == nullptr || SSL_set_fd(c->ssl, c->fd) != 1) {
    Fail(c, ErrorKind::kHandshake, absl::StrCat("SSL_new: ", client::DrainOpenSslErrors()));
    return;
  }
  if (!s_.o.sni.empty()) SSL_set_tlsext_host_name(c->ssl, s_.o.sni.c_str());
  if (s_.o.resume && c->session != nullptr) SSL_set_session(c->ssl, c->session);
  SSL_set_connect_state(c->ssl);
  c->state = ConnState::kHandshaking;
  Handshake(c);
}

void Worker::Handshake(Conn* c) {
  ERR_clear_error();
  const int rc = SSL_do_handshake(c->ssl);
  if (rc == 1) {
    if (Counts(c, now_) || (!s_.close_each && InWindow(now_))) {
      ++r_.handshakes;
      if (SSL_session_reused(c->ssl)) ++r_.resumed;
    }
    if (r_.tls_version.empty()) {
      r_.tls_version = SSL_get_version(c->ssl);
      r_.cipher = SSL_get_cipher_name(c->ssl);
    }
    StartRequests(c);
    return;
  }
  const int err = SSL_get_error(c->ssl, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return;
  std::string why = client::DrainOpenSslErrors();
  if (why.empty())
    why = err == SSL_ERROR_SYSCALL && errno != 0 ? std::strerror(errno) : "connection closed";
  Fail(c, ErrorKind::kHandshake, absl::StrCat("TLS handshake: ", why));
}

void Worker::SendRequest(Conn* c) {
  c->parser.Reset();
  c->check->Reset();
  c->sent = 0;
  c->seen_body = 0;
  c->writing = true;
  c->response_done = false;
}

void Worker::Pump(Conn* c) {
  for (;;) {
    if (c->writing) {
      const int w = WriteSome(c);
      if (w < 0) return;
      if (w == 0 && c->response_done) return;  // an early answer; wait until writable
    }
    if (!c->writing && c->response_done) {
      if (!Complete(c)) return;
      continue;  // the next request on this connection
    }
    const int r = ReadSome(c);
    if (r <= 0) return;  // failed, or blocked (on reading, and on writing if still writing)
  }
}

int Worker::WriteSome(Conn* c) {
  const uint64_t total = s_.prefix.size() + (s_.body_size - s_.body_in_prefix);
  while (c->sent < total) {
    const char* p;
    size_t len;
    if (c->sent < s_.prefix.size()) {
      p = s_.prefix.data() + c->sent;
      len = s_.prefix.size() - c->sent;
    } else {
      const uint64_t body_off = s_.body_in_prefix + (c->sent - s_.prefix.size());
      p = PatternAt(body_off);
      len = static_cast<size_t>(std::min<uint64_t>(s_.body_size - body_off, kPatternSpan));
    }
    ssize_t n;
    if (c->ssl != nullptr) {
      ERR_clear_error();
      n = SSL_write(c->ssl, p, static_cast<int>(len));
      if (n <= 0) {
        const int err = SSL_get_error(c->ssl, static_cast<int>(n));
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) return 0;
        std::string why = client::DrainOpenSslErrors();
        if (err == SSL_ERROR_SYSCALL) {
          Fail(c, ErrorKind::kIo,
               absl::StrCat("write: ", why.empty() ? std::strerror(errno) : why));
        } else {
          Fail(c, ErrorKind::kTls, absl::StrCat("SSL_write: ", why));
        }
        return -1;
      }
    } else {
      n = ::send(c->fd, p, len, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (errno == EINTR) continue;
        Fail(c, ErrorKind::kIo, absl::StrCat("write: ", std::strerror(errno)));
        return -1;
      }
    }
    // A connection whose peer keeps up never blocks, so one Pump() can run for seconds: keep the
    // clock current, or its bytes and completion would be dated at the last epoll wake-up.
    now_ = Clock::now();
    const uint64_t before = c->sent > s_.head_size ? c->sent - s_.head_size : 0;
    c->sent += n;
    const uint64_t after = c->sent > s_.head_size ? c->sent - s_.head_size : 0;
    if (Counts(c, now_)) r_.body_bytes_out += after - before;
  }
  c->writing = false;
  return 1;
}

int Worker::ReadSome(Conn* c) {
  for (;;) {
    ssize_t n;
    bool eof = false;
    if (c->ssl != nullptr) {
      ERR_clear_error();
      n = SSL_read(c->ssl, buf_.data(), static_cast<int>(buf_.size()));
      if (n <= 0) {
        const int err = SSL_get_error(c->ssl, static_cast<int>(n));
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return 0;
        if (err == SSL_ERROR_ZERO_RETURN) {
          eof = true;
        } else if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
          if (errno != 0 && errno != ECONNRESET && errno != EPIPE) {
            Fail(c, ErrorKind::kIo, absl::StrCat("read: ", std::strerror(errno)));
            return -1;
          }
          if (errno == ECONNRESET) {
            Fail(c, ErrorKind::kIo, "read: connection reset");
            return -1;
          }
          eof = true;  // EOF without close_notify: the parser decides whether that is early
        } else {
          Fail(c, ErrorKind::kTls, absl::StrCat("SSL_read: ", client::DrainOpenSslErrors()));
          return -1;
        }
      }
    } else {
      n = ::read(c->fd, buf_.data(), buf_.size());
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (errno == EINTR) continue;
        Fail(c, ErrorKind::kIo, absl::StrCat("read: ", std::strerror(errno)));
        return -1;
      }
      eof = n == 0;
    }
    if (eof) {
      if (c->parser.FeedEof() == ResponseParser::Result::kComplete) {
        c->response_done = true;
        return 1;
      }
      Fail(c, ErrorKind::kClosedEarly, c->parser.error());
      return -1;
    }
    now_ = Clock::now();  // see WriteSome
    size_t used = 0;
    const ResponseParser::Result r = c->parser.Feed(buf_.data(), n, &used, c->check.get());
    const uint64_t body = c->parser.body_bytes();
    if (Counts(c, now_)) r_.body_bytes_in += body - c->seen_body;
    c->seen_body = body;
    if (r == ResponseParser::Result::kError) {
      Fail(c, ErrorKind::kHttpParse, c->parser.error());
      return -1;
    }
    if (r == ResponseParser::Result::kComplete) {
      if (used != static_cast<size_t>(n)) {
        Fail(c, ErrorKind::kHttpParse,
             absl::StrCat(n - used, " unexpected bytes after the response"));
        return -1;
      }
      c->response_done = true;
      return 1;
    }
  }
}

bool Worker::Complete(Conn* c) {
  ErrorKind kind = ErrorKind::kHttpStatus;
  std::string why;
  bool ok = true;
  if (c->parser.status() != 200) {
    ok = false;
    why = absl::StrCat("HTTP status ", c->parser.status());
  } else if (!c->check->Finish(c->parser.body_bytes(), &kind, &why)) {
    ok = false;
  }
  if (!ok) {
    Fail(c, kind, why);
    return false;
  }
  if (Counts(c, now_)) {
    ++r_.requests;
    r_.latency.Record(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now_ - c->request_start).count());
  }
  s_.completed.fetch_add(1, std::memory_order_relaxed);
  FinishTicket(c);
  c->has_request = false;
  c->failures = 0;
  if (s_.close_each || !c->parser.keep_alive()) {
    Close(c, true);
    Connect(c);
    return false;
  }
  if (!BeginRequest(c)) {
    Close(c, true);
    return false;
  }
  SendRequest(c);
  return true;
}

void Worker::Fail(Conn* c, ErrorKind kind, const std::string& why) {
  if (!stopping_) {
    if (now_ >= s_.measure_start && (!Bounded() || now_ < s_.measure_end || c->ticket)) {
      ++r_.errors[static_cast<int>(kind)];
    } else {
      ++r_.warmup_errors;
    }
    if (r_.first_error.empty()) r_.first_error = absl::StrCat(ErrorName(kind), ": ", why);
    s_.failed.fetch_add(1, std::memory_order_relaxed);
  }
  FinishTicket(c);
  c->has_request = false;
  Close(c, false);
  ++c->failures;
  auto backoff = kFirstBackoff * (1 << std::min(c->failures - 1, 7));
  if (backoff > kMaxBackoff) backoff = kMaxBackoff;
  c->retry_at = now_ + backoff;
  c->state = ConnState::kWaitRetry;
}

void Worker::Close(Conn* c, bool graceful) {
  if (c->ssl != nullptr) {
    if (graceful && c->state == ConnState::kActive) {
      if (s_.o.resume) {
        SSL_SESSION* sess = SSL_get1_session(c->ssl);
        if (sess != nullptr && SSL_SESSION_is_resumable(sess)) {
          if (c->session != nullptr) SSL_SESSION_free(c->session);
          c->session = sess;
        } else if (sess != nullptr) {
          SSL_SESSION_free(sess);
        }
      }
      ERR_clear_error();
      SSL_shutdown(c->ssl);  // sends close_notify; the answer is not awaited
    }
    SSL_free(c->ssl);
    c->ssl = nullptr;
    ERR_clear_error();
  }
  if (c->fd >= 0) {
    ::close(c->fd);  // also leaves the epoll set
    c->fd = -1;
  }
  c->state = ConnState::kIdle;
  c->writing = false;
}

absl::Status ResolveTarget(const Options& o, Shared* s) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(o.port);
  if (int rc = ::getaddrinfo(o.host.c_str(), port.c_str(), &hints, &res);
      rc != 0 || res == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve ", o.host, ": ", gai_strerror(rc)));
  }
  std::memcpy(&s->addr, res->ai_addr, res->ai_addrlen);
  s->addr_len = res->ai_addrlen;
  ::freeaddrinfo(res);
  return absl::OkStatus();
}

// TLS client context. No certificate verification: the benchmarks use throw-away self-signed
// certificates, and verification cost is the client's, not the server's under test.
absl::Status MakeClientContext(const Options& o, Shared* s) {
  s->ctx.reset(SSL_CTX_new(TLS_client_method()));
  SSL_CTX* ctx = s->ctx.get();
  if (ctx == nullptr)
    return absl::InternalError(absl::StrCat("SSL_CTX_new: ", client::DrainOpenSslErrors()));
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  const int min = o.tls_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
  const int max = o.tls_version == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
  SSL_CTX_set_min_proto_version(ctx, min);
  SSL_CTX_set_max_proto_version(ctx, max);
  if (o.tls_version != "1.2") {
    const std::string suites =
        o.ciphers.empty() || o.tls_version == "any" ? "TLS_AES_128_GCM_SHA256" : o.ciphers;
    if (SSL_CTX_set_ciphersuites(ctx, suites.c_str()) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ciphers=", suites, ": ", client::DrainOpenSslErrors()));
    }
  }
  if (o.tls_version != "1.3") {
    const std::string list = o.ciphers.empty() || o.tls_version == "any"
                                 ? "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
                                 : o.ciphers;
    if (SSL_CTX_set_cipher_list(ctx, list.c_str()) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ciphers=", list, ": ", client::DrainOpenSslErrors()));
    }
  }
  if (SSL_CTX_set1_groups_list(ctx, o.groups.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--groups=", o.groups, ": ", client::DrainOpenSslErrors()));
  }
  return absl::OkStatus();
}

// The request and, with it, the first bytes of its body (the pattern).
void BuildRequest(const Options& o, Shared* s) {
  const std::string path = RequestPath(o);
  std::string head = absl::StrCat(
      o.scenario == Scenario::kPost || o.scenario == Scenario::kBulkUp ? "POST " : "GET ", path,
      " HTTP/1.1\r\nHost: ", o.host_header, "\r\n");
  s->close_each = o.scenario == Scenario::kClose;
  if (s->close_each) head += "Connection: close\r\n";
  if (o.scenario == Scenario::kPost || o.scenario == Scenario::kBulkUp) {
    s->body_size = o.size;
    absl::StrAppend(&head, "Content-Type: application/octet-stream\r\nContent-Length: ", o.size,
                    "\r\n");
  }
  head += "\r\n";
  s->head_size = head.size();
  s->body_in_prefix = std::min<uint64_t>(s->body_size, kPatternSpan);
  s->prefix = head + PatternString(static_cast<size_t>(s->body_in_prefix));
}

// What the answer must be.
absl::Status MakeCheck(const Options& o, Shared* s) {
  switch (o.scenario) {
    case Scenario::kGet:
    case Scenario::kClose:
    case Scenario::kBulkDown:
    case Scenario::kPost: {
      const uint64_t n = o.size;
      s->make_check = [n] { return MakePatternCheck(n); };
      break;
    }
    case Scenario::kBulkUp: {
      std::string expected = absl::StrCat(o.size, "\n");
      s->make_check = [expected] { return MakeExactCheck(expected); };
      break;
    }
    case Scenario::kStatic: {
      FileDigest d;
      if (!o.static_file.empty()) {
        absl::StatusOr<FileDigest> got = DigestFile(o.static_file);
        if (!got.ok()) return got.status();
        d = *got;
      } else {
        absl::StatusOr<std::array<uint8_t, 32>> digest = ParseSha256Hex(o.static_sha256);
        if (!digest.ok()) return digest.status();
        d.size = o.static_size;
        d.sha256 = *digest;
      }
      s->make_check = [d] { return MakeSha256Check(d.size, d.sha256); };
      break;
    }
  }
  return absl::OkStatus();
}

absl::Status Prepare(const Options& o, Shared* s) {
  if (absl::Status st = ResolveTarget(o, s); !st.ok()) return st;
  if (o.tls) {
    if (absl::Status st = MakeClientContext(o, s); !st.ok()) return st;
  }
  BuildRequest(o, s);
  if (absl::Status st = MakeCheck(o, s); !st.ok()) return st;
  s->timeout = std::chrono::nanoseconds(static_cast<int64_t>(o.timeout_s * 1e9));
  return absl::OkStatus();
}

// 10,000 connections need more descriptors than the usual soft limit of 1024.
void RaiseFdLimit(int connections) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  const rlim_t want = static_cast<rlim_t>(connections) + 64;
  if (rl.rlim_cur >= want) return;
  rl.rlim_cur = std::min(rl.rlim_max, std::max(want, rl.rlim_cur));
  ::setrlimit(RLIMIT_NOFILE, &rl);
}

// CPU time and kernel TLS counters at one instant; the window's costs are two samples' difference.
struct CpuSample {
  rusage self{};
  double watched_s = 0;
  std::map<std::string, int64_t> tls_stat;
};

CpuSample TakeSample(const Options& o) {
  CpuSample c;
  ::getrusage(RUSAGE_SELF, &c.self);
  c.watched_s = ProcessTreeCpuSeconds(o.watch_pids);
  c.tls_stat = ReadTlsStat();
  return c;
}

// Sleeps in short steps until the measurement window ends (or the request bound is reached):
// progress once a second, the CPU sample at the window's start (*start, *sampled). Returns when.
Clock::time_point WaitForWindow(const Options& o, const Shared& s, Clock::time_point start,
                                bool progress, CpuSample* start_sample, bool* sampled) {
  auto next_progress = start + std::chrono::seconds(1);
  uint64_t last_completed = 0;
  for (;;) {
    auto now = Clock::now();
    if (!*sampled && now >= s.measure_start) {
      *start_sample = TakeSample(o);
      *sampled = true;
    }
    const bool bound_done = o.requests > 0 && s.done.load() >= o.requests;
    if (now >= s.measure_end || bound_done) return now;
    if (progress && now >= next_progress) {
      const uint64_t completed = s.completed.load();
      const double t = std::chrono::duration<double>(now - start).count();
      std::fprintf(stderr, "\r[%6.1fs] %-9s %10llu requests %9.0f/s  errors %llu   ", t,
                   now < s.measure_start ? "warm-up" : "measuring",
                   static_cast<unsigned long long>(completed),
                   static_cast<double>(completed - last_completed),
                   static_cast<unsigned long long>(s.failed.load()));
      last_completed = completed;
      next_progress += std::chrono::seconds(1);
    }
    auto wake = std::min(s.measure_end, now + std::chrono::milliseconds(5));
    if (progress) wake = std::min(wake, next_progress);
    if (!*sampled) wake = std::min(wake, s.measure_start);
    std::this_thread::sleep_until(wake);
  }
}

void MergeWorkerResults(const std::vector<std::unique_ptr<Worker>>& workers, Results* r) {
  for (auto& w : workers) {
    const Results& wr = w->results();
    r->requests += wr.requests;
    r->body_bytes_in += wr.body_bytes_in;
    r->body_bytes_out += wr.body_bytes_out;
    r->latency.Merge(wr.latency);
    r->handshakes += wr.handshakes;
    r->resumed += wr.resumed;
    for (int i = 0; i < kErrorKinds; ++i) r->errors[i] += wr.errors[i];
    r->warmup_errors += wr.warmup_errors;
    if (r->first_error.empty()) r->first_error = wr.first_error;
    if (r->tls_version.empty()) {
      r->tls_version = wr.tls_version;
      r->cipher = wr.cipher;
    }
  }
}

void SetCosts(const CpuSample& start, const CpuSample& end, Results* r) {
  r->cpu_user_s = Seconds(end.self.ru_utime) - Seconds(start.self.ru_utime);
  r->cpu_system_s = Seconds(end.self.ru_stime) - Seconds(start.self.ru_stime);
  r->watched_cpu_s = end.watched_s - start.watched_s;
  for (const auto& [name, value] : end.tls_stat) {
    auto it = start.tls_stat.find(name);
    const int64_t delta = value - (it == start.tls_stat.end() ? 0 : it->second);
    if (delta != 0) r->tls_stat[name] = delta;
  }
}

}  // namespace

absl::StatusOr<Results> RunLoad(const Options& o, bool progress) {
  Shared s(o);
  if (absl::Status st = Prepare(o, &s); !st.ok()) return st;
  RaiseFdLimit(o.connections);

  const auto start = Clock::now();
  s.measure_start = start + std::chrono::nanoseconds(static_cast<int64_t>(o.warmup_s * 1e9));
  s.measure_end =
      s.measure_start + std::chrono::nanoseconds(static_cast<int64_t>(o.duration_s * 1e9));

  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < o.threads; ++t) {
    const int n = o.connections / o.threads + (t < o.connections % o.threads ? 1 : 0);
    workers.push_back(std::make_unique<Worker>(&s, n));
  }
  std::vector<std::thread> threads;
  threads.reserve(workers.size());
  for (auto& w : workers) threads.emplace_back([&w] { w->Run(); });

  CpuSample start_sample;
  bool sampled = false;
  const Clock::time_point end = WaitForWindow(o, s, start, progress, &start_sample, &sampled);
  const CpuSample end_sample = TakeSample(o);
  s.stop = true;
  for (auto& t : threads) t.join();
  if (progress) std::fprintf(stderr, "\n");

  Results r;
  MergeWorkerResults(workers, &r);
  Clock::time_point window_end = std::min(end, s.measure_end);
  if (o.requests > 0 && s.done.load() >= o.requests) {
    window_end = Clock::time_point(std::chrono::nanoseconds(s.last_done_ns.load()));
  }
  r.measured_s = std::max(0.0, std::chrono::duration<double>(window_end - s.measure_start).count());
  if (sampled) SetCosts(start_sample, end_sample, &r);
  return r;
}

}  // namespace ktls::loadgen
