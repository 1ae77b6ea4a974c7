// Session-ticket keys that can be set and rotated while serving, so several replicas holding
// the same keys resume each other's sessions (RFC 5077 tickets, TLS 1.2 and 1.3 PSK).
//
// A SessionTicketKeys list is immutable: the first key encrypts new tickets, every key decrypts
// (a ticket decrypted with an older key is accepted and renewed under the first). TlsContext
// installs SSL_CTX_set_tlsext_ticket_key_evp_cb once and reads the current list per ticket; with
// nothing set, it serves one random key generated at start (what OpenSSL does by itself).
//
// Key material is secret: it is wiped (OPENSSL_cleanse) when a list is destroyed, never logged,
// and only the 16-byte key names (public: they travel in every ticket) are ever shown.
// Formats are nginx's ssl_session_ticket_key files: 80 bytes (name 16, HMAC-SHA256 key 32,
// AES-256-CBC key 32) or 48 bytes (name 16, HMAC key 16, AES-128-CBC key 16).
#ifndef KTLS_AGENT_SESSION_TICKETS_H_
#define KTLS_AGENT_SESSION_TICKETS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ktls::agent {

struct SessionTicketKey {
  std::array<unsigned char, 16> name{};
  std::array<unsigned char, 32> hmac_key{};
  std::array<unsigned char, 32> aes_key{};
  size_t key_len = 32;  // 32: AES-256 + 32-byte HMAC key; 16: AES-128 + 16-byte HMAC key
  ~SessionTicketKey();
  SessionTicketKey() = default;
  SessionTicketKey(const SessionTicketKey&) = default;
  SessionTicketKey& operator=(const SessionTicketKey&) = default;

  std::string NameHex() const;
};

inline constexpr size_t kMaxSessionTicketKeys = 16;

class SessionTicketKeys {
 public:
  // Each element is one key in the 80- or 48-byte format; the first encrypts. 1 to
  // kMaxSessionTicketKeys keys, names distinct.
  static absl::StatusOr<std::shared_ptr<const SessionTicketKeys>> FromBytes(
      const std::vector<std::string_view>& keys);
  // One fresh random 80-byte-format key.
  static absl::StatusOr<SessionTicketKey> RandomKey();
  static absl::StatusOr<std::shared_ptr<const SessionTicketKeys>> FromKeys(
      std::vector<SessionTicketKey> keys);

  const std::vector<SessionTicketKey>& keys() const { return keys_; }
  const SessionTicketKey* Find(const unsigned char name[16]) const;
  // The keys in their byte format, for the state file (the caller wipes the result).
  std::vector<std::string> Serialize() const;

 private:
  SessionTicketKeys() = default;
  std::vector<SessionTicketKey> keys_;
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_SESSION_TICKETS_H_
