#include "agent/ktls_crypto_info.h"

#include <linux/tls.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ktls::agent {
namespace {

using ::testing::HasSubstr;

std::vector<uint8_t> Hex(std::string_view hex) {
  const std::string bytes = absl::HexStringToBytes(absl::string_view(hex.data(), hex.size()));
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

std::string ToHex(const void* p, size_t n) {
  return absl::BytesToHexString(absl::string_view(static_cast<const char*>(p), n));
}

std::string ToHex(absl::Span<const uint8_t> s) { return ToHex(s.data(), s.size()); }

// RFC 8448 section 3, "Simple 1-RTT Handshake" (TLS_AES_128_GCM_SHA256).
struct Rfc8448Vector {
  const char* name;
  const char* secret;
  const char* key;
  const char* iv;
};
constexpr Rfc8448Vector kRfc8448[] = {
    {"client application traffic",
     "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5",
     "17422dda596ed5d9acd890e3c63f5051", "5b78923dee08579033e523d9"},
    {"server application traffic",
     "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643",
     "9f02283b6c9c07efc26bb9f2ac92e356", "cf782b88dd83549aadf1e984"},
    {"client handshake traffic", "b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21",
     "dbfaa693d1762c5b666af5d950258d01", "5bd3c71b836e0b76bb73265f"},
    {"server handshake traffic", "b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38",
     "3fce516009c21727d0f2e4e86ee403bc", "5d313eb2671276ee13000b30"},
};

// An independent HKDF-Expand-Label (RFC 5869 + RFC 8446 7.1) on plain HMAC, to cross-check the
// TLS13-KDF path where no published vector exists (SHA-384). Itself checked against RFC 8448.
std::vector<uint8_t> ReferenceExpandLabel(const EVP_MD* md, absl::Span<const uint8_t> secret,
                                          std::string_view label, size_t len) {
  std::vector<uint8_t> info;
  info.push_back(static_cast<uint8_t>(len >> 8));
  info.push_back(static_cast<uint8_t>(len));
  const std::string full_label = std::string("tls13 ") + std::string(label);
  info.push_back(static_cast<uint8_t>(full_label.size()));
  info.insert(info.end(), full_label.begin(), full_label.end());
  info.push_back(0);  // empty context

  std::vector<uint8_t> out;
  std::vector<uint8_t> t;
  for (uint8_t counter = 1; out.size() < len; ++counter) {
    std::vector<uint8_t> msg = t;
    msg.insert(msg.end(), info.begin(), info.end());
    msg.push_back(counter);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    EXPECT_NE(HMAC(md, secret.data(), static_cast<int>(secret.size()), msg.data(), msg.size(), mac,
                   &mac_len),
              nullptr);
    t.assign(mac, mac + mac_len);
    out.insert(out.end(), t.begin(), t.end());
  }
  out.resize(len);
  return out;
}

// ---- HKDF-Expand-Label --------------------------------------------------------------------

TEST(Tls13ExpandLabelTest, MatchesRfc8448KeysAndIvs) {
  for (const Rfc8448Vector& v : kRfc8448) {
    SCOPED_TRACE(v.name);
    const std::vector<uint8_t> secret = Hex(v.secret);
    std::vector<uint8_t> key(16), iv(12);
    ASSERT_TRUE(Tls13ExpandLabel("SHA256", secret, "key", absl::MakeSpan(key)).ok());
    ASSERT_TRUE(Tls13ExpandLabel("SHA256", secret, "iv", absl::MakeSpan(iv)).ok());
    EXPECT_EQ(ToHex(key), v.key);
    EXPECT_EQ(ToHex(iv), v.iv);
  }
}

TEST(Tls13ExpandLabelTest, ReferenceImplementationMatchesRfc8448) {
  for (const Rfc8448Vector& v : kRfc8448) {
    SCOPED_TRACE(v.name);
    const std::vector<uint8_t> secret = Hex(v.secret);
    EXPECT_EQ(ToHex(ReferenceExpandLabel(EVP_sha256(), secret, "key", 16)), v.key);
    EXPECT_EQ(ToHex(ReferenceExpandLabel(EVP_sha256(), secret, "iv", 12)), v.iv);
  }
}

TEST(Tls13ExpandLabelTest, Sha384MatchesReferenceImplementation) {
  std::vector<uint8_t> secret(48);
  for (size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<uint8_t>(0xa0 + i);
  // 32 and 12 as for TLS_AES_256_GCM_SHA384; 100 > 48 exercises more than one HMAC block.
  for (auto [label, len] : {std::pair{"key", 32}, std::pair{"iv", 12}, std::pair{"key", 100}}) {
    SCOPED_TRACE(absl::StrCat(label, "/", len));
    std::vector<uint8_t> out(len);
    ASSERT_TRUE(Tls13ExpandLabel("SHA384", secret, label, absl::MakeSpan(out)).ok());
    EXPECT_EQ(ToHex(out), ToHex(ReferenceExpandLabel(EVP_sha384(), secret, label, len)));
  }
}

TEST(Tls13ExpandLabelTest, DigestMatters) {
  const std::vector<uint8_t> secret = Hex(kRfc8448[0].secret);
  std::vector<uint8_t> a(16), b(16);
  ASSERT_TRUE(Tls13ExpandLabel("SHA256", secret, "key", absl::MakeSpan(a)).ok());
  ASSERT_TRUE(Tls13ExpandLabel("SHA384", secret, "key", absl::MakeSpan(b)).ok());
  EXPECT_NE(a, b);
}

TEST(Tls13ExpandLabelTest, RejectsBadArguments) {
  const std::vector<uint8_t> secret(32, 1);
  std::vector<uint8_t> out(16);
  absl::Status s = Tls13ExpandLabel("MD5", secret, "key", absl::MakeSpan(out));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("MD5"));

  s = Tls13ExpandLabel("SHA256", {}, "key", absl::MakeSpan(out));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("empty secret"));

  s = Tls13ExpandLabel("SHA256", secret, "key", {});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);

  std::vector<uint8_t> too_long(255 * 32 + 1);
  s = Tls13ExpandLabel("SHA256", secret, "key", absl::MakeSpan(too_long));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("8161"));

  s = Tls13ExpandLabel("SHA256", secret, std::string(250, 'x'), absl::MakeSpan(out));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("label"));
}

// ---- CryptoInfo from a TLS 1.3 traffic secret --------------------------------------------

TEST(CryptoInfoTest, Tls13Rfc8448ClientSecretGivesRfcKeyAndIv) {
  // The server installs the client's application secret as its RX key.
  absl::StatusOr<CryptoInfo> info = CryptoInfo::FromTls13TrafficSecret(
      Direction::kRx, KtlsCipher::kAes128Gcm, Hex(kRfc8448[0].secret), 0);
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(info->size(), sizeof(tls12_crypto_info_aes_gcm_128));
  const auto* c = static_cast<const tls12_crypto_info_aes_gcm_128*>(info->data());
  EXPECT_EQ(c->info.version, TLS_1_3_VERSION);
  EXPECT_EQ(c->info.cipher_type, TLS_CIPHER_AES_GCM_128);
  EXPECT_EQ(ToHex(c->key, sizeof(c->key)), "17422dda596ed5d9acd890e3c63f5051");
  EXPECT_EQ(ToHex(c->salt, sizeof(c->salt)), "5b78923d");
  EXPECT_EQ(ToHex(c->iv, sizeof(c->iv)), "ee08579033e523d9");
  EXPECT_EQ(ToHex(c->rec_seq, sizeof(c->rec_seq)), "0000000000000000");
  EXPECT_EQ(info->sockopt_name(), TLS_RX);
  EXPECT_EQ(info->direction(), Direction::kRx);
  EXPECT_EQ(info->version(), TlsVersion::kTls13);
  EXPECT_EQ(info->cipher(), KtlsCipher::kAes128Gcm);
}

TEST(CryptoInfoTest, Tls13Rfc8448ServerSecretGivesRfcKeyAndIv) {
  absl::StatusOr<CryptoInfo> info = CryptoInfo::FromTls13TrafficSecret(
      Direction::kTx, KtlsCipher::kAes128Gcm, Hex(kRfc8448[1].secret), 3);
  ASSERT_TRUE(info.ok()) << info.status();
  const auto* c = static_cast<const tls12_crypto_info_aes_gcm_128*>(info->data());
  EXPECT_EQ(ToHex(c->key, sizeof(c->key)), "9f02283b6c9c07efc26bb9f2ac92e356");
  EXPECT_EQ(ToHex(c->salt, sizeof(c->salt)), "cf782b88");
  EXPECT_EQ(ToHex(c->iv, sizeof(c->iv)), "dd83549aadf1e984");
  EXPECT_EQ(ToHex(c->rec_seq, sizeof(c->rec_seq)), "0000000000000003");
  EXPECT_EQ(info->sockopt_name(), TLS_TX);
}

// The kernel struct `T` a successful CryptoInfo holds; nullptr (with the failure recorded) when
// creating it failed or its size is not T's.
template <typename T>
const T* KernelStruct(const absl::StatusOr<CryptoInfo>& info) {
  if (!info.ok()) {
    ADD_FAILURE() << info.status();
    return nullptr;
  }
  if (info->size() != sizeof(T)) {
    ADD_FAILURE() << "size " << info->size() << ", expected " << sizeof(T);
    return nullptr;
  }
  return static_cast<const T*>(info->data());
}

TEST(CryptoInfoTest, Tls13Aes256UsesSha384) {
  std::vector<uint8_t> secret(48);
  for (size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<uint8_t>(i * 7 + 1);
  absl::StatusOr<CryptoInfo> info =
      CryptoInfo::FromTls13TrafficSecret(Direction::kTx, KtlsCipher::kAes256Gcm, secret, 0);
  const auto* c = KernelStruct<tls12_crypto_info_aes_gcm_256>(info);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->info.version, TLS_1_3_VERSION);
  EXPECT_EQ(c->info.cipher_type, TLS_CIPHER_AES_GCM_256);
  const std::vector<uint8_t> key = ReferenceExpandLabel(EVP_sha384(), secret, "key", 32);
  const std::vector<uint8_t> iv = ReferenceExpandLabel(EVP_sha384(), secret, "iv", 12);
  EXPECT_EQ(ToHex(c->key, sizeof(c->key)), ToHex(key));
  EXPECT_EQ(ToHex(c->salt, sizeof(c->salt)), ToHex(absl::MakeConstSpan(iv).first(4)));
  EXPECT_EQ(ToHex(c->iv, sizeof(c->iv)), ToHex(absl::MakeConstSpan(iv).subspan(4)));
  // Same secret through SHA-256 would give a different key: the digest choice is real.
  EXPECT_NE(ToHex(c->key, sizeof(c->key)),
            ToHex(ReferenceExpandLabel(EVP_sha256(), secret, "key", 32)));
}

TEST(CryptoInfoTest, Tls13ChaChaUsesSha256AndWholeIv) {
  const std::vector<uint8_t> secret = Hex(kRfc8448[0].secret);
  absl::StatusOr<CryptoInfo> info =
      CryptoInfo::FromTls13TrafficSecret(Direction::kRx, KtlsCipher::kChaCha20Poly1305, secret, 1);
  const auto* c = KernelStruct<tls12_crypto_info_chacha20_poly1305>(info);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->info.cipher_type, TLS_CIPHER_CHACHA20_POLY1305);
  // HkdfLabel encodes the output length, so this 32-byte key is not an extension of RFC 8448's
  // 16-byte AES key; the independent reference checks it.
  EXPECT_EQ(ToHex(c->key, sizeof(c->key)),
            ToHex(ReferenceExpandLabel(EVP_sha256(), secret, "key", 32)));
  // The iv is 12 bytes for every AEAD, so RFC 8448's iv applies unchanged, all of it in `iv`.
  EXPECT_EQ(ToHex(c->iv, sizeof(c->iv)), kRfc8448[0].iv);
  EXPECT_EQ(ToHex(c->rec_seq, sizeof(c->rec_seq)), "0000000000000001");
}

TEST(CryptoInfoTest, Tls13RejectsSecretOfWrongLength) {
  absl::StatusOr<CryptoInfo> info = CryptoInfo::FromTls13TrafficSecret(
      Direction::kTx, KtlsCipher::kAes256Gcm, Hex(kRfc8448[0].secret), 0);  // 32, needs 48
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(info.status().message(), HasSubstr("48 bytes"));
  EXPECT_THAT(info.status().message(), HasSubstr("got 32"));

  info = CryptoInfo::FromTls13TrafficSecret(Direction::kTx, KtlsCipher::kAes128Gcm,
                                            std::vector<uint8_t>(48), 0);
  ASSERT_FALSE(info.ok());
  EXPECT_THAT(info.status().message(), HasSubstr("32 bytes"));
}

// ---- CryptoInfo from a raw key: exact kernel layout ---------------------------------------

// The byte image the kernel expects, built without the struct definitions:
// u16 version, u16 cipher_type, iv, key, salt, rec_seq (linux/tls.h; no padding).
std::vector<uint8_t> ExpectedImage(uint16_t version, uint16_t cipher_type,
                                   absl::Span<const uint8_t> iv, absl::Span<const uint8_t> key,
                                   absl::Span<const uint8_t> salt,
                                   absl::Span<const uint8_t> rec_seq) {
  std::vector<uint8_t> out(4);
  std::memcpy(out.data(), &version, 2);  // host byte order, as the kernel reads it
  std::memcpy(out.data() + 2, &cipher_type, 2);
  for (absl::Span<const uint8_t> part : {iv, key, salt, rec_seq}) {
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

std::vector<uint8_t> Image(const CryptoInfo& info) {
  const auto* p = static_cast<const uint8_t*>(info.data());
  return std::vector<uint8_t>(p, p + info.size());
}

std::vector<uint8_t> Iota(size_t n, uint8_t start) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i);
  return v;
}

// FromKeyAndIv against hand-written images of the kernel's structs: key and IV counted up from
// `key_start` / `iv_start`, the IV split into salt and explicit part as the cipher wants it.
struct LayoutCase {
  const char* name;
  Direction direction;
  TlsVersion version;
  KtlsCipher cipher;
  size_t key_len;
  uint8_t key_start;
  uint8_t iv_start;
  uint64_t seq;
  size_t size;         // bytes, as linux/tls.h lays them out
  size_t struct_size;  // sizeof the kernel's tls12_crypto_info_* for the cipher
  uint16_t version_code;
  uint16_t cipher_code;
  const char* iv_field;  // hex of the struct's iv field
  const char* salt;      // hex of its salt ("": the cipher has none)
  const char* rec_seq;   // hex, big-endian
  int sockopt;           // TLS_TX or TLS_RX
};

const LayoutCase kLayouts[] = {
    {"Aes128GcmTls12", Direction::kTx, TlsVersion::kTls12, KtlsCipher::kAes128Gcm, 16, 0x10, 0xa0,
     0x0102030405060708ULL, 40, sizeof(tls12_crypto_info_aes_gcm_128), TLS_1_2_VERSION,
     TLS_CIPHER_AES_GCM_128, "a4a5a6a7a8a9aaab", "a0a1a2a3", "0102030405060708", TLS_TX},
    {"Aes256GcmTls13", Direction::kRx, TlsVersion::kTls13, KtlsCipher::kAes256Gcm, 32, 0x40, 0xc0,
     0xfedcba9876543210ULL, 56, sizeof(tls12_crypto_info_aes_gcm_256), TLS_1_3_VERSION,
     TLS_CIPHER_AES_GCM_256, "c4c5c6c7c8c9cacb", "c0c1c2c3", "fedcba9876543210", TLS_RX},
    // ChaCha20-Poly1305 has no salt: the whole 12-byte IV is the iv field.
    {"ChaChaWholeIvNoSalt", Direction::kTx, TlsVersion::kTls12, KtlsCipher::kChaCha20Poly1305, 32,
     0x60, 0xe0, 0x100, 56, sizeof(tls12_crypto_info_chacha20_poly1305), TLS_1_2_VERSION,
     TLS_CIPHER_CHACHA20_POLY1305, "e0e1e2e3e4e5e6e7e8e9eaeb", "", "0000000000000100", TLS_TX},
};

class CryptoInfoLayoutTest : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(CryptoInfoLayoutTest, ExactLayout) {
  const LayoutCase& l = GetParam();
  const std::vector<uint8_t> key = Iota(l.key_len, l.key_start);
  absl::StatusOr<CryptoInfo> info =
      CryptoInfo::FromKeyAndIv(l.direction, l.version, l.cipher, key, Iota(12, l.iv_start), l.seq);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size(), l.size);
  EXPECT_EQ(info->size(), l.struct_size);
  const std::vector<uint8_t> want = ExpectedImage(l.version_code, l.cipher_code, Hex(l.iv_field),
                                                  key, Hex(l.salt), Hex(l.rec_seq));
  EXPECT_EQ(ToHex(Image(*info)), ToHex(want));
  EXPECT_EQ(info->sockopt_name(), l.sockopt);
}

INSTANTIATE_TEST_SUITE_P(Ciphers, CryptoInfoLayoutTest, ::testing::ValuesIn(kLayouts),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(CryptoInfoTest, RecordSequenceIsBigEndian) {
  absl::StatusOr<CryptoInfo> info = CryptoInfo::FromKeyAndIv(
      Direction::kTx, TlsVersion::kTls13, KtlsCipher::kAes128Gcm, std::vector<uint8_t>(16),
      std::vector<uint8_t>(12), 0xffffffffffffff01ULL);
  ASSERT_TRUE(info.ok());
  const auto* c = static_cast<const tls12_crypto_info_aes_gcm_128*>(info->data());
  EXPECT_EQ(ToHex(c->rec_seq, 8), "ffffffffffffff01");
}

TEST(CryptoInfoTest, RejectsBadKeyLengths) {
  struct Case {
    KtlsCipher cipher;
    size_t key_len;
    const char* want;
  };
  for (const Case& c : {Case{KtlsCipher::kAes128Gcm, 32, "AES-128-GCM needs a 16-byte key"},
                        Case{KtlsCipher::kAes128Gcm, 0, "got 0 bytes"},
                        Case{KtlsCipher::kAes256Gcm, 16, "AES-256-GCM needs a 32-byte key"},
                        Case{KtlsCipher::kChaCha20Poly1305, 31,
                             "CHACHA20-POLY1305 needs a 32-byte key, got 31 bytes"}}) {
    absl::StatusOr<CryptoInfo> info =
        CryptoInfo::FromKeyAndIv(Direction::kTx, TlsVersion::kTls13, c.cipher,
                                 std::vector<uint8_t>(c.key_len), std::vector<uint8_t>(12), 0);
    ASSERT_FALSE(info.ok());
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(info.status().message(), HasSubstr(c.want));
  }
}

TEST(CryptoInfoTest, RejectsBadIvLengths) {
  for (size_t iv_len : {0, 8, 11, 13, 16}) {
    absl::StatusOr<CryptoInfo> info =
        CryptoInfo::FromKeyAndIv(Direction::kRx, TlsVersion::kTls12, KtlsCipher::kAes128Gcm,
                                 std::vector<uint8_t>(16), std::vector<uint8_t>(iv_len), 0);
    ASSERT_FALSE(info.ok()) << iv_len;
    EXPECT_THAT(info.status().message(),
                HasSubstr(absl::StrCat("12-byte iv (nonce base), got ", iv_len, " bytes")));
  }
}

TEST(CryptoInfoTest, RejectsUnknownVersionAndCipher) {
  absl::StatusOr<CryptoInfo> info = CryptoInfo::FromKeyAndIv(
      Direction::kTx, static_cast<TlsVersion>(0x0302), KtlsCipher::kAes128Gcm,
      std::vector<uint8_t>(16), std::vector<uint8_t>(12), 0);
  ASSERT_FALSE(info.ok());
  EXPECT_THAT(info.status().message(), HasSubstr("0x0302"));

  info = CryptoInfo::FromKeyAndIv(Direction::kTx, TlsVersion::kTls12, static_cast<KtlsCipher>(42),
                                  std::vector<uint8_t>(16), std::vector<uint8_t>(12), 0);
  ASSERT_FALSE(info.ok());
  EXPECT_THAT(info.status().message(), HasSubstr("unknown cipher"));
}

// ---- Key hygiene ---------------------------------------------------------------------------

bool AllZero(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != 0) return false;
  }
  return true;
}

CryptoInfo MakeInfo(uint8_t fill) {
  absl::StatusOr<CryptoInfo> info =
      CryptoInfo::FromKeyAndIv(Direction::kRx, TlsVersion::kTls13, KtlsCipher::kAes256Gcm,
                               std::vector<uint8_t>(32, fill), std::vector<uint8_t>(12, fill), 7);
  EXPECT_TRUE(info.ok());
  return *std::move(info);
}

TEST(CryptoInfoTest, MoveConstructionWipesSource) {
  CryptoInfo a = MakeInfo(0x5a);
  const std::vector<uint8_t> image = Image(a);
  CryptoInfo b(std::move(a));
  EXPECT_EQ(Image(b), image);
  EXPECT_EQ(b.sockopt_name(), TLS_RX);
  // NOLINTNEXTLINE(bugprone-use-after-move): checking the wipe is the point.
  EXPECT_EQ(a.size(), 0u);
  EXPECT_TRUE(AllZero(a.data(), sizeof(tls12_crypto_info_aes_gcm_256)));
}

TEST(CryptoInfoTest, MoveAssignmentWipesSourceAndReplacesTarget) {
  CryptoInfo a = MakeInfo(0x11);
  CryptoInfo b = MakeInfo(0x22);
  const std::vector<uint8_t> image_a = Image(a);
  b = std::move(a);
  EXPECT_EQ(Image(b), image_a);
  // NOLINTNEXTLINE(bugprone-use-after-move)
  EXPECT_EQ(a.size(), 0u);
  EXPECT_TRUE(AllZero(a.data(), sizeof(tls12_crypto_info_aes_gcm_256)));

  CryptoInfo& alias = b;
  b = std::move(alias);  // self-move leaves the keys in place
  EXPECT_EQ(Image(b), image_a);
}

// ---- Tags and names ------------------------------------------------------------------------

TEST(CryptoInfoTest, DirectionTagSelectsSockopt) {
  for (Direction d : {Direction::kTx, Direction::kRx}) {
    absl::StatusOr<CryptoInfo> info =
        CryptoInfo::FromKeyAndIv(d, TlsVersion::kTls12, KtlsCipher::kAes128Gcm,
                                 std::vector<uint8_t>(16), std::vector<uint8_t>(12), 0);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->direction(), d);
    EXPECT_EQ(info->sockopt_name(), d == Direction::kTx ? TLS_TX : TLS_RX);
  }
  EXPECT_EQ(DirectionName(Direction::kTx), "tx");
  EXPECT_EQ(DirectionName(Direction::kRx), "rx");
}

TEST(KtlsNamesTest, Names) {
  EXPECT_EQ(KtlsCipherName(KtlsCipher::kAes128Gcm), "AES-128-GCM");
  EXPECT_EQ(KtlsCipherName(KtlsCipher::kAes256Gcm), "AES-256-GCM");
  EXPECT_EQ(KtlsCipherName(KtlsCipher::kChaCha20Poly1305), "CHACHA20-POLY1305");
  EXPECT_EQ(TlsVersionName(TlsVersion::kTls12), "TLSv1.2");
  EXPECT_EQ(TlsVersionName(TlsVersion::kTls13), "TLSv1.3");
}

TEST(KtlsCipherFromSuiteIdTest, MapsOffloadableSuites) {
  const std::pair<uint16_t, KtlsCipher> kCases[] = {
      {0x1301, KtlsCipher::kAes128Gcm},        {0x1302, KtlsCipher::kAes256Gcm},
      {0x1303, KtlsCipher::kChaCha20Poly1305}, {0xC02B, KtlsCipher::kAes128Gcm},
      {0xC02F, KtlsCipher::kAes128Gcm},        {0xC02C, KtlsCipher::kAes256Gcm},
      {0xC030, KtlsCipher::kAes256Gcm},        {0xCCA9, KtlsCipher::kChaCha20Poly1305},
      {0xCCA8, KtlsCipher::kChaCha20Poly1305}, {0xCCAA, KtlsCipher::kChaCha20Poly1305},
      {0x009C, KtlsCipher::kAes128Gcm},        {0x009E, KtlsCipher::kAes128Gcm},
      {0x009D, KtlsCipher::kAes256Gcm},        {0x009F, KtlsCipher::kAes256Gcm},
  };
  for (const auto& [id, cipher] : kCases) {
    EXPECT_EQ(KtlsCipherFromSuiteId(id), cipher) << std::hex << id;
  }
}

TEST(KtlsCipherFromSuiteIdTest, RejectsOthers) {
  // CCM (TLS 1.3), CBC-SHA256, CBC-SHA, AES-CCM (TLS 1.2), null, GREASE.
  for (uint16_t id : {0x1304, 0x1305, 0xC027, 0xC013, 0x002F, 0xC0AC, 0x0000, 0x0A0A}) {
    EXPECT_EQ(KtlsCipherFromSuiteId(id), std::nullopt) << std::hex << id;
  }
}

}  // namespace
}  // namespace ktls::agent
