#include "agent/client_trust.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ktls {
namespace {

std::string TakeOpenSslError() {
  const unsigned long err = ERR_get_error();
  std::string text = "unknown OpenSSL error";
  if (err != 0) {
    char buf[256];
    ERR_error_string_n(err, buf, sizeof(buf));
    text = buf;
  }
  ERR_clear_error();
  return text;
}

bool IsEndOfInput() {
  const unsigned long err = ERR_peek_last_error();
  if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
    ERR_clear_error();
    return true;
  }
  return false;
}

int RefusePassword(char*, int, int, void*) { return -1; }

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

  BioPtr ca_bio(BIO_new_mem_buf(ca_pem.data(), static_cast<int>(ca_pem.size())));
  if (ca_bio == nullptr) return absl::ResourceExhaustedError("out of memory");
  for (int index = 1;; ++index) {
    X509Ptr cert(PEM_read_bio_X509(ca_bio.get(), nullptr, RefusePassword, nullptr));
    if (cert == nullptr) {
      if (IsEndOfInput()) break;
      return absl::InvalidArgumentError(
          absl::StrCat("CA certificate ", index, ": cannot parse: ", TakeOpenSslError()));
    }
    if (X509_STORE_add_cert(bundle->store.get(), cert.get()) != 1) {
      // A duplicate is harmless (OpenSSL 3 ignores it); anything else is not.
      return absl::InvalidArgumentError(
          absl::StrCat("CA certificate ", index, ": ", TakeOpenSslError()));
    }
    X509NamePtr name(X509_NAME_dup(X509_get_subject_name(cert.get())));
    if (name == nullptr || sk_X509_NAME_push(bundle->ca_names.get(), name.get()) <= 0) {
      return absl::ResourceExhaustedError("out of memory");
    }
    name.release();  // owned by the stack
    if (!DigestDer<X509, i2d_X509>(md.get(), cert.get())) {
      return absl::InternalError(absl::StrCat("CA certificate ", index, ": cannot encode"));
    }
    ++bundle->ca_count;
  }
  if (bundle->ca_count == 0) {
    return absl::InvalidArgumentError("no CA certificate (no BEGIN CERTIFICATE block)");
  }

  if (!crl_pem.empty()) {
    BioPtr crl_bio(BIO_new_mem_buf(crl_pem.data(), static_cast<int>(crl_pem.size())));
    if (crl_bio == nullptr) return absl::ResourceExhaustedError("out of memory");
    for (int index = 1;; ++index) {
      X509CrlPtr crl(PEM_read_bio_X509_CRL(crl_bio.get(), nullptr, RefusePassword, nullptr));
      if (crl == nullptr) {
        if (IsEndOfInput()) break;
        return absl::InvalidArgumentError(
            absl::StrCat("CRL ", index, ": cannot parse: ", TakeOpenSslError()));
      }
      if (X509_STORE_add_crl(bundle->store.get(), crl.get()) != 1) {
        return absl::InvalidArgumentError(absl::StrCat("CRL ", index, ": ", TakeOpenSslError()));
      }
      if (!DigestDer<X509_CRL, i2d_X509_CRL>(md.get(), crl.get())) {
        return absl::InternalError(absl::StrCat("CRL ", index, ": cannot encode"));
      }
      ++bundle->crl_count;
    }
    if (bundle->crl_count == 0) {
      return absl::InvalidArgumentError("CRL data given but no BEGIN X509 CRL block found");
    }
    X509_STORE_set_flags(bundle->store.get(), X509_V_FLAG_CRL_CHECK);
  }
  const unsigned char flag = require_client_cert ? 1 : 0;
  unsigned int len = 0;
  if (EVP_DigestUpdate(md.get(), &flag, 1) != 1 ||
      EVP_DigestFinal_ex(md.get(), bundle->digest.data(), &len) != 1 || len != 32) {
    return absl::InternalError("cannot hash the trust bundle");
  }
  return std::shared_ptr<const TrustBundle>(std::move(bundle));
}

}  // namespace ktls
