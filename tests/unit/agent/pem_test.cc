#include "agent/pem.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>

#include <string>

#include "tests/unit/agent/test_certs.h"

namespace ktls::agent {
namespace {

using testcerts::MakeCa;
using testcerts::MakeCert;
using testcerts::TestCert;
using testcerts::WriteTempFile;
using ::testing::HasSubstr;

TEST(PemTest, TakeOpenSslErrorReturnsTheOldestEntryAndEmptiesTheQueue) {
  ERR_clear_error();
  EXPECT_EQ("unknown OpenSSL error", TakeOpenSslError());
  ERR_raise(ERR_LIB_PEM, PEM_R_BAD_BASE64_DECODE);
  ERR_raise(ERR_LIB_X509, X509_R_KEY_VALUES_MISMATCH);
  EXPECT_THAT(TakeOpenSslError(), HasSubstr("bad base64 decode"));
  EXPECT_EQ(0u, ERR_peek_error()) << "a stale entry was left for the next caller";
}

TEST(PemTest, CertificatesInOrderAndTheFailingBlockNamed) {
  const TestCert ca = MakeCa("pem CA");
  const TestCert leaf = MakeCert({"leaf", {"leaf.test"}}, &ca);
  int failed = 0;
  absl::StatusOr<std::vector<X509Ptr>> both =
      ParsePemCertificates(leaf.cert_pem + ca.cert_pem, &failed);
  ASSERT_TRUE(both.ok()) << both.status();
  ASSERT_EQ(2u, both->size());
  EXPECT_EQ(0, X509_cmp((*both)[0].get(), leaf.cert.get()));
  EXPECT_EQ(0, X509_cmp((*both)[1].get(), ca.cert.get()));
  EXPECT_EQ(0u, ERR_peek_error()) << "the end of input was left queued as an error";

  absl::StatusOr<std::vector<X509Ptr>> none = ParsePemCertificates("no PEM here\n", &failed);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  const std::string broken =
      leaf.cert_pem + "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
  absl::StatusOr<std::vector<X509Ptr>> bad = ParsePemCertificates(broken, &failed);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, bad.status().code());
  EXPECT_EQ(2, failed);
  EXPECT_FALSE(bad.status().message().empty());
  EXPECT_EQ(0u, ERR_peek_error());
}

TEST(PemTest, PrivateKeysParseAndEncryptedOnesFailWithoutAPrompt) {
  const TestCert leaf = MakeCert({"leaf", {"leaf.test"}}, nullptr);
  absl::StatusOr<EvpPkeyPtr> key = ParsePemPrivateKey(leaf.key_pem);
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(1, EVP_PKEY_eq(key->get(), leaf.key.get()));

  absl::StatusOr<EvpPkeyPtr> encrypted =
      ParsePemPrivateKey(testcerts::KeyToEncryptedPem(leaf.key.get(), "secret"));
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, encrypted.status().code());
  EXPECT_EQ(0u, ERR_peek_error());
  EXPECT_FALSE(ParsePemPrivateKey(leaf.cert_pem).ok());
}

TEST(PemTest, FilesAreReadWithTheirRoleInMessagesAndTheOneMiBBound) {
  const std::string missing = ::testing::TempDir() + "ktls_pem_missing.pem";
  absl::StatusOr<std::string> none = ReadPemFile(missing, "key file", true);
  EXPECT_EQ(absl::StatusCode::kNotFound, none.status().code());
  EXPECT_EQ("cannot read key file " + missing + ": No such file or directory",
            none.status().message());

  const std::string big = WriteTempFile("pem_big.pem", std::string(kMaxPemBytes + 1, 'x'));
  absl::StatusOr<std::string> too_big = ReadPemFile(big, "certificate file", false);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ("certificate file " + big + " is larger than 1 MiB", too_big.status().message());

  const std::string at_limit = WriteTempFile("pem_limit.pem", std::string(kMaxPemBytes, 'y'));
  absl::StatusOr<std::string> read = ReadPemFile(at_limit, "certificate file", false);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(kMaxPemBytes, read->size());
}

}  // namespace
}  // namespace ktls::agent
