#include "server/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

#include <deque>
#include <exception>
#include <iterator>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "server/cert_manager.h"
#include "server/ticket_key_manager.h"
#include "server/tls_stat.h"
#include "server/trust_manager.h"

namespace ktls::control {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = agent::MetricLabels;

constexpr MetricType kCounter = MetricType::Counter;
constexpr MetricType kGauge = MetricType::Gauge;

ClientMetric Sample(double value, MetricType type, const Labels& labels = {}) {
  ClientMetric m;
  for (const auto& [k, v] : labels) m.label.push_back({k, v});
  if (type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  return m;
}

double Load(const std::atomic<uint64_t>& a) {
  return static_cast<double>(a.load(std::memory_order_relaxed));
}
double Load(const std::atomic<int64_t>& a) {
  return static_cast<double>(a.load(std::memory_order_relaxed));
}

// The families of one scrape, in the order first named. Samples for a family already present
// join it: that is how the entries of a stats list that share a family (the four kTLS install
// counters) become one family with labels.
class FamilyList {
 public:
  // The family `name`, created (empty: exported with no samples) if new.
  MetricFamily& Get(const std::string& name, const std::string& help, MetricType type) {
    auto [it, inserted] = index_.emplace(name, families_.size());
    if (inserted) {
      MetricFamily& f = families_.emplace_back();
      f.name = name;
      f.help = help;
      f.type = type;
    }
    return families_[it->second];
  }
  void Add(const std::string& name, const std::string& help, MetricType type, double value,
           const Labels& labels = {}) {
    Get(name, help, type).metric.push_back(Sample(value, type, labels));
  }
  // One sample per value of `Enum`, labeled by MetricLabelsOf(value).
  template <typename Enum>
  void AddArray(const std::string& name, const std::string& help,
                const agent::CounterArray<Enum>& a) {
    MetricFamily& f = Get(name, help, kCounter);
    for (size_t i = 0; i < a.size(); ++i) {
      f.metric.push_back(Sample(Load(a[i]), kCounter,
                                MetricLabelsOf(static_cast<Enum>(i))));  // ADL: the enum's layer
    }
  }
  void AddHistogram(const std::string& name, const std::string& help,
                    const agent::Histogram::Snapshot& s) {
    ClientMetric m;
    m.histogram.sample_count = s.count;
    m.histogram.sample_sum = s.sum;
    for (size_t i = 0; i < s.upper_bounds.size(); ++i) {
      m.histogram.bucket.push_back({s.cumulative[i], s.upper_bounds[i]});
    }
    Get(name, help, MetricType::Histogram).metric.push_back(std::move(m));
  }
  std::vector<MetricFamily> Take() {
    return {std::make_move_iterator(families_.begin()), std::make_move_iterator(families_.end())};
  }

 private:
  std::deque<MetricFamily> families_;  // a deque: Get()'s references stay valid as it grows
  std::map<std::string, size_t> index_;
};

// The stats lists (agent/stats.h, control_metrics.h) expanded for a stats object named `stats`
// and a FamilyList named `out`: each entry becomes samples of the family it names.
#define KTLS_EXPORT_COUNTER(field, family, help, ...) \
  if (*family != '\0') out.Add(family, help, kCounter, Load(stats.field), {__VA_ARGS__});
#define KTLS_EXPORT_GAUGE(field, family, help) out.Add(family, help, kGauge, Load(stats.field));
#define KTLS_EXPORT_ARRAY(field, Enum, family, help) out.AddArray<Enum>(family, help, stats.field);
#define KTLS_EXPORT_HISTOGRAM(field, buckets, family, help) \
  out.AddHistogram(family, help, stats.field.Take());

void AddAgentStats(const agent::AgentStats& stats, FamilyList& out) {
  KTLS_AGENT_COUNTERS(KTLS_EXPORT_COUNTER)
  KTLS_AGENT_GAUGES(KTLS_EXPORT_GAUGE)
  KTLS_AGENT_COUNTER_ARRAYS(KTLS_EXPORT_ARRAY)
  KTLS_AGENT_HISTOGRAMS(KTLS_EXPORT_HISTOGRAM)
}

// The lists of control_metrics.h, then the two families with their own shape.
void AddControlMetrics(const ControlMetrics& stats, FamilyList& out) {
  KTLS_CONTROL_COUNTERS(KTLS_EXPORT_COUNTER)
  KTLS_CONTROL_GAUGES(KTLS_EXPORT_GAUGE)
  KTLS_CONTROL_COUNTER_ARRAYS(KTLS_EXPORT_ARRAY)
  MetricFamily& reloads = out.Get("ktls_certificate_reloads_total",
                                  "Certificate changes by source (api, cert_dir, state) and "
                                  "result (committed, rejected)",
                                  kCounter);
  for (size_t i = 0; i < stats.reloads.size(); ++i) {
    const std::string source(ReloadSourceLabel(static_cast<ReloadSource>(i)));
    reloads.metric.push_back(
        Sample(Load(stats.reloads[i][0]), kCounter, {{"source", source}, {"result", "committed"}}));
    reloads.metric.push_back(
        Sample(Load(stats.reloads[i][1]), kCounter, {{"source", source}, {"result", "rejected"}}));
  }
  // Methods are the registered ones: a label set fixed by the API, known once called.
  MetricFamily& requests = out.Get("ktls_control_requests_total",
                                   "Control API requests by method and gRPC status code", kCounter);
  for (const auto& [key, count] : stats.Requests()) {
    requests.metric.push_back(Sample(static_cast<double>(count), kCounter,
                                     {{"method", key.first}, {"code", key.second}}));
  }
}

#undef KTLS_EXPORT_COUNTER
#undef KTLS_EXPORT_GAUGE
#undef KTLS_EXPORT_ARRAY
#undef KTLS_EXPORT_HISTOGRAM

// What the kernel offers: the probe's table, and /proc/net/tls_stat read at scrape time (absent
// when the tls module is not loaded; both families are exported empty then).
void AddKernel(const agent::KernelProbeResult& probe, const std::string& tls_stat_path,
               FamilyList& out) {
  out.Add("ktls_kernel_tls_available",
          "1 when the kernel probe found kTLS usable (TX and RX for at least one suite)", kGauge,
          probe.AnySupported() ? 1 : 0);
  MetricFamily& supported =
      out.Get("ktls_kernel_tls_supported",
              "Kernel probe: 1 when this version, cipher and direction installed", kGauge);
  for (const agent::ProbeCell& c : probe.cells) {
    supported.metric.push_back(
        Sample(c.ok ? 1 : 0, kGauge,
               {{"version", std::string(agent::TlsVersionName(c.version))},
                {"cipher", std::string(agent::KtlsCipherName(c.cipher))},
                {"direction", std::string(agent::DirectionName(c.direction))}}));
  }
  absl::StatusOr<std::map<std::string, uint64_t>> stat = ReadTlsStat(tls_stat_path);
  out.Add("ktls_kernel_tls_stat_available", "1 when /proc/net/tls_stat could be read", kGauge,
          stat.ok() ? 1 : 0);
  const std::string sockets = "ktls_kernel_tls_stat_sockets";
  const std::string sockets_help =
      "/proc/net/tls_stat TlsCurr* entries: sockets with kernel TLS now";
  const std::string total = "ktls_kernel_tls_stat_total";
  const std::string total_help =
      "/proc/net/tls_stat event counters (TlsTxSw, TlsRxSw, TlsDecryptError, ...), as the "
      "kernel names them";
  out.Get(sockets, sockets_help, kGauge);
  out.Get(total, total_help, kCounter);
  if (!stat.ok()) return;
  for (const auto& [name, value] : *stat) {
    if (TlsStatIsGauge(name)) {
      out.Add(sockets, sockets_help, kGauge, static_cast<double>(value), {{"stat", name}});
    } else {
      out.Add(total, total_help, kCounter, static_cast<double>(value), {{"stat", name}});
    }
  }
}

// The served certificates (one sample each) and the generations of what the control plane
// manages.
void AddCertificates(const MetricsSources& s, FamilyList& out) {
  const std::shared_ptr<const agent::CertificateSet> set = s.agent->certs().Current();
  MetricFamily& after = out.Get("ktls_certificate_not_after_timestamp_seconds",
                                "notAfter of each served certificate, Unix seconds", kGauge);
  MetricFamily& before = out.Get("ktls_certificate_not_before_timestamp_seconds",
                                 "notBefore of each served certificate, Unix seconds", kGauge);
  MetricFamily& served = out.Get("ktls_certificate_handshakes_total",
                                 "Handshakes completed with each served certificate", kCounter);
  for (const agent::CertificateEntry& e : set->entries()) {
    const Labels l = {{"certificate", e.name}};
    after.metric.push_back(Sample(static_cast<double>(e.not_after_unix), kGauge, l));
    before.metric.push_back(Sample(static_cast<double>(e.not_before_unix), kGauge, l));
    served.metric.push_back(Sample(static_cast<double>(e.handshakes->load()), kCounter, l));
  }
  out.Add("ktls_certificates", "Certificates served", kGauge,
          static_cast<double>(set->entries().size()));
  if (s.certs != nullptr) {
    out.Add("ktls_certificate_generation",
            "Generation of the certificate store (moves by one per commit, delete, default change)",
            kGauge, static_cast<double>(s.certs->generation()));
  }
  if (s.trust != nullptr) {
    out.Add("ktls_trust_bundle_generation", "Generation of the client trust bundle", kGauge,
            static_cast<double>(s.trust->generation()));
  }
  out.Add("ktls_session_ticket_keys", "Session-ticket keys in use (the first encrypts)", kGauge,
          static_cast<double>(s.agent->tls().ticket_keys()->keys().size()));
}

}  // namespace

std::vector<MetricFamily> MetricsCollector::Collect() const {
  FamilyList out;
  out.Add("ktls_build_info", "Agent build: version and OpenSSL; always 1", kGauge, 1,
          {{"version", agent::kAgentVersion}, {"openssl", OpenSSL_version(OPENSSL_VERSION)}});
  out.Add("ktls_start_time_seconds", "When the agent started, Unix seconds", kGauge,
          absl::ToDoubleSeconds(s_.started_at - absl::UnixEpoch()));
  AddKernel(s_.agent->probe(), s_.tls_stat_path, out);
  AddAgentStats(s_.agent->stats(), out);
  out.AddHistogram("ktls_handoff_latency_seconds",
                   "From ready (handshake done, data path chosen) to sent to an app",
                   s_.agent->HandoffLatency());
  AddCertificates(s_, out);
  if (s_.control != nullptr) AddControlMetrics(*s_.control, out);
  return out.Take();
}

absl::StatusOr<std::unique_ptr<MetricsExporter>> MetricsExporter::Start(const std::string& address,
                                                                        MetricsSources sources) {
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics_address: '", address, "' is not host:port"));
  }
  std::unique_ptr<MetricsExporter> e(new MetricsExporter());
  e->collector_ = std::make_shared<MetricsCollector>(std::move(sources));
  try {
    // One thread serves scrapes: they are rare and each is a few microseconds of reading.
    e->exposer_ = std::make_unique<prometheus::Exposer>(address, 1);
  } catch (const std::exception& ex) {
    // civetweb reports a failed bind as "null context when constructing CivetServer".
    const std::string what = ex.what();
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot serve /metrics on ", address, ": ",
        what.find("binding") != std::string::npos ? "cannot bind it (address in use?)" : what));
  }
  e->exposer_->RegisterCollectable(e->collector_, "/metrics");
  const std::vector<int> ports = e->exposer_->GetListeningPorts();
  e->address_ = absl::StrCat(address.substr(0, colon), ":", ports.empty() ? 0 : ports.front());
  return e;
}

namespace {

// Opens and closes one TCP connection to host:port (numeric; wildcard hosts mean loopback).
void Poke(const std::string& address) {
  const size_t colon = address.rfind(':');
  std::string host = address.substr(0, colon);
  int port = 0;
  if (!absl::SimpleAtoi(absl::string_view(address).substr(colon + 1), &port)) return;
  const bool v6 = !host.empty() && host.front() == '[';
  if (v6) host = host.substr(1, host.size() - 2);
  if (host == "0.0.0.0" || host.empty()) host = "127.0.0.1";
  if (host == "::") host = "::1";
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.c_str(), &a->sin6_addr) != 1) return;
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1) return;
    len = sizeof(*a);
  }
  const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return;
  (void)::connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
  ::close(fd);
}

}  // namespace

MetricsExporter::~MetricsExporter() {
  if (exposer_ == nullptr) return;
  // civetweb's listener thread polls with a 2 s timeout and checks its stop flag only between
  // polls, so stopping would take up to 2 s. Stop on another thread and wake the poll with a
  // connection until it is done.
  std::atomic<bool> done{false};
  std::thread stopper([this, &done] {
    exposer_.reset();
    done.store(true);
  });
  for (int i = 0; i < 300 && !done.load(); ++i) {
    Poke(address_);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stopper.join();
}

}  // namespace ktls::control
