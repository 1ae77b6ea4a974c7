#include "agent/stats.h"

#include "absl/strings/str_cat.h"

namespace ktls {

absl::string_view FallbackReasonLabel(FallbackReason r) {
  switch (r) {
#define KTLS_CASE(e, label) \
  case FallbackReason::e:   \
    return label;
    KTLS_FALLBACK_REASONS(KTLS_CASE)
#undef KTLS_CASE
    case FallbackReason::kCount:
      break;
  }
  return "unknown";
}

absl::string_view HandshakeFailureReasonLabel(HandshakeFailureReason r) {
  switch (r) {
#define KTLS_CASE(e, label)       \
  case HandshakeFailureReason::e: \
    return label;
    KTLS_HANDSHAKE_FAILURE_REASONS(KTLS_CASE)
#undef KTLS_CASE
    case HandshakeFailureReason::kCount:
      break;
  }
  return "unknown";
}

TlsSuiteLabels TlsSuiteLabel(TlsSuite s) {
  switch (s) {
#define KTLS_CASE(e, version, name, id) \
  case TlsSuite::e:                     \
    return {version, name};
    KTLS_TLS_SUITES(KTLS_CASE)
#undef KTLS_CASE
    case TlsSuite::kCount:
      break;
  }
  return {"other", "other"};
}

TlsSuite TlsSuiteOf(int version, uint16_t cipher_id) {
  const absl::string_view v = version == 0x0304 ? "TLSv1.3" : version == 0x0303 ? "TLSv1.2" : "";
#define KTLS_MATCH(e, ver, name, id) \
  if (id != 0 && cipher_id == id && v == ver) return TlsSuite::e;
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

}  // namespace ktls
