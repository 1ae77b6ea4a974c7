#include "server/control_auth.h"

#include <grpc/grpc_security_constants.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace ktls::control {
namespace {

bool Contains(const std::vector<std::string>& v, const std::string& x) {
  for (const std::string& s : v) {
    if (s == x) return true;
  }
  return false;
}

std::vector<std::string> Values(const grpc::AuthContext& context, const char* property) {
  std::vector<std::string> out;
  for (const grpc::string_ref& v : context.FindPropertyValues(property)) {
    out.emplace_back(v.data(), v.size());
  }
  return out;
}

class AllowListProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit AllowListProcessor(std::vector<AllowedIdentity> allowed)
      : allowed_(std::move(allowed)) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata&, grpc::AuthContext* context, OutputMetadata*,
                       OutputMetadata*) override {
    ClientIdentity client;
    // gRPC lists every URI SAN under peer_uri (the SPIFFE ID is one of them), every DNS SAN under
    // peer_dns and the subject CN under x509_common_name. The untyped x509_subject_alternative_name
    // list is deliberately not read: it mixes kinds.
    client.uri_sans = Values(*context, GRPC_PEER_URI_PROPERTY_NAME);
    client.dns_sans = Values(*context, GRPC_PEER_DNS_PROPERTY_NAME);
    client.common_names = Values(*context, GRPC_X509_CN_PROPERTY_NAME);
    if (IsAllowed(allowed_, client)) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("client identity [", DescribeIdentity(client),
                                     "] is not in control_allowed_clients"));
  }

 private:
  const std::vector<AllowedIdentity> allowed_;
};

}  // namespace

absl::StatusOr<std::vector<AllowedIdentity>> ParseAllowList(
    const std::vector<std::string>& entries) {
  std::vector<AllowedIdentity> out;
  for (const std::string& e : entries) {
    absl::string_view v = e;
    AllowedIdentity id;
    if (absl::StartsWith(v, "spiffe://")) {
      id = {IdentityKind::kUriSan, e};
    } else if (absl::ConsumePrefix(&v, "uri:")) {
      id = {IdentityKind::kUriSan, std::string(v)};
    } else if (absl::ConsumePrefix(&v, "dns:")) {
      id = {IdentityKind::kDnsSan, std::string(v)};
    } else if (absl::ConsumePrefix(&v, "cn:")) {
      id = {IdentityKind::kCommonName, std::string(v)};
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "control_allowed_clients: '", e,
          "' does not say what it matches; write spiffe://..., uri:<URI SAN>, dns:<DNS SAN> or "
          "cn:<subject CN>"));
    }
    if (id.value.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("control_allowed_clients: '", e, "' has an empty value"));
    }
    out.push_back(std::move(id));
  }
  return out;
}

bool IsAllowed(const std::vector<AllowedIdentity>& allowed, const ClientIdentity& client) {
  for (const AllowedIdentity& a : allowed) {
    switch (a.kind) {
      case IdentityKind::kUriSan:
        if (Contains(client.uri_sans, a.value)) return true;
        break;
      case IdentityKind::kDnsSan:
        if (Contains(client.dns_sans, a.value)) return true;
        break;
      case IdentityKind::kCommonName:
        if (Contains(client.common_names, a.value)) return true;
        break;
    }
  }
  return false;
}

std::string DescribeIdentity(const ClientIdentity& client) {
  std::vector<std::string> parts;
  for (const auto& u : client.uri_sans) parts.push_back(absl::StrCat("uri:", u));
  for (const auto& d : client.dns_sans) parts.push_back(absl::StrCat("dns:", d));
  for (const auto& c : client.common_names) parts.push_back(absl::StrCat("cn:", c));
  return absl::StrJoin(parts, ", ");
}

std::shared_ptr<grpc::AuthMetadataProcessor> MakeAllowListProcessor(
    std::vector<AllowedIdentity> allowed) {
  return std::make_shared<AllowListProcessor>(std::move(allowed));
}

}  // namespace ktls::control
