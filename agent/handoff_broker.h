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
// Who may subscribe: the kernel's SO_PEERCRED/SO_PEERGROUPS identity of the connecting process
// is checked against SubscriberPolicy at accept (the agent's own uid, the socket's group, and the
// configured allow-lists); a refused process gets a ProtocolError naming its uid and the setting
// to change. A connection must subscribe within `subscribe_timeout`, and at most
// `max_app_connections` are held (a refused connection lingering until its app has read why
// holds a slot too, and gives way first). The socket file is guarded by a lock file (`<path>.lock`,
// flock) so that a second agent never unlinks a live agent's socket.
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
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/activity.h"
#include "agent/event_loop.h"
#include "agent/peer_auth.h"
#include "agent/stats.h"
#include "agent/unique_fd.h"
#include "ktls/v1/handoff.pb.h"
#include "ktls/wire.h"

namespace ktls::agent {

struct HandoffBrokerOptions {
  std::string socket_path;
  // The socket file's mode and group (chmod/chown failures are fatal at start). Members of the
  // group may subscribe, so with mode 0660 "can connect" and "may subscribe" agree.
  unsigned int socket_mode = 0660;
  std::optional<gid_t> socket_group;
  // Besides the agent's own uid and socket_group: who may subscribe (SO_PEERCRED uid, primary or
  // supplementary gid). See agent/peer_auth.h and docs/security.md.
  std::vector<uid_t> allowed_uids;
  std::vector<gid_t> allowed_gids;
  // Connections on the handoff socket that have not subscribed are closed after this, and at most
  // max_app_connections connections (subscribed or not) are held.
  absl::Duration subscribe_timeout = absl::Seconds(5);
  size_t max_app_connections = 256;
  absl::Duration wait_timeout = absl::Seconds(5);
  size_t max_pending = 1024;
  uint32_t max_outstanding_credits = 65536;
  std::string agent_version;
  ActivityLog* activity = nullptr;  // optional: every handoff outcome is recorded there
};

struct ReadyConnection {
  UniqueFd fd;           // the TCP socket (kTLS) or the app's end of the relay socketpair
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

  absl::Status BindSocket(const std::string& path);
  void OnAcceptable();
  bool AdmitApp(int fd);
  bool DiscardInput(int fd);
  void EvictOldestRefused();
  void ExpireUnsubscribed(absl::Time now);
  void OnSubscriberEvents(Subscriber* sub, uint32_t events);
  void HandleAppMessage(Subscriber* sub, const v1::AppToAgent& msg);
  void FlushDialResults(Subscriber* sub);
  void DropSubscriber(Subscriber* sub, absl::string_view why, bool protocol_error);
  void SendProtocolError(Subscriber* sub, absl::string_view message,
                         v1::ProtocolError::Reason reason = v1::ProtocolError::REASON_UNSPECIFIED);
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
  UniqueFd lock_fd_;  // flock'd <socket>.lock, held for the broker's life
  SubscriberPolicy policy_;
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
  std::string recv_buffer_ = std::string(wire::kMaxMessageBytes, '\0');  // one app message
  std::atomic<bool> has_capacity_{false};
  std::atomic<size_t> inbox_size_{0};

  mutable absl::Mutex latency_mu_;
  LatencySnapshot latency_ ABSL_GUARDED_BY(latency_mu_);
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_HANDOFF_BROKER_H_
