// Builds tls12_crypto_info_* from TLS keys. The kernel layout (linux/tls.h) is
//   { tls_crypto_info info; iv[]; key[]; salt[]; rec_seq[8]; }
// and the 12-byte AEAD nonce base maps onto it as:
//   AES-GCM:            salt = nonce[0..4), iv = nonce[4..12)
//   ChaCha20-Poly1305:  iv = nonce[0..12), no salt
// rec_seq is the sequence number of the next record, big-endian.
#include "agent/ktls_crypto_info.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <array>
#include <cstring>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "agent/openssl_ptr.h"

namespace ktls::agent {
namespace {

// Debian's Abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0),
// which StrCat takes but std::string_view does not convert to.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr size_t kNonceSize = 12;
constexpr size_t kRecSeqSize = 8;

// Key size of each AEAD; the nonce base is 12 bytes for all three.
size_t KeySize(KtlsCipher c) {
  switch (c) {
    case KtlsCipher::kAes128Gcm:
      return TLS_CIPHER_AES_GCM_128_KEY_SIZE;
    // Two ciphers, two constants that happen to be equal (32): not a copy-paste slip.
    case KtlsCipher::kAes256Gcm:  // NOLINT(bugprone-branch-clone)
      return TLS_CIPHER_AES_GCM_256_KEY_SIZE;
    case KtlsCipher::kChaCha20Poly1305:
      return TLS_CIPHER_CHACHA20_POLY1305_KEY_SIZE;
  }
  return 0;
}

bool IsKnownCipher(KtlsCipher c) { return KeySize(c) != 0; }

bool IsKnownVersion(TlsVersion v) { return v == TlsVersion::kTls12 || v == TlsVersion::kTls13; }

// The TLS 1.3 suite hash of each AEAD (TLS_AES_256_GCM_SHA384, the others SHA256).
std::string_view Tls13Digest(KtlsCipher c) {
  return c == KtlsCipher::kAes256Gcm ? "SHA384" : "SHA256";
}

size_t DigestSize(std::string_view digest) {
  if (digest == "SHA256") return 32;
  if (digest == "SHA384") return 48;
  return 0;
}

void PutBigEndian64(uint64_t v, unsigned char out[kRecSeqSize]) {
  for (size_t i = 0; i < kRecSeqSize; ++i) {
    out[i] = static_cast<unsigned char>(v >> (8 * (kRecSeqSize - 1 - i)));
  }
}

// Drains OpenSSL's (per-thread) error queue into a message, so a stale error from this call can
// never fail a later, unrelated one.
std::string DrainOpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error reported" : out;
}

// Fills one AES-GCM struct (the 128- and 256-bit ones differ only in key size).
template <typename GcmInfo>
void FillGcm(GcmInfo& info, uint16_t version, uint16_t cipher_type, absl::Span<const uint8_t> key,
             absl::Span<const uint8_t> iv12, uint64_t seq) {
  static_assert(sizeof(info.salt) + sizeof(info.iv) == kNonceSize);
  static_assert(sizeof(info.rec_seq) == kRecSeqSize);
  info.info.version = version;
  info.info.cipher_type = cipher_type;
  std::memcpy(info.salt, iv12.data(), sizeof(info.salt));
  std::memcpy(info.iv, iv12.data() + sizeof(info.salt), sizeof(info.iv));
  std::memcpy(info.key, key.data(), sizeof(info.key));
  PutBigEndian64(seq, info.rec_seq);
}

}  // namespace

std::string_view DirectionName(Direction d) { return d == Direction::kTx ? "tx" : "rx"; }

std::string_view KtlsCipherName(KtlsCipher c) {
  switch (c) {
    case KtlsCipher::kAes128Gcm:
      return "AES-128-GCM";
    case KtlsCipher::kAes256Gcm:
      return "AES-256-GCM";
    case KtlsCipher::kChaCha20Poly1305:
      return "CHACHA20-POLY1305";
  }
  return "UNKNOWN-CIPHER";
}

std::string_view TlsVersionName(TlsVersion v) {
  switch (v) {
    case TlsVersion::kTls12:
      return "TLSv1.2";
    case TlsVersion::kTls13:
      return "TLSv1.3";
  }
  return "UNKNOWN-VERSION";
}

std::optional<KtlsCipher> KtlsCipherFromSuiteId(uint16_t iana_id) {
  switch (iana_id) {
    // TLS 1.3 (RFC 8446 B.4).
    case 0x1301:  // TLS_AES_128_GCM_SHA256
      return KtlsCipher::kAes128Gcm;
    case 0x1302:  // TLS_AES_256_GCM_SHA384
      return KtlsCipher::kAes256Gcm;
    case 0x1303:  // TLS_CHACHA20_POLY1305_SHA256
      return KtlsCipher::kChaCha20Poly1305;
    // TLS 1.2 AES-GCM (RFC 5288, RFC 5289).
    case 0x009C:  // TLS_RSA_WITH_AES_128_GCM_SHA256
    case 0x009E:  // TLS_DHE_RSA_WITH_AES_128_GCM_SHA256
    case 0xC02B:  // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    case 0xC02F:  // TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
      return KtlsCipher::kAes128Gcm;
    case 0x009D:  // TLS_RSA_WITH_AES_256_GCM_SHA384
    case 0x009F:  // TLS_DHE_RSA_WITH_AES_256_GCM_SHA384
    case 0xC02C:  // TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    case 0xC030:  // TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
      return KtlsCipher::kAes256Gcm;
    // TLS 1.2 ChaCha20-Poly1305 (RFC 7905).
    case 0xCCA8:  // TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    case 0xCCA9:  // TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
    case 0xCCAA:  // TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256
      return KtlsCipher::kChaCha20Poly1305;
    default:
      return std::nullopt;  // CBC, CCM, PSK-only, ...: not offloaded.
  }
}

CryptoInfo::CryptoInfo(CryptoInfo&& other) noexcept
    : direction_(other.direction_),
      version_(other.version_),
      cipher_(other.cipher_),
      size_(other.size_) {
  std::memcpy(&u_, &other.u_, sizeof(u_));
  other.Wipe();
}

CryptoInfo& CryptoInfo::operator=(CryptoInfo&& other) noexcept {
  if (this != &other) {
    Wipe();
    direction_ = other.direction_;
    version_ = other.version_;
    cipher_ = other.cipher_;
    size_ = other.size_;
    std::memcpy(&u_, &other.u_, sizeof(u_));
    other.Wipe();
  }
  return *this;
}

CryptoInfo::~CryptoInfo() { Wipe(); }

void CryptoInfo::Wipe() {
  OPENSSL_cleanse(&u_, sizeof(u_));
  size_ = 0;
}

absl::StatusOr<CryptoInfo> CryptoInfo::FromKeyAndIv(Direction direction, TlsVersion version,
                                                    KtlsCipher cipher,
                                                    absl::Span<const uint8_t> key,
                                                    absl::Span<const uint8_t> iv12,
                                                    uint64_t record_seq) {
  if (!IsKnownVersion(version)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kTLS crypto info: unsupported TLS version 0x",
                     absl::Hex(static_cast<uint16_t>(version), absl::kZeroPad4),
                     " (only TLSv1.2 and TLSv1.3 can be offloaded)"));
  }
  if (!IsKnownCipher(cipher)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kTLS crypto info: unknown cipher value ", static_cast<int>(cipher)));
  }
  if (key.size() != KeySize(cipher)) {
    return absl::InvalidArgumentError(absl::StrCat("kTLS crypto info: ", Sv(KtlsCipherName(cipher)),
                                                   " needs a ", KeySize(cipher), "-byte key, got ",
                                                   key.size(), " bytes"));
  }
  if (iv12.size() != kNonceSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("kTLS crypto info: ", Sv(KtlsCipherName(cipher)), " needs a ", kNonceSize,
                     "-byte iv (nonce base), got ", iv12.size(), " bytes"));
  }

  const uint16_t kernel_version = version == TlsVersion::kTls13 ? TLS_1_3_VERSION : TLS_1_2_VERSION;
  CryptoInfo info(direction, version, cipher);
  switch (cipher) {
    case KtlsCipher::kAes128Gcm:
      FillGcm(info.u_.aes128, kernel_version, TLS_CIPHER_AES_GCM_128, key, iv12, record_seq);
      info.size_ = sizeof(info.u_.aes128);
      break;
    case KtlsCipher::kAes256Gcm:
      FillGcm(info.u_.aes256, kernel_version, TLS_CIPHER_AES_GCM_256, key, iv12, record_seq);
      info.size_ = sizeof(info.u_.aes256);
      break;
    case KtlsCipher::kChaCha20Poly1305: {
      auto& c = info.u_.chacha;
      static_assert(sizeof(c.iv) == kNonceSize && TLS_CIPHER_CHACHA20_POLY1305_SALT_SIZE == 0);
      c.info.version = kernel_version;
      c.info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
      std::memcpy(c.iv, iv12.data(), sizeof(c.iv));
      std::memcpy(c.key, key.data(), sizeof(c.key));
      PutBigEndian64(record_seq, c.rec_seq);
      info.size_ = sizeof(c);
      break;
    }
  }
  return info;
}

absl::StatusOr<CryptoInfo> CryptoInfo::FromTls13TrafficSecret(Direction direction,
                                                              KtlsCipher cipher,
                                                              absl::Span<const uint8_t> secret,
                                                              uint64_t record_seq) {
  if (!IsKnownCipher(cipher)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kTLS crypto info: unknown cipher value ", static_cast<int>(cipher)));
  }
  const std::string_view digest = Tls13Digest(cipher);
  // A traffic secret is exactly Hash.length bytes (RFC 8446 7.1); anything else means the
  // caller took the wrong keylog line or the wrong suite.
  if (secret.size() != DigestSize(digest)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kTLS crypto info: a TLSv1.3 ", Sv(KtlsCipherName(cipher)), " traffic secret is ",
        DigestSize(digest), " bytes (", Sv(digest), "), got ", secret.size(), " bytes"));
  }

  std::array<uint8_t, 32> key{};  // the largest key size of the three AEADs
  std::array<uint8_t, kNonceSize> iv{};
  absl::Cleanup wipe = [&key, &iv] {
    OPENSSL_cleanse(key.data(), key.size());
    OPENSSL_cleanse(iv.data(), iv.size());
  };
  const absl::Span<uint8_t> key_span(key.data(), KeySize(cipher));
  if (absl::Status s = Tls13ExpandLabel(digest, secret, "key", key_span); !s.ok()) return s;
  if (absl::Status s = Tls13ExpandLabel(digest, secret, "iv", absl::MakeSpan(iv)); !s.ok()) {
    return s;
  }
  return FromKeyAndIv(direction, TlsVersion::kTls13, cipher, key_span, iv, record_seq);
}

absl::Status Tls13ExpandLabel(std::string_view digest, absl::Span<const uint8_t> secret,
                              std::string_view label, absl::Span<uint8_t> out) {
  const size_t hash_len = DigestSize(digest);
  if (hash_len == 0) {
    return absl::InvalidArgumentError(absl::StrCat("HKDF-Expand-Label: unsupported digest \"",
                                                   Sv(digest), "\" (expected SHA256 or SHA384)"));
  }
  if (secret.empty()) {
    return absl::InvalidArgumentError("HKDF-Expand-Label: empty secret");
  }
  // HkdfLabel.label is <7..255> including the "tls13 " prefix; HKDF-Expand yields at most
  // 255 * Hash.length bytes.
  constexpr std::string_view kPrefix = "tls13 ";
  if (label.empty() || kPrefix.size() + label.size() > 255) {
    return absl::InvalidArgumentError(absl::StrCat("HKDF-Expand-Label: label must be 1..",
                                                   255 - kPrefix.size(), " bytes, got ",
                                                   label.size()));
  }
  if (out.empty() || out.size() > 255 * hash_len) {
    return absl::InvalidArgumentError(absl::StrCat("HKDF-Expand-Label: output length ", out.size(),
                                                   " is not in 1..", 255 * hash_len, " for ",
                                                   Sv(digest)));
  }

  ERR_clear_error();  // a stale error from another call must not be reported as ours
  EvpKdfPtr kdf(EVP_KDF_fetch(nullptr, "TLS13-KDF", nullptr));
  if (kdf == nullptr) {
    return absl::InternalError(
        absl::StrCat("HKDF-Expand-Label: OpenSSL has no TLS13-KDF: ", DrainOpenSslErrors()));
  }
  EvpKdfCtxPtr ctx(EVP_KDF_CTX_new(kdf.get()));
  if (ctx == nullptr) {
    return absl::InternalError(
        absl::StrCat("HKDF-Expand-Label: EVP_KDF_CTX_new: ", DrainOpenSslErrors()));
  }

  // OSSL_PARAM takes non-const pointers but only reads these.
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  std::string digest_name(digest);
  static const unsigned char kEmptyContext[1] = {0};  // non-null pointer, zero length
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest_name.data(), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(secret.data()),
                                        secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PREFIX, const_cast<char*>(kPrefix.data()),
                                        kPrefix.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_LABEL, const_cast<char*>(label.data()),
                                        label.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_DATA,
                                        const_cast<unsigned char*>(kEmptyContext), 0),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) {
    OPENSSL_cleanse(out.data(), out.size());
    return absl::InternalError(absl::StrCat("HKDF-Expand-Label(", Sv(digest), ", \"", Sv(label),
                                            "\"): EVP_KDF_derive failed: ", DrainOpenSslErrors()));
  }
  return absl::OkStatus();
}

}  // namespace ktls::agent
