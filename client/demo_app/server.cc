// Event loop of one ktls-demo-app worker.
//
// Threading: one thread and one epoll instance per worker process; no locks. Event sources: a
// signalfd (SIGTERM/SIGINT), the agent subscription socket (level-triggered) and one socket per
// connection (edge-triggered).
//
// Connection lifetime (ConnState, one driver: Drive()):
//   kActive    read requests (the handoff's pending bytes first, then ktls_recv), answer them in
//              order (pipelining), write as the socket allows. Ends when a response says
//              Connection: close, the request is refused, the peer ends its stream, or the
//              connection is idle for --idle_timeout_ms, always after the queued output is sent.
//   kClosing   ktls_close_notify (close_notify alert on kTLS, shutdown(SHUT_WR) on a relay);
//              retried on EPOLLOUT if the send buffer is full.
//   kLingering read and discard until the peer closes or kLingerTime passes, so that request bytes
//              we never read do not make the kernel reset the connection before the client has
//              read our last response (nginx's lingering close).
//   kClosed    removed from epoll and closed at once; freed at the end of the loop iteration,
//              because events later in the same epoll batch may still point at it.
// Edge-triggered epoll means each wakeup drives a connection until it is blocked or idle;
// read_blocked / write_blocked remember which edge it waits for.
// Backpressure: no request is parsed (and nothing more read) while more than kMaxQueuedOutput
// bytes of responses are queued or a streamed body (/bytes, /static) is being sent.
//
// Local listeners (--tls_listen / --plain_listen, see local_tls.h): accepted connections enter the
// same loop; a --tls_listen connection carries a LocalTlsSession that every read, write and
// close_notify goes through (sendfile falls back to pread + SSL_write), and since OpenSSL may want
// the other direction, any event on it clears both read_blocked and write_blocked.
//
// Subscription: a handed connection does not depend on the subscription that delivered it. When
// the agent goes away, live connections keep being served and the worker resubscribes every
// 200 ms (a new subscription starts again with --credits). Credits are topped back up to --credits
// after every batch of handoffs, i.e. one credit per connection taken (or refused as malformed).
#include "server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file_name.h"
#include "base/json.h"
#include "client/lib/app.h"
#include "client/lib/io.h"
#include "http.h"
#include "ktls/ktls_client.h"
#include "local_tls.h"

namespace ktls::demo {
namespace {

using Clock = std::chrono::steady_clock;
using client::AgentSubscription;
using client::HandedConnection;
using client::UniqueFd;

constexpr auto kResubscribeInterval = std::chrono::milliseconds(200);
constexpr auto kSubscribeTimeout = absl::Seconds(1);
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr auto kDrainTime = std::chrono::seconds(2);
constexpr auto kSweepInterval = std::chrono::milliseconds(100);
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kMaxQueuedOutput = 1024 * 1024;
constexpr uint64_t kMaxBytesRoute = uint64_t{1} << 30;
constexpr size_t kPatternChunk = 64 * 1024;
constexpr size_t kSendfileChunk = 1024 * 1024;
constexpr int kMaxIov = 64;

// epoll tags for the two non-connection sources; connections use their address.
constexpr uint64_t kSignalTag = 1;
constexpr uint64_t kSubscriptionTag = 2;
constexpr uint64_t kTlsListenTag = 3;
constexpr uint64_t kPlainListenTag = 4;

// Bytes of GET /bytes/N: byte i is 'a' + i % 26. Writes start at offset i % 26 of this buffer.
struct Pattern {
  char bytes[kPatternChunk + 26];
  Pattern() {
    for (size_t i = 0; i < sizeof(bytes); ++i) bytes[i] = static_cast<char>('a' + i % 26);
  }
};
const Pattern& PatternBytes() {
  static const Pattern* p = new Pattern;
  return *p;
}

enum class ConnState { kActive, kClosing, kLingering, kClosed };

struct OutChunk {
  enum class Kind { kBytes, kPattern, kFile };
  Kind kind = Kind::kBytes;
  std::string bytes;  // kBytes
  size_t offset = 0;
  uint64_t pos = 0;  // kPattern: bytes [pos, end) of the pattern
  uint64_t end = 0;
  UniqueFd file;  // kFile
  off_t file_offset = 0;
  uint64_t file_left = 0;
};

struct Connection {
  HandedConnection handed;
  ConnState state = ConnState::kActive;
  std::string in;                 // received, not yet answered
  size_t need = kMaxHeaderBytes;  // bytes `in` must reach for the next request
  std::deque<OutChunk> out;
  size_t out_bytes = 0;    // bytes queued in kBytes chunks
  bool streaming = false;  // a kPattern/kFile chunk is queued
  bool read_eof = false;
  bool read_blocked = false;
  bool write_blocked = false;
  bool close_after_output = false;
  bool continue_sent = false;
  Clock::time_point last_activity;
  Clock::time_point linger_deadline;
  uint64_t requests = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  std::string close_reason;
  std::unique_ptr<LocalTlsSession> tls;  // --tls_listen connections only

  int fd() const { return handed.fd.get(); }
};

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

const char* DataPathName(v1::DataPath p) {
  switch (p) {
    case v1::DATA_PATH_KTLS:
      return "ktls";
    case v1::DATA_PATH_RELAY:
      return "relay";
    default:
      return "unspecified";
  }
}

const char* ContentTypeFor(std::string_view name) {
  if (EndsWith(name, ".html") || EndsWith(name, ".htm")) return "text/html";
  if (EndsWith(name, ".txt")) return "text/plain";
  if (EndsWith(name, ".json")) return "application/json";
  if (EndsWith(name, ".css")) return "text/css";
  if (EndsWith(name, ".js")) return "text/javascript";
  return "application/octet-stream";
}

bool ParseByteCount(std::string_view s, uint64_t* n) {
  if (s.empty() || s.size() > 10) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *n = v;
  return true;
}

class Worker {
 public:
  Worker(const Options& options, int index, int static_dir_fd, std::function<void()> on_ready)
      : options_(options),
        index_(index),
        static_dir_fd_(static_dir_fd),
        on_ready_(std::move(on_ready)),
        read_buf_(kReadChunk) {}

  int Run();

 private:
  template <typename... Args>
  void Log(const Args&... args) {
    std::string line = absl::StrCat("demo-app[", index_, "]: ", args..., "\n");
    std::fwrite(line.data(), 1, line.size(), stderr);
  }

  bool Init();
  void OnSignal();
  void TrySubscribe();
  void DropSubscription(const std::string& why);
  void OnSubscriptionReadable();
  void Take(HandedConnection handed, std::unique_ptr<LocalTlsSession> tls = nullptr);
  void AcceptLocal(int listen_fd, bool tls);
  bool Subscribing() const { return !options_.agent_socket.empty(); }

  // The connection's I/O: the descriptor's syscalls, or its in-process TLS session.
  ssize_t ConnRead(Connection* c, void* buf, size_t len, ktls_record_info* info);
  ssize_t ConnWrite(Connection* c, const void* buf, size_t len);
  ssize_t ConnWritev(Connection* c, const iovec* iov, int count);
  ssize_t ConnSendfile(Connection* c, int file_fd, off_t* offset, size_t len);
  int ConnCloseNotify(Connection* c);

  void Drive(Connection* c);
  bool Flush(Connection* c);  // false: the connection was closed
  // Flush()'s writers, one per chunk kind: the write's result, errno in *err.
  ssize_t FlushBytes(Connection* c, int* err);
  ssize_t FlushPattern(Connection* c, int* err);
  ssize_t FlushFile(Connection* c, int* err, bool* shrank);
  int ReadSome(Connection* c);  // -1 closed, 0 nothing, 1 progress
  bool HandleRequests(Connection* c);
  void Respond(Connection* c, const Request& req, std::string_view body);
  void Reply(Connection* c, const Request& req, int status, std::string_view content_type,
             const std::string& body, std::string_view extra = {});
  void QueueBytes(Connection* c, std::string bytes);
  bool OutputRoomy(const Connection* c) const {
    return c->out_bytes < kMaxQueuedOutput && !c->streaming;
  }
  void SendCloseNotify(Connection* c);
  void Linger(Connection* c);
  void Destroy(Connection* c, std::string_view reason);
  void Sweep();
  void StartDrain();
  std::string ConnInfoJson(const Connection* c) const;

  const Options& options_;
  const int index_;
  const int static_dir_fd_;
  std::function<void()> on_ready_;
  std::vector<char> read_buf_;

  UniqueFd epoll_;
  UniqueFd signal_fd_;
  std::unique_ptr<AgentSubscription> sub_;
  bool ever_subscribed_ = false;
  std::string last_subscribe_error_;
  Clock::time_point next_subscribe_;
  Clock::time_point next_sweep_;
  Clock::time_point now_ = Clock::now();
  bool draining_ = false;
  Clock::time_point drain_deadline_;

  uint64_t local_accepted_ = 0;
  bool accept_error_logged_ = false;
  // Successful reads of request bytes and their total, all connections (/conninfo reports them:
  // the benchmarks' bytes-per-recv figure).
  uint64_t reads_ = 0;
  uint64_t read_bytes_ = 0;

  std::unordered_map<Connection*, std::unique_ptr<Connection>> conns_;
  std::vector<std::unique_ptr<Connection>> graveyard_;  // freed at the end of each iteration
};

bool Worker::Init() {
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) {
    Log("epoll_create1: ", std::strerror(errno));
    return false;
  }
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  signal_fd_.reset(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_) {
    Log("signalfd: ", std::strerror(errno));
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kSignalTag;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, signal_fd_.get(), &ev) != 0) {
    Log("epoll_ctl(signalfd): ", std::strerror(errno));
    return false;
  }
  for (const auto& [fd, tag] : {std::pair{options_.tls_listen_fd, kTlsListenTag},
                                std::pair{options_.plain_listen_fd, kPlainListenTag}}) {
    if (fd < 0) continue;
    epoll_event lev{};
    lev.events = EPOLLIN | EPOLLEXCLUSIVE;  // the workers share the socket: wake one of them
    lev.data.u64 = tag;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &lev) != 0) {
      Log("epoll_ctl(listener): ", std::strerror(errno));
      return false;
    }
  }
  return true;
}

int Worker::Run() {
  if (!Init()) return 1;
  if (Subscribing()) {
    TrySubscribe();
  } else if (on_ready_) {
    on_ready_();  // local listeners only: serving as of now
  }
  epoll_event events[128];
  for (;;) {
    now_ = Clock::now();
    if (draining_ && (conns_.empty() || now_ >= drain_deadline_)) break;

    // Wake up for the next resubscribe attempt, timeout sweep or drain deadline.
    auto wake = now_ + std::chrono::seconds(1);
    if (!sub_ && !draining_ && Subscribing()) wake = std::min(wake, next_subscribe_);
    if (!conns_.empty()) wake = std::min(wake, next_sweep_);
    if (draining_) wake = std::min(wake, drain_deadline_);
    const int timeout_ms = static_cast<int>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(wake - now_).count() + 1));

    const int n = ::epoll_wait(epoll_.get(), events, 128, timeout_ms);
    if (n < 0 && errno != EINTR) {
      Log("epoll_wait: ", std::strerror(errno));
      return 1;
    }
    now_ = Clock::now();
    for (int i = 0; i < n; ++i) {
      const epoll_event& ev = events[i];
      if (ev.data.u64 == kSignalTag) {
        OnSignal();
      } else if (ev.data.u64 == kSubscriptionTag) {
        if (sub_) OnSubscriptionReadable();
      } else if (ev.data.u64 == kTlsListenTag || ev.data.u64 == kPlainListenTag) {
        if (!draining_) {
          AcceptLocal(
              ev.data.u64 == kTlsListenTag ? options_.tls_listen_fd : options_.plain_listen_fd,
              ev.data.u64 == kTlsListenTag);
        }
      } else {
        auto* c = static_cast<Connection*>(ev.data.ptr);
        if (c->state == ConnState::kClosed) continue;
        if (ev.events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->read_blocked = false;
        if (ev.events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->write_blocked = false;
        if (c->tls) c->read_blocked = c->write_blocked = false;  // OpenSSL may want either
        Drive(c);
      }
    }
    if (!sub_ && !draining_ && Subscribing() && now_ >= next_subscribe_) TrySubscribe();
    if (now_ >= next_sweep_) Sweep();
    graveyard_.clear();
  }
  for (auto& [ptr, c] : conns_)
    Log("shutdown: closing connection ", c->handed.info.connection_id(),
        " with a request in progress");
  conns_.clear();
  return 0;
}

void Worker::OnSignal() {
  signalfd_siginfo si;
  while (::read(signal_fd_.get(), &si, sizeof(si)) == sizeof(si)) {
    if (!draining_) {
      Log("signal ", si.ssi_signo, ": finishing ", conns_.size(), " connections and exiting");
      StartDrain();
    }
  }
}

void Worker::StartDrain() {
  draining_ = true;
  drain_deadline_ = now_ + kDrainTime;
  if (sub_) {
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, sub_->fd(), nullptr);
    sub_.reset();  // the agent stops handing us connections
  }
  for (int fd : {options_.tls_listen_fd, options_.plain_listen_fd}) {
    if (fd >= 0) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  }
  std::vector<Connection*> all;
  for (auto& [ptr, c] : conns_) all.push_back(ptr);
  for (Connection* c : all) {
    if (c->state != ConnState::kActive) continue;
    c->close_after_output = true;
    if (c->close_reason.empty()) c->close_reason = "shutdown";
    Drive(c);
  }
}

void Worker::TrySubscribe() {
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s = AgentSubscription::Connect(
      options_.agent_socket, options_.app_name, options_.credits, kSubscribeTimeout);
  now_ = Clock::now();
  if (!s.ok()) {
    std::string error(s.status().ToString());
    if (error != last_subscribe_error_) {
      Log("cannot subscribe to the agent: ", error, "; retrying every ",
          kResubscribeInterval.count(), " ms");
      last_subscribe_error_ = std::move(error);
    }
    next_subscribe_ = now_ + kResubscribeInterval;
    return;
  }
  sub_ = std::move(*s);
  sub_->SetNonBlocking(true);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kSubscriptionTag;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, sub_->fd(), &ev) != 0) {
    Log("epoll_ctl(subscription): ", std::strerror(errno));
    sub_.reset();
    next_subscribe_ = now_ + kResubscribeInterval;
    return;
  }
  last_subscribe_error_.clear();
  if (!ever_subscribed_) {
    ever_subscribed_ = true;
    if (on_ready_) on_ready_();
  } else {
    std::printf("demo-app: resubscribed to %s as %s\n", options_.agent_socket.c_str(),
                options_.app_name.c_str());
    std::fflush(stdout);
  }
}

void Worker::DropSubscription(const std::string& why) {
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, sub_->fd(), nullptr);
  sub_.reset();
  Log("lost the agent subscription (", why, "); keeping ", conns_.size(),
      " live connections, resubscribing every ", kResubscribeInterval.count(), " ms");
  next_subscribe_ = now_ + kResubscribeInterval;
}

void Worker::OnSubscriptionReadable() {
  for (int i = 0; i < 256 && sub_; ++i) {
    absl::StatusOr<std::optional<HandedConnection>> got = sub_->Receive();
    if (!got.ok()) {
      if (got.status().code() == absl::StatusCode::kUnavailable) {
        DropSubscription(std::string(got.status().message()));
        return;
      }
      Log("refused a message from the agent: ", got.status().ToString());
      continue;
    }
    if (!got->has_value()) break;
    Take(std::move(**got));
  }
  if (!sub_) return;
  // Top the credits back up: one per handoff received in this batch, taken or refused.
  uint64_t target = options_.credits;
  const uint32_t max = sub_->subscribed().max_outstanding_credits();
  if (max != 0) target = std::min<uint64_t>(target, max);
  if (sub_->outstanding_credits() < target) {
    absl::Status s =
        sub_->GrantCredits(static_cast<uint32_t>(target - sub_->outstanding_credits()));
    if (!s.ok()) {
      if (s.code() == absl::StatusCode::kUnavailable) {
        DropSubscription(std::string(s.message()));
      } else {
        Log("granting credits: ", s.ToString());
      }
    }
  }
}

void Worker::AcceptLocal(int listen_fd, bool tls) {
  for (int i = 0; i < 64; ++i) {
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &len,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK && !accept_error_logged_) {
        Log("accept: ", std::strerror(errno), " (logged once)");
        accept_error_logged_ = true;
      }
      return;
    }
    HandedConnection handed;
    handed.fd.reset(fd);
    handed.info.set_connection_id(++local_accepted_);
    handed.info.set_listener(tls ? "local-tls" : "local-plain");
    std::unique_ptr<LocalTlsSession> session;
    if (tls) {
      session = LocalTlsSession::Create(fd);
      if (!session) {
        Log("connection ", local_accepted_, ": cannot start TLS: ", std::strerror(errno));
        continue;  // `handed` closes the socket
      }
    }
    Take(std::move(handed), std::move(session));
  }
}

ssize_t Worker::ConnRead(Connection* c, void* buf, size_t len, ktls_record_info* info) {
  if (!c->tls) return c->handed.Read(buf, len, 0, info);
  if (info != nullptr) *info = ktls_record_info{};
  return c->tls->Read(buf, len);
}

ssize_t Worker::ConnWrite(Connection* c, const void* buf, size_t len) {
  return c->tls ? c->tls->Write(buf, len) : ::write(c->fd(), buf, len);
}

ssize_t Worker::ConnWritev(Connection* c, const iovec* iov, int count) {
  return c->tls ? c->tls->Writev(iov, count) : ::writev(c->fd(), iov, count);
}

ssize_t Worker::ConnSendfile(Connection* c, int file_fd, off_t* offset, size_t len) {
  if (c->tls) {
    errno = EINVAL;  // no kTLS here: the caller copies through userspace (pread + SSL_write)
    return -1;
  }
  return ::sendfile(c->fd(), file_fd, offset, len);
}

int Worker::ConnCloseNotify(Connection* c) {
  return c->tls ? c->tls->CloseNotify() : ktls_close_notify(c->fd());
}

void Worker::Take(HandedConnection handed, std::unique_ptr<LocalTlsSession> tls) {
  const int fd = handed.fd.get();
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    Log("connection ", handed.info.connection_id(), ": O_NONBLOCK: ", std::strerror(errno));
    return;
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // fails on a relay pair: fine
  auto conn = std::make_unique<Connection>();
  Connection* c = conn.get();
  c->handed = std::move(handed);
  c->tls = std::move(tls);
  c->last_activity = now_;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = c;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    Log("connection ", c->handed.info.connection_id(), ": epoll_ctl: ", std::strerror(errno));
    return;
  }
  conns_.emplace(c, std::move(conn));
  // The handoff's pending bytes are not visible to epoll: serve them now.
  Drive(c);
}

void Worker::Drive(Connection* c) {
  for (;;) {
    switch (c->state) {
      case ConnState::kClosed:
        return;
      case ConnState::kLingering:
        Linger(c);
        return;
      case ConnState::kClosing:
        if (c->write_blocked) return;
        SendCloseNotify(c);
        if (c->state == ConnState::kClosing) return;  // EAGAIN: wait for EPOLLOUT
        continue;
      case ConnState::kActive:
        break;
    }
    bool progress = false;
    if (!c->out.empty() && !c->write_blocked) {
      const uint64_t before = c->bytes_out;
      if (!Flush(c)) return;
      progress |= c->bytes_out != before;
    }
    progress |= HandleRequests(c);
    if (!c->read_eof && !c->read_blocked && !c->close_after_output && OutputRoomy(c) &&
        c->in.size() < std::max(c->need, kReadChunk)) {
      const int r = ReadSome(c);
      if (r < 0) return;
      progress |= r > 0;
    }
    // Output drained and nothing more will be answered: HandleRequests just ran with room, so
    // whatever is left in `in` is an incomplete request.
    if (c->out.empty() && (c->close_after_output || c->read_eof)) {
      if (c->close_reason.empty()) {
        c->close_reason = c->close_after_output ? "done"
                          : c->in.empty()       ? "peer closed"
                                                : "peer closed mid-request";
      }
      c->state = ConnState::kClosing;
      continue;
    }
    if (!progress) return;
  }
}

// Consecutive byte chunks go out in one writev.
ssize_t Worker::FlushBytes(Connection* c, int* err) {
  iovec iov[kMaxIov];
  int count = 0;
  for (auto it = c->out.begin();
       it != c->out.end() && it->kind == OutChunk::Kind::kBytes && count < kMaxIov; ++it) {
    iov[count++] = {it->bytes.data() + it->offset, it->bytes.size() - it->offset};
  }
  const ssize_t n = ConnWritev(c, iov, count);
  *err = errno;
  if (n > 0) {
    size_t left = n;
    c->out_bytes -= left;
    while (left > 0) {
      OutChunk& f = c->out.front();
      const size_t take = std::min(left, f.bytes.size() - f.offset);
      f.offset += take;
      left -= take;
      if (f.offset == f.bytes.size()) c->out.pop_front();
    }
  }
  return n;
}

ssize_t Worker::FlushPattern(Connection* c, int* err) {
  OutChunk& front = c->out.front();
  const size_t len = static_cast<size_t>(std::min<uint64_t>(front.end - front.pos, kPatternChunk));
  const ssize_t n = ConnWrite(c, PatternBytes().bytes + front.pos % 26, len);
  *err = errno;
  if (n > 0) {
    front.pos += n;
    if (front.pos == front.end) c->out.pop_front();
  }
  return n;
}

// sendfile, or a copy through userspace where the descriptor takes none. *shrank: the file
// ended before the bytes its size promised.
ssize_t Worker::FlushFile(Connection* c, int* err, bool* shrank) {
  OutChunk& front = c->out.front();
  const size_t len = static_cast<size_t>(std::min<uint64_t>(front.file_left, kSendfileChunk));
  ssize_t n = ConnSendfile(c, front.file.get(), &front.file_offset, len);
  *err = errno;
  if (n < 0 && (*err == EINVAL || *err == ENOSYS)) {
    const ssize_t got = ::pread(front.file.get(), read_buf_.data(), std::min(len, read_buf_.size()),
                                front.file_offset);
    if (got <= 0) {
      n = -1;
      *err = got == 0 ? ENODATA : errno;
    } else {
      n = ConnWrite(c, read_buf_.data(), got);
      *err = errno;
      if (n > 0) front.file_offset += n;
    }
  }
  *shrank = n == 0 && len > 0;
  if (n > 0) {
    front.file_left -= n;
    if (front.file_left == 0) c->out.pop_front();
  }
  return n;
}

bool Worker::Flush(Connection* c) {
  while (!c->out.empty()) {
    ssize_t n = 0;
    int err = 0;
    switch (c->out.front().kind) {
      case OutChunk::Kind::kBytes:
        n = FlushBytes(c, &err);
        break;
      case OutChunk::Kind::kPattern:
        n = FlushPattern(c, &err);
        break;
      case OutChunk::Kind::kFile: {
        bool shrank = false;
        n = FlushFile(c, &err, &shrank);
        if (shrank) {
          Destroy(c, "static file shrank while being sent");
          return false;
        }
        break;
      }
    }
    if (n < 0) {
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        c->write_blocked = true;
        return true;
      }
      Destroy(c, absl::StrCat("write: ", std::strerror(err)));
      return false;
    }
    c->bytes_out += n;
    c->last_activity = now_;
  }
  c->streaming = false;
  return true;
}

int Worker::ReadSome(Connection* c) {
  ktls_record_info info;
  const ssize_t n = ConnRead(c, read_buf_.data(), read_buf_.size(), &info);
  if (n > 0) {
    ++reads_;
    read_bytes_ += n;
    c->in.append(read_buf_.data(), n);
    c->bytes_in += n;
    c->last_activity = now_;
    return 1;
  }
  if (n == 0) {
    c->read_eof = true;
    return 1;
  }
  const int err = errno;
  if (err == EAGAIN || err == EWOULDBLOCK) {
    c->read_blocked = true;
    return 0;
  }
  if (err == EINTR) return 1;
  std::string reason = absl::StrCat("read: ", std::strerror(err));
  if (info.error != nullptr) absl::StrAppend(&reason, " (", info.error, ")");
  if (info.alert_name != nullptr) absl::StrAppend(&reason, " alert=", info.alert_name);
  // TLS-level failures are worth an operator's attention; resets are everyday.
  if (info.error != nullptr) {
    Log("connection ", c->handed.info.connection_id(), ": ", reason);
  }
  Destroy(c, reason);
  return -1;
}

bool Worker::HandleRequests(Connection* c) {
  bool progress = false;
  while (c->state == ConnState::kActive && !c->close_after_output && OutputRoomy(c) &&
         !c->in.empty()) {
    ParseResult pr = ParseRequestHead(c->in);
    if (pr.status == ParseStatus::kIncomplete) {
      c->need = kMaxHeaderBytes;
      break;
    }
    if (pr.status == ParseStatus::kError) {
      QueueBytes(c, ResponseHead(pr.error_status, "text/plain", pr.error_text.size(), false) +
                        pr.error_text);
      c->close_after_output = true;
      c->close_reason = absl::StrCat("refused request: ", pr.error_status);
      c->in.clear();
      progress = true;
      break;
    }
    const Request& req = pr.request;
    const uint64_t total = req.head_bytes + req.content_length;
    if (c->in.size() < total) {
      c->need = static_cast<size_t>(total);
      if (req.expect_continue && !c->continue_sent) {
        QueueBytes(c, "HTTP/1.1 100 Continue\r\n\r\n");
        c->continue_sent = true;
        progress = true;
      }
      break;
    }
    Respond(c, req, std::string_view(c->in).substr(req.head_bytes, req.content_length));
    c->in.erase(0, total);
    c->need = kMaxHeaderBytes;
    c->continue_sent = false;
    ++c->requests;
    if (!req.keep_alive) c->close_after_output = true;
    progress = true;
  }
  return progress;
}

void Worker::QueueBytes(Connection* c, std::string bytes) {
  if (bytes.empty()) return;
  c->out_bytes += bytes.size();
  OutChunk chunk;
  chunk.bytes = std::move(bytes);
  c->out.push_back(std::move(chunk));
}

void Worker::Reply(Connection* c, const Request& req, int status, std::string_view content_type,
                   const std::string& body, std::string_view extra) {
  std::string head = ResponseHead(status, content_type, body.size(), req.keep_alive, extra);
  if (req.method == "HEAD") {
    QueueBytes(c, std::move(head));
  } else {
    QueueBytes(c, std::move(head) + body);
  }
}

void Worker::Respond(Connection* c, const Request& req, std::string_view body) {
  const bool get = req.method == "GET" || req.method == "HEAD";
  const std::string& path = req.path;
  const char* kGetOnly = "Allow: GET, HEAD\r\n";

  if (path == "/healthz") {
    if (!get) return Reply(c, req, 405, "text/plain", "method not allowed\n", kGetOnly);
    return Reply(c, req, 200, "text/plain", "ok\n");
  }
  if (path == "/conninfo") {
    if (!get) return Reply(c, req, 405, "text/plain", "method not allowed\n", kGetOnly);
    return Reply(c, req, 200, "application/json", ConnInfoJson(c));
  }
  if (path == "/echo") {
    if (req.method != "POST") {
      return Reply(c, req, 405, "text/plain", "method not allowed\n", "Allow: POST\r\n");
    }
    return Reply(c, req, 200, "application/octet-stream", std::string(body));
  }
  if (path == "/discard") {  // upload benchmarks: the body is read and dropped
    if (req.method != "POST") {
      return Reply(c, req, 405, "text/plain", "method not allowed\n", "Allow: POST\r\n");
    }
    return Reply(c, req, 200, "text/plain", absl::StrCat(body.size(), "\n"));
  }
  if (StartsWith(path, "/bytes/")) {
    if (!get) return Reply(c, req, 405, "text/plain", "method not allowed\n", kGetOnly);
    uint64_t n = 0;
    if (!ParseByteCount(std::string_view(path).substr(7), &n) || n > kMaxBytesRoute) {
      return Reply(c, req, 400, "text/plain",
                   absl::StrCat("/bytes/N: N must be a number from 0 to ", kMaxBytesRoute, "\n"));
    }
    QueueBytes(c, ResponseHead(200, "application/octet-stream", n, req.keep_alive));
    if (req.method != "HEAD" && n > 0) {
      OutChunk chunk;
      chunk.kind = OutChunk::Kind::kPattern;
      chunk.pos = 0;
      chunk.end = n;
      c->out.push_back(std::move(chunk));
      c->streaming = true;
    }
    return;
  }
  if (StartsWith(path, "/static/")) {
    if (!get) return Reply(c, req, 405, "text/plain", "method not allowed\n", kGetOnly);
    std::string_view name = std::string_view(path).substr(8);
    if (static_dir_fd_ < 0 || !base::IsSafeFileName(absl::string_view(name.data(), name.size()))) {
      return Reply(c, req, 404, "text/plain", "not found\n");
    }
    UniqueFd file(::openat(static_dir_fd_, std::string(name).c_str(),
                           O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY));
    struct stat st;
    if (!file || ::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return Reply(c, req, 404, "text/plain", "not found\n");
    }
    QueueBytes(c, ResponseHead(200, ContentTypeFor(name), st.st_size, req.keep_alive));
    if (req.method != "HEAD" && st.st_size > 0) {
      OutChunk chunk;
      chunk.kind = OutChunk::Kind::kFile;
      chunk.file = std::move(file);
      chunk.file_offset = 0;
      chunk.file_left = st.st_size;
      c->out.push_back(std::move(chunk));
      c->streaming = true;
    }
    return;
  }
  return Reply(c, req, 404, "text/plain", "not found\n");
}

void AddList(base::JsonWriter& w, absl::string_view key,
             const google::protobuf::RepeatedPtrField<std::string>& v) {
  w.Key(key).BeginArray();
  for (const std::string& s : v) w.String(s);
  w.EndArray();
}

std::string Worker::ConnInfoJson(const Connection* c) const {
  const v1::ConnectionInfo& i = c->handed.info;
  bool kernel_tx = false;
  bool kernel_rx = false;
  ktls_fd_offload_state(c->fd(), &kernel_tx, &kernel_rx);
  base::JsonWriter w;
  w.BeginObject();
  w.Field("connection_id", i.connection_id());
  w.Field("listener", i.listener());
  w.Field("peer_address", i.peer().address());
  w.Field("peer_port", i.peer().port());
  w.Field("local_address", i.local().address());
  w.Field("local_port", i.local().port());
  w.Field("sni", i.sni());
  w.Field("alpn", i.alpn());
  w.Field("tls_version", i.tls_version());
  w.Field("tls_version_code", i.tls_version_code());
  w.Field("cipher", i.cipher());
  w.Field("data_path", DataPathName(i.data_path()));
  w.Field("ktls_tx", i.ktls_tx() == v1::OFFLOAD_STATE_ACTIVE);
  w.Field("ktls_rx", i.ktls_rx() == v1::OFFLOAD_STATE_ACTIVE);
  w.Field("fallback_reason", i.fallback_reason());
  w.Field("initial_data_bytes", c->handed.initial_data_bytes);
  w.Field("resumed", i.resumed());
  w.Field("handshake_micros", i.handshake_micros());
  w.Field("peer_cert_presented", i.peer_identity().presented());
  w.Field("peer_cert_verified", i.peer_identity().verified());
  w.Field("peer_subject", i.peer_identity().subject());
  w.Field("peer_issuer", i.peer_identity().issuer());
  AddList(w, "peer_dns_sans", i.peer_identity().dns_sans());
  AddList(w, "peer_uri_sans", i.peer_identity().uri_sans());
  w.Field("peer_sha256_fingerprint", i.peer_identity().sha256_fingerprint());
  w.Field("kernel_tx", kernel_tx);
  w.Field("kernel_rx", kernel_rx);
  w.Field("worker", index_);
  w.Field("pid", static_cast<uint64_t>(::getpid()));
  w.Field("requests_before", c->requests);
  w.Field("worker_reads", reads_);
  w.Field("worker_read_bytes", read_bytes_);
  w.EndObject();
  return w.Take() + "\n";
}

void Worker::SendCloseNotify(Connection* c) {
  if (ConnCloseNotify(c) == 0) {
    c->state = ConnState::kLingering;
    c->linger_deadline = now_ + kLingerTime;
    return;
  }
  const int err = errno;
  if (err == EAGAIN || err == EWOULDBLOCK) {
    c->write_blocked = true;  // stays kClosing; retried on EPOLLOUT
    return;
  }
  // ENOTCONN, EPIPE ...: the peer is already gone.
  Destroy(c, c->close_reason);
}

void Worker::Linger(Connection* c) {
  for (;;) {
    const ssize_t n = ConnRead(c, read_buf_.data(), read_buf_.size(), nullptr);
    if (n > 0) continue;  // discard
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      c->read_blocked = true;
      return;
    }
    if (n < 0 && errno == EINTR) continue;
    Destroy(c, c->close_reason);  // peer closed (or failed): done
    return;
  }
}

void Worker::Destroy(Connection* c, std::string_view reason) {
  if (c->state == ConnState::kClosed) return;
  if (options_.debug) {
    Log("connection ", c->handed.info.connection_id(),
        " path=", DataPathName(c->handed.info.data_path()), " requests=", c->requests,
        " in=", c->bytes_in, " out=", c->bytes_out, " closed: ", std::string(reason));
  }
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c->fd(), nullptr);
  c->handed.fd.reset();
  c->state = ConnState::kClosed;
  auto it = conns_.find(c);
  if (it != conns_.end()) {
    graveyard_.push_back(std::move(it->second));
    conns_.erase(it);
  }
}

void Worker::Sweep() {
  next_sweep_ = now_ + kSweepInterval;
  const auto idle = std::chrono::milliseconds(options_.idle_timeout_ms);
  std::vector<Connection*> expired;
  for (auto& [ptr, c] : conns_) {
    if (c->state == ConnState::kLingering ? now_ >= c->linger_deadline
                                          : now_ - c->last_activity >= idle) {
      expired.push_back(ptr);
    }
  }
  for (Connection* c : expired) {
    if (c->state == ConnState::kActive && c->out.empty()) {
      // Idle between requests (or stuck mid-request): end it cleanly.
      c->close_reason = c->in.empty() ? "idle timeout" : "idle timeout mid-request";
      c->state = ConnState::kClosing;
      c->write_blocked = false;
      Drive(c);
    } else {
      Destroy(c, c->state == ConnState::kLingering ? c->close_reason
                                                   : "idle timeout with unsent output");
    }
  }
}

}  // namespace

int RunWorker(const Options& options, int worker_index, int static_dir_fd,
              std::function<void()> on_first_subscribed) {
  Worker worker(options, worker_index, static_dir_fd, std::move(on_first_subscribed));
  return worker.Run();
}

}  // namespace ktls::demo
