// What the control plane's telemetry reads: the same sources serve /metrics (metrics.h) and the
// telemetry RPCs (services.h), so they are one struct that both extend.
#ifndef KTLS_SERVER_CONTROL_SOURCES_H_
#define KTLS_SERVER_CONTROL_SOURCES_H_

#include <string>

#include "absl/time/time.h"
#include "agent/agent.h"

namespace ktls::control {

class CertManager;
class TrustManager;
class TicketKeyManager;

struct ControlSources {
  agent::Agent* agent = nullptr;
  const CertManager* certs = nullptr;  // optional for /metrics
  const TrustManager* trust = nullptr;
  const TicketKeyManager* tickets = nullptr;
  absl::Time started_at;
  std::string tls_stat_path = "/proc/net/tls_stat";
};

}  // namespace ktls::control

#endif  // KTLS_SERVER_CONTROL_SOURCES_H_
