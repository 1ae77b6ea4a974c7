#include "server/cert_validation.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "agent/openssl_ptr.h"
#include "agent/pem.h"

namespace ktls::control {
namespace {

Rejection Reject(ValidationFailure reason, absl::string_view message) {
  return Rejection{reason, absl::InvalidArgumentError(message)};
}

std::string NameText(const X509_NAME* name) {
  agent::BioPtr mem(BIO_new(BIO_s_mem()));
  if (mem == nullptr || X509_NAME_print_ex(mem.get(), name, 0, XN_FLAG_RFC2253) < 0) return "";
  char* data = nullptr;
  const long len = BIO_get_mem_data(mem.get(), &data);
  return std::string(data, len > 0 ? static_cast<size_t>(len) : 0);
}

std::string Hex(const unsigned char* p, size_t n) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(p), n));
}

std::string Fingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return "";
  return Hex(md, len);
}

absl::Time AsnTime(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&tm));
}

std::string KeyType(EVP_PKEY* key) {
  if (key == nullptr) return "";
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_EC: {
      char group[64] = {};
      size_t len = 0;
      if (EVP_PKEY_get_group_name(key, group, sizeof(group), &len) == 1) {
        absl::string_view g(group, len);
        if (g == "prime256v1") g = "P-256";
        if (g == "secp384r1") g = "P-384";
        if (g == "secp521r1") g = "P-521";
        return absl::StrCat("ECDSA ", g);
      }
      return "ECDSA";
    }
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS:
      return absl::StrCat("RSA ", EVP_PKEY_get_bits(key));
    case EVP_PKEY_ED25519:
      return "Ed25519";
    case EVP_PKEY_ED448:
      return "Ed448";
    default: {
      const char* name = EVP_PKEY_get0_type_name(key);
      return name != nullptr ? name : "unknown";
    }
  }
}

struct Sans {
  std::vector<std::string> dns;
  std::vector<std::string> ip;
};

Sans SubjectAltNames(X509* cert) {
  Sans out;
  agent::GeneralNamesPtr sans(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  ERR_clear_error();
  for (int i = 0; sans != nullptr && i < sk_GENERAL_NAME_num(sans.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), i);
    if (gn->type == GEN_DNS) {
      out.dns.push_back(absl::AsciiStrToLower(
          absl::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                            static_cast<size_t>(ASN1_STRING_length(gn->d.dNSName)))));
    } else if (gn->type == GEN_IPADD) {
      const int len = ASN1_STRING_length(gn->d.iPAddress);
      const unsigned char* p = ASN1_STRING_get0_data(gn->d.iPAddress);
      char buf[INET6_ADDRSTRLEN] = {};
      if ((len == 4 && inet_ntop(AF_INET, p, buf, sizeof(buf)) != nullptr) ||
          (len == 16 && inet_ntop(AF_INET6, p, buf, sizeof(buf)) != nullptr)) {
        out.ip.push_back(buf);
      }
    }
  }
  return out;
}

// Whether a SAN DNS entry covers a requested SNI name (both lower-case). A requested wildcard
// needs the same wildcard in the certificate; an exact name is covered by itself or by a
// one-label wildcard ("*.example.com" covers "a.example.com", not "example.com").
bool Covers(absl::string_view san, absl::string_view name) {
  if (san == name) return true;
  if (absl::StartsWith(name, "*.")) return false;
  if (!absl::StartsWith(san, "*.")) return false;
  const size_t dot = name.find('.');
  return dot != absl::string_view::npos && dot > 0 && name.substr(dot + 1) == san.substr(2);
}

std::string Days(absl::Duration d) {
  const int64_t hours = absl::ToInt64Hours(d);
  if (hours < 48) return absl::StrCat(hours, " hours");
  return absl::StrCat(hours / 24, " days");
}

}  // namespace

std::string FormatRfc3339(absl::Time t) {
  if (t == absl::InfinitePast()) return "unknown";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t ns = absl::ToUnixNanos(t);
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

absl::Status ValidateCertificateName(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("name: required");
  if (name.size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("name: ", name.size(), " characters; at most 64"));
  }
  const auto ok_char = [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  };
  if (!absl::ascii_isalnum(static_cast<unsigned char>(name[0]))) {
    return absl::InvalidArgumentError(
        absl::StrCat("name: '", absl::CHexEscape(name), "' must start with a letter or digit"));
  }
  for (char c : name) {
    if (!ok_char(c)) {
      return absl::InvalidArgumentError(
          absl::StrCat("name: '", absl::CHexEscape(name),
                       "' may contain only letters, digits, '.', '_' and '-'"));
    }
  }
  return absl::OkStatus();
}

std::optional<Rejection> CheckStageRequest(const agent::CertificateSource& r) {
  if (absl::Status s = ValidateCertificateName(r.name); !s.ok()) {
    return Rejection{ValidationFailure::kInvalidName, s};
  }
  if (r.chain_pem.size() > kMaxChainPemBytes) {
    return Reject(ValidationFailure::kTooLarge,
                  absl::StrCat("cert_chain_pem: ", r.chain_pem.size(),
                               " bytes exceeds the limit of ", kMaxChainPemBytes));
  }
  if (r.key_pem.size() > kMaxKeyPemBytes) {
    return Reject(ValidationFailure::kTooLarge,
                  absl::StrCat("private_key_pem: ", r.key_pem.size(),
                               " bytes exceeds the limit of ", kMaxKeyPemBytes));
  }
  if (static_cast<size_t>(r.server_names.size()) > kMaxServerNames) {
    return Reject(ValidationFailure::kTooLarge,
                  absl::StrCat("server_names: ", r.server_names.size(),
                               " names exceeds the limit of ", kMaxServerNames));
  }
  for (const std::string& n : r.server_names) {
    if (n.size() > kMaxServerNameBytes) {
      return Reject(ValidationFailure::kTooLarge,
                    absl::StrCat("server_names: a name of ", n.size(),
                                 " bytes exceeds the limit of ", kMaxServerNameBytes));
    }
  }
  if (r.chain_pem.empty()) {
    return Reject(ValidationFailure::kBadCertificatePem, "cert_chain_pem: required");
  }
  if (!absl::StrContains(r.chain_pem, "-----BEGIN CERTIFICATE-----")) {
    return Reject(ValidationFailure::kBadCertificatePem,
                  "cert_chain_pem: not a PEM certificate (no -----BEGIN CERTIFICATE----- block)");
  }
  if (r.key_pem.empty()) {
    return Reject(ValidationFailure::kBadPrivateKey, "private_key_pem: required");
  }
  if (absl::StrContains(r.key_pem, "-----BEGIN ENCRYPTED PRIVATE KEY-----") ||
      absl::StrContains(r.key_pem, "Proc-Type: 4,ENCRYPTED")) {
    return Reject(ValidationFailure::kEncryptedPrivateKey,
                  "private_key_pem: the key is encrypted; give it unencrypted (the agent never "
                  "asks for a passphrase)");
  }
  if (!absl::StrContains(r.key_pem, "PRIVATE KEY-----")) {
    return Reject(ValidationFailure::kBadPrivateKey,
                  "private_key_pem: not a PEM private key (no -----BEGIN ... PRIVATE KEY----- "
                  "block)");
  }
  return std::nullopt;
}

ValidationFailure ClassifyParseError(const absl::Status& status) {
  const absl::string_view m = status.message();
  if (absl::StrContains(m, "does not match")) return ValidationFailure::kKeyMismatch;
  if (absl::StrContains(m, "private key")) return ValidationFailure::kBadPrivateKey;
  if (absl::StrContains(m, "certificate chain is larger") || absl::StrContains(m, "larger than")) {
    return ValidationFailure::kTooLarge;
  }
  if (absl::StrContains(m, "claimed by both")) return ValidationFailure::kNameConflict;
  if (absl::StrContains(m, "server name") || absl::StrContains(m, "no server names")) {
    return ValidationFailure::kInvalidServerName;
  }
  if (absl::StrContains(m, "certificate")) return ValidationFailure::kBadCertificatePem;
  return ValidationFailure::kOther;
}

std::optional<Rejection> ValidateForServing(const agent::CertificateEntry& entry,
                                            const std::vector<std::string>& requested_names,
                                            absl::Time now, std::vector<std::string>* warnings) {
  X509* leaf = entry.leaf.get();
  const absl::Time not_before = absl::FromUnixSeconds(entry.not_before_unix);
  const absl::Time not_after = absl::FromUnixSeconds(entry.not_after_unix);
  if (now > not_after) {
    return Reject(ValidationFailure::kExpired,
                  absl::StrCat("certificate expired at ", FormatRfc3339(not_after)));
  }
  if (now < not_before) {
    return Reject(ValidationFailure::kNotYetValid,
                  absl::StrCat("certificate is not valid until ", FormatRfc3339(not_before)));
  }
  const uint32_t flags = X509_get_extension_flags(leaf);
  if ((flags & EXFLAG_XKUSAGE) != 0 && (X509_get_extended_key_usage(leaf) & XKU_SSL_SERVER) == 0) {
    return Reject(ValidationFailure::kNotServerAuth,
                  "certificate's extendedKeyUsage does not include serverAuth: TLS clients "
                  "would reject it");
  }
  if ((flags & EXFLAG_KUSAGE) != 0 && (X509_get_key_usage(leaf) & KU_DIGITAL_SIGNATURE) == 0) {
    return Reject(ValidationFailure::kNotServerAuth,
                  "certificate's keyUsage lacks digitalSignature, which every ECDHE handshake "
                  "needs");
  }
  const Sans sans = SubjectAltNames(leaf);
  for (const std::string& requested : requested_names) {
    const std::string name = absl::AsciiStrToLower(requested);
    bool covered = false;
    for (const std::string& san : sans.dns) covered = covered || Covers(san, name);
    if (!covered) {
      return Reject(ValidationFailure::kNameNotCovered,
                    absl::StrCat("server name '", name,
                                 "' is not covered by the certificate's subjectAltName (DNS: ",
                                 sans.dns.empty() ? "none" : absl::StrJoin(sans.dns, ", "), ")"));
    }
  }
  if (not_after - now < kExpiryWarning) {
    warnings->push_back(
        absl::StrCat("expires in ", Days(not_after - now), " (", FormatRfc3339(not_after), ")"));
  }
  if ((flags & EXFLAG_CA) != 0) {
    warnings->push_back("the leaf certificate is a CA certificate (basicConstraints CA:TRUE)");
  }
  if ((flags & EXFLAG_SS) != 0) {
    warnings->push_back("self-signed: clients trust it only if they pin it");
  }
  X509* previous = leaf;
  for (int i = 0; i < sk_X509_num(entry.chain.get()); ++i) {
    X509* issuer = sk_X509_value(entry.chain.get(), i);
    if (X509_check_issued(issuer, previous) != X509_V_OK) {
      warnings->push_back(absl::StrCat(
          "chain certificate ", i + 2, " (", NameText(X509_get_subject_name(issuer)),
          ") did not issue certificate ", i + 1, ": the chain is out of order or incomplete"));
      break;
    }
    previous = issuer;
  }
  ERR_clear_error();
  return std::nullopt;
}

v1::Certificate DescribeCertificate(const agent::CertificateEntry& entry) {
  v1::Certificate c;
  c.set_name(entry.name);
  for (const std::string& n : entry.server_names) c.add_server_names(n);
  X509* leaf = entry.leaf.get();
  if (leaf == nullptr) return c;
  c.set_subject(NameText(X509_get_subject_name(leaf)));
  c.set_issuer(NameText(X509_get_issuer_name(leaf)));
  const Sans sans = SubjectAltNames(leaf);
  for (const auto& d : sans.dns) c.add_dns_names(d);
  for (const auto& ip : sans.ip) c.add_ip_addresses(ip);
  if (const ASN1_INTEGER* serial = X509_get0_serialNumber(leaf)) {
    agent::BignumPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
    if (bn != nullptr) {
      char* hex = BN_bn2hex(bn.get());
      if (hex != nullptr) {
        c.set_serial(absl::AsciiStrToLower(hex));
        OPENSSL_free(hex);
      }
    }
  }
  SetTimestamp(absl::FromUnixSeconds(entry.not_before_unix), c.mutable_not_before());
  SetTimestamp(absl::FromUnixSeconds(entry.not_after_unix), c.mutable_not_after());
  c.set_key_type(KeyType(entry.key.get()));
  c.set_sha256_fingerprint(Fingerprint(leaf));
  for (int i = 0; i < sk_X509_num(entry.chain.get()); ++i) {
    c.add_chain_subjects(NameText(X509_get_subject_name(sk_X509_value(entry.chain.get(), i))));
  }
  if (entry.handshakes != nullptr)
    c.set_handshakes(entry.handshakes->load(std::memory_order_relaxed));
  ERR_clear_error();
  return c;
}

namespace {

// Dates and CA flags of every CA certificate; fills description->cas.
std::optional<Rejection> ValidateCas(const std::vector<agent::X509Ptr>& cas, absl::Time now,
                                     std::vector<std::string>* warnings,
                                     v1::TrustBundle* description) {
  for (size_t i = 0; i < cas.size(); ++i) {
    X509* ca = cas[i].get();
    const std::string subject = NameText(X509_get_subject_name(ca));
    auto* d = description->add_cas();
    d->set_subject(subject);
    d->set_sha256_fingerprint(Fingerprint(ca));
    const absl::Time not_after = AsnTime(X509_get0_notAfter(ca));
    SetTimestamp(not_after, d->mutable_not_after());
    if (now > not_after) {
      return Reject(ValidationFailure::kBadCa,
                    absl::StrCat("ca_pem: CA certificate ", i + 1, " (", subject, ") expired at ",
                                 FormatRfc3339(not_after)));
    }
    if (now < AsnTime(X509_get0_notBefore(ca))) {
      return Reject(
          ValidationFailure::kBadCa,
          absl::StrCat("ca_pem: CA certificate ", i + 1, " (", subject, ") is not valid until ",
                       FormatRfc3339(AsnTime(X509_get0_notBefore(ca)))));
    }
    if ((X509_get_extension_flags(ca) & EXFLAG_CA) == 0) {
      warnings->push_back(absl::StrCat("CA certificate ", i + 1, " (", subject,
                                       ") is not marked as a CA; it can only match itself"));
    }
    if (not_after - now < kExpiryWarning) {
      warnings->push_back(absl::StrCat("CA certificate ", i + 1, " (", subject, ") expires in ",
                                       Days(not_after - now)));
    }
  }
  return std::nullopt;
}

// The index of the CA in `cas` that issued and signed `crl`, or -1.
int CrlSigner(const std::vector<agent::X509Ptr>& cas, X509_CRL* crl) {
  int signer = -1;
  for (size_t i = 0; i < cas.size() && signer < 0; ++i) {
    if (X509_NAME_cmp(X509_get_subject_name(cas[i].get()), X509_CRL_get_issuer(crl)) == 0 &&
        X509_CRL_verify(crl, X509_get0_pubkey(cas[i].get())) == 1) {
      signer = static_cast<int>(i);
    }
  }
  ERR_clear_error();
  return signer;
}

// Every CRL signed by one of the CAs and not past its nextUpdate; fills description->crls and
// warns about CAs left without a CRL.
std::optional<Rejection> ValidateCrls(const std::vector<agent::X509Ptr>& cas,
                                      const std::vector<agent::X509CrlPtr>& crls, absl::Time now,
                                      std::vector<std::string>* warnings,
                                      v1::TrustBundle* description) {
  std::vector<bool> ca_has_crl(cas.size(), false);
  for (size_t index = 1; index <= crls.size(); ++index) {
    X509_CRL* crl = crls[index - 1].get();
    const std::string issuer = NameText(X509_CRL_get_issuer(crl));
    auto* d = description->add_crls();
    d->set_issuer(issuer);
    SetTimestamp(AsnTime(X509_CRL_get0_lastUpdate(crl)), d->mutable_last_update());
    const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl);
    if (next != nullptr) SetTimestamp(AsnTime(next), d->mutable_next_update());
    STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl);
    d->set_revoked(revoked == nullptr ? 0 : static_cast<uint32_t>(sk_X509_REVOKED_num(revoked)));
    const int signer = CrlSigner(cas, crl);
    if (signer < 0) {
      return Reject(ValidationFailure::kBadCrl,
                    absl::StrCat("crl_pem: CRL ", index, " (issuer ", issuer,
                                 ") is not signed by any CA in ca_pem"));
    }
    ca_has_crl[signer] = true;
    if (next != nullptr && now > AsnTime(next)) {
      return Reject(ValidationFailure::kBadCrl,
                    absl::StrCat("crl_pem: CRL ", index, " (issuer ", issuer, ") expired at ",
                                 FormatRfc3339(AsnTime(next)),
                                 " (nextUpdate); every client certificate of that CA would be "
                                 "refused"));
    }
  }
  for (size_t i = 0; i < cas.size(); ++i) {
    if (!ca_has_crl[i] && (X509_get_extension_flags(cas[i].get()) & EXFLAG_CA) != 0) {
      warnings->push_back(absl::StrCat(
          "CA certificate ", i + 1, " (", NameText(X509_get_subject_name(cas[i].get())),
          ") has no CRL: with CRL checking on, client certificates it issued are refused"));
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<Rejection> ValidateTrustBundle(const std::string& ca_pem, const std::string& crl_pem,
                                             const agent::TrustBundle& bundle, absl::Time now,
                                             std::vector<std::string>* warnings,
                                             v1::TrustBundle* description) {
  description->set_require_client_cert(bundle.require_client_cert);
  description->set_sha256(Hex(bundle.digest.data(), bundle.digest.size()));
  // `bundle` was built from the same PEM, so both parse; a failure here leaves nothing to check.
  absl::StatusOr<std::vector<agent::X509Ptr>> cas = agent::ParsePemCertificates(ca_pem, nullptr);
  if (!cas.ok()) cas = std::vector<agent::X509Ptr>();
  if (std::optional<Rejection> r = ValidateCas(*cas, now, warnings, description)) return r;
  if (crl_pem.empty()) return std::nullopt;
  absl::StatusOr<std::vector<agent::X509CrlPtr>> crls = agent::ParsePemCrls(crl_pem, nullptr);
  if (!crls.ok()) crls = std::vector<agent::X509CrlPtr>();
  return ValidateCrls(*cas, *crls, now, warnings, description);
}

}  // namespace ktls::control
