#include "agent/data_path.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "agent/listener.h"
#include "agent/log.h"
#include "agent/relay.h"

namespace ktls::agent {
namespace {

std::string ErrnoText(int err) {
  return absl::StrCat(strerrordesc_np(err), " (", strerrorname_np(err), ")");
}

// Warning keys and messages say which side the connection came from, so that one reason seen
// on both sides is logged once for each.
absl::string_view LogPrefix(TlsRole role) { return role == TlsRole::kAccept ? "" : "dial-"; }
absl::string_view TextPrefix(TlsRole role) { return role == TlsRole::kAccept ? "" : "outbound: "; }

}  // namespace

absl::string_view DataPathName(DataPath p) {
  switch (p) {
    case DataPath::kHandoff:
      return "handoff";
    case DataPath::kRelay:
      return "relay";
    case DataPath::kRefuse:
      return "refuse";
  }
  return "?";
}

DataPathDecision DecideDataPath(SysCalls& sys, AgentStats& stats, OffloadPolicy policy,
                                TlsRole role, SSL* ssl, int fd, std::optional<Tls13RxKey> rx) {
  DataPathDecision d;
  d.offload = rx.has_value() ? CompleteKtlsInstallWithSecret(sys, ssl, fd, policy, rx->secret,
                                                             rx->record_seq, rx->at_record_boundary)
                             : CompleteKtlsInstall(sys, ssl, fd, policy);
  CountKtlsInstall(stats, ssl);
  const OffloadDecision& o = d.offload;
  if (o.ktls) {
    d.path = DataPath::kHandoff;
    Inc(stats.offload_ktls);
  } else if (policy == OffloadPolicy::kRequired) {
    d.path = DataPath::kRefuse;
    Inc(stats.offload_refused);
    LogWarningOncePerKey(
        absl::StrCat(LogPrefix(role), "refused-", o.reason_text),
        absl::StrCat(TextPrefix(role), "offload=required: refusing connection: ", o.reason_text));
  } else {
    d.path = DataPath::kRelay;
    Inc(stats.offload_relay);
    stats.CountFallback(o.reason);
    LogWarningOncePerKey(
        absl::StrCat(LogPrefix(role), "fallback-", FallbackReasonLabel(o.reason)),
        absl::StrCat(TextPrefix(role), "relaying instead of kTLS: ", o.reason_text));
  }
  return d;
}

absl::StatusOr<UniqueFd> EnterDataPath(DataPlaneContext& ctx, const DataPathDecision& decision,
                                       uint64_t id, TlsStream stream,
                                       std::unique_ptr<TlsConnectionState> tls_state) {
  switch (decision.path) {
    case DataPath::kHandoff:
      // Nothing more may be written by OpenSSL: the kernel and the app own the TLS stream.
      ReleaseSslAfterHandoff(std::move(stream.ssl));
      return std::move(stream.fd);
    case DataPath::kRefuse:
      ERR_clear_error();
      SSL_shutdown(stream.ssl.get());  // close_notify, best effort
      stream.ssl.reset();              // before tls_state, which its callbacks point to
      return absl::FailedPreconditionError(
          absl::StrCat("offload=required: ", decision.offload.reason_text));
    case DataPath::kRelay:
      break;
  }
  int pair[2];
  SysResult r = ctx.sys.SocketPair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair);
  if (!r.ok()) {
    stream.ssl.reset();  // before tls_state, which its callbacks point to
    Inc(ctx.stats.relay_errors);
    std::string why = absl::StrCat("socketpair for relay: ", ErrnoText(r.err));
    LogWarningOncePerKey(absl::StrCat("socketpair-", r.err), why);
    return absl::ResourceExhaustedError(why);
  }
  UniqueFd agent_end(ctx.sys, pair[0]);
  UniqueFd app_end(ctx.sys, pair[1]);
  auto relay = std::make_unique<RelaySession>(ctx, id, std::move(stream.fd), std::move(stream.ssl),
                                              std::move(tls_state), std::move(agent_end));
  absl::Status s = relay->Start();
  if (!s.ok()) {
    Inc(ctx.stats.relay_errors);
    KTLS_LOG(kWarning, "conn ", id, ": relay start: ", s.message());
    return absl::Status(s.code(), absl::StrCat("relay: ", s.message()));
  }
  ctx.adopt(std::move(relay));
  return app_end;
}

void FillPeerIdentityFromSsl(SSL* ssl, v1::PeerIdentity* id) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) return;
  id->set_presented(true);
  id->set_verified(SSL_get_verify_result(ssl) == X509_V_OK);
  auto name_text = [](X509_NAME* n) {
    BioPtr mem(BIO_new(BIO_s_mem()));
    X509_NAME_print_ex(mem.get(), n, 0, XN_FLAG_RFC2253);
    char* data = nullptr;
    long len = BIO_get_mem_data(mem.get(), &data);
    return std::string(data, len > 0 ? len : 0);
  };
  id->set_subject(name_text(X509_get_subject_name(cert)));
  id->set_issuer(name_text(X509_get_issuer_name(cert)));
  GeneralNamesPtr sans(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), i);
    if (gn->type == GEN_DNS) {
      id->add_dns_sans(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                       ASN1_STRING_length(gn->d.dNSName));
    } else if (gn->type == GEN_URI) {
      id->add_uri_sans(
          reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier)),
          ASN1_STRING_length(gn->d.uniformResourceIdentifier));
    }
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &md_len)) {
    id->set_sha256_fingerprint(
        absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(md), md_len)));
  }
}

void FillSessionInfo(SysCalls& sys, SSL* ssl, int fd, const sockaddr_storage& peer,
                     const OffloadDecision& d, v1::ConnectionInfo* info) {
  std::string addr;
  uint32_t port = 0;
  FormatSockaddr(reinterpret_cast<const sockaddr*>(&peer), &addr, &port);
  info->mutable_peer()->set_address(addr);
  info->mutable_peer()->set_port(port);
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  if (sys.GetSockName(fd, reinterpret_cast<sockaddr*>(&local), &len).ok()) {
    FormatSockaddr(reinterpret_cast<const sockaddr*>(&local), &addr, &port);
    info->mutable_local()->set_address(addr);
    info->mutable_local()->set_port(port);
  }
  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  if (alpn_len > 0) info->set_alpn(std::string(reinterpret_cast<const char*>(alpn), alpn_len));
  info->set_tls_version(SSL_get_version(ssl));
  info->set_tls_version_code(static_cast<uint32_t>(SSL_version(ssl)));
  if (const SSL_CIPHER* c = SSL_get_current_cipher(ssl)) {
    const char* std_name = SSL_CIPHER_standard_name(c);
    info->set_cipher(std_name ? std_name : SSL_CIPHER_get_name(c));
  }
  info->set_data_path(d.ktls ? v1::DATA_PATH_KTLS : v1::DATA_PATH_RELAY);
  info->set_ktls_tx(d.ktls ? v1::OFFLOAD_STATE_ACTIVE : v1::OFFLOAD_STATE_INACTIVE);
  info->set_ktls_rx(d.ktls ? v1::OFFLOAD_STATE_ACTIVE : v1::OFFLOAD_STATE_INACTIVE);
  if (!d.ktls) info->set_fallback_reason(d.reason_text);
  FillPeerIdentityFromSsl(ssl, info->mutable_peer_identity());
  info->set_resumed(SSL_session_reused(ssl) == 1);
}

}  // namespace ktls::agent
