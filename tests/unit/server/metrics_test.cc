// MetricsCollector (server/metrics.h) against an in-process agent that is created but not
// started: the exported families are the metrics contract (docs/operations.md, docs/deploy.md),
// so their names, types, help texts and label names are pinned here as one table, and each kind
// of source (plain counter, grouped counter, reason array, histogram, control-plane counter,
// /proc/net/tls_stat) is checked to move the sample it is exported as.
#include "server/metrics.h"

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/config.h"
#include "agent/syscalls.h"
#include "server/cert_manager.h"
#include "server/ticket_key_manager.h"
#include "server/trust_manager.h"
#include "tests/unit/agent/test_config.h"

namespace ktls::control::testing {
namespace {

using prometheus::MetricFamily;
using prometheus::MetricType;

const char* TypeName(MetricType t) {
  switch (t) {
    case MetricType::Counter:
      return "counter";
    case MetricType::Gauge:
      return "gauge";
    case MetricType::Histogram:
      return "histogram";
    default:
      return "other";
  }
}

class MetricsCollectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ktls-metrics-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    v1::AgentConfig c = agent::testing::LoopbackTestConfig(dir_, "error");
    auto a = agent::Agent::Create(c, agent::RealSysCalls());
    ASSERT_TRUE(a.ok()) << a.status();
    agent_ = std::move(*a);
    certs_ =
        std::make_unique<CertManager>(agent_->certs(), nullptr, control_, CertManager::Options{});
    trust_ = std::make_unique<TrustManager>(agent_->tls(), nullptr, control_, "");
    tickets_ = std::make_unique<TicketKeyManager>(agent_->tls(), nullptr, control_);
    std::ofstream(dir_ + "/tls_stat") << "TlsCurrTxSw \t2\nTlsTxSw \t118\nTlsDecryptError \t1\n";
  }
  void TearDown() override {
    tickets_.reset();
    trust_.reset();
    certs_.reset();
    agent_.reset();
    std::string cmd = "rm -rf " + dir_;
    (void)system(cmd.c_str());
  }

  std::vector<MetricFamily> Collect(bool with_control = true) {
    MetricsSources s;
    s.agent = agent_.get();
    if (with_control) {
      s.certs = certs_.get();
      s.trust = trust_.get();
      s.tickets = tickets_.get();
      s.control = &control_;
    }
    s.tls_stat_path = dir_ + "/tls_stat";
    return MetricsCollector(s).Collect();
  }

  // "family{k="v",...}" -> value, for counters and gauges.
  std::map<std::string, double> Samples() {
    std::map<std::string, double> out;
    for (const MetricFamily& f : Collect()) {
      for (const auto& m : f.metric) {
        std::vector<std::string> labels;
        for (const auto& l : m.label) labels.push_back(absl::StrCat(l.name, "=\"", l.value, "\""));
        const std::string key =
            labels.empty() ? f.name : absl::StrCat(f.name, "{", absl::StrJoin(labels, ","), "}");
        EXPECT_EQ(0u, out.count(key)) << "duplicate sample " << key;
        out[key] = f.type == MetricType::Counter ? m.counter.value : m.gauge.value;
      }
    }
    return out;
  }

  std::string dir_;
  std::unique_ptr<agent::Agent> agent_;
  ControlMetrics control_;
  std::unique_ptr<CertManager> certs_;
  std::unique_ptr<TrustManager> trust_;
  std::unique_ptr<TicketKeyManager> tickets_;
};

// The contract: every family with its type, help and label names ("name type [labels] help").
constexpr char kSchema[] =
    R"(ktls_accept_errors_total counter [] accept() failures other than EAGAIN/EINTR
ktls_accept_pauses_total counter [] times accepting paused for lack of fds or memory (EMFILE, ENFILE, ENOMEM)
ktls_app_connections_over_limit_total counter [] app connections refused: max_app_connections reached
ktls_app_protocol_errors_total counter [] malformed or unexpected messages from apps
ktls_app_subscribe_timeouts_total counter [] app connections closed for not subscribing in time
ktls_app_subscribers_refused_total counter [] app connections refused: peer uid/gid not allowed to subscribe (SO_PEERCRED)
ktls_apps_connected gauge [] apps subscribed now
ktls_apps_disconnected_total counter [] app subscriptions that ended
ktls_apps_subscribed_total counter [] app subscriptions accepted
ktls_build_info gauge [openssl,version] Agent build: version and OpenSSL; always 1
ktls_certificate_generation gauge [] Generation of the certificate store (moves by one per commit, delete, default change)
ktls_certificate_handshakes_total counter [certificate] Handshakes completed with each served certificate
ktls_certificate_not_after_timestamp_seconds gauge [certificate] notAfter of each served certificate, Unix seconds
ktls_certificate_not_before_timestamp_seconds gauge [certificate] notBefore of each served certificate, Unix seconds
ktls_certificate_reloads_total counter [result,source] Certificate changes by source (api, cert_dir, state) and result (committed, rejected)
ktls_certificates gauge [] Certificates served
ktls_connections_accepted_total counter [] TCP connections accepted
ktls_connections_open gauge [] connections the agent holds (handshaking, waiting, relayed)
ktls_connections_rejected_limit_total counter [] connections closed at accept: max connections/handshakes
ktls_control_requests_total counter [code,method] Control API requests by method and gRPC status code
ktls_control_validation_failures_total counter [reason] Inputs the control plane rejected, by reason
ktls_dials_failed_total counter [] outbound dials that failed (connect, handshake, verify, timeout)
ktls_dials_resumed_total counter [] outbound dials that resumed a cached TLS session
ktls_dials_started_total counter [] outbound dials requested by apps
ktls_dials_succeeded_total counter [] outbound dials handed back to the app
ktls_dials_verify_failed_total counter [] outbound dials whose server certificate failed verification
ktls_fallbacks_total counter [reason] Connections relayed in userspace instead of kTLS, by reason
ktls_handoff_latency_seconds histogram [] From ready (handshake done, data path chosen) to sent to an app
ktls_handoffs_dropped_total counter [] ready connections dropped (queue full or agent stopping)
ktls_handoffs_expired_total counter [] ready connections closed after waiting too long for an app
ktls_handoffs_requeued_total counter [] handoffs retried on another app after a send failure
ktls_handoffs_sent_total counter [] connections handed to an app
ktls_handshake_duration_seconds histogram [] TLS handshake duration, accept to Finished
ktls_handshakes_completed_total counter [cipher,version] TLS handshakes completed, by protocol version and cipher suite
ktls_handshakes_failed_total counter [reason] TLS handshakes that failed, by reason (timeout included)
ktls_handshakes_in_progress gauge [] TLS handshakes in progress
ktls_handshakes_resumed_total counter [] TLS handshakes that resumed a session
ktls_install_duration_seconds histogram [] Time in the kernel's kTLS setsockopts (TCP_ULP, TLS_TX, TLS_RX) per connection that reached the kernel's TLS code
ktls_kernel_tls_available gauge [] 1 when the kernel probe found kTLS usable (TX and RX for at least one suite)
ktls_kernel_tls_installs_total counter [direction,result] kTLS key installs by direction (tx, rx) and result (ok, failed)
ktls_kernel_tls_stat_available gauge [] 1 when /proc/net/tls_stat could be read
ktls_kernel_tls_stat_sockets gauge [stat] /proc/net/tls_stat TlsCurr* entries: sockets with kernel TLS now
ktls_kernel_tls_stat_total counter [stat] /proc/net/tls_stat event counters (TlsTxSw, TlsRxSw, TlsDecryptError, ...), as the kernel names them
ktls_kernel_tls_supported gauge [cipher,direction,version] Kernel probe: 1 when this version, cipher and direction installed
ktls_offload_ktls_total counter [] connections handed off with kTLS TX and RX
ktls_offload_refused_total counter [] connections closed because offload=required and kTLS failed
ktls_offload_relay_total counter [] connections handed off through the userspace relay
ktls_pending_handoffs gauge [] ready connections waiting for an app's credit
ktls_relay_active gauge [] connections being relayed now
ktls_relay_bytes_total counter [direction] Plaintext bytes relayed, by direction (to_app, to_peer)
ktls_relay_closed_total counter [] relayed connections finished
ktls_relay_errors_total counter [] relayed connections ended by an error
ktls_session_ticket_key_updates_total counter [] Session-ticket key sets and rotations
ktls_session_ticket_keys gauge [] Session-ticket keys in use (the first encrypts)
ktls_sni_unmatched_total counter [] handshakes whose SNI matched no certificate (default served)
ktls_start_time_seconds gauge [] When the agent started, Unix seconds
ktls_state_files_loaded gauge [] State files loaded at start
ktls_state_files_skipped_total counter [] State files skipped at start (corrupt or invalid; see the log and ktlsctl status)
ktls_state_write_errors_total counter [] Changes refused because the state directory could not be written
ktls_trust_bundle_generation gauge [] Generation of the client trust bundle
)";

TEST_F(MetricsCollectorTest, FamiliesTypesHelpAndLabelNamesAreTheContract) {
  control_.CountRequest("/ktls.v1.TelemetryService/GetStats", "OK");
  std::vector<std::string> lines;
  std::set<std::string> names;
  for (const MetricFamily& f : Collect()) {
    EXPECT_TRUE(names.insert(f.name).second) << "family exported twice: " << f.name;
    std::set<std::string> label_names;
    for (const auto& m : f.metric) {
      for (const auto& l : m.label) label_names.insert(l.name);
    }
    lines.push_back(absl::StrCat(f.name, " ", TypeName(f.type), " [",
                                 absl::StrJoin(label_names, ","), "] ", f.help));
  }
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(kSchema, absl::StrCat(absl::StrJoin(lines, "\n"), "\n"));
}

double Get(const std::map<std::string, double>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? -1 : it->second;
}

TEST_F(MetricsCollectorTest, EachKindOfSourceMovesTheSampleItIsExportedAs) {
  agent::AgentStats& st = agent_->stats();
  agent::Inc(st.connections_accepted, 3);
  agent::Inc(st.ktls_rx_failed, 4);
  agent::Inc(st.relay_bytes_to_peer, 5);
  agent::Inc(st.handshakes_completed, 9);  // exported by suite only
  agent::Inc(st.handshake_timeouts, 9);    // exported as handshakes_failed{reason="timeout"} only
  agent::Add(st.apps_connected, 2);
  st.CountFallback(agent::FallbackReason::kNoSecret);
  st.CountFallback(agent::FallbackReason::kNoSecret);
  st.CountHandshakeFailure(agent::HandshakeFailureReason::kTimeout);
  st.CountSuite(agent::TlsSuite::kTls13ChaCha20);
  control_.CountValidationFailure(ValidationFailure::kExpired);
  control_.CountReload(ReloadSource::kCertDir, false);
  control_.state_files_loaded.store(6);
  agent::Inc(control_.ticket_key_rotations, 7);
  control_.CountRequest("/ktls.v1.TelemetryService/GetStats", "OK");

  const std::map<std::string, double> m = Samples();
  EXPECT_EQ(3, Get(m, "ktls_connections_accepted_total"));
  EXPECT_EQ(4, Get(m, "ktls_kernel_tls_installs_total{direction=\"rx\",result=\"failed\"}"));
  EXPECT_EQ(0, Get(m, "ktls_kernel_tls_installs_total{direction=\"tx\",result=\"ok\"}"));
  EXPECT_EQ(5, Get(m, "ktls_relay_bytes_total{direction=\"to_peer\"}"));
  EXPECT_EQ(0, Get(m, "ktls_relay_bytes_total{direction=\"to_app\"}"));
  EXPECT_EQ(-1, Get(m, "ktls_handshakes_completed_total"));
  EXPECT_EQ(-1, Get(m, "ktls_handshake_timeouts_total"));
  EXPECT_EQ(2, Get(m, "ktls_apps_connected"));
  EXPECT_EQ(2, Get(m, "ktls_fallbacks_total{reason=\"traffic_secret_unavailable\"}"));
  EXPECT_EQ(1, Get(m, "ktls_handshakes_failed_total{reason=\"timeout\"}"));
  EXPECT_EQ(1, Get(m,
                   "ktls_handshakes_completed_total{version=\"TLSv1.3\","
                   "cipher=\"TLS_CHACHA20_POLY1305_SHA256\"}"));
  EXPECT_EQ(1, Get(m, "ktls_control_validation_failures_total{reason=\"expired\"}"));
  EXPECT_EQ(1, Get(m, "ktls_certificate_reloads_total{source=\"cert_dir\",result=\"rejected\"}"));
  EXPECT_EQ(0, Get(m, "ktls_certificate_reloads_total{source=\"cert_dir\",result=\"committed\"}"));
  EXPECT_EQ(6, Get(m, "ktls_state_files_loaded"));
  EXPECT_EQ(7, Get(m, "ktls_session_ticket_key_updates_total"));
  EXPECT_EQ(1, Get(m,
                   "ktls_control_requests_total{method=\"/ktls.v1.TelemetryService/GetStats\","
                   "code=\"OK\"}"));
  EXPECT_EQ(1, Get(m, "ktls_kernel_tls_stat_available"));
  EXPECT_EQ(2, Get(m, "ktls_kernel_tls_stat_sockets{stat=\"TlsCurrTxSw\"}"));
  EXPECT_EQ(118, Get(m, "ktls_kernel_tls_stat_total{stat=\"TlsTxSw\"}"));
  EXPECT_EQ(1, Get(m, "ktls_certificates"));
}

TEST_F(MetricsCollectorTest, LabeledFamiliesAreCompleteAtZero) {
  std::map<std::string, size_t> samples;
  for (const MetricFamily& f : Collect()) {
    samples[f.name] = f.metric.size();
    for (const auto& m : f.metric) {
      // The kernel's counters come from the test's tls_stat file; everything else is new.
      if (f.type == MetricType::Counter && f.name != "ktls_kernel_tls_stat_total") {
        EXPECT_EQ(0, m.counter.value) << f.name;
      }
    }
  }
  EXPECT_EQ(static_cast<size_t>(agent::FallbackReason::kCount), samples["ktls_fallbacks_total"]);
  EXPECT_EQ(static_cast<size_t>(agent::HandshakeFailureReason::kCount),
            samples["ktls_handshakes_failed_total"]);
  EXPECT_EQ(static_cast<size_t>(agent::TlsSuite::kCount),
            samples["ktls_handshakes_completed_total"]);
  EXPECT_EQ(static_cast<size_t>(ValidationFailure::kCount),
            samples["ktls_control_validation_failures_total"]);
  EXPECT_EQ(2 * static_cast<size_t>(ReloadSource::kCount),
            samples["ktls_certificate_reloads_total"]);
  EXPECT_EQ(4u, samples["ktls_kernel_tls_installs_total"]);
  EXPECT_EQ(2u, samples["ktls_relay_bytes_total"]);
}

TEST_F(MetricsCollectorTest, HistogramsAreCumulativeAndEndAtTheCount) {
  agent_->stats().handshake_duration.Observe(0.003);
  agent_->stats().handshake_duration.Observe(20);  // above every bound: +Inf only
  for (const MetricFamily& f : Collect()) {
    if (f.name != "ktls_handshake_duration_seconds") continue;
    ASSERT_EQ(1u, f.metric.size());
    const auto& h = f.metric[0].histogram;
    EXPECT_EQ(2u, h.sample_count);
    EXPECT_DOUBLE_EQ(20.003, h.sample_sum);
    ASSERT_EQ(agent::HandshakeDurationBuckets().size(), h.bucket.size());
    EXPECT_EQ(0u, h.bucket[2].cumulative_count);  // le=0.0025
    EXPECT_EQ(1u, h.bucket[3].cumulative_count);  // le=0.005
    EXPECT_EQ(1u, h.bucket.back().cumulative_count);
    return;
  }
  ADD_FAILURE() << "no ktls_handshake_duration_seconds";
}

TEST_F(MetricsCollectorTest, ControlPlaneFamiliesNeedTheirSources) {
  std::set<std::string> names;
  for (const MetricFamily& f : Collect(/*with_control=*/false)) names.insert(f.name);
  for (const char* absent :
       {"ktls_certificate_generation", "ktls_trust_bundle_generation",
        "ktls_certificate_reloads_total", "ktls_control_validation_failures_total",
        "ktls_state_files_loaded", "ktls_control_requests_total"}) {
    EXPECT_EQ(0u, names.count(absent)) << absent;
  }
  EXPECT_EQ(1u, names.count("ktls_certificates"));
  EXPECT_EQ(1u, names.count("ktls_session_ticket_keys"));
}

}  // namespace
}  // namespace ktls::control::testing
