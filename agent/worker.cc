#include "agent/worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/log.h"

namespace ktls::agent {

class Worker::ListenSocket final : public EventHandler {
 public:
  ListenSocket(Worker* w, std::string name, UniqueFd fd)
      : worker(w), name(std::move(name)), fd(std::move(fd)) {}
  void OnEvents(uint32_t) override { worker->OnAcceptable(this); }
  Worker* worker;
  std::string name;
  UniqueFd fd;
};

Worker::Worker(SysCalls& sys, WorkerOptions options, DataPlaneContext ctx_template)
    : sys_(sys),
      options_(options),
      ctx_(std::make_unique<DataPlaneContext>(std::move(ctx_template))) {}

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(
    SysCalls& sys, WorkerOptions options, std::vector<std::pair<std::string, UniqueFd>> listen_fds,
    const TlsContext& tls, CertStore& certs, AgentStats& stats, HandoffBroker& broker,
    OffloadPolicy policy, size_t relay_buffer_bytes, std::atomic<uint64_t>& next_id) {
  auto loop = EventLoop::Create(sys);
  if (!loop.ok()) return loop.status();
  EventLoop& l = **loop;
  DataPlaneContext ctx{sys,          l,       tls,     certs,
                       stats,        broker,  policy,  relay_buffer_bytes,
                       next_id,      nullptr, nullptr, options.activity,
                       options.index};
  std::unique_ptr<Worker> w(new Worker(sys, options, ctx));
  w->loop_ = std::move(*loop);
  Worker* raw = w.get();
  w->ctx_->on_finished = [raw](EventHandler* h) { raw->OnFinished(h); };
  w->ctx_->adopt = [raw](std::unique_ptr<EventHandler> h) {
    EventHandler* key = h.get();
    raw->live_[key] = std::move(h);
  };
  for (auto& listen_fd : listen_fds) {
    auto ls = std::make_unique<ListenSocket>(raw, std::move(listen_fd.first),
                                             std::move(listen_fd.second));
    absl::Status s = w->loop_->Add(ls->fd.get(), EPOLLIN, ls.get());
    if (!s.ok()) return s;
    w->listeners_.push_back(std::move(ls));
  }
  w->loop_->SetTicker(absl::Milliseconds(100), [raw](absl::Time now) { raw->OnTick(now); });
  return w;
}

Worker::~Worker() {
  Stop();
  handshakes_.clear();
  live_.clear();
}

void Worker::Start() {
  UpdateAccepting();
  thread_ = std::thread([this] { loop_->Run(); });
}

void Worker::Stop() {
  if (thread_.joinable()) {
    loop_->Stop();
    thread_.join();
  }
}

void Worker::Wake() {
  loop_->Post([this] { UpdateAccepting(); });
}

bool Worker::CanAccept() const {
  return ctx_->broker.HasCapacity() && handshakes_.size() < options_.max_handshakes &&
         live_.size() < options_.max_connections && absl::Now() >= backoff_until_;
}

void Worker::UpdateAccepting() {
  const bool want = CanAccept();
  if (want == accepting_) return;
  accepting_ = want;
  for (auto& ls : listeners_) loop_->Modify(ls->fd.get(), want ? EPOLLIN : 0, ls.get());
}

void Worker::OnAcceptable(ListenSocket* ls) {
  for (int i = 0; i < 64; ++i) {
    if (!CanAccept()) {
      UpdateAccepting();
      return;
    }
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    SysResult r = sys_.Accept4(ls->fd.get(), reinterpret_cast<sockaddr*>(&peer), &len,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!r.ok()) {
      switch (r.err) {
        case EAGAIN:
        case EINTR:
        case ECONNABORTED:
          if (r.err == EAGAIN) return;
          continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
          // Out of descriptors or memory: the pending connection stays in the backlog. Pause
          // instead of spinning on a listener that stays readable.
          Inc(ctx_->stats.accept_pauses);
          LogWarningOncePerKey(
              absl::StrCat("accept-", r.err),
              absl::StrCat("accept on ", ls->name, ": ", strerror(r.err), "; pausing accepts for ",
                           absl::FormatDuration(options_.accept_backoff)));
          backoff_until_ = absl::Now() + options_.accept_backoff;
          UpdateAccepting();
          return;
        default:
          Inc(ctx_->stats.accept_errors);
          LogWarningOncePerKey(absl::StrCat("accept-", r.err),
                               absl::StrCat("accept on ", ls->name, ": ", strerror(r.err)));
          return;
      }
    }
    Inc(ctx_->stats.connections_accepted);
    UniqueFd fd(sys_, static_cast<int>(r.rc));
    int one = 1;
    sys_.SetSockOpt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto conn = std::make_unique<Connection>(*ctx_, std::move(fd), ls->name, peer,
                                             absl::Now() + options_.handshake_timeout);
    absl::Status s = conn->Start();
    if (!s.ok()) {
      LogWarningOncePerKey(absl::StrCat("conn-start-", s.message()),
                           absl::StrCat("cannot start connection: ", s.message()));
      continue;
    }
    Connection* raw = conn.get();
    raw->deadline_pos = handshakes_.insert(handshakes_.end(), raw);
    live_[raw] = std::move(conn);
  }
}

void Worker::OnFinished(EventHandler* h) {
  auto it = live_.find(h);
  if (it == live_.end()) return;
  if (auto* c = dynamic_cast<Connection*>(h)) handshakes_.erase(c->deadline_pos);
  loop_->DeferDelete(std::move(it->second));
  live_.erase(it);
  UpdateAccepting();
}

void Worker::OnTick(absl::Time now) {
  // Deadlines are all "start + the same timeout", so the list is in deadline order.
  while (!handshakes_.empty() && handshakes_.front()->deadline() <= now) {
    handshakes_.front()->OnDeadline();  // erases itself from the list through OnFinished
  }
  UpdateAccepting();
}

}  // namespace ktls::agent
