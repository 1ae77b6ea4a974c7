#include "server/ticket_key_manager.h"

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "agent/log.h"
#include "server/cert_validation.h"
#include "server/secrets.h"

namespace ktls::control {

TicketKeyManager::TicketKeyManager(agent::TlsContext& tls, StateStore* state,
                                   ControlMetrics& metrics)
    : tls_(tls), state_(state), metrics_(metrics), updated_at_(absl::Now()) {}

void TicketKeyManager::Initialize(StateStore::Loaded& loaded,
                                  std::vector<StateStore::Issue>* issues) {
  if (!loaded.ticket_keys.has_value()) return;
  v1::state::SessionTicketKeysRecord& r = *loaded.ticket_keys;
  std::vector<std::string_view> views(r.keys().begin(), r.keys().end());
  absl::StatusOr<std::shared_ptr<const agent::SessionTicketKeys>> keys =
      agent::SessionTicketKeys::FromBytes(views);
  for (std::string& k : *r.mutable_keys()) WipeAndClear(k);
  if (!keys.ok()) {
    issues->push_back({state_ != nullptr ? state_->dir() + "/session_ticket_keys.state" : "",
                       std::string(keys.status().message())});
    metrics_.state_files_skipped.fetch_add(1, std::memory_order_relaxed);
    KTLS_LOG(kWarning, "state: skipping the session ticket keys: ", keys.status().message());
    return;
  }
  absl::MutexLock lock(&mu_);
  tls_.SetTicketKeys(*keys);
  generation_ = r.generation();
  source_ = "state";
  updated_at_ = absl::FromUnixSeconds(r.updated_at_unix());
  KTLS_LOG(kInfo, "session ticket keys loaded from the state directory (", (*keys)->keys().size(),
           " keys, generation ", generation_, ")");
}

absl::StatusOr<v1::SessionTicketKeys> TicketKeyManager::Install(
    std::shared_ptr<const agent::SessionTicketKeys> keys, const char* source) {
  const uint64_t next = generation_ + 1;
  const absl::Time now = absl::Now();
  if (state_ != nullptr) {
    v1::state::SessionTicketKeysRecord record;
    absl::Cleanup wipe = [&record] {
      for (std::string& k : *record.mutable_keys()) WipeAndClear(k);
    };
    for (std::string& k : keys->Serialize()) {
      record.add_keys()->swap(k);  // the temporary is empty afterwards
    }
    record.set_generation(next);
    record.set_updated_at_unix(absl::ToUnixSeconds(now));
    if (absl::Status s = state_->PutTicketKeys(record); !s.ok()) {
      metrics_.state_write_errors.fetch_add(1, std::memory_order_relaxed);
      return absl::InternalError(absl::StrCat("cannot persist the session ticket keys (",
                                              s.message(), "); nothing changed"));
    }
  }
  tls_.SetTicketKeys(std::move(keys));
  generation_ = next;
  source_ = source;
  updated_at_ = now;
  metrics_.ticket_key_rotations.fetch_add(1, std::memory_order_relaxed);
  v1::SessionTicketKeys out = Describe();
  KTLS_LOG(kInfo, "session ticket keys updated (generation ", generation_, ", ", out.keys_size(),
           " keys, encrypting with ", out.keys(0).name(), ")");
  return out;
}

absl::StatusOr<v1::SessionTicketKeys> TicketKeyManager::Set(
    v1::SetSessionTicketKeysRequest& request) {
  absl::Cleanup wipe = [&request] {
    for (std::string& k : *request.mutable_keys()) WipeAndClear(k);
  };
  if (request.keys_size() == 0 ||
      static_cast<size_t>(request.keys_size()) > agent::kMaxSessionTicketKeys) {
    metrics_.CountValidationFailure(ValidationFailure::kBadTicketKey);
    return absl::InvalidArgumentError(absl::StrCat("keys: give 1 to ", agent::kMaxSessionTicketKeys,
                                                   " keys (got ", request.keys_size(), ")"));
  }
  std::vector<std::string_view> views(request.keys().begin(), request.keys().end());
  absl::StatusOr<std::shared_ptr<const agent::SessionTicketKeys>> keys =
      agent::SessionTicketKeys::FromBytes(views);
  if (!keys.ok()) {
    metrics_.CountValidationFailure(ValidationFailure::kBadTicketKey);
    return absl::InvalidArgumentError(absl::StrCat("keys: ", keys.status().message()));
  }
  absl::MutexLock lock(&mu_);
  return Install(*std::move(keys), "api");
}

absl::StatusOr<v1::SessionTicketKeys> TicketKeyManager::Rotate(
    v1::RotateSessionTicketKeysRequest& request) {
  absl::Cleanup wipe = [&request] { WipeAndClear(*request.mutable_new_key()); };
  const uint32_t keep = request.has_keep() ? request.keep() : kDefaultKeep;
  if (keep > agent::kMaxSessionTicketKeys - 1) {
    metrics_.CountValidationFailure(ValidationFailure::kTooLarge);
    return absl::InvalidArgumentError(absl::StrCat(
        "keep: at most ", agent::kMaxSessionTicketKeys - 1, " older keys (got ", keep, ")"));
  }
  std::vector<agent::SessionTicketKey> next;
  if (request.new_key().empty()) {
    absl::StatusOr<agent::SessionTicketKey> fresh = agent::SessionTicketKeys::RandomKey();
    if (!fresh.ok()) return fresh.status();
    next.push_back(*fresh);
  } else {
    absl::StatusOr<std::shared_ptr<const agent::SessionTicketKeys>> given =
        agent::SessionTicketKeys::FromBytes({request.new_key()});
    if (!given.ok()) {
      metrics_.CountValidationFailure(ValidationFailure::kBadTicketKey);
      return absl::InvalidArgumentError(absl::StrCat("new_key: ", given.status().message()));
    }
    next.push_back((*given)->keys().front());
  }
  absl::MutexLock lock(&mu_);
  const std::shared_ptr<const agent::SessionTicketKeys> current = tls_.ticket_keys();
  for (const agent::SessionTicketKey& k : current->keys()) {
    if (next.size() > keep) break;
    if (k.name == next.front().name) {
      metrics_.CountValidationFailure(ValidationFailure::kBadTicketKey);
      return absl::InvalidArgumentError(
          absl::StrCat("new_key: a key named ", k.NameHex(), " is already in use"));
    }
    next.push_back(k);
  }
  absl::StatusOr<std::shared_ptr<const agent::SessionTicketKeys>> keys =
      agent::SessionTicketKeys::FromKeys(std::move(next));
  if (!keys.ok()) return keys.status();
  return Install(*std::move(keys), "api");
}

v1::SessionTicketKeys TicketKeyManager::Describe() const {
  v1::SessionTicketKeys out;
  const std::shared_ptr<const agent::SessionTicketKeys> keys = tls_.ticket_keys();
  bool first = true;
  for (const agent::SessionTicketKey& k : keys->keys()) {
    auto* d = out.add_keys();
    d->set_name(k.NameHex());
    d->set_encrypts(first);
    d->set_aes_bits(static_cast<uint32_t>(k.key_len * 8));
    first = false;
  }
  out.set_generation(generation_);
  out.set_source(source_);
  SetTimestamp(updated_at_, out.mutable_updated_at());
  return out;
}

v1::SessionTicketKeys TicketKeyManager::Get() const {
  absl::MutexLock lock(&mu_);
  return Describe();
}

uint64_t TicketKeyManager::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

}  // namespace ktls::control
