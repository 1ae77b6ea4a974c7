#include "server/cert_validation.h"

#include <openssl/x509.h>

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/agent/test_certs.h"

namespace ktls::control {
namespace {

using testcerts::MakeCert;
using testcerts::TestCert;
using ::testing::HasSubstr;

agent::CertificateEntryPtr Parse(const TestCert& c, std::vector<std::string> names = {}) {
  agent::CertificateSource source;
  source.name = "t";
  source.chain_pem = c.cert_pem;
  source.key_pem = c.key_pem;
  source.server_names = std::move(names);
  absl::StatusOr<agent::CertificateEntryPtr> entry = agent::ParseCertificate(source);
  EXPECT_TRUE(entry.ok()) << entry.status();
  return entry.ok() ? *entry : std::make_shared<const agent::CertificateEntry>();
}

// A CRL issued by `ca`, valid from an hour ago for `days` (negative: already expired).
std::string Crl(const TestCert& ca, long days) {
  X509_CRL* crl = X509_CRL_new();
  X509_CRL_set_version(crl, 1);
  X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca.cert.get()));
  ASN1_TIME* last = ASN1_TIME_adj(nullptr, time(nullptr), days < 0 ? days * 2 : 0, -3600);
  ASN1_TIME* next = ASN1_TIME_adj(nullptr, time(nullptr), days, 0);
  X509_CRL_set1_lastUpdate(crl, last);
  X509_CRL_set1_nextUpdate(crl, next);
  X509_CRL_sign(crl, ca.key.get(), EVP_sha256());
  BIO* mem = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_CRL(mem, crl);
  char* data = nullptr;
  const long len = BIO_get_mem_data(mem, &data);
  std::string out(data, static_cast<size_t>(len));
  BIO_free(mem);
  ASN1_TIME_free(last);
  ASN1_TIME_free(next);
  X509_CRL_free(crl);
  return out;
}

TEST(CertValidationTest, CertificateNames) {
  EXPECT_TRUE(ValidateCertificateName("api-1.example_v2").ok());
  EXPECT_FALSE(ValidateCertificateName("").ok());
  EXPECT_FALSE(ValidateCertificateName(".hidden").ok());
  EXPECT_FALSE(ValidateCertificateName("a/b").ok());
  EXPECT_FALSE(ValidateCertificateName(std::string(65, 'a')).ok());
  EXPECT_THAT(std::string(ValidateCertificateName("a\nb").message()), HasSubstr("a\\nb"));
}

TEST(CertValidationTest, StageRequestLimitsAndArmor) {
  const TestCert ca = testcerts::MakeCa("v CA");
  const TestCert c = MakeCert({"leaf", {"leaf.test"}}, &ca);
  agent::CertificateSource r;
  r.name = "ok";
  r.chain_pem = c.cert_pem;
  r.key_pem = c.key_pem;
  EXPECT_FALSE(CheckStageRequest(r).has_value());
  r.key_pem = testcerts::KeyToEncryptedPem(c.key.get(), "pw");
  auto rej = CheckStageRequest(r);
  ASSERT_TRUE(rej.has_value());
  EXPECT_EQ(ValidationFailure::kEncryptedPrivateKey, rej->reason);
  r.key_pem = c.key_pem;
  r.chain_pem = std::string(kMaxChainPemBytes + 1, 'x');
  rej = CheckStageRequest(r);
  ASSERT_TRUE(rej.has_value());
  EXPECT_EQ(ValidationFailure::kTooLarge, rej->reason);
  EXPECT_EQ("cert_chain_pem: 524289 bytes exceeds the limit of 524288", rej->status.message());
}

TEST(CertValidationTest, SanCoverageFollowsTheOneLabelWildcardRule) {
  const TestCert ca = testcerts::MakeCa("v CA");
  const TestCert c = MakeCert({"leaf", {"exact.test", "*.wild.test"}}, &ca);
  std::vector<std::string> warnings;
  const agent::CertificateEntryPtr e = Parse(c);
  EXPECT_FALSE(ValidateForServing(*e, {"exact.test", "a.wild.test", "*.wild.test", "EXACT.test"},
                                  absl::Now(), &warnings)
                   .has_value());
  for (const char* uncovered : {"wild.test", "a.b.wild.test", "*.exact.test", "other.test"}) {
    auto rej = ValidateForServing(*e, {uncovered}, absl::Now(), &warnings);
    ASSERT_TRUE(rej.has_value()) << uncovered;
    EXPECT_EQ(ValidationFailure::kNameNotCovered, rej->reason);
  }
}

TEST(CertValidationTest, DatesUsageAndWarnings) {
  const TestCert ca = testcerts::MakeCa("v CA");
  testcerts::CertSpec soon{"soon", {"soon.test"}};
  soon.not_after_offset_s = 3 * 86400;
  std::vector<std::string> warnings;
  EXPECT_FALSE(
      ValidateForServing(*Parse(MakeCert(soon, &ca)), {}, absl::Now(), &warnings).has_value());
  ASSERT_EQ(1u, warnings.size());
  EXPECT_THAT(warnings[0], HasSubstr("expires in 2 days"));

  warnings.clear();
  const TestCert self = MakeCert({"self", {"self.test"}}, nullptr);
  EXPECT_FALSE(ValidateForServing(*Parse(self), {}, absl::Now(), &warnings).has_value());
  EXPECT_THAT(warnings, ::testing::Contains(HasSubstr("self-signed")));

  const agent::CertificateEntryPtr e = Parse(MakeCert({"e", {"e.test"}}, &ca));
  auto rej = ValidateForServing(*e, {}, absl::Now() + absl::Hours(24 * 40), &warnings);
  ASSERT_TRUE(rej.has_value());
  EXPECT_EQ(ValidationFailure::kExpired, rej->reason);
  rej = ValidateForServing(*e, {}, absl::Now() - absl::Hours(2), &warnings);
  ASSERT_TRUE(rej.has_value());
  EXPECT_EQ(ValidationFailure::kNotYetValid, rej->reason);

  testcerts::CertSpec client{"client", {"client.test"}};
  client.client_auth = true;
  rej = ValidateForServing(*Parse(MakeCert(client, &ca)), {}, absl::Now(), &warnings);
  ASSERT_TRUE(rej.has_value());
  EXPECT_EQ(ValidationFailure::kNotServerAuth, rej->reason);
}

TEST(CertValidationTest, DescribeShowsEverythingButTheKey) {
  const TestCert ca = testcerts::MakeCa("describe CA");
  testcerts::CertSpec spec{"describe me", {"d.test"}};
  spec.key_kind = testcerts::KeyKind::kRsa2048;
  const TestCert c = MakeCert(spec, &ca);
  v1::Certificate d = DescribeCertificate(*Parse(c));
  EXPECT_EQ("CN=describe me", d.subject());
  EXPECT_EQ("CN=describe CA", d.issuer());
  EXPECT_EQ("RSA 2048", d.key_type());
  EXPECT_EQ(64u, d.sha256_fingerprint().size());
  EXPECT_THAT(d.dns_names(), ::testing::ElementsAre("d.test"));
  EXPECT_FALSE(d.serial().empty());
  EXPECT_GT(d.not_after().seconds(), d.not_before().seconds());
  std::string text;
  d.SerializeToString(&text);
  EXPECT_EQ(std::string::npos, text.find("PRIVATE"));
}

TEST(CertValidationTest, TrustBundlesCheckCrlSignersAndDates) {
  const TestCert ca = testcerts::MakeCa("client CA");
  const TestCert other = testcerts::MakeCa("other CA");
  std::vector<std::string> warnings;
  v1::TrustBundle d;
  auto check = [&](const std::string& crl) {
    warnings.clear();
    d.Clear();
    auto bundle = agent::TrustBundle::Create(ca.cert_pem, crl, false);
    EXPECT_TRUE(bundle.ok()) << bundle.status();
    return ValidateTrustBundle(ca.cert_pem, crl, **bundle, absl::Now(), &warnings, &d);
  };
  EXPECT_FALSE(check("").has_value());
  EXPECT_EQ(1, d.cas_size());
  EXPECT_EQ(64u, d.sha256().size());
  EXPECT_FALSE(check(Crl(ca, 7)).has_value());
  EXPECT_EQ(1, d.crls_size());
  auto rej = check(Crl(other, 7));
  ASSERT_TRUE(rej.has_value());
  EXPECT_EQ(ValidationFailure::kBadCrl, rej->reason);
  EXPECT_THAT(std::string(rej->status.message()), HasSubstr("is not signed by any CA in ca_pem"));
  rej = check(Crl(ca, -1));
  ASSERT_TRUE(rej.has_value());
  EXPECT_THAT(std::string(rej->status.message()), HasSubstr("expired at"));
}

}  // namespace
}  // namespace ktls::control
