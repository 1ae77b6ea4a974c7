#include "agent/event_loop.h"

#include <sys/eventfd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/log.h"

namespace ktls::agent {

// Drains the eventfd that Post() and Stop() write to.
class EventLoop::Waker final : public EventHandler {
 public:
  explicit Waker(EventLoop* loop) : loop_(loop) {}
  void OnEvents(uint32_t) override {
    uint64_t v;
    loop_->sys().Read(loop_->wake_fd_.get(), &v, sizeof(v));
  }

 private:
  EventLoop* loop_;
};

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create(SysCalls& sys) {
  std::unique_ptr<EventLoop> loop(new EventLoop(sys));
  SysResult ep = sys.EpollCreate1(EPOLL_CLOEXEC);
  if (!ep.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat("epoll_create1: ", strerror(ep.err)));
  }
  loop->epoll_fd_ = UniqueFd(sys, static_cast<int>(ep.rc));
  SysResult ev = sys.EventFd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!ev.ok()) return absl::ResourceExhaustedError(absl::StrCat("eventfd: ", strerror(ev.err)));
  loop->wake_fd_ = UniqueFd(sys, static_cast<int>(ev.rc));
  loop->waker_ = std::make_unique<Waker>(loop.get());
  absl::Status s = loop->Add(loop->wake_fd_.get(), EPOLLIN, loop->waker_.get());
  if (!s.ok()) return s;
  return loop;
}

EventLoop::~EventLoop() { deferred_.clear(); }

absl::Status EventLoop::Add(int fd, uint32_t events, EventHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  SysResult r = sys_.EpollCtl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev);
  if (!r.ok())
    return absl::InternalError(absl::StrCat("epoll_ctl ADD fd ", fd, ": ", strerror(r.err)));
  return absl::OkStatus();
}

absl::Status EventLoop::Modify(int fd, uint32_t events, EventHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  SysResult r = sys_.EpollCtl(epoll_fd_.get(), EPOLL_CTL_MOD, fd, &ev);
  if (!r.ok())
    return absl::InternalError(absl::StrCat("epoll_ctl MOD fd ", fd, ": ", strerror(r.err)));
  return absl::OkStatus();
}

void EventLoop::Remove(int fd) {
  epoll_event ev{};
  sys_.EpollCtl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, &ev);
}

void EventLoop::Post(std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    posted_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  sys_.Write(wake_fd_.get(), &one, sizeof(one));
}

void EventLoop::DeferDelete(std::unique_ptr<EventHandler> object) {
  deferred_.push_back(std::move(object));
}

void EventLoop::SetTicker(absl::Duration interval, std::function<void(absl::Time)> tick) {
  tick_interval_ = interval;
  tick_ = std::move(tick);
}

void EventLoop::Stop() {
  stop_.store(true, std::memory_order_release);
  uint64_t one = 1;
  sys_.Write(wake_fd_.get(), &one, sizeof(one));
}

void EventLoop::RunPosted() {
  std::vector<std::function<void()>> batch;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) fn();
}

void EventLoop::Run() {
  constexpr int kMaxEvents = 256;
  epoll_event events[kMaxEvents];
  while (!stopping()) {
    absl::Time now = absl::Now();
    int timeout_ms = -1;
    if (tick_) {
      if (now >= next_tick_) {
        tick_(now);
        next_tick_ = now + tick_interval_;
      }
      timeout_ms = static_cast<int>(absl::ToInt64Milliseconds(next_tick_ - now)) + 1;
    }
    SysResult r = sys_.EpollWait(epoll_fd_.get(), events, kMaxEvents, timeout_ms);
    if (!r.ok()) {
      if (r.err == EINTR) continue;
      KTLS_LOG(kError, "epoll_wait: ", strerror(r.err));
      continue;
    }
    for (int i = 0; i < r.rc; ++i) {
      static_cast<EventHandler*>(events[i].data.ptr)->OnEvents(events[i].events);
    }
    RunPosted();
    deferred_.clear();
  }
  RunPosted();
  deferred_.clear();
}

}  // namespace ktls::agent
