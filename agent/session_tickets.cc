#include "agent/session_tickets.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace ktls::agent {

SessionTicketKey::~SessionTicketKey() {
  OPENSSL_cleanse(hmac_key.data(), hmac_key.size());
  OPENSSL_cleanse(aes_key.data(), aes_key.size());
}

std::string SessionTicketKey::NameHex() const {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(name.data()), name.size()));
}

absl::StatusOr<std::shared_ptr<const SessionTicketKeys>> SessionTicketKeys::FromKeys(
    std::vector<SessionTicketKey> keys) {
  if (keys.empty()) return absl::InvalidArgumentError("at least one session ticket key is needed");
  if (keys.size() > kMaxSessionTicketKeys) {
    return absl::InvalidArgumentError(absl::StrCat("at most ", kMaxSessionTicketKeys,
                                                   " session ticket keys (got ", keys.size(), ")"));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (keys[i].name == keys[j].name) {
        return absl::InvalidArgumentError(absl::StrCat("session ticket keys ", j + 1, " and ",
                                                       i + 1, " have the same name ",
                                                       keys[i].NameHex()));
      }
    }
  }
  std::shared_ptr<SessionTicketKeys> list(new SessionTicketKeys());
  list->keys_ = std::move(keys);
  return std::shared_ptr<const SessionTicketKeys>(std::move(list));
}

absl::StatusOr<std::shared_ptr<const SessionTicketKeys>> SessionTicketKeys::FromBytes(
    const std::vector<std::string_view>& keys) {
  std::vector<SessionTicketKey> parsed;
  parsed.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    std::string_view k = keys[i];
    SessionTicketKey key;
    if (k.size() == 80) {
      key.key_len = 32;
    } else if (k.size() == 48) {
      key.key_len = 16;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("session ticket key ", i + 1, " is ", k.size(),
                       " bytes; expected 80 (name 16, HMAC 32, AES-256 32) or 48 (name 16, HMAC "
                       "16, AES-128 16)"));
    }
    std::memcpy(key.name.data(), k.data(), 16);
    std::memcpy(key.hmac_key.data(), k.data() + 16, key.key_len);
    std::memcpy(key.aes_key.data(), k.data() + 16 + key.key_len, key.key_len);
    parsed.push_back(key);
  }
  return FromKeys(std::move(parsed));
}

absl::StatusOr<SessionTicketKey> SessionTicketKeys::RandomKey() {
  SessionTicketKey key;
  key.key_len = 32;
  if (RAND_bytes(key.name.data(), 16) != 1 || RAND_priv_bytes(key.hmac_key.data(), 32) != 1 ||
      RAND_priv_bytes(key.aes_key.data(), 32) != 1) {
    return absl::InternalError("RAND_bytes failed: no entropy for a session ticket key");
  }
  return key;
}

const SessionTicketKey* SessionTicketKeys::Find(const unsigned char name[16]) const {
  for (const SessionTicketKey& k : keys_) {
    if (CRYPTO_memcmp(k.name.data(), name, 16) == 0) return &k;
  }
  return nullptr;
}

std::vector<std::string> SessionTicketKeys::Serialize() const {
  std::vector<std::string> out;
  for (const SessionTicketKey& k : keys_) {
    std::string b(16 + 2 * k.key_len, '\0');
    std::memcpy(b.data(), k.name.data(), 16);
    std::memcpy(b.data() + 16, k.hmac_key.data(), k.key_len);
    std::memcpy(b.data() + 16 + k.key_len, k.aes_key.data(), k.key_len);
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace ktls::agent
