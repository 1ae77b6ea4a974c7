// Builds the kernel's tls12_crypto_info_* structures from TLS secrets. Pure code: no syscalls,
// no sockets; unit-tested against RFC 8448 vectors (tests/unit/agent/ktls_crypto_info_test.cc).
//
// Why by hand: OpenSSL 3.0 installs kTLS RX only for TLS 1.2. For TLS 1.3 RX the agent takes
// CLIENT_TRAFFIC_SECRET_0 from the keylog callback and derives key and iv itself
// (RFC 8446 7.3: HKDF-Expand-Label(secret, "key"/"iv", "", len), via OpenSSL's TLS13-KDF).
#ifndef KTLS_AGENT_KTLS_CRYPTO_INFO_H_
#define KTLS_AGENT_KTLS_CRYPTO_INFO_H_

#include <linux/tls.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace ktls::agent {

// Which way a key protects data. Carried by CryptoInfo so RX parameters cannot be installed as
// TX (fizz tags its parameters the same way).
enum class Direction { kTx, kRx };
std::string_view DirectionName(Direction d);  // "tx" / "rx"

// The AEADs both the kernel and OpenSSL's kTLS support, and that this project offloads.
enum class KtlsCipher { kAes128Gcm, kAes256Gcm, kChaCha20Poly1305 };
std::string_view KtlsCipherName(KtlsCipher c);  // "AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305"
// Maps an IANA cipher-suite id (SSL_CIPHER_get_protocol_id) to its kTLS AEAD, or nullopt when
// the suite cannot be offloaded (CBC, CCM, ...).
std::optional<KtlsCipher> KtlsCipherFromSuiteId(uint16_t iana_id);

enum class TlsVersion : uint16_t { kTls12 = 0x0303, kTls13 = 0x0304 };
std::string_view TlsVersionName(TlsVersion v);  // "TLSv1.2" / "TLSv1.3"

// One direction's crypto parameters for setsockopt(SOL_TLS, TLS_TX|TLS_RX). Holds key material:
// move-only, and wiped (OPENSSL_cleanse) on destruction and after moving from.
class CryptoInfo {
 public:
  CryptoInfo(CryptoInfo&& other) noexcept;
  CryptoInfo& operator=(CryptoInfo&& other) noexcept;
  CryptoInfo(const CryptoInfo&) = delete;
  CryptoInfo& operator=(const CryptoInfo&) = delete;
  ~CryptoInfo();

  Direction direction() const { return direction_; }
  KtlsCipher cipher() const { return cipher_; }
  TlsVersion version() const { return version_; }
  int sockopt_name() const { return direction_ == Direction::kTx ? TLS_TX : TLS_RX; }
  const void* data() const { return &u_; }
  socklen_t size() const { return size_; }

  // Builds from a raw key and the full 12-byte nonce base (salt || explicit iv for GCM; the
  // whole iv for ChaCha20-Poly1305) and the sequence number of the next record.
  static absl::StatusOr<CryptoInfo> FromKeyAndIv(Direction direction, TlsVersion version,
                                                 KtlsCipher cipher, absl::Span<const uint8_t> key,
                                                 absl::Span<const uint8_t> iv12,
                                                 uint64_t record_seq);

  // TLS 1.3: derives key and iv from a traffic secret with HKDF-Expand-Label (digest = the
  // suite's hash: SHA-384 for AES-256-GCM, SHA-256 otherwise). Derived material is wiped.
  static absl::StatusOr<CryptoInfo> FromTls13TrafficSecret(Direction direction, KtlsCipher cipher,
                                                           absl::Span<const uint8_t> secret,
                                                           uint64_t record_seq);

 private:
  CryptoInfo(Direction d, TlsVersion v, KtlsCipher c) : direction_(d), version_(v), cipher_(c) {}
  void Wipe();

  Direction direction_;
  TlsVersion version_;
  KtlsCipher cipher_;
  socklen_t size_ = 0;
  union {
    tls_crypto_info base;
    tls12_crypto_info_aes_gcm_128 aes128;
    tls12_crypto_info_aes_gcm_256 aes256;
    tls12_crypto_info_chacha20_poly1305 chacha;
  } u_{};
};

// RFC 8446 HKDF-Expand-Label with an empty context, through OpenSSL's TLS13-KDF (expand only).
// `digest` is "SHA256" or "SHA384". Exposed for the RFC 8448 tests.
absl::Status Tls13ExpandLabel(std::string_view digest, absl::Span<const uint8_t> secret,
                              std::string_view label, absl::Span<uint8_t> out);

}  // namespace ktls::agent

#endif  // KTLS_AGENT_KTLS_CRYPTO_INFO_H_
