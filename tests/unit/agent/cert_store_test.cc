#include "agent/cert_store.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/agent/test_certs.h"

namespace ktls::agent {
namespace {

using testcerts::CertSpec;
using testcerts::MakeCa;
using testcerts::MakeCert;
using testcerts::TestCert;
using testcerts::WriteTempFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

class CertStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ca_ = new TestCert(MakeCa("Test Root CA")); }
  static void TearDownTestSuite() {
    delete ca_;
    ca_ = nullptr;
  }

  static TestCert Leaf(const std::string& cn, std::vector<std::string> dns) {
    CertSpec spec;
    spec.common_name = cn;
    spec.dns_names = std::move(dns);
    return MakeCert(spec, ca_);
  }

  static CertificateSource Source(const std::string& name, const TestCert& cert,
                                  std::vector<std::string> names = {}, bool is_default = false) {
    CertificateSource s;
    s.name = name;
    s.chain_pem = cert.cert_pem;
    s.key_pem = cert.key_pem;
    s.server_names = std::move(names);
    s.is_default = is_default;
    return s;
  }

  static std::shared_ptr<const CertificateSet> MustCreate(std::vector<CertificateSource> sources) {
    auto set = CertificateSet::Create(std::move(sources));
    EXPECT_TRUE(set.ok()) << set.status();
    return set.ok() ? *set : nullptr;
  }

  static std::string CommonName(const CertificateEntry* e) {
    if (e == nullptr) return "<null>";
    char buf[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(e->leaf.get()), NID_commonName, buf,
                              sizeof(buf));
    return buf;
  }

  static bool AllZero(const char* p, size_t n) {
    return std::all_of(p, p + n, [](char c) { return c == 0; });
  }

  static TestCert* ca_;
};

TestCert* CertStoreTest::ca_ = nullptr;

// ---- LoadCertificateFiles ----

TEST_F(CertStoreTest, LoadsGoodFilesWithChain) {
  CertSpec inter_spec;
  inter_spec.common_name = "Test Intermediate";
  inter_spec.is_ca = true;
  TestCert intermediate = MakeCert(inter_spec, ca_);
  CertSpec leaf_spec;
  leaf_spec.common_name = "api";
  leaf_spec.dns_names = {"api.example.com"};
  TestCert leaf = MakeCert(leaf_spec, &intermediate);

  const std::string chain_path = WriteTempFile("chain.pem", leaf.cert_pem + intermediate.cert_pem);
  const std::string key_path = WriteTempFile("key.pem", leaf.key_pem);
  absl::StatusOr<CertificateSource> source = LoadCertificateFiles(chain_path, key_path, {}, false);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(source->name, chain_path);
  EXPECT_EQ(source->chain_pem, leaf.cert_pem + intermediate.cert_pem);
  EXPECT_EQ(source->key_pem, leaf.key_pem);

  std::vector<CertificateSource> sources;
  sources.push_back(*std::move(source));
  auto set = MustCreate(std::move(sources));
  ASSERT_NE(set, nullptr);
  ASSERT_EQ(set->entries().size(), 1u);
  const CertificateEntry& e = set->entries()[0];
  EXPECT_EQ(X509_cmp(e.leaf.get(), leaf.cert.get()), 0);
  ASSERT_EQ(sk_X509_num(e.chain.get()), 1);
  EXPECT_EQ(X509_cmp(sk_X509_value(e.chain.get(), 0), intermediate.cert.get()), 0);
  EXPECT_EQ(EVP_PKEY_eq(e.key.get(), leaf.key.get()), 1);
  EXPECT_THAT(e.server_names, ElementsAre("api.example.com"));
  EXPECT_EQ(e.subject, "CN=api");
  const int64_t now = time(nullptr);
  EXPECT_NEAR(static_cast<double>(e.not_after_unix), static_cast<double>(now + 86400), 120.0);
}

TEST_F(CertStoreTest, MissingFilesAreNamed) {
  TestCert leaf = Leaf("api", {"api.example.com"});
  const std::string chain_path = WriteTempFile("chain.pem", leaf.cert_pem);
  const std::string missing = ::testing::TempDir() + "ktls_definitely_missing.pem";

  auto no_key = LoadCertificateFiles(chain_path, missing, {}, false);
  ASSERT_FALSE(no_key.ok());
  EXPECT_EQ(no_key.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(no_key.status().message(),
            "cannot read key file " + missing + ": No such file or directory");

  auto no_chain = LoadCertificateFiles(missing, chain_path, {}, false);
  ASSERT_FALSE(no_chain.ok());
  EXPECT_EQ(no_chain.status().message(),
            "cannot read certificate file " + missing + ": No such file or directory");
}

TEST_F(CertStoreTest, GarbageFilesAreNotPem) {
  TestCert leaf = Leaf("api", {"api.example.com"});
  const std::string garbage = WriteTempFile("garbage.pem", "hello, this is not PEM\n");
  const std::string chain_path = WriteTempFile("chain.pem", leaf.cert_pem);
  const std::string key_path = WriteTempFile("key.pem", leaf.key_pem);

  auto bad_chain = LoadCertificateFiles(garbage, key_path, {}, false);
  ASSERT_FALSE(bad_chain.ok());
  EXPECT_EQ(bad_chain.status().message(),
            "certificate file " + garbage + " is not a PEM certificate");

  auto bad_key = LoadCertificateFiles(chain_path, garbage, {}, false);
  ASSERT_FALSE(bad_key.ok());
  EXPECT_EQ(bad_key.status().message(), "key file " + garbage + " is not a PEM private key");

  // A key where the certificate should be, and the other way round.
  auto swapped = LoadCertificateFiles(key_path, chain_path, {}, false);
  ASSERT_FALSE(swapped.ok());
  EXPECT_THAT(swapped.status().message(), HasSubstr("is not a PEM certificate"));
}

TEST_F(CertStoreTest, RejectsFilesLargerThanOneMiB) {
  TestCert leaf = Leaf("api", {"api.example.com"});
  const std::string chain_path = WriteTempFile("chain.pem", leaf.cert_pem);
  const std::string big = WriteTempFile("big.pem", leaf.key_pem + std::string(1 << 20, '\n'));
  auto result = LoadCertificateFiles(chain_path, big, {}, false);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), HasSubstr("larger than 1 MiB"));

  // Exactly at the limit is fine as far as reading goes.
  std::string at_limit = leaf.key_pem;
  at_limit.resize(1 << 20, '\n');
  auto ok = LoadCertificateFiles(chain_path, WriteTempFile("limit.pem", at_limit), {}, false);
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST_F(CertStoreTest, DirectoryIsNotAKeyFile) {
  TestCert leaf = Leaf("api", {"api.example.com"});
  const std::string chain_path = WriteTempFile("chain.pem", leaf.cert_pem);
  // A directory is not a certificate: read() fails with EISDIR.
  auto dir = LoadCertificateFiles(chain_path, ::testing::TempDir(), {}, false);
  ASSERT_FALSE(dir.ok());
  EXPECT_THAT(dir.status().message(), HasSubstr("cannot read key file"));
  EXPECT_THAT(dir.status().message(), HasSubstr("Is a directory"));
}

// Pipes and other files without a size are read up to the limit too.
TEST_F(CertStoreTest, ReadsFromAPipeWithTheSameLimit) {
  TestCert leaf = Leaf("api", {"api.example.com"});
  const std::string chain_path = WriteTempFile("chain.pem", leaf.cert_pem);
  signal(SIGPIPE, SIG_IGN);  // the loader stops reading an oversized pipe early
  const auto through_fifo = [&](const std::string& contents) {
    const std::string fifo = ::testing::TempDir() + "ktls_key_fifo_" + std::to_string(getpid());
    unlink(fifo.c_str());
    EXPECT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    std::thread writer([&] {
      const int fd = open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
      size_t off = 0;
      while (fd >= 0 && off < contents.size()) {
        const ssize_t n = write(fd, contents.data() + off, contents.size() - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      if (fd >= 0) close(fd);
    });
    auto result = LoadCertificateFiles(chain_path, fifo, {}, false);
    writer.join();
    unlink(fifo.c_str());
    return result;
  };
  auto ok = through_fifo(leaf.key_pem);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->key_pem, leaf.key_pem);

  auto big = through_fifo(leaf.key_pem + std::string(1 << 20, '\n'));
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(big.status().message(), HasSubstr("larger than 1 MiB"));
}

// ---- CertificateSet::Create ----

TEST_F(CertStoreTest, GarbageInsideCertificateArmorFailsToParse) {
  TestCert leaf = Leaf("api", {"api.example.com"});
  CertificateSource s = Source("api", leaf);
  s.chain_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  auto set = CertificateSet::Create({s});
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.status().message(), HasSubstr("certificate 'api': cannot parse certificate 1"));

  s.chain_pem = "no certificate here";
  set = CertificateSet::Create({s});
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.status().message(), HasSubstr("certificate 'api': not a PEM certificate"));

  s = Source("api", leaf);
  s.key_pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
  set = CertificateSet::Create({s});
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.status().message(), HasSubstr("certificate 'api': cannot parse the private key"));
}

TEST_F(CertStoreTest, KeyMismatchIsReported) {
  TestCert api = Leaf("api", {"api.example.com"});
  TestCert other = Leaf("other", {"other.example.com"});
  CertificateSource s = Source("api", api);
  s.key_pem = other.key_pem;
  auto set = CertificateSet::Create({s});
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().message(), "certificate 'api': private key does not match certificate");
}

TEST_F(CertStoreTest, EncryptedKeyIsRejectedWithoutPrompting) {
  TestCert api = Leaf("api", {"api.example.com"});
  CertificateSource s = Source("api", api);
  s.key_pem = testcerts::KeyToEncryptedPem(api.key.get(), "secret");
  auto set = CertificateSet::Create({s});  // would block on a terminal prompt if not refused
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.status().message(), HasSubstr("certificate 'api': cannot parse the private key"));
}

TEST_F(CertStoreTest, TwoDefaultsAreRejected) {
  TestCert a = Leaf("a", {"a.example.com"});
  TestCert b = Leaf("b", {"b.example.com"});
  auto set = CertificateSet::Create({Source("a", a, {}, true), Source("b", b, {}, true)});
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.status().message(), HasSubstr("more than one default certificate"));
}

TEST_F(CertStoreTest, ServerNamesComeFromDnsSansLowerCased) {
  TestCert a = Leaf("a", {"API.Example.COM", "*.Web.Example.com"});
  auto set = MustCreate({Source("a", a)});
  ASSERT_NE(set, nullptr);
  EXPECT_THAT(set->entries()[0].server_names, ElementsAre("api.example.com", "*.web.example.com"));

  // Given names win over the SANs, and are lower-cased and de-duplicated.
  set = MustCreate({Source("a", a, {"Other.Example.com", "other.example.com"})});
  ASSERT_NE(set, nullptr);
  EXPECT_THAT(set->entries()[0].server_names, ElementsAre("other.example.com"));
}

TEST_F(CertStoreTest, CertificateWithoutNamesOnlyAsDefault) {
  TestCert nosan = Leaf("nosan", {});
  TestCert a = Leaf("a", {"a.example.com"});
  auto set = CertificateSet::Create({Source("a", a), Source("nosan", nosan)});
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.status().message(), HasSubstr("certificate 'nosan': no server names given"));

  auto as_default = MustCreate({Source("a", a), Source("nosan", nosan, {}, true)});
  ASSERT_NE(as_default, nullptr);
  EXPECT_THAT(as_default->entries()[1].server_names, IsEmpty());
  EXPECT_EQ(CommonName(as_default->Select("unknown.example.com")), "nosan");
}

TEST_F(CertStoreTest, InvalidServerNamesAreRejected) {
  TestCert a = Leaf("a", {"a.example.com"});
  for (const char* bad :
       {"", "*", "*.com", "a.*.example.com", "a*.example.com", "*.*.example.com",
        "foo..example.com", ".example.com", "example.com.", "exa mple.com", "*example.com"}) {
    auto set = CertificateSet::Create({Source("a", a, {bad})});
    EXPECT_FALSE(set.ok()) << "accepted '" << bad << "'";
    if (!set.ok()) {
      EXPECT_THAT(set.status().message(), HasSubstr("certificate 'a': ")) << bad;
    }
  }
  for (const char* good : {"*.example.com", "a.example.com", "localhost", "x_y.example-1.com"}) {
    auto set = CertificateSet::Create({Source("a", a, {good})});
    EXPECT_TRUE(set.ok()) << good << ": " << set.status();
  }
}

TEST_F(CertStoreTest, DuplicateNamesAcrossEntriesAreRejected) {
  TestCert a = Leaf("a", {"api.example.com"});
  TestCert b = Leaf("b", {"API.example.com"});
  auto set = CertificateSet::Create({Source("a", a), Source("b", b)});
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().message(),
            "server name 'api.example.com' is claimed by both certificate 'a' and certificate 'b'");

  auto wild = CertificateSet::Create(
      {Source("a", a, {"*.example.com"}), Source("b", b, {"*.example.com"})});
  EXPECT_FALSE(wild.ok());

  // An exact name and a wildcard that covers it may coexist: the exact name wins.
  auto both = MustCreate({Source("a", a, {"*.example.com"}), Source("b", b)});
  ASSERT_NE(both, nullptr);
  EXPECT_EQ(CommonName(both->Select("api.example.com")), "b");
  EXPECT_EQ(CommonName(both->Select("www.example.com")), "a");
}

// ---- Select ----

TEST_F(CertStoreTest, SelectExactWildcardDefault) {
  TestCert api = Leaf("api", {"api.example.com"});
  TestCert wild = Leaf("wild", {"*.example.com"});
  TestCert fallback = Leaf("fallback", {"fallback.example.org"});
  auto set = MustCreate(
      {Source("api", api), Source("wild", wild), Source("fallback", fallback, {}, true)});
  ASSERT_NE(set, nullptr);
  EXPECT_EQ(CommonName(set->default_entry()), "fallback");

  bool matched = false;
  EXPECT_EQ(CommonName(set->Select("api.example.com", &matched)), "api");
  EXPECT_TRUE(matched);
  EXPECT_EQ(CommonName(set->Select("API.EXAMPLE.com", &matched)), "api");
  EXPECT_TRUE(matched);
  EXPECT_EQ(CommonName(set->Select("a.example.com", &matched)), "wild");
  EXPECT_TRUE(matched);
  EXPECT_EQ(CommonName(set->Select("WWW.Example.Com", &matched)), "wild");
  EXPECT_TRUE(matched);
  // The wildcard covers exactly one label.
  EXPECT_EQ(CommonName(set->Select("example.com", &matched)), "fallback");
  EXPECT_FALSE(matched);
  EXPECT_EQ(CommonName(set->Select("a.b.example.com", &matched)), "fallback");
  EXPECT_FALSE(matched);
  EXPECT_EQ(CommonName(set->Select(".example.com", &matched)), "fallback");
  EXPECT_FALSE(matched);
  EXPECT_EQ(CommonName(set->Select("unknown.test", &matched)), "fallback");
  EXPECT_FALSE(matched);
  matched = true;
  EXPECT_EQ(CommonName(set->Select("", &matched)), "fallback");
  EXPECT_FALSE(matched);
  EXPECT_EQ(CommonName(set->Select("fallback.example.org", &matched)), "fallback");
  EXPECT_TRUE(matched);
  EXPECT_EQ(CommonName(set->Select("unknown.test")), "fallback");  // matched is optional
}

TEST_F(CertStoreTest, FirstEntryIsDefaultWhenNoneIsMarked) {
  TestCert a = Leaf("a", {"a.example.com"});
  TestCert b = Leaf("b", {"b.example.com"});
  auto set = MustCreate({Source("a", a), Source("b", b)});
  ASSERT_NE(set, nullptr);
  EXPECT_EQ(CommonName(set->default_entry()), "a");
  set = MustCreate({Source("a", a), Source("b", b, {}, true)});
  ASSERT_NE(set, nullptr);
  EXPECT_EQ(CommonName(set->default_entry()), "b");
  EXPECT_EQ(CommonName(set->Select("nothing.test")), "b");
}

TEST_F(CertStoreTest, EmptySetSelectsNothing) {
  auto set = MustCreate({});
  ASSERT_NE(set, nullptr);
  bool matched = true;
  EXPECT_EQ(set->Select("a.example.com", &matched), nullptr);
  EXPECT_FALSE(matched);
  EXPECT_EQ(set->default_entry(), nullptr);
}

// ---- Key wiping ----

TEST_F(CertStoreTest, KeyPemIsWipedOnSuccess) {
  TestCert a = Leaf("a", {"a.example.com"});
  TestCert b = Leaf("b", {"b.example.com"});
  std::vector<CertificateSource> sources = {Source("a", a), Source("b", b)};
  std::vector<const char*> buffers;
  std::vector<size_t> sizes;
  for (const auto& s : sources) {
    buffers.push_back(s.key_pem.data());
    sizes.push_back(s.key_pem.size());
    ASSERT_FALSE(AllZero(s.key_pem.data(), s.key_pem.size()));
  }
  auto set = CertificateSet::CreateWipingKeys(sources);
  ASSERT_TRUE(set.ok()) << set.status();
  for (size_t i = 0; i < sources.size(); ++i) {
    EXPECT_EQ(sources[i].key_pem.data(), buffers[i]);  // same buffer, wiped in place
    EXPECT_EQ(sources[i].key_pem.size(), sizes[i]);
    EXPECT_TRUE(AllZero(buffers[i], sizes[i])) << i;
  }
  EXPECT_EQ(sources[0].chain_pem, a.cert_pem);  // only the key is touched
}

TEST_F(CertStoreTest, KeyPemIsWipedOnEveryFailure) {
  TestCert a = Leaf("a", {"a.example.com"});
  TestCert b = Leaf("b", {"b.example.com"});
  // Failures before any parsing, in the first entry, and in a later entry (the earlier, good
  // entry's key must be wiped too).
  std::vector<std::vector<CertificateSource>> cases;
  cases.push_back({Source("a", a, {}, true), Source("b", b, {}, true)});
  cases.push_back({Source("a", a, {"*.com"}), Source("b", b)});
  CertificateSource mismatched = Source("b", b);
  mismatched.key_pem = a.key_pem;
  cases.push_back({Source("a", a, {"x.example.com"}), mismatched});
  for (auto& sources : cases) {
    auto set = CertificateSet::CreateWipingKeys(sources);
    EXPECT_FALSE(set.ok());
    for (const auto& s : sources) {
      EXPECT_TRUE(AllZero(s.key_pem.data(), s.key_pem.size())) << set.status();
      EXPECT_FALSE(s.key_pem.empty());
    }
  }
}

// ---- OpenSSL error queue hygiene ----

TEST_F(CertStoreTest, StaleOpenSslErrorsDoNotLeakAcrossCalls) {
  TestCert a = Leaf("a", {"a.example.com"});
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET);  // a stale error left by someone else
  auto set = CertificateSet::Create({Source("a", a)});
  EXPECT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(ERR_peek_error(), 0u);

  // A failure reports its own error, not the stale one, and leaves nothing for the next caller.
  CertificateSource bad = Source("a", a);
  bad.chain_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET);
  auto failed = CertificateSet::Create({bad});
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(), HasSubstr("cannot parse certificate 1"));
  EXPECT_THAT(failed.status().message(), Not(HasSubstr("SSL routines")));  // the stale one
  EXPECT_EQ(ERR_peek_error(), 0u);
}

// ---- Development certificate ----

TEST_F(CertStoreTest, DevelopmentCertificate) {
  auto set = CertificateSet::CreateDevelopment();
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_TRUE((*set)->is_development());
  ASSERT_EQ((*set)->entries().size(), 1u);
  const CertificateEntry* e = (*set)->default_entry();
  ASSERT_NE(e, nullptr);
  EXPECT_THAT(e->server_names, ElementsAre("localhost"));
  EXPECT_EQ(e->subject, "CN=ktls-agent development certificate");
  bool matched = false;
  EXPECT_EQ((*set)->Select("localhost", &matched), e);
  EXPECT_TRUE(matched);
  EXPECT_EQ((*set)->Select("anything.test", &matched), e);
  EXPECT_FALSE(matched);

  // ECDSA P-256, matching the certificate, self-signed with SHA-256.
  EXPECT_EQ(EVP_PKEY_get_base_id(e->key.get()), EVP_PKEY_EC);
  char group[64] = {};
  size_t group_len = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(e->key.get(), group, sizeof(group), &group_len), 1);
  EXPECT_STREQ(group, "prime256v1");
  EXPECT_EQ(X509_check_private_key(e->leaf.get(), e->key.get()), 1);
  EXPECT_EQ(X509_verify(e->leaf.get(), e->key.get()), 1);
  EXPECT_EQ(X509_get_signature_nid(e->leaf.get()), NID_ecdsa_with_SHA256);
  EXPECT_EQ(X509_get_version(e->leaf.get()), X509_VERSION_3);

  // SANs: DNS:localhost, IP:127.0.0.1, IP:::1.
  EXPECT_EQ(X509_check_host(e->leaf.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(e->leaf.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(e->leaf.get(), "::1", 0), 1);
  EXPECT_NE(X509_check_host(e->leaf.get(), "example.com", 0, 0, nullptr), 1);

  // Not a CA; digitalSignature; serverAuth.
  EXPECT_EQ(X509_check_ca(e->leaf.get()), 0);
  EXPECT_TRUE(X509_get_key_usage(e->leaf.get()) & KU_DIGITAL_SIGNATURE);
  EXPECT_FALSE(X509_get_key_usage(e->leaf.get()) & KU_KEY_CERT_SIGN);
  EXPECT_TRUE(X509_get_extended_key_usage(e->leaf.get()) & XKU_SSL_SERVER);
  EXPECT_FALSE(X509_get_extended_key_usage(e->leaf.get()) & XKU_SSL_CLIENT);

  // Valid now, for about 30 days, from an hour ago.
  time_t now = time(nullptr);
  EXPECT_LT(X509_cmp_time(X509_get0_notBefore(e->leaf.get()), &now), 0);
  EXPECT_GT(X509_cmp_time(X509_get0_notAfter(e->leaf.get()), &now), 0);
  EXPECT_NEAR(static_cast<double>(e->not_after_unix), static_cast<double>(now + 30 * 86400), 120.0);
  int days = 0;
  int secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(e->leaf.get()),
                           X509_get0_notAfter(e->leaf.get())),
            1);
  EXPECT_EQ(days * 86400 + secs, 30 * 86400 + 3600);

  // A random serial of up to 128 bits, different each time.
  auto other = CertificateSet::CreateDevelopment();
  ASSERT_TRUE(other.ok());
  const ASN1_INTEGER* s1 = X509_get0_serialNumber(e->leaf.get());
  const ASN1_INTEGER* s2 = X509_get0_serialNumber((*other)->default_entry()->leaf.get());
  EXPECT_NE(ASN1_INTEGER_cmp(s1, s2), 0);
  BignumPtr bn(ASN1_INTEGER_to_BN(s1, nullptr));
  EXPECT_LE(BN_num_bits(bn.get()), 128);
  EXPECT_GT(BN_num_bits(bn.get()), 64);  // fails with probability 2^-64
}

// ---- CertStore ----

TEST_F(CertStoreTest, SwapIncrementsGenerationAndOldSnapshotStaysUsable) {
  TestCert a = Leaf("a", {"a.example.com"});
  TestCert b = Leaf("b", {"b.example.com"});
  CertStore store(MustCreate({Source("a", a)}));
  EXPECT_EQ(store.generation(), 1u);
  std::shared_ptr<const CertificateSet> pinned = store.Current();
  ASSERT_NE(pinned, nullptr);

  EXPECT_EQ(store.Swap(MustCreate({Source("b", b)})), 2u);
  EXPECT_EQ(store.generation(), 2u);
  EXPECT_EQ(CommonName(store.Current()->Select("b.example.com")), "b");
  // The pinned snapshot is unchanged and still usable (as a running handshake would use it).
  bool matched = false;
  const CertificateEntry* e = pinned->Select("a.example.com", &matched);
  EXPECT_TRUE(matched);
  EXPECT_EQ(CommonName(e), "a");
  EXPECT_EQ(X509_check_private_key(e->leaf.get(), e->key.get()), 1);

  EXPECT_EQ(store.Swap(MustCreate({Source("a", a)})), 3u);
  EXPECT_EQ(store.generation(), 3u);
}

TEST_F(CertStoreTest, RestoreContinuesFromAPersistedGeneration) {
  TestCert a = Leaf("a", {"a.example.com"});
  TestCert b = Leaf("b", {"b.example.com"});
  CertStore store(MustCreate({Source("a", a)}));
  store.Restore(MustCreate({Source("b", b)}), 41);
  EXPECT_EQ(store.generation(), 41u);
  EXPECT_EQ(CommonName(store.Current()->Select("b.example.com")), "b");
  EXPECT_EQ(store.Swap(MustCreate({Source("a", a)})), 42u);
}

TEST_F(CertStoreTest, ASetBuiltFromEntriesSharesThemAndParseCertificateWipesTheKey) {
  TestCert a = Leaf("a", {"a.example.com"});
  TestCert b = Leaf("b", {"b.example.com"});
  std::shared_ptr<const CertificateSet> first = MustCreate({Source("a", a)});
  CertificateSource source = Source("b", b);
  const size_t key_size = source.key_pem.size();
  absl::StatusOr<CertificateEntryPtr> parsed = ParseCertificate(source);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(source.key_pem, std::string(key_size, '\0')) << "the key was not wiped in place";

  auto next = CertificateSet::FromEntries({first->shared_entries()[0], *parsed}, 1);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ((*next)->Select("a.example.com"), first->default_entry()) << "the entry was copied";
  EXPECT_EQ((*next)->Select("b.example.com"), parsed->get());
  EXPECT_EQ((*next)->default_entry(), parsed->get());
  EXPECT_EQ(2u, (*next)->entries().size());
  EXPECT_EQ("a", (*next)->entries()[0].name);

  // The same entry twice is one name claimed twice.
  auto twice = CertificateSet::FromEntries({*parsed, *parsed}, 0);
  EXPECT_FALSE(twice.ok());
}

TEST_F(CertStoreTest, ConcurrentSwapAndCurrent) {
  TestCert a = Leaf("a", {"a.example.com"});
  auto set = MustCreate({Source("a", a)});
  CertStore store(set);
  std::thread reader([&] {
    for (int i = 0; i < 2000; ++i) {
      auto current = store.Current();
      ASSERT_NE(current, nullptr);
      ASSERT_NE(current->Select("a.example.com"), nullptr);
    }
  });
  for (int i = 0; i < 2000; ++i) store.Swap(set);
  reader.join();
  EXPECT_EQ(store.generation(), 2001u);
}

}  // namespace
}  // namespace ktls::agent
