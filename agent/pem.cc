#include "agent/pem.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/file.h"

namespace ktls::agent {
namespace {

// A password callback that refuses: without it OpenSSL would prompt on the terminal for an
// encrypted key or certificate.
int RefusePassword(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) { return -1; }

// A read that returned nothing ran out of blocks (no further "-----BEGIN"): OpenSSL says so with
// an error, which is consumed here. false: a real parse error, left queued for the caller.
bool AtEndOfInput() {
  const unsigned long err = ERR_peek_last_error();
  if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
    ERR_clear_error();
    return true;
  }
  return false;
}

BioPtr ReadOnlyBio(std::string_view pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Reads blocks with `read` (PEM_read_bio_X509 and friends) until the input ends.
template <typename Ptr, typename Read>
absl::StatusOr<std::vector<Ptr>> ParseBlocks(std::string_view pem, Read read, int* failed_block) {
  BioPtr bio = ReadOnlyBio(pem);
  if (bio == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory: ", TakeOpenSslError()));
  }
  std::vector<Ptr> blocks;
  for (;;) {
    Ptr block(read(bio.get(), nullptr, RefusePassword, nullptr));
    if (block == nullptr) {
      if (AtEndOfInput()) break;
      if (failed_block != nullptr) *failed_block = static_cast<int>(blocks.size()) + 1;
      return absl::InvalidArgumentError(TakeOpenSslError());
    }
    blocks.push_back(std::move(block));
  }
  return blocks;
}

}  // namespace

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

absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view what,
                                        bool secret) {
  base::ReadFileOptions options;
  options.max_bytes = kMaxPemBytes;
  options.what = what;
  options.secret = secret;
  return base::ReadFile(path, options);
}

absl::StatusOr<std::vector<X509Ptr>> ParsePemCertificates(std::string_view pem, int* failed_block) {
  return ParseBlocks<X509Ptr>(pem, PEM_read_bio_X509, failed_block);
}

absl::StatusOr<std::vector<X509CrlPtr>> ParsePemCrls(std::string_view pem, int* failed_block) {
  return ParseBlocks<X509CrlPtr>(pem, PEM_read_bio_X509_CRL, failed_block);
}

absl::StatusOr<EvpPkeyPtr> ParsePemPrivateKey(std::string_view pem) {
  BioPtr bio = ReadOnlyBio(pem);
  if (bio == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory: ", TakeOpenSslError()));
  }
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, RefusePassword, nullptr));
  if (key == nullptr) return absl::InvalidArgumentError(TakeOpenSslError());
  return key;
}

}  // namespace ktls::agent
