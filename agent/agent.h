// The data plane assembled: kernel probe, certificates, TLS context, handoff broker and workers,
// from one AgentConfig. The daemon's entry point (server/daemon/main.cc, the composition root) adds
// the control plane.
#ifndef KTLS_AGENT_AGENT_H_
#define KTLS_AGENT_AGENT_H_

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/activity.h"
#include "agent/cert_store.h"
#include "agent/dialer.h"
#include "agent/handoff_broker.h"
#include "agent/kernel_probe.h"
#include "agent/ktls_installer.h"
#include "agent/stats.h"
#include "agent/tls_context.h"
#include "agent/unique_fd.h"
#include "agent/worker.h"
#include "ktls/v1/config.pb.h"

namespace ktls::agent {

inline constexpr char kAgentVersion[] = "0.1.0";

class Agent {
 public:
  // Validates the config, probes the kernel (logging the table once), loads certificates (or
  // generates the development one), builds the TLS context, binds the listeners and the handoff
  // socket. Nothing runs until Start().
  static absl::StatusOr<std::unique_ptr<Agent>> Create(v1::AgentConfig config, SysCalls& sys);
  ~Agent();

  void Start();
  void Stop();

  const v1::AgentConfig& config() const { return config_; }
  const KernelProbeResult& probe() const { return probe_; }
  AgentStats& stats() { return stats_; }
  CertStore& certs() { return *certs_; }
  HandoffBroker& broker() { return *broker_; }
  // The broker's ready-to-sent latency in the shape of the other histograms (/metrics, stats RPC).
  Histogram::Snapshot HandoffLatency() const;
  TlsContext& tls() { return *tls_; }
  // Handshakes in progress and recent handoffs, for the control plane.
  const ActivityLog& activity() const { return activity_; }
  OffloadPolicy policy() const { return policy_; }
  // Bound addresses, e.g. "127.0.0.1:8443" (ports resolved when configured as 0).
  const std::vector<std::string>& listen_addresses() const { return listen_addresses_; }

 private:
  Agent(SysCalls& sys, v1::AgentConfig config) : sys_(sys), config_(std::move(config)) {}

  // Steps of Create(), in this order (each needs what the ones before built).
  void ProbeAndLog();  // the kernel probe, its table logged once
  // Listeners: one SO_REUSEPORT socket per listener per worker. A port-0 listener is bound
  // once, and the other workers join the port the kernel picked.
  using ListenSockets = std::vector<std::pair<std::string, UniqueFd>>;
  absl::StatusOr<std::vector<ListenSockets>> OpenListeners(unsigned workers);
  absl::Status CreateWorkers(unsigned workers);
  absl::Status CreateDialer();  // outbound dials (apps' DialRequests), on their own thread

  SysCalls& sys_;
  v1::AgentConfig config_;
  OffloadPolicy policy_ = OffloadPolicy::kPreferred;
  KernelProbeResult probe_;
  AgentStats stats_;
  ActivityLog activity_;
  std::unique_ptr<CertStore> certs_;
  std::unique_ptr<TlsContext> tls_;
  std::unique_ptr<HandoffBroker> broker_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<Dialer> dialer_;  // after broker_: destroyed first, it posts to the broker
  std::vector<std::string> listen_addresses_;
  std::atomic<uint64_t> next_connection_id_{1};
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_AGENT_H_
