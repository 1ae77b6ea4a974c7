// One epoll loop per thread.
//
// Threading model: the agent runs N worker threads and one handoff-broker thread, each owning one
// EventLoop and every object registered with it. An object is touched only by its loop's thread;
// the only cross-thread entry point is Post(), which queues a closure under a mutex and wakes the
// loop through an eventfd. So connection state needs no locks.
//
// Lifetime rule (Envoy's deferred delete): a handler never deletes itself or another handler
// from inside OnEvents(). It calls Remove() (so no new events are delivered) and hands the
// object to DeferDelete(); the loop destroys it after the current batch of events, so a later
// event in the same batch never reaches freed memory.
#ifndef KTLS_AGENT_EVENT_LOOP_H_
#define KTLS_AGENT_EVENT_LOOP_H_

#include <sys/epoll.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/syscalls.h"
#include "agent/unique_fd.h"

namespace ktls::agent {

class EventHandler {
 public:
  virtual ~EventHandler() = default;
  // `events` is the epoll mask (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP).
  virtual void OnEvents(uint32_t events) = 0;
};

class EventLoop {
 public:
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create(SysCalls& sys);
  ~EventLoop();

  SysCalls& sys() { return sys_; }

  // Registration (loop thread only). Level-triggered.
  absl::Status Add(int fd, uint32_t events, EventHandler* handler);
  absl::Status Modify(int fd, uint32_t events, EventHandler* handler);
  void Remove(int fd);

  // Runs `fn` on the loop thread soon. Thread-safe.
  void Post(std::function<void()> fn);
  // Destroys `object` after the current batch of events (loop thread only).
  void DeferDelete(std::unique_ptr<EventHandler> object);
  // Called on the loop thread at least every `interval` (timeouts are swept here).
  void SetTicker(absl::Duration interval, std::function<void(absl::Time now)> tick);

  // Runs until Stop(); returns after the pending posted closures ran.
  void Run();
  void Stop();  // thread-safe
  bool stopping() const { return stop_.load(std::memory_order_acquire); }

 private:
  explicit EventLoop(SysCalls& sys) : sys_(sys) {}
  void RunPosted();

  class Waker;
  SysCalls& sys_;
  UniqueFd epoll_fd_;
  UniqueFd wake_fd_;
  std::unique_ptr<EventHandler> waker_;
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  std::vector<std::function<void()>> posted_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<EventHandler>> deferred_;
  absl::Duration tick_interval_ = absl::Milliseconds(100);
  std::function<void(absl::Time)> tick_;
  absl::Time next_tick_ = absl::InfinitePast();
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_EVENT_LOOP_H_
