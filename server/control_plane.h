// The control plane assembled around a running data plane (agent/agent.h): the gRPC API
// (services.h) on a Unix socket and optionally on mutual-TLS TCP, grpc.health.v1 and server
// reflection, Prometheus /metrics (metrics.h), the state directory (state_store.h) and the
// watched certificate directories (cert_dir_watcher.h).
//
// Order matters and is this one:
//   ControlPlane::Create   before Agent::Start: loads the state directory and the watched
//                          directories into the data plane (so the first handshake already sees
//                          them), binds the sockets (a bind failure stops the daemon).
//   Agent::Start
//   ControlPlane::Start    watcher thread; health turns SERVING.
//   ControlPlane::Stop     health NOT_SERVING, API shutdown (streams end), watcher, /metrics.
//   Agent::Stop
//
// The Unix socket is created with its final mode before anyone can reach it: gRPC binds it
// inside a fresh 0700 directory next to the target, the mode (and group) are set there, and it
// is renamed into place. A peer without permission on the socket file gets EACCES from
// connect(); no request of it is ever read.
#ifndef KTLS_SERVER_CONTROL_PLANE_H_
#define KTLS_SERVER_CONTROL_PLANE_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/agent.h"
#include "ktls/v1/config.pb.h"
#include "server/control_auth.h"
#include "server/control_sources.h"
#include "server/state_store.h"

namespace grpc {
class Server;
}

namespace ktls::control {

class CertDirWatcher;
class CertManager;
class MetricsExporter;
class TicketKeyManager;
class TrustManager;
class CertificateServiceImpl;
class TrustServiceImpl;
class SessionTicketServiceImpl;
class TelemetryServiceImpl;
struct ControlMetrics;

inline constexpr char kDefaultControlSocket[] = "/run/ktls/control.sock";
inline constexpr char kDefaultMetricsAddress[] = "127.0.0.1:9464";
// Health service name that is SERVING only while at least one app is subscribed (the agent
// accepts connections only then). The overall "" service is SERVING while the agent runs.
inline constexpr char kDataPlaneHealthService[] = "ktls.v1.DataPlane";

struct ControlPlaneOptions {
  std::string control_socket;  // empty: no Unix socket
  // false: the defaults were not asked for explicitly; if the address is taken (another agent
  // on this host), start without that endpoint and warn instead of failing.
  bool control_socket_required = true;
  bool metrics_required = true;
  uint32_t control_socket_mode = 0600;
  std::string control_socket_group;
  std::string tcp_address;  // empty: no TCP listener
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string client_ca_file;
  std::vector<AllowedIdentity> allowed_clients;  // typed: see server/control_auth.h
  std::string metrics_address;                   // empty: no /metrics
  std::string state_dir;                         // empty: nothing persisted
  std::vector<std::string> cert_dirs;
  absl::Duration cert_dir_poll_interval = absl::Seconds(10);
  std::string tls_stat_path = "/proc/net/tls_stat";

  // From the configuration (defaults applied: control_socket and metrics_address unset mean
  // their defaults). Checks the TCP listener's mandatory mTLS settings.
  static absl::StatusOr<ControlPlaneOptions> FromConfig(const v1::AgentConfig& config);
};

class ControlPlane {
 public:
  static absl::StatusOr<std::unique_ptr<ControlPlane>> Create(agent::Agent& agent,
                                                              ControlPlaneOptions options);
  ~ControlPlane();

  absl::Status Start();
  void Stop();

  const std::string& control_socket() const { return options_.control_socket; }
  const std::string& tcp_address() const { return tcp_address_; }  // with the bound port
  std::string metrics_address() const;

 private:
  ControlPlane(agent::Agent& agent, ControlPlaneOptions options);
  // Steps of Create(), in this order.
  // The state directory loaded into the certificate, trust and ticket-key managers.
  absl::Status LoadState();
  // Watched certificate directories: scanned once now, so the first handshake sees them.
  void ScanCertDirs();
  // The gRPC server (services, interceptors, the Unix socket and the mTLS TCP listener).
  absl::Status BuildServer();
  void CreateServices();
  ControlSources CommonSources() const;  // what /metrics and the telemetry RPCs read
  absl::Status StartMetrics();           // /metrics; a taken default address is a warning only
  void HealthLoop();

  agent::Agent& agent_;
  ControlPlaneOptions options_;
  absl::Time started_at_;
  std::unique_ptr<ControlMetrics> metrics_;
  std::unique_ptr<StateStore> state_;
  std::vector<StateStore::Issue> state_issues_;  // what loading skipped, for GetStatus
  std::unique_ptr<CertManager> certs_;
  std::unique_ptr<TrustManager> trust_;
  std::unique_ptr<TicketKeyManager> tickets_;
  std::unique_ptr<CertDirWatcher> watcher_;
  std::unique_ptr<MetricsExporter> exporter_;
  std::atomic<int> streams_{0};
  std::atomic<bool> stopping_{false};
  std::unique_ptr<CertificateServiceImpl> cert_service_;
  std::unique_ptr<TrustServiceImpl> trust_service_;
  std::unique_ptr<SessionTicketServiceImpl> ticket_service_;
  std::unique_ptr<TelemetryServiceImpl> telemetry_service_;
  std::unique_ptr<grpc::Server> server_;
  std::string tcp_address_;
  std::thread health_thread_;
  bool stopped_ = false;
};

}  // namespace ktls::control

#endif  // KTLS_SERVER_CONTROL_PLANE_H_
