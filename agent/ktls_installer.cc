#include "agent/ktls_installer.h"

#include <linux/tls.h>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "agent/kernel_probe.h"
#include "agent/ktls_crypto_info.h"
#include "agent/socket_bio.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace ktls::agent {

absl::string_view OffloadPolicyName(OffloadPolicy p) {
  switch (p) {
    case OffloadPolicy::kPreferred:
      return "preferred";
    case OffloadPolicy::kRequired:
      return "required";
    case OffloadPolicy::kOff:
      return "off";
  }
  return "?";
}

namespace {

// Turns the BIO's record of a failed direction into a reason.
void ExplainFailure(const SocketBioKtlsState& st, bool tx_side, OffloadDecision* d) {
  const int err = tx_side ? st.tx_errno : st.rx_errno;
  if (st.ulp_errno != 0) {
    d->reason = st.ulp_errno == ENOENT ? FallbackReason::kModuleMissing
                                       : (tx_side ? FallbackReason::kTxInstallFailed
                                                  : FallbackReason::kRxInstallFailed);
    d->reason_text = DescribeKtlsErrno("ulp", st.ulp_errno);
    return;
  }
  d->reason = tx_side ? FallbackReason::kTxInstallFailed : FallbackReason::kRxInstallFailed;
  d->reason_text = DescribeKtlsErrno(tx_side ? "tx" : "rx", err);
}

}  // namespace

OffloadDecision CompleteKtlsInstall(SysCalls& sys, SSL* ssl, int fd, OffloadPolicy policy) {
  TlsConnectionState* state = TlsContext::StateOf(ssl);
  absl::Cleanup wipe = [state] {
    if (state != nullptr) state->WipeSecrets();
  };
  absl::Span<const uint8_t> secret;
  if (state != nullptr) {
    secret = absl::MakeConstSpan(state->client_app_secret.data(), state->client_app_secret_len);
  }
  return CompleteKtlsInstallWithSecret(sys, ssl, fd, policy, secret, /*rx_record_seq=*/0,
                                       /*rx_at_record_boundary=*/true);
}

OffloadDecision CompleteKtlsInstallWithSecret(SysCalls& sys, SSL* ssl, int fd, OffloadPolicy policy,
                                              absl::Span<const uint8_t> tls13_rx_secret,
                                              uint64_t rx_record_seq, bool rx_at_record_boundary) {
  OffloadDecision d;
  SocketBioKtlsState* st = SocketBioState(SSL_get_wbio(ssl));
  if (st == nullptr) {
    d.reason = FallbackReason::kTxInstallFailed;
    d.reason_text = "connection does not use the agent's socket BIO";
    return d;
  }
  d.tx = st->tx;
  d.rx = st->rx;
  if (policy == OffloadPolicy::kOff) {
    d.reason = FallbackReason::kPolicyOff;
    d.reason_text = "policy: offload=off";
    return d;
  }

  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  std::optional<KtlsCipher> kc =
      cipher ? KtlsCipherFromSuiteId(SSL_CIPHER_get_protocol_id(cipher)) : std::nullopt;
  if (!kc) {
    d.reason = FallbackReason::kCipherUnsupported;
    d.reason_text =
        absl::StrCat("cipher ", cipher ? SSL_CIPHER_get_name(cipher) : "?", " cannot be offloaded");
    return d;
  }
  if (!st->tx) {
    if (st->tx_attempted) {
      ExplainFailure(*st, /*tx_side=*/true, &d);
    } else {
      d.reason = FallbackReason::kTxInstallFailed;
      d.reason_text = "OpenSSL did not offload TX (kTLS unsupported for this session)";
    }
    return d;
  }

  if (SSL_version(ssl) == TLS1_3_VERSION && !st->rx) {
    // OpenSSL 3.0 never installs TLS 1.3 RX; do it by hand. The ULP is already set (TX is on).
    if (SSL_has_pending(ssl) || !rx_at_record_boundary) {
      d.reason = FallbackReason::kBufferedRecords;
      d.reason_text = "OpenSSL buffered records past the handshake; RX sequence unknown";
      return d;
    }
    if (tls13_rx_secret.empty()) {
      d.reason = FallbackReason::kNoSecret;
      d.reason_text = "peer application traffic secret not captured";
      return d;
    }
    absl::StatusOr<CryptoInfo> info =
        CryptoInfo::FromTls13TrafficSecret(Direction::kRx, *kc, tls13_rx_secret, rx_record_seq);
    if (!info.ok()) {
      d.reason = FallbackReason::kRxInstallFailed;
      d.reason_text = absl::StrCat("deriving RX key: ", info.status().message());
      return d;
    }
    st->rx_attempted = true;
    SysResult r = KtlsInstallSetSockOpt(sys, *st, fd, SOL_TLS, info->sockopt_name(), info->data(),
                                        info->size());
    if (!r.ok()) {
      st->rx_errno = r.err;
      ExplainFailure(*st, /*tx_side=*/false, &d);
      return d;
    }
    st->rx = true;
    d.rx = true;
  } else if (!st->rx) {
    if (st->rx_attempted) {
      ExplainFailure(*st, /*tx_side=*/false, &d);
    } else {
      d.reason = FallbackReason::kRxInstallFailed;
      d.reason_text = "OpenSSL did not offload RX";
    }
    return d;
  }
  d.ktls = d.tx && d.rx;
  return d;
}

void CountKtlsInstall(AgentStats& stats, SSL* ssl) {
  const SocketBioKtlsState* st = SocketBioState(SSL_get_wbio(ssl));
  if (st == nullptr) return;
  if (st->tx) Inc(stats.ktls_tx_installed);
  else if (st->tx_attempted) Inc(stats.ktls_tx_failed);
  if (st->rx) Inc(stats.ktls_rx_installed);
  else if (st->rx_attempted) Inc(stats.ktls_rx_failed);
  // Only sockets that reached the kernel's TLS code: a kernel without the module fails TCP_ULP
  // at once, and those microseconds would only dilute the cost of real installs.
  if (st->ulp_set) {
    stats.ktls_install_duration.Observe(static_cast<double>(st->kernel_install_ns) / 1e9);
  }
}

void ReleaseSslAfterHandoff(SslPtr ssl) {
  if (!ssl) return;
  SSL_set_shutdown(ssl.get(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  ssl.reset();
}

}  // namespace ktls::agent
