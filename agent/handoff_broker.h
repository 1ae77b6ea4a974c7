// Hands ready connections to applications over a Unix SOCK_SEQPACKET socket.
//
// Runs on its own thread and EventLoop. Workers Submit() ready connections (the kTLS socket, or
// the app's end of a relay socketpair) with their metadata; the broker sends each to the
// subscribed app with the most unused credit (ties: fewest handed so far), one SCM_RIGHTS fd per
// message (proto/ktls/v1/handoff.proto). After a successful send it closes its copy of the fd
// without writing anything on the TLS connection. A failed send to a vanished app puts the
// connection back at the head of the queue for another app; nothing is lost.
//
// Backpressure: HasCapacity() is false when no app is subscribed or every credit is spoken for
// by queued connections; workers then stop accepting. A connection that waits longer than
// `wait_timeout` is closed cleanly (close_notify on kTLS sockets; closing the relay end makes
// the relay send it) and counted.
//
// App messages are untrusted input: malformed protobuf, unexpected fds (closed at once),
// truncated control data or an unknown message get a ProtocolError reply, a counter, and the
// subscription is dropped; other apps and queued connections are unaffected.
#ifndef KTLS_AGENT_HANDOFF_BROKER_H_
#define KTLS_AGENT_HANDOFF_BROKER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/activity.h"
#include "agent/event_loop.h"
#include "agent/stats.h"
#include "agent/unique_fd.h"
#include "ktls/v1/handoff.pb.h"

namespace ktls {

struct HandoffBrokerOptions {
  std::string socket_path;
  unsigned int socket_mode = 0660;
  absl::Duration wait_timeout = absl::Seconds(5);
  size_t max_pending = 1024;
  uint32_t max_outstanding_credits = 65536;
  std::string agent_version;
  ActivityLog* activity = nullptr;  // optional: every handoff outcome is recorded there
};

struct ReadyConnection {
  UniqueFd fd;          // the TCP socket (kTLS) or the app's end of the relay socketpair
  bool is_ktls = false;  // on expiry, a kTLS socket gets a close_notify record first
  v1::ConnectionInfo info;
  absl::Time ready_at;
};

class HandoffBroker {
 public:
  static absl::StatusOr<std::unique_ptr<HandoffBroker>> Create(SysCalls& sys,
                                                               HandoffBrokerOptions options,
                                                               AgentStats& stats);
  ~HandoffBroker();

  // Starts the broker thread. `on_capacity` is called (on the broker thread) whenever
  // HasCapacity() may have changed from false to true.
  void Start(std::function<void()> on_capacity);

  // Outbound mode: `handler` receives the DialRequests of subscribed apps (called on the broker
  // thread). Without a handler, dials are answered with an error.
  void SetDialHandler(std::function<void(uint64_t subscriber_id, v1::DialRequest)> handler);
  // Thread-safe: sends `result` (with `fd` attached when ok) to the app that asked. If that app
  // is gone the connection is closed and counted.
  void DeliverDialResult(uint64_t subscriber_id, v1::DialResult result, UniqueFd fd);
  void Stop();

  // Thread-safe. Takes ownership; never fails: a full queue drops the oldest waiting connection
  // (counted) rather than the new one's fd leaking.
  void Submit(ReadyConnection conn);
  // Thread-safe, lock-free: false when accepting more connections would only make them wait.
  bool HasCapacity() const { return has_capacity_.load(std::memory_order_relaxed); }

  // Handoff latency (ready -> sent) observations, for metrics. Thread-safe.
  struct LatencySnapshot {
    uint64_t count = 0;
    double sum_seconds = 0;
    std::vector<uint64_t> bucket_counts;  // cumulative per kLatencyBuckets
  };
  static const std::vector<double>& LatencyBuckets();
  LatencySnapshot Latency() const;

 private:
  class Listener;
  class Subscriber;
  HandoffBroker(SysCalls& sys, HandoffBrokerOptions options, AgentStats& stats);

  void OnAcceptable();
  void OnSubscriberEvents(Subscriber* sub, uint32_t events);
  void HandleAppMessage(Subscriber* sub, const v1::AppToAgent& msg);
  void FlushDialResults(Subscriber* sub);
  void DropSubscriber(Subscriber* sub, absl::string_view why, bool protocol_error);
  void SendProtocolError(Subscriber* sub, absl::string_view message);
  void Dispatch();
  Subscriber* PickSubscriber();
  void ExpireWaiting(absl::Time now);
  void CloseWaiting(ReadyConnection& conn);
  void TakeInbox();
  void UpdateCapacity();
  void ObserveLatency(absl::Duration d);
  void Record(HandoffOutcome outcome, const ReadyConnection& conn, absl::string_view app);

  SysCalls& sys_;
  HandoffBrokerOptions options_;
  AgentStats& stats_;
  std::unique_ptr<EventLoop> loop_;
  UniqueFd listen_fd_;
  std::unique_ptr<Listener> listener_;
  std::thread thread_;
  std::function<void()> on_capacity_;
  std::function<void(uint64_t, v1::DialRequest)> dial_handler_;

  absl::Mutex inbox_mu_;
  std::deque<ReadyConnection> inbox_ ABSL_GUARDED_BY(inbox_mu_);

  // Broker-thread state.
  std::deque<ReadyConnection> waiting_;
  std::map<int, std::unique_ptr<Subscriber>> subscribers_;  // by fd
  uint64_t next_subscriber_id_ = 1;
  std::atomic<bool> has_capacity_{false};
  std::atomic<size_t> inbox_size_{0};

  mutable absl::Mutex latency_mu_;
  LatencySnapshot latency_ ABSL_GUARDED_BY(latency_mu_);
};

}  // namespace ktls

#endif  // KTLS_AGENT_HANDOFF_BROKER_H_
