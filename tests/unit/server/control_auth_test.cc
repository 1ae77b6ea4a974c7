// The typed allow-list of the TCP control API: every entry matches one kind of identity only.
#include "server/control_auth.h"

#include "gtest/gtest.h"

namespace ktls::control {
namespace {

std::vector<AllowedIdentity> Parse(std::vector<std::string> entries) {
  absl::StatusOr<std::vector<AllowedIdentity>> a = ParseAllowList(entries);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *a : std::vector<AllowedIdentity>{};
}

TEST(ControlAuthTest, ParsesEachKind) {
  std::vector<AllowedIdentity> a =
      Parse({"spiffe://td/ns/ops", "uri:https://ops.example/id", "dns:ops.example", "cn:ops"});
  ASSERT_EQ(4u, a.size());
  EXPECT_EQ(IdentityKind::kUriSan, a[0].kind);
  EXPECT_EQ("spiffe://td/ns/ops", a[0].value);
  EXPECT_EQ(IdentityKind::kUriSan, a[1].kind);
  EXPECT_EQ("https://ops.example/id", a[1].value);
  EXPECT_EQ(IdentityKind::kDnsSan, a[2].kind);
  EXPECT_EQ("ops.example", a[2].value);
  EXPECT_EQ(IdentityKind::kCommonName, a[3].kind);
  EXPECT_EQ("ops", a[3].value);
}

TEST(ControlAuthTest, RefusesUntypedAndEmptyEntries) {
  absl::StatusOr<std::vector<AllowedIdentity>> a = ParseAllowList({"ops"});
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, a.status().code());
  EXPECT_NE(std::string::npos, a.status().message().find("'ops' does not say what it matches"));
  EXPECT_FALSE(ParseAllowList({"cn:"}).ok());
  EXPECT_FALSE(ParseAllowList({"dns:"}).ok());
  EXPECT_FALSE(ParseAllowList({"CN:ops"}).ok()) << "prefixes are lower case, exactly";
}

TEST(ControlAuthTest, SpiffeIdMatchesUriSanOnly) {
  const auto allowed = Parse({"spiffe://td/ops"});
  EXPECT_TRUE(IsAllowed(allowed, {.uri_sans = {"spiffe://td/ops"}}));
  EXPECT_FALSE(IsAllowed(allowed, {.common_names = {"spiffe://td/ops"}}));
  EXPECT_FALSE(IsAllowed(allowed, {.dns_sans = {"spiffe://td/ops"}}));
  EXPECT_FALSE(IsAllowed(allowed, {.uri_sans = {"spiffe://td/ops/x"}}));
}

TEST(ControlAuthTest, CommonNameMatchesCnOnly) {
  const auto allowed = Parse({"cn:ops"});
  EXPECT_TRUE(IsAllowed(allowed, {.common_names = {"ops"}}));
  EXPECT_FALSE(IsAllowed(allowed, {.dns_sans = {"ops"}}));
  EXPECT_FALSE(IsAllowed(allowed, {.uri_sans = {"ops"}}));
  EXPECT_FALSE(IsAllowed(allowed, {.common_names = {"Ops"}}));
}

TEST(ControlAuthTest, DnsMatchesDnsSanOnlyWithoutWildcards) {
  const auto allowed = Parse({"dns:ops.example"});
  EXPECT_TRUE(IsAllowed(allowed, {.dns_sans = {"x.example", "ops.example"}}));
  EXPECT_FALSE(IsAllowed(allowed, {.common_names = {"ops.example"}}));
  EXPECT_FALSE(IsAllowed(allowed, {.uri_sans = {"ops.example"}}));
  EXPECT_FALSE(IsAllowed(allowed, {.dns_sans = {"*.example"}}));
}

TEST(ControlAuthTest, EmptyIdentityAndEmptyListAllowNothing) {
  EXPECT_FALSE(IsAllowed(Parse({"cn:ops"}), {}));
  EXPECT_FALSE(IsAllowed({}, {.common_names = {"ops"}}));
}

TEST(ControlAuthTest, DescribeNamesTheKinds) {
  EXPECT_EQ("uri:spiffe://a/b, dns:x.example, cn:x",
            DescribeIdentity(
                {.uri_sans = {"spiffe://a/b"}, .dns_sans = {"x.example"}, .common_names = {"x"}}));
}

}  // namespace
}  // namespace ktls::control
