// The stats lists of agent/stats.h and server/control_metrics.h: what each entry says about its
// Prometheus family must be consistent (the exporter trusts it), and the enum label tables made by
// KTLS_LABELED_ENUM must match the enums.
#include "agent/stats.h"

#include <map>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "server/control_metrics.h"

namespace ktls::agent::testing {
namespace {

struct Entry {
  std::string family;
  std::string help;
  std::string type;
};

std::vector<Entry> Entries() {
  std::vector<Entry> out;
#define KTLS_ENTRY(field, family, help, ...) out.push_back({family, help, "counter"});
  KTLS_AGENT_COUNTERS(KTLS_ENTRY)
  KTLS_CONTROL_COUNTERS(KTLS_ENTRY)
#undef KTLS_ENTRY
#define KTLS_ENTRY(field, family, help) out.push_back({family, help, "gauge"});
  KTLS_AGENT_GAUGES(KTLS_ENTRY)
  KTLS_CONTROL_GAUGES(KTLS_ENTRY)
#undef KTLS_ENTRY
#define KTLS_ENTRY(field, Enum, family, help) out.push_back({family, help, "counter"});
  KTLS_AGENT_COUNTER_ARRAYS(KTLS_ENTRY)
  KTLS_CONTROL_COUNTER_ARRAYS(KTLS_ENTRY)
#undef KTLS_ENTRY
#define KTLS_ENTRY(field, buckets, family, help) out.push_back({family, help, "histogram"});
  KTLS_AGENT_HISTOGRAMS(KTLS_ENTRY)
#undef KTLS_ENTRY
  return out;
}

TEST(StatsListsTest, EntriesThatShareAFamilyAgreeOnItsTypeAndHelp) {
  std::map<std::string, Entry> first;
  for (const Entry& e : Entries()) {
    if (e.family.empty()) continue;  // exported only in a labeled breakdown
    auto [it, inserted] = first.emplace(e.family, e);
    if (inserted) continue;
    EXPECT_EQ(it->second.type, e.type) << e.family;
    EXPECT_EQ(it->second.help, e.help) << e.family;
  }
  EXPECT_EQ(1u, first.count("ktls_kernel_tls_installs_total"));
}

// The conventions of server/metrics.h: prefix ktls_, counters end in _total, help never empty.
TEST(StatsListsTest, FamilyNamesFollowTheConventions) {
  for (const Entry& e : Entries()) {
    if (e.family.empty()) continue;
    EXPECT_TRUE(absl::StartsWith(e.family, "ktls_")) << e.family;
    EXPECT_EQ(e.type == "counter", absl::EndsWith(e.family, "_total")) << e.family;
    EXPECT_FALSE(e.help.empty()) << e.family;
  }
}

TEST(StatsListsTest, EnumLabelsFollowTheirLists) {
  EXPECT_EQ("policy_off", FallbackReasonLabel(FallbackReason::kPolicyOff));
  EXPECT_EQ("traffic_secret_unavailable", FallbackReasonLabel(FallbackReason::kNoSecret));
  EXPECT_EQ("unknown", FallbackReasonLabel(FallbackReason::kCount));
  EXPECT_EQ("timeout", HandshakeFailureReasonLabel(HandshakeFailureReason::kTimeout));
  EXPECT_EQ("protocol_error", HandshakeFailureReasonLabel(HandshakeFailureReason::kProtocol));
  EXPECT_EQ("unknown", HandshakeFailureReasonLabel(HandshakeFailureReason::kCount));
  EXPECT_EQ("bad_ticket_key",
            control::ValidationFailureLabel(control::ValidationFailure::kBadTicketKey));
  EXPECT_EQ("other", control::ValidationFailureLabel(control::ValidationFailure::kCount));
  EXPECT_EQ("cert_dir", control::ReloadSourceLabel(control::ReloadSource::kCertDir));
  EXPECT_EQ("api", control::ReloadSourceLabel(control::ReloadSource::kCount));
  EXPECT_EQ("TLS_CHACHA20_POLY1305_SHA256", TlsSuiteLabel(TlsSuite::kTls13ChaCha20).cipher);
  EXPECT_EQ("other", TlsSuiteLabel(TlsSuite::kCount).version);

  // Label values are unique within an enum (a metric's samples must differ in their labels).
  std::set<absl::string_view> seen;
  for (absl::string_view l : kFallbackReasonLabels) EXPECT_TRUE(seen.insert(l).second) << l;
  seen.clear();
  for (absl::string_view l : kHandshakeFailureReasonLabels) EXPECT_TRUE(seen.insert(l).second) << l;
  seen.clear();
  for (absl::string_view l : control::kValidationFailureLabels)
    EXPECT_TRUE(seen.insert(l).second) << l;
}

TEST(StatsListsTest, MetricLabelsNameTheLabelOfEachEnum) {
  EXPECT_EQ((MetricLabels{{"reason", "tls_module_missing"}}),
            MetricLabelsOf(FallbackReason::kModuleMissing));
  EXPECT_EQ((MetricLabels{{"reason", "not_tls"}}), MetricLabelsOf(HandshakeFailureReason::kNotTls));
  EXPECT_EQ((MetricLabels{{"reason", "expired"}}),
            MetricLabelsOf(control::ValidationFailure::kExpired));
  EXPECT_EQ(
      (MetricLabels{{"version", "TLSv1.2"}, {"cipher", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}}),
      MetricLabelsOf(TlsSuite::kTls12RsaAes128Gcm));
}

TEST(StatsListsTest, SuiteOfANegotiatedVersionAndCipher) {
  EXPECT_EQ(TlsSuite::kTls13Aes256Gcm, TlsSuiteOf(0x0304, 0x1302));
  EXPECT_EQ(TlsSuite::kTls12EcdsaChaCha20, TlsSuiteOf(0x0303, 0xCCA9));
  EXPECT_EQ(TlsSuite::kOther, TlsSuiteOf(0x0303, 0x1302));  // a 1.3 suite under 1.2
  EXPECT_EQ(TlsSuite::kOther, TlsSuiteOf(0x0304, 0x009C));
}

}  // namespace
}  // namespace ktls::agent::testing
