#include "agent/stats.h"

#include <iterator>

#include "absl/strings/str_cat.h"

namespace ktls::agent {

absl::string_view FallbackReasonLabel(FallbackReason r) {
  return EnumLabel(kFallbackReasonLabels, r, "unknown");
}

absl::string_view HandshakeFailureReasonLabel(HandshakeFailureReason r) {
  return EnumLabel(kHandshakeFailureReasonLabels, r, "unknown");
}

TlsSuiteLabels TlsSuiteLabel(TlsSuite s) {
  static constexpr TlsSuiteLabels kLabels[] = {
#define KTLS_ROW(e, version, name, id) {version, name},
      KTLS_TLS_SUITES(KTLS_ROW)
#undef KTLS_ROW
  };
  const size_t i = static_cast<size_t>(s);
  return i < std::size(kLabels) ? kLabels[i] : TlsSuiteLabels{"other", "other"};
}

MetricLabels MetricLabelsOf(FallbackReason r) {
  return {{"reason", std::string(FallbackReasonLabel(r))}};
}

MetricLabels MetricLabelsOf(HandshakeFailureReason r) {
  return {{"reason", std::string(HandshakeFailureReasonLabel(r))}};
}

MetricLabels MetricLabelsOf(TlsSuite s) {
  const TlsSuiteLabels l = TlsSuiteLabel(s);
  return {{"version", std::string(l.version)}, {"cipher", std::string(l.cipher)}};
}

TlsSuite TlsSuiteOf(int version, uint16_t cipher_id) {
  const absl::string_view v = version == 0x0304 ? "TLSv1.3" : version == 0x0303 ? "TLSv1.2" : "";
#define KTLS_MATCH(e, ver, name, id) \
  if ((id) != 0 && cipher_id == (id) && v == (ver)) return TlsSuite::e;
  KTLS_TLS_SUITES(KTLS_MATCH)
#undef KTLS_MATCH
  return TlsSuite::kOther;
}

std::string AgentStats::Summary() const {
  auto v = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  std::string reasons;
  for (size_t i = 0; i < fallbacks.size(); ++i) {
    if (uint64_t n = v(fallbacks[i]); n > 0) {
      absl::StrAppend(&reasons, reasons.empty() ? "" : ", ",
                      FallbackReasonLabel(static_cast<FallbackReason>(i)), "=", n);
    }
  }
  return absl::StrCat(
      "accepted=", v(connections_accepted), " handshakes_ok=", v(handshakes_completed),
      " failed=", v(handshakes_failed), " timeouts=", v(handshake_timeouts),
      " | offload: ktls=", v(offload_ktls), " relay=", v(offload_relay),
      reasons.empty() ? "" : absl::StrCat(" (", reasons, ")"), " refused=", v(offload_refused),
      " | ktls_tx ok/fail=", v(ktls_tx_installed), "/", v(ktls_tx_failed),
      " ktls_rx ok/fail=", v(ktls_rx_installed), "/", v(ktls_rx_failed),
      " | handoffs sent=", v(handoffs_sent), " expired=", v(handoffs_expired),
      " requeued=", v(handoffs_requeued), " dropped=", v(handoffs_dropped),
      " | relay bytes to_app=", v(relay_bytes_to_app), " to_peer=", v(relay_bytes_to_peer));
}

}  // namespace ktls::agent
