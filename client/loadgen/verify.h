// Response body checks for ktls-loadgen. Every scenario knows exactly which bytes the server must
// return, so every response is verified: its length, and its content (the /bytes/N pattern, the
// echoed request body, or the SHA-256 of a static file).
#ifndef KTLS_CLIENT_LOADGEN_VERIFY_H_
#define KTLS_CLIENT_LOADGEN_VERIFY_H_

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "client/loadgen/errors.h"
#include "client/loadgen/http_response.h"

namespace ktls::loadgen {

// The bytes of ktls-demo-app's GET /bytes/N (and of every request body loadgen sends): byte i is
// 'a' + i % 26. Returns a pointer p with p[0..len) == pattern bytes [offset, offset+len), for
// len <= kPatternSpan.
inline constexpr size_t kPatternSpan = 64 * 1024;
const char* PatternAt(uint64_t offset);
// Writes pattern bytes [0, n) to a string (test and file helper).
std::string PatternString(size_t n);

class BodyCheck : public BodySink {
 public:
  // Prepares for the next response.
  virtual void Reset() = 0;
  // After the response is complete: true if the body was right; else *kind and *why say how not.
  virtual bool Finish(uint64_t body_bytes, ErrorKind* kind, std::string* why) = 0;
};

// Body must be the pattern, exactly `length` bytes.
std::unique_ptr<BodyCheck> MakePatternCheck(uint64_t length);
// Body must be exactly `expected`.
std::unique_ptr<BodyCheck> MakeExactCheck(std::string expected);
// Body must be `length` bytes with this SHA-256.
std::unique_ptr<BodyCheck> MakeSha256Check(uint64_t length, std::array<uint8_t, 32> digest);

// SHA-256 and size of a local file (the static file's expected digest).
struct FileDigest {
  uint64_t size = 0;
  std::array<uint8_t, 32> sha256{};
};
absl::StatusOr<FileDigest> DigestFile(const std::string& path);
absl::StatusOr<std::array<uint8_t, 32>> ParseSha256Hex(std::string_view hex);
std::string Sha256Hex(const std::array<uint8_t, 32>& digest);

}  // namespace ktls::loadgen

#endif  // KTLS_CLIENT_LOADGEN_VERIFY_H_
