// Who may call the control API over TCP: a typed allow-list matched against the client
// certificate's identities.
//
// The first version matched one flat list against the CN, every SAN type and the SPIFFE ID alike,
// so a certificate whose subject CN was "spiffe://cluster/ns/ops/sa/admin" passed as that SPIFFE
// ID — and a CA that issues CNs freely is common (any internal PKI). Each entry now says what it
// matches, and a value only ever matches that kind of identity:
//   spiffe://trust-domain/path   a URI SAN, exactly (SPIFFE IDs are URI SANs)
//   uri:<uri>                    a URI SAN, exactly
//   dns:<name>                   a DNS SAN, exactly (no wildcard expansion)
//   cn:<name>                    the subject common name, exactly
// Anything else is a configuration error at start, never a silent "matches nothing".
#ifndef KTLS_SERVER_CONTROL_AUTH_H_
#define KTLS_SERVER_CONTROL_AUTH_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/security/auth_metadata_processor.h"

namespace ktls::control {

enum class IdentityKind { kUriSan, kDnsSan, kCommonName };

struct AllowedIdentity {
  IdentityKind kind;
  std::string value;
};

// The identities a verified client certificate carries, by kind.
struct ClientIdentity {
  std::vector<std::string> uri_sans{};
  std::vector<std::string> dns_sans{};
  std::vector<std::string> common_names{};
};

// Parses control_allowed_clients entries; INVALID_ARGUMENT names the first untyped or empty one.
absl::StatusOr<std::vector<AllowedIdentity>> ParseAllowList(
    const std::vector<std::string>& entries);

// True if one of the client's identities of an entry's kind equals the entry's value.
bool IsAllowed(const std::vector<AllowedIdentity>& allowed, const ClientIdentity& client);

// "uri:spiffe://a/b, dns:x.example, cn:x" for the PERMISSION_DENIED message.
std::string DescribeIdentity(const ClientIdentity& client);

// The gRPC hook: the TLS layer has already verified the client certificate against
// control_client_ca_file; this admits only allow-listed identities.
std::shared_ptr<grpc::AuthMetadataProcessor> MakeAllowListProcessor(
    std::vector<AllowedIdentity> allowed);

}  // namespace ktls::control

#endif  // KTLS_SERVER_CONTROL_AUTH_H_
