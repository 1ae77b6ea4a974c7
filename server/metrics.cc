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

#include <exception>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "server/cert_manager.h"
#include "server/ticket_key_manager.h"
#include "server/tls_stat.h"
#include "server/trust_manager.h"

namespace ktls {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<std::pair<std::string, std::string>>;

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

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

void Add(std::vector<MetricFamily>& out, std::string name, std::string help, MetricType type,
         double value) {
  MetricFamily f = Family(std::move(name), std::move(help), type);
  f.metric.push_back(Sample(value, type));
  out.push_back(std::move(f));
}

MetricFamily HistogramFamily(std::string name, std::string help, const Histogram::Snapshot& s) {
  MetricFamily f = Family(std::move(name), std::move(help), MetricType::Histogram);
  ClientMetric m;
  m.histogram.sample_count = s.count;
  m.histogram.sample_sum = s.sum;
  for (size_t i = 0; i < s.upper_bounds.size(); ++i) {
    m.histogram.bucket.push_back({s.cumulative[i], s.upper_bounds[i]});
  }
  f.metric.push_back(std::move(m));
  return f;
}

uint64_t Load(const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); }

// Data-plane counters that are exported as labeled families below instead of one family each.
const std::set<std::string>& GroupedCounters() {
  static const std::set<std::string> kGrouped = {
      "handshakes_completed", "handshakes_failed",   "handshake_timeouts",
      "ktls_tx_installed",    "ktls_tx_failed",      "ktls_rx_installed",
      "ktls_rx_failed",       "relay_bytes_to_app",  "relay_bytes_to_peer"};
  return kGrouped;
}

}  // namespace

std::vector<MetricFamily> MetricsCollector::Collect() const {
  std::vector<MetricFamily> out;
  AgentStats& st = s_.agent->stats();
  constexpr MetricType kCounter = MetricType::Counter;
  constexpr MetricType kGauge = MetricType::Gauge;

  // --- Build and host ---------------------------------------------------------------------
  {
    MetricFamily f = Family("ktls_build_info", "Agent build: version and OpenSSL; always 1", kGauge);
    f.metric.push_back(Sample(1, kGauge, {{"version", kAgentVersion},
                                          {"openssl", OpenSSL_version(OPENSSL_VERSION)}}));
    out.push_back(std::move(f));
  }
  Add(out, "ktls_start_time_seconds", "When the agent started, Unix seconds", kGauge,
      absl::ToDoubleSeconds(s_.started_at - absl::UnixEpoch()));
  const KernelProbeResult& probe = s_.agent->probe();
  Add(out, "ktls_kernel_tls_available",
      "1 when the kernel probe found kTLS usable (TX and RX for at least one suite)", kGauge,
      probe.AnySupported() ? 1 : 0);
  {
    MetricFamily f = Family("ktls_kernel_tls_supported",
                            "Kernel probe: 1 when this version, cipher and direction installed",
                            kGauge);
    for (const ProbeCell& c : probe.cells) {
      f.metric.push_back(Sample(c.ok ? 1 : 0, kGauge,
                                {{"version", std::string(TlsVersionName(c.version))},
                                 {"cipher", std::string(KtlsCipherName(c.cipher))},
                                 {"direction", std::string(DirectionName(c.direction))}}));
    }
    out.push_back(std::move(f));
  }
  {
    // /proc/net/tls_stat, read at scrape time; absent when the tls module is not loaded.
    absl::StatusOr<std::map<std::string, uint64_t>> stat = ReadTlsStat(s_.tls_stat_path);
    Add(out, "ktls_kernel_tls_stat_available", "1 when /proc/net/tls_stat could be read", kGauge,
        stat.ok() ? 1 : 0);
    MetricFamily cur = Family("ktls_kernel_tls_stat_sockets",
                              "/proc/net/tls_stat TlsCurr* entries: sockets with kernel TLS now",
                              kGauge);
    MetricFamily total = Family("ktls_kernel_tls_stat_total",
                                "/proc/net/tls_stat event counters (TlsTxSw, TlsRxSw, "
                                "TlsDecryptError, ...), as the kernel names them",
                                kCounter);
    if (stat.ok()) {
      for (const auto& [name, value] : *stat) {
        if (TlsStatIsGauge(name)) {
          cur.metric.push_back(Sample(static_cast<double>(value), kGauge, {{"stat", name}}));
        } else {
          total.metric.push_back(Sample(static_cast<double>(value), kCounter, {{"stat", name}}));
        }
      }
    }
    out.push_back(std::move(cur));
    out.push_back(std::move(total));
  }

  // --- Data plane: plain counters and gauges (agent/stats.h), ktls_<name>[_total] ------------
#define KTLS_COUNTER(name, help)                                                   \
  if (GroupedCounters().count(#name) == 0) {                                       \
    Add(out, "ktls_" #name "_total", help, kCounter, static_cast<double>(Load(st.name))); \
  }
  KTLS_AGENT_COUNTERS(KTLS_COUNTER)
#undef KTLS_COUNTER
#define KTLS_GAUGE(name, help) \
  Add(out, "ktls_" #name, help, kGauge, static_cast<double>(st.name.load(std::memory_order_relaxed)));
  KTLS_AGENT_GAUGES(KTLS_GAUGE)
#undef KTLS_GAUGE

  // --- Data plane: labeled families ---------------------------------------------------------
  {
    MetricFamily f = Family("ktls_handshakes_completed_total",
                            "TLS handshakes completed, by protocol version and cipher suite",
                            kCounter);
    for (size_t i = 0; i < st.connections_by_suite.size(); ++i) {
      const TlsSuiteLabels l = TlsSuiteLabel(static_cast<TlsSuite>(i));
      f.metric.push_back(Sample(static_cast<double>(Load(st.connections_by_suite[i])), kCounter,
                                {{"version", std::string(l.version)},
                                 {"cipher", std::string(l.cipher)}}));
    }
    out.push_back(std::move(f));
  }
  {
    MetricFamily f = Family("ktls_handshakes_failed_total",
                            "TLS handshakes that failed, by reason (timeout included)", kCounter);
    for (size_t i = 0; i < st.handshake_failures.size(); ++i) {
      f.metric.push_back(Sample(
          static_cast<double>(Load(st.handshake_failures[i])), kCounter,
          {{"reason",
            std::string(HandshakeFailureReasonLabel(static_cast<HandshakeFailureReason>(i)))}}));
    }
    out.push_back(std::move(f));
  }
  out.push_back(HistogramFamily("ktls_handshake_duration_seconds",
                                "TLS handshake duration, accept to Finished",
                                st.handshake_duration.Take()));
  out.push_back(HistogramFamily("ktls_install_duration_seconds",
                                "Time in the kernel's kTLS setsockopts (TCP_ULP, TLS_TX, "
                                "TLS_RX) per connection that reached the kernel's TLS code",
                                st.ktls_install_duration.Take()));
  {
    MetricFamily f = Family("ktls_kernel_tls_installs_total",
                            "kTLS key installs by direction (tx, rx) and result (ok, failed)",
                            kCounter);
    const std::pair<const char*, const std::atomic<uint64_t>*> rows[][2] = {
        {{"ok", &st.ktls_tx_installed}, {"failed", &st.ktls_tx_failed}},
        {{"ok", &st.ktls_rx_installed}, {"failed", &st.ktls_rx_failed}}};
    for (int d = 0; d < 2; ++d) {
      for (const auto& [result, value] : rows[d]) {
        f.metric.push_back(Sample(static_cast<double>(Load(*value)), kCounter,
                                  {{"direction", d == 0 ? "tx" : "rx"}, {"result", result}}));
      }
    }
    out.push_back(std::move(f));
  }
  {
    MetricFamily f = Family("ktls_fallbacks_total",
                            "Connections relayed in userspace instead of kTLS, by reason", kCounter);
    for (size_t i = 0; i < st.fallbacks.size(); ++i) {
      f.metric.push_back(
          Sample(static_cast<double>(Load(st.fallbacks[i])), kCounter,
                 {{"reason", std::string(FallbackReasonLabel(static_cast<FallbackReason>(i)))}}));
    }
    out.push_back(std::move(f));
  }
  {
    MetricFamily f = Family("ktls_relay_bytes_total",
                            "Plaintext bytes relayed, by direction (to_app, to_peer)", kCounter);
    f.metric.push_back(Sample(static_cast<double>(Load(st.relay_bytes_to_app)), kCounter,
                              {{"direction", "to_app"}}));
    f.metric.push_back(Sample(static_cast<double>(Load(st.relay_bytes_to_peer)), kCounter,
                              {{"direction", "to_peer"}}));
    out.push_back(std::move(f));
  }
  {
    const HandoffBroker::LatencySnapshot l = s_.agent->broker().Latency();
    Histogram::Snapshot h;
    h.upper_bounds = HandoffBroker::LatencyBuckets();
    h.cumulative = l.bucket_counts;
    h.cumulative.resize(h.upper_bounds.size(), l.count);
    h.count = l.count;
    h.sum = l.sum_seconds;
    out.push_back(HistogramFamily("ktls_handoff_latency_seconds",
                                  "From ready (handshake done, data path chosen) to sent to an app",
                                  h));
  }

  // --- Certificates -------------------------------------------------------------------------
  {
    const std::shared_ptr<const CertificateSet> set = s_.agent->certs().Current();
    MetricFamily after = Family("ktls_certificate_not_after_timestamp_seconds",
                                "notAfter of each served certificate, Unix seconds", kGauge);
    MetricFamily before = Family("ktls_certificate_not_before_timestamp_seconds",
                                 "notBefore of each served certificate, Unix seconds", kGauge);
    MetricFamily served = Family("ktls_certificate_handshakes_total",
                                 "Handshakes completed with each served certificate", kCounter);
    for (const CertificateEntry& e : set->entries()) {
      const Labels l = {{"certificate", e.name}};
      after.metric.push_back(Sample(static_cast<double>(e.not_after_unix), kGauge, l));
      before.metric.push_back(Sample(static_cast<double>(e.not_before_unix), kGauge, l));
      served.metric.push_back(Sample(static_cast<double>(e.handshakes->load()), kCounter, l));
    }
    out.push_back(std::move(after));
    out.push_back(std::move(before));
    out.push_back(std::move(served));
    Add(out, "ktls_certificates", "Certificates served", kGauge,
        static_cast<double>(set->entries().size()));
  }
  if (s_.certs != nullptr) {
    Add(out, "ktls_certificate_generation",
        "Generation of the certificate store (moves by one per commit, delete, default change)",
        kGauge, static_cast<double>(s_.certs->generation()));
  }
  if (s_.trust != nullptr) {
    Add(out, "ktls_trust_bundle_generation", "Generation of the client trust bundle", kGauge,
        static_cast<double>(s_.trust->generation()));
  }
  Add(out, "ktls_session_ticket_keys", "Session-ticket keys in use (the first encrypts)", kGauge,
      static_cast<double>(s_.agent->tls().ticket_keys()->keys().size()));

  // --- Control plane ------------------------------------------------------------------------
  if (const ControlMetrics* c = s_.control) {
    MetricFamily reloads = Family("ktls_certificate_reloads_total",
                                  "Certificate changes by source (api, cert_dir, state) and "
                                  "result (committed, rejected)",
                                  kCounter);
    for (size_t i = 0; i < c->reloads.size(); ++i) {
      const std::string source(ReloadSourceLabel(static_cast<ReloadSource>(i)));
      reloads.metric.push_back(Sample(static_cast<double>(Load(c->reloads[i][0])), kCounter,
                                      {{"source", source}, {"result", "committed"}}));
      reloads.metric.push_back(Sample(static_cast<double>(Load(c->reloads[i][1])), kCounter,
                                      {{"source", source}, {"result", "rejected"}}));
    }
    out.push_back(std::move(reloads));
    MetricFamily rejected = Family("ktls_control_validation_failures_total",
                                   "Inputs the control plane rejected, by reason", kCounter);
    for (size_t i = 0; i < c->validation_failures.size(); ++i) {
      rejected.metric.push_back(Sample(
          static_cast<double>(Load(c->validation_failures[i])), kCounter,
          {{"reason", std::string(ValidationFailureLabel(static_cast<ValidationFailure>(i)))}}));
    }
    out.push_back(std::move(rejected));
    Add(out, "ktls_state_files_loaded", "State files loaded at start", kGauge,
        static_cast<double>(Load(c->state_files_loaded)));
    Add(out, "ktls_state_files_skipped_total",
        "State files skipped at start (corrupt or invalid; see the log and ktlsctl status)",
        kCounter, static_cast<double>(Load(c->state_files_skipped)));
    Add(out, "ktls_state_write_errors_total",
        "Changes refused because the state directory could not be written", kCounter,
        static_cast<double>(Load(c->state_write_errors)));
    Add(out, "ktls_session_ticket_key_updates_total", "Session-ticket key sets and rotations",
        kCounter, static_cast<double>(Load(c->ticket_key_rotations)));
    MetricFamily requests = Family("ktls_control_requests_total",
                                   "Control API requests by method and gRPC status code",
                                   kCounter);
    for (const auto& [key, count] : c->Requests()) {
      requests.metric.push_back(Sample(static_cast<double>(count), kCounter,
                                       {{"method", key.first}, {"code", key.second}}));
    }
    out.push_back(std::move(requests));
  }
  return out;
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
  const int port = std::atoi(address.c_str() + colon + 1);
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

}  // namespace ktls
