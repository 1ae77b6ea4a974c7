// Prometheus /metrics (prometheus-cpp's exposer; default 127.0.0.1:9464).
//
// Nothing is double-booked: a Collectable reads the data plane's atomics (agent/stats.h), the
// histograms, the certificate store, the kernel probe and /proc/net/tls_stat, and the control
// plane's own counters (control_metrics.h) when scraped. A counter's family, help and labels are
// declared with the counter, in the stats lists of agent/stats.h and control_metrics.h, so one
// added there is exported without an edit here; metrics.cc names only the families of another
// shape (build, kernel, certificates, reloads, requests). docs/operations.md documents each.
//
// Conventions: prefix ktls_, counters end in _total, units in the name (_seconds, _bytes),
// labels from small fixed sets, exported at 0 from the start (so rate() and alerts work before
// the first event).
#ifndef KTLS_SERVER_METRICS_H_
#define KTLS_SERVER_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/agent.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "server/control_metrics.h"
#include "server/control_sources.h"

namespace prometheus {
class Exposer;
}

namespace ktls::control {

class CertManager;
class TrustManager;
class TicketKeyManager;

struct MetricsSources : ControlSources {
  const ControlMetrics* control = nullptr;  // optional
};

class MetricsCollector : public prometheus::Collectable {
 public:
  explicit MetricsCollector(MetricsSources sources) : s_(std::move(sources)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  MetricsSources s_;
};

class MetricsExporter {
 public:
  // Binds `address` ("host:port"; port 0 picks one) and serves /metrics.
  static absl::StatusOr<std::unique_ptr<MetricsExporter>> Start(const std::string& address,
                                                                MetricsSources sources);
  ~MetricsExporter();
  // "127.0.0.1:9464" with the port actually bound.
  const std::string& address() const { return address_; }

 private:
  MetricsExporter() = default;
  std::shared_ptr<MetricsCollector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
};

}  // namespace ktls::control

#endif  // KTLS_SERVER_METRICS_H_
