#include "client/loadgen/verify.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace ktls::loadgen {
namespace {

struct Pattern {
  char bytes[kPatternSpan + 26];
  Pattern() {
    for (size_t i = 0; i < sizeof(bytes); ++i) bytes[i] = static_cast<char>('a' + i % 26);
  }
};

class PatternCheck : public BodyCheck {
 public:
  explicit PatternCheck(uint64_t length) : length_(length) {}
  void Reset() override {
    offset_ = 0;
    mismatch_ = false;
  }
  void Body(const char* data, size_t len) override {
    if (mismatch_) {
      offset_ += len;
      return;
    }
    while (len > 0) {
      const size_t n = std::min(len, kPatternSpan);
      if (std::memcmp(data, PatternAt(offset_), n) != 0) {
        for (size_t i = 0; i < n; ++i) {
          if (data[i] != PatternAt(offset_ + i)[0]) {
            mismatch_ = true;
            mismatch_at_ = offset_ + i;
            break;
          }
        }
        offset_ += len;
        return;
      }
      offset_ += n;
      data += n;
      len -= n;
    }
  }
  bool Finish(uint64_t body_bytes, ErrorKind* kind, std::string* why) override {
    if (body_bytes != length_) {
      *kind = ErrorKind::kLength;
      *why = absl::StrCat("body is ", body_bytes, " bytes, expected ", length_);
      return false;
    }
    if (mismatch_) {
      *kind = ErrorKind::kBody;
      *why = absl::StrCat("body differs from the expected bytes at offset ", mismatch_at_);
      return false;
    }
    return true;
  }

 private:
  const uint64_t length_;
  uint64_t offset_ = 0;
  bool mismatch_ = false;
  uint64_t mismatch_at_ = 0;
};

class ExactCheck : public BodyCheck {
 public:
  explicit ExactCheck(std::string expected) : expected_(std::move(expected)) {}
  void Reset() override {
    offset_ = 0;
    mismatch_ = false;
  }
  void Body(const char* data, size_t len) override {
    if (!mismatch_ && (offset_ + len > expected_.size() ||
                       std::memcmp(data, expected_.data() + offset_, len) != 0)) {
      mismatch_ = true;
    }
    offset_ += len;
  }
  bool Finish(uint64_t body_bytes, ErrorKind* kind, std::string* why) override {
    if (body_bytes != expected_.size()) {
      *kind = ErrorKind::kLength;
      *why = absl::StrCat("body is ", body_bytes, " bytes, expected ", expected_.size());
      return false;
    }
    if (mismatch_) {
      *kind = ErrorKind::kBody;
      *why = "body differs from the expected bytes";
      return false;
    }
    return true;
  }

 private:
  const std::string expected_;
  uint64_t offset_ = 0;
  bool mismatch_ = false;
};

class Sha256Check : public BodyCheck {
 public:
  Sha256Check(uint64_t length, std::array<uint8_t, 32> digest)
      : length_(length), digest_(digest), ctx_(EVP_MD_CTX_new()) {}
  ~Sha256Check() override { EVP_MD_CTX_free(ctx_); }
  void Reset() override { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  void Body(const char* data, size_t len) override { EVP_DigestUpdate(ctx_, data, len); }
  bool Finish(uint64_t body_bytes, ErrorKind* kind, std::string* why) override {
    std::array<uint8_t, 32> got{};
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, got.data(), &n);
    if (body_bytes != length_) {
      *kind = ErrorKind::kLength;
      *why = absl::StrCat("body is ", body_bytes, " bytes, expected ", length_);
      return false;
    }
    if (got != digest_) {
      *kind = ErrorKind::kHash;
      *why = absl::StrCat("body SHA-256 ", Sha256Hex(got), ", expected ", Sha256Hex(digest_));
      return false;
    }
    return true;
  }

 private:
  const uint64_t length_;
  const std::array<uint8_t, 32> digest_;
  EVP_MD_CTX* ctx_;  // owned
};

}  // namespace

const char* PatternAt(uint64_t offset) {
  static const Pattern* p = new Pattern;
  return p->bytes + offset % 26;
}

std::string PatternString(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + i % 26);
  return s;
}

std::unique_ptr<BodyCheck> MakePatternCheck(uint64_t length) {
  return std::make_unique<PatternCheck>(length);
}
std::unique_ptr<BodyCheck> MakeExactCheck(std::string expected) {
  return std::make_unique<ExactCheck>(std::move(expected));
}
std::unique_ptr<BodyCheck> MakeSha256Check(uint64_t length, std::array<uint8_t, 32> digest) {
  return std::make_unique<Sha256Check>(length, digest);
}

absl::StatusOr<FileDigest> DigestFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 16);
  FileDigest d;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      EVP_MD_CTX_free(ctx);
      return absl::InternalError(absl::StrCat(path, ": read: ", std::strerror(err)));
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx, buf.data(), n);
    d.size += n;
  }
  ::close(fd);
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, d.sha256.data(), &len);
  EVP_MD_CTX_free(ctx);
  return d;
}

absl::StatusOr<std::array<uint8_t, 32>> ParseSha256Hex(std::string_view hex) {
  std::array<uint8_t, 32> out{};
  if (hex.size() != 64) return absl::InvalidArgumentError("SHA-256 must be 64 hex digits");
  for (size_t i = 0; i < 32; ++i) {
    int v = 0;
    for (int k = 0; k < 2; ++k) {
      const char c = hex[2 * i + k];
      int d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else return absl::InvalidArgumentError("SHA-256 must be 64 hex digits");
      v = v * 16 + d;
    }
    out[i] = static_cast<uint8_t>(v);
  }
  return out;
}

std::string Sha256Hex(const std::array<uint8_t, 32>& digest) {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()));
}

}  // namespace ktls::loadgen
