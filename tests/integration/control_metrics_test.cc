// /metrics against known traffic: every family of the metrics contract (docs/deploy.md) with its
// type, and values that move exactly with what was sent. On the host (no kTLS) the relay
// counters and fallback reasons move; in the VM suite (KTLS_EXPECT_OFFLOAD=1) the kTLS install
// counters and the kernel's own /proc/net/tls_stat counters must move instead.
#include <cmath>
#include <ctime>
#include <string>

#include <gtest/gtest.h>

#include "tests/integration/support/control.h"

namespace ktls::testing {
namespace {

// The families deploy/ and helm/ depend on (docs/deploy.md, "Metrics contract"), with their type.
const std::pair<const char*, const char*> kContract[] = {
    {"ktls_build_info", "gauge"},
    {"ktls_kernel_tls_available", "gauge"},
    {"ktls_connections_accepted_total", "counter"},
    {"ktls_handshakes_completed_total", "counter"},
    {"ktls_handshakes_failed_total", "counter"},
    {"ktls_handshakes_resumed_total", "counter"},
    {"ktls_handshakes_in_progress", "gauge"},
    {"ktls_handshake_duration_seconds", "histogram"},
    {"ktls_offload_ktls_total", "counter"},
    {"ktls_offload_relay_total", "counter"},
    {"ktls_offload_refused_total", "counter"},
    {"ktls_fallbacks_total", "counter"},
    {"ktls_handoffs_sent_total", "counter"},
    {"ktls_handoffs_expired_total", "counter"},
    {"ktls_handoffs_dropped_total", "counter"},
    {"ktls_handoff_latency_seconds", "histogram"},
    {"ktls_pending_handoffs", "gauge"},
    {"ktls_apps_connected", "gauge"},
    {"ktls_connections_open", "gauge"},
    {"ktls_relay_active", "gauge"},
    {"ktls_certificate_not_after_timestamp_seconds", "gauge"},
    // Beyond the contract, from the list.
    {"ktls_kernel_tls_installs_total", "counter"},
    {"ktls_install_duration_seconds", "histogram"},
    {"ktls_kernel_tls_supported", "gauge"},
    {"ktls_kernel_tls_stat_total", "counter"},
    {"ktls_kernel_tls_stat_sockets", "gauge"},
    {"ktls_relay_bytes_total", "counter"},
    {"ktls_certificate_not_before_timestamp_seconds", "gauge"},
    {"ktls_certificate_generation", "gauge"},
    {"ktls_certificate_reloads_total", "counter"},
    {"ktls_control_requests_total", "counter"},
    {"ktls_apps_subscribed_total", "counter"},
};

double Delta(const Metrics& a, const Metrics& b, const std::string& name,
             const std::string& labels = "") {
  return b.Get(name, labels) - a.Get(name, labels);
}

TEST(ControlMetricsTest, FamiliesAndValuesMatchTheTrafficSent) {
  Stack stack;
  ASSERT_GT(stack.port(), 0);
  const std::string address = ReadyInfo(stack)["metrics"];
  Control control(ReadyInfo(stack)["control_socket"]);
  v1::Stats ignored;
  ASSERT_TRUE(control.telemetry->GetStats(Ctx().get(), {}, &ignored).ok());

  Metrics m0;
  std::string error;
  ASSERT_TRUE(FetchMetrics(address, &m0, &error)) << error;
  for (const auto& [name, type] : kContract) {
    EXPECT_EQ(type, m0.types[name]) << name;
  }
  // Labeled families are complete from the start (at 0).
  EXPECT_EQ(0, m0.Get("ktls_handshakes_failed_total", "reason=\"timeout\""));
  EXPECT_EQ(0, m0.Get("ktls_fallbacks_total", "reason=\"cipher_unsupported\""));
  EXPECT_EQ(0, m0.Get("ktls_handshakes_completed_total",
                      "version=\"TLSv1.3\",cipher=\"TLS_CHACHA20_POLY1305_SHA256\""));
  EXPECT_EQ(1, m0.Sum("ktls_build_info"));
  const double not_after =
      m0.Get("ktls_certificate_not_after_timestamp_seconds", "certificate=\"development\"");
  EXPECT_NEAR(static_cast<double>(std::time(nullptr)) + 30 * 86400, not_after, 2 * 86400);
  EXPECT_GE(m0.Get("ktls_control_requests_total",
                   "method=\"/ktls.v1.TelemetryService/GetStats\",code=\"OK\""),
            1);

  // Known traffic: 5 TLS 1.3 AES-128-GCM, 3 TLS 1.2 ECDSA AES-256-GCM, 1 plaintext request.
  constexpr int k13 = 5, k12 = 3;
  for (int i = 0; i < k13; ++i) {
    ClientOptions o;
    o.cipher = "TLS_AES_128_GCM_SHA256";
    ASSERT_TRUE(Get(stack.port(), "/healthz", o).ok);
  }
  for (int i = 0; i < k12; ++i) {
    ClientOptions o;
    o.tls_version = TLS1_2_VERSION;
    o.cipher = "ECDHE-ECDSA-AES256-GCM-SHA384";
    ASSERT_TRUE(Get(stack.port(), "/healthz", o).ok);
  }
  ASSERT_TRUE(SendRawAndAwaitClose(stack.port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  Metrics m1;
  ASSERT_TRUE(FetchMetrics(address, &m1, &error)) << error;

  constexpr int kOk = k13 + k12;
  EXPECT_EQ(kOk + 1, Delta(m0, m1, "ktls_connections_accepted_total"));
  EXPECT_EQ(k13, Delta(m0, m1, "ktls_handshakes_completed_total",
                       "version=\"TLSv1.3\",cipher=\"TLS_AES_128_GCM_SHA256\""));
  EXPECT_EQ(k12, Delta(m0, m1, "ktls_handshakes_completed_total",
                       "version=\"TLSv1.2\",cipher=\"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\""));
  EXPECT_EQ(kOk,
            m1.Sum("ktls_handshakes_completed_total") - m0.Sum("ktls_handshakes_completed_total"));
  EXPECT_EQ(1, Delta(m0, m1, "ktls_handshakes_failed_total", "reason=\"not_tls\""));
  EXPECT_EQ(1, m1.Sum("ktls_handshakes_failed_total") - m0.Sum("ktls_handshakes_failed_total"));
  EXPECT_EQ(kOk, Delta(m0, m1, "ktls_handshake_duration_seconds_count"));
  EXPECT_GT(Delta(m0, m1, "ktls_handshake_duration_seconds_sum"), 0);
  EXPECT_EQ(kOk, Delta(m0, m1, "ktls_handoffs_sent_total"));
  EXPECT_EQ(kOk, Delta(m0, m1, "ktls_handoff_latency_seconds_count"));
  EXPECT_EQ(m1.Get("ktls_handoff_latency_seconds_count"),
            m1.Get("ktls_handoff_latency_seconds_bucket", "le=\"+Inf\""));
  EXPECT_EQ(0, m1.Get("ktls_pending_handoffs"));
  EXPECT_EQ(1, m1.Get("ktls_apps_connected"));
  EXPECT_EQ(kOk, Delta(m0, m1, "ktls_certificate_handshakes_total", "certificate=\"development\""));

  const double tx_ok =
      Delta(m0, m1, "ktls_kernel_tls_installs_total", "direction=\"tx\",result=\"ok\"");
  const double rx_ok =
      Delta(m0, m1, "ktls_kernel_tls_installs_total", "direction=\"rx\",result=\"ok\"");
  if (ExpectOffload()) {
    // The VM suite: the kernel did the crypto, and says so in /proc/net/tls_stat.
    EXPECT_EQ(1, m1.Get("ktls_kernel_tls_available"));
    EXPECT_EQ(1, m1.Get("ktls_kernel_tls_stat_available"));
    EXPECT_EQ(kOk, Delta(m0, m1, "ktls_offload_ktls_total"));
    EXPECT_EQ(0, Delta(m0, m1, "ktls_offload_relay_total"));
    EXPECT_EQ(kOk, tx_ok);
    EXPECT_EQ(kOk, rx_ok);
    // Every offloaded connection's setsockopts were timed; they take some time.
    EXPECT_EQ(kOk, Delta(m0, m1, "ktls_install_duration_seconds_count"));
    EXPECT_GT(Delta(m0, m1, "ktls_install_duration_seconds_sum"), 0);
    EXPECT_GE(Delta(m0, m1, "ktls_kernel_tls_stat_total", "stat=\"TlsTxSw\"") +
                  Delta(m0, m1, "ktls_kernel_tls_stat_total", "stat=\"TlsTxDevice\""),
              kOk);
    EXPECT_GE(Delta(m0, m1, "ktls_kernel_tls_stat_total", "stat=\"TlsRxSw\"") +
                  Delta(m0, m1, "ktls_kernel_tls_stat_total", "stat=\"TlsRxDevice\""),
              kOk);
    v1::Capabilities caps;
    ASSERT_TRUE(control.telemetry->GetCapabilities(Ctx().get(), {}, &caps).ok());
    EXPECT_TRUE(caps.tls_stat_available()) << caps.tls_stat_error();
    EXPECT_GT(caps.tls_stat().count("TlsTxSw"), 0u);
  } else if (!stack.ktls_available()) {
    // This host: no tls module, so every connection was relayed and says why.
    EXPECT_EQ(0, m1.Get("ktls_kernel_tls_available"));
    EXPECT_EQ(0, m1.Get("ktls_kernel_tls_stat_available"));
    EXPECT_EQ(kOk, Delta(m0, m1, "ktls_offload_relay_total"));
    EXPECT_EQ(0, Delta(m0, m1, "ktls_offload_ktls_total"));
    EXPECT_EQ(kOk, Delta(m0, m1, "ktls_fallbacks_total", "reason=\"tls_module_missing\""));
    EXPECT_EQ(0, tx_ok);
    EXPECT_EQ(0, rx_ok);
    // TCP_ULP failed at once: nothing reached the kernel's TLS code, nothing observed.
    EXPECT_EQ(0, Delta(m0, m1, "ktls_install_duration_seconds_count"));
    EXPECT_GT(Delta(m0, m1, "ktls_relay_bytes_total", "direction=\"to_app\""), 0);
    EXPECT_GT(Delta(m0, m1, "ktls_relay_bytes_total", "direction=\"to_peer\""), 0);
  }

  // Histogram buckets are cumulative and end at the count.
  double last = 0;
  for (const auto& [key, value] : m1.samples) {
    if (key.rfind("ktls_handshake_duration_seconds_bucket{", 0) != 0) continue;
    EXPECT_LE(value, m1.Get("ktls_handshake_duration_seconds_count")) << key;
    last = std::max(last, value);
  }
  EXPECT_EQ(m1.Get("ktls_handshake_duration_seconds_count"), last);
}

}  // namespace
}  // namespace ktls::testing
