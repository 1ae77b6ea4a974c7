// SHA-256 and hex for the integration tests and the probe app: the tests compare what the agent,
// the probe app and the test itself hashed, so all of them must spell a digest the same way
// (lowercase hex). Header-only because ktls-probe-app is its own program and links no test code.
#ifndef KTLS_TESTS_INTEGRATION_SUPPORT_DIGEST_H_
#define KTLS_TESTS_INTEGRATION_SUPPORT_DIGEST_H_

#include <openssl/evp.h>

#include <cstddef>
#include <string>

namespace ktls::testing {

// Lowercase hex of `len` bytes.
inline std::string HexEncode(const unsigned char* data, size_t len) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (size_t i = 0; i < len; ++i) {
    out.push_back(hex[data[i] >> 4]);
    out.push_back(hex[data[i] & 15]);
  }
  return out;
}

// Incremental SHA-256 of a stream that is hashed as it goes by.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  // The digest in hex; call once.
  std::string FinalHex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    return HexEncode(md, len);
  }

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace ktls::testing

#endif  // KTLS_TESTS_INTEGRATION_SUPPORT_DIGEST_H_
