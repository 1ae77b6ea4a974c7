#include "agent/client_trust.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ktls::agent {
namespace {

// Feeds the DER encoding of an object into the digest.
template <typename T, int (*ToDer)(const T*, unsigned char**)>
bool DigestDer(EVP_MD_CTX* md, const T* object) {
  unsigned char* der = nullptr;
  const int len = ToDer(object, &der);
  if (len <= 0) return false;
  const bool ok = EVP_DigestUpdate(md, der, static_cast<size_t>(len)) == 1;
  OPENSSL_free(der);
  return ok;
}

// Adds every CA certificate of `pem` to the bundle's store and CA names, and to the digest.
absl::Status AddCas(std::string_view pem, EVP_MD_CTX* md, TrustBundle& bundle) {
  int failed = 0;
  absl::StatusOr<std::vector<X509Ptr>> cas = ParsePemCertificates(pem, &failed);
  if (!cas.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CA certificate ", failed, ": cannot parse: ", cas.status().message()));
  }
  if (cas->empty()) {
    return absl::InvalidArgumentError("no CA certificate (no BEGIN CERTIFICATE block)");
  }
  for (size_t i = 0; i < cas->size(); ++i) {
    X509* cert = (*cas)[i].get();
    const size_t index = i + 1;
    if (X509_STORE_add_cert(bundle.store.get(), cert) != 1) {
      // A duplicate is harmless (OpenSSL 3 ignores it); anything else is not.
      return absl::InvalidArgumentError(
          absl::StrCat("CA certificate ", index, ": ", TakeOpenSslError()));
    }
    X509NamePtr name(X509_NAME_dup(X509_get_subject_name(cert)));
    if (name == nullptr || sk_X509_NAME_push(bundle.ca_names.get(), name.get()) <= 0) {
      return absl::ResourceExhaustedError("out of memory");
    }
    (void)name.release();  // owned by the stack
    if (!DigestDer<X509, i2d_X509>(md, cert)) {
      return absl::InternalError(absl::StrCat("CA certificate ", index, ": cannot encode"));
    }
    ++bundle.ca_count;
  }
  return absl::OkStatus();
}

// Adds every CRL of `pem` to the bundle's store (and turns CRL checking on), and to the digest.
absl::Status AddCrls(std::string_view pem, EVP_MD_CTX* md, TrustBundle& bundle) {
  int failed = 0;
  absl::StatusOr<std::vector<X509CrlPtr>> crls = ParsePemCrls(pem, &failed);
  if (!crls.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CRL ", failed, ": cannot parse: ", crls.status().message()));
  }
  if (crls->empty()) {
    return absl::InvalidArgumentError("CRL data given but no BEGIN X509 CRL block found");
  }
  for (size_t i = 0; i < crls->size(); ++i) {
    X509_CRL* crl = (*crls)[i].get();
    if (X509_STORE_add_crl(bundle.store.get(), crl) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("CRL ", i + 1, ": ", TakeOpenSslError()));
    }
    if (!DigestDer<X509_CRL, i2d_X509_CRL>(md, crl)) {
      return absl::InternalError(absl::StrCat("CRL ", i + 1, ": cannot encode"));
    }
    ++bundle.crl_count;
  }
  X509_STORE_set_flags(bundle.store.get(), X509_V_FLAG_CRL_CHECK);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const TrustBundle>> TrustBundle::Create(std::string_view ca_pem,
                                                                       std::string_view crl_pem,
                                                                       bool require_client_cert) {
  ERR_clear_error();
  absl::Cleanup clear_errors = [] { ERR_clear_error(); };
  auto bundle = std::make_shared<TrustBundle>();
  bundle->require_client_cert = require_client_cert;
  bundle->store.reset(X509_STORE_new());
  bundle->ca_names.reset(sk_X509_NAME_new_null());
  EvpMdCtxPtr md(EVP_MD_CTX_new());
  if (bundle->store == nullptr || bundle->ca_names == nullptr || md == nullptr ||
      EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) != 1) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory: ", TakeOpenSslError()));
  }

  if (absl::Status s = AddCas(ca_pem, md.get(), *bundle); !s.ok()) return s;
  if (!crl_pem.empty()) {
    if (absl::Status s = AddCrls(crl_pem, md.get(), *bundle); !s.ok()) return s;
  }
  const unsigned char flag = require_client_cert ? 1 : 0;
  unsigned int len = 0;
  if (EVP_DigestUpdate(md.get(), &flag, 1) != 1 ||
      EVP_DigestFinal_ex(md.get(), bundle->digest.data(), &len) != 1 || len != 32) {
    return absl::InternalError("cannot hash the trust bundle");
  }
  return std::shared_ptr<const TrustBundle>(std::move(bundle));
}

}  // namespace ktls::agent
