// Certificates generated at test time (never key files in the repository): a CA, and leaves or
// intermediates it signs with chosen names, as OpenSSL objects and as PEM.
// Header-only: the unit-test target compiles only *_test.cc files.
#ifndef KTLS_TESTS_UNIT_AGENT_TEST_CERTS_H_
#define KTLS_TESTS_UNIT_AGENT_TEST_CERTS_H_

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/openssl_ptr.h"

namespace ktls::testcerts {

struct TestCert {
  agent::X509Ptr cert;
  agent::EvpPkeyPtr key;
  std::string cert_pem;
  std::string key_pem;  // PKCS#8, unencrypted
};

enum class KeyKind { kEcP256, kRsa2048 };

struct CertSpec {
  std::string common_name;
  std::vector<std::string> dns_names;  // subjectAltName DNS entries; empty: no SAN extension
  std::vector<std::string> uri_names;  // subjectAltName URI entries (e.g. SPIFFE IDs)
  bool is_ca = false;
  bool client_auth = false;  // extendedKeyUsage clientAuth instead of serverAuth
  KeyKind key_kind = KeyKind::kEcP256;
  long not_before_offset_s = -3600;
  long not_after_offset_s = 86400;
};

// Fixture plumbing: an OpenSSL failure here is a broken test setup, not a test outcome, so it
// aborts with OpenSSL's error queue printed.
[[noreturn]] inline void Die(const char* what) {
  std::fprintf(stderr, "test_certs: %s failed\n", what);
  ERR_print_errors_fp(stderr);
  std::abort();
}

template <typename T>
inline T* Check(T* p, const char* what) {
  if (p == nullptr) Die(what);
  return p;
}

inline void Check(int rc, const char* what) {
  if (rc <= 0) Die(what);
}

inline std::string BioToString(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

inline agent::EvpPkeyPtr NewKey(KeyKind kind) {
  switch (kind) {
    case KeyKind::kEcP256:
      return agent::EvpPkeyPtr(Check(EVP_EC_gen("P-256"), "EVP_EC_gen"));
    case KeyKind::kRsa2048:
      return agent::EvpPkeyPtr(Check(EVP_RSA_gen(2048), "EVP_RSA_gen"));
  }
  Die("key kind");
}

inline void AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer, cert, nullptr, nullptr, 0);
  agent::X509ExtensionPtr ext(Check(X509V3_EXT_conf_nid(nullptr, &v3, nid, value.c_str()), "ext"));
  Check(X509_add_ext(cert, ext.get(), -1), "X509_add_ext");
}

inline std::string CertToPem(X509* cert) {
  agent::BioPtr bio(Check(BIO_new(BIO_s_mem()), "BIO_new"));
  Check(PEM_write_bio_X509(bio.get(), cert), "PEM_write_bio_X509");
  return BioToString(bio.get());
}

inline std::string KeyToPem(EVP_PKEY* key) {
  agent::BioPtr bio(Check(BIO_new(BIO_s_mem()), "BIO_new"));
  Check(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr),
        "PEM_write_bio_PrivateKey");
  return BioToString(bio.get());
}

// Encrypted PKCS#8 (AES-256-CBC) with `password`.
inline std::string KeyToEncryptedPem(EVP_PKEY* key, const std::string& password) {
  agent::BioPtr bio(Check(BIO_new(BIO_s_mem()), "BIO_new"));
  Check(PEM_write_bio_PKCS8PrivateKey(bio.get(), key, EVP_aes_256_cbc(), password.data(),
                                      static_cast<int>(password.size()), nullptr, nullptr),
        "PEM_write_bio_PKCS8PrivateKey");
  return BioToString(bio.get());
}

// A certificate for `spec`, signed by `issuer` (nullptr: self-signed).
inline TestCert MakeCert(const CertSpec& spec, const TestCert* issuer) {
  TestCert out;
  out.key = NewKey(spec.key_kind);
  out.cert.reset(Check(X509_new(), "X509_new"));
  X509* x = out.cert.get();
  Check(X509_set_version(x, X509_VERSION_3), "X509_set_version");
  static std::atomic<long> serial{1000};
  Check(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++), "serial");
  agent::X509NamePtr name(Check(X509_NAME_new(), "X509_NAME_new"));
  Check(X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(spec.common_name.c_str()),
                                   -1, -1, 0),
        "CN");
  Check(X509_set_subject_name(x, name.get()), "subject");
  Check(X509_set_issuer_name(
            x, issuer != nullptr ? X509_get_subject_name(issuer->cert.get()) : name.get()),
        "issuer");
  Check(X509_gmtime_adj(X509_getm_notBefore(x), spec.not_before_offset_s) != nullptr ? 1 : 0,
        "notBefore");
  Check(X509_gmtime_adj(X509_getm_notAfter(x), spec.not_after_offset_s) != nullptr ? 1 : 0,
        "notAfter");
  Check(X509_set_pubkey(x, out.key.get()), "X509_set_pubkey");

  X509* issuer_cert = issuer != nullptr ? issuer->cert.get() : x;
  AddExt(x, issuer_cert, NID_subject_key_identifier, "hash");
  AddExt(x, issuer_cert, NID_authority_key_identifier, "keyid:always");
  if (spec.is_ca) {
    AddExt(x, issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
    AddExt(x, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    AddExt(x, issuer_cert, NID_basic_constraints, "critical,CA:FALSE");
    AddExt(x, issuer_cert, NID_key_usage,
           spec.key_kind == KeyKind::kRsa2048 ? "critical,digitalSignature,keyEncipherment"
                                              : "critical,digitalSignature");
    AddExt(x, issuer_cert, NID_ext_key_usage, spec.client_auth ? "clientAuth" : "serverAuth");
  }
  if (!spec.dns_names.empty() || !spec.uri_names.empty()) {
    std::vector<std::string> entries;
    for (const std::string& dns : spec.dns_names) entries.push_back(absl::StrCat("DNS:", dns));
    for (const std::string& uri : spec.uri_names) entries.push_back(absl::StrCat("URI:", uri));
    AddExt(x, issuer_cert, NID_subject_alt_name, absl::StrJoin(entries, ","));
  }
  EVP_PKEY* signer = issuer != nullptr ? issuer->key.get() : out.key.get();
  Check(X509_sign(x, signer, EVP_sha256()), "X509_sign");

  out.cert_pem = CertToPem(x);
  out.key_pem = KeyToPem(out.key.get());
  return out;
}

// Self-signed CA ("CN=<common_name>").
inline TestCert MakeCa(const std::string& common_name) {
  CertSpec spec;
  spec.common_name = common_name;
  spec.is_ca = true;
  return MakeCert(spec, nullptr);
}

// A server certificate issued by `ca` for `dns_name` (its CN and only DNS SAN).
inline TestCert MakeServerCert(const std::string& dns_name, const TestCert& ca) {
  CertSpec spec;
  spec.common_name = dns_name;
  spec.dns_names = {dns_name};
  return MakeCert(spec, &ca);
}

// Files written by WriteTempFile, removed when the test process exits (they hold private keys).
struct TempFileRegistry {
  std::mutex mu;
  std::vector<std::string> paths;
  ~TempFileRegistry() {
    for (const auto& p : paths) ::unlink(p.c_str());
  }
};
inline TempFileRegistry& TempFiles() {
  static TempFileRegistry registry;
  return registry;
}

// Writes `contents` to a fresh file under the test temp dir and returns its path. The file is
// deleted at process exit.
inline std::string WriteTempFile(const std::string& name, const std::string& contents) {
  static std::atomic<int> counter{0};
  const std::string path =
      absl::StrCat(::testing::TempDir(), "ktls_certs_", getpid(), "_", counter++, "_", name);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << contents;
  f.close();
  if (!f) Die("writing a temp file");
  {
    std::lock_guard<std::mutex> lock(TempFiles().mu);
    TempFiles().paths.push_back(path);
  }
  return path;
}

}  // namespace ktls::testcerts

#endif  // KTLS_TESTS_UNIT_AGENT_TEST_CERTS_H_
