// A worker thread: one EventLoop, one SO_REUSEPORT listening socket per configured listener,
// and every connection accepted on them until it is handed off (kTLS) or for its whole life
// (relay). See agent/event_loop.h for the threading and lifetime rules.
//
// Accepting pauses (listener interest off) when the broker has no capacity (no app or no
// credit), when this worker is at its handshake or connection cap, and for a short back-off after
// EMFILE/ENFILE/ENOBUFS/ENOMEM; it resumes from the ticker or when the broker signals capacity.
#ifndef KTLS_AGENT_WORKER_H_
#define KTLS_AGENT_WORKER_H_

#include <atomic>
#include <list>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/connection.h"
#include "agent/listener.h"

namespace ktls::agent {

struct WorkerOptions {
  int index = 0;
  absl::Duration handshake_timeout = absl::Seconds(10);
  size_t max_handshakes = 4096;    // this worker's share
  size_t max_connections = 65536;  // this worker's share
  absl::Duration accept_backoff = absl::Milliseconds(100);
  ActivityLog* activity = nullptr;  // optional: handshakes in progress are listed there
};

class Worker {
 public:
  // `listen_fds` are this worker's listening sockets, with their listener names.
  static absl::StatusOr<std::unique_ptr<Worker>> Create(
      SysCalls& sys, WorkerOptions options,
      std::vector<std::pair<std::string, UniqueFd>> listen_fds, const TlsContext& tls,
      CertStore& certs, AgentStats& stats, HandoffBroker& broker, OffloadPolicy policy,
      size_t relay_buffer_bytes, std::atomic<uint64_t>& next_id);
  ~Worker();

  void Start();
  void Stop();  // stops the loop and joins; open connections are closed
  // Thread-safe: re-evaluate whether to accept (the broker gained capacity).
  void Wake();

 private:
  class ListenSocket;
  Worker(SysCalls& sys, WorkerOptions options, DataPlaneContext ctx_template);
  void OnAcceptable(ListenSocket* ls);
  bool CanAccept() const;
  void UpdateAccepting();
  void OnTick(absl::Time now);
  void OnFinished(EventHandler* h);

  SysCalls& sys_;
  WorkerOptions options_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<DataPlaneContext> ctx_;
  std::vector<std::unique_ptr<ListenSocket>> listeners_;
  std::unordered_map<EventHandler*, std::unique_ptr<EventHandler>> live_;
  std::list<Connection*> handshakes_;  // oldest first: handshake deadlines in order
  bool accepting_ = true;
  absl::Time backoff_until_ = absl::InfinitePast();
  std::thread thread_;
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_WORKER_H_
