// Session-ticket keys through the API: set (replace all), rotate (a new first key, the most
// recent old ones kept for decryption), get (names only). Persisted in the state directory, so
// tickets issued before a restart still resume after it; replicas given the same keys resume
// each other's sessions. Key bytes from requests are wiped once parsed.
#ifndef KTLS_SERVER_TICKET_KEY_MANAGER_H_
#define KTLS_SERVER_TICKET_KEY_MANAGER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/tls_context.h"
#include "ktls/v1/control.pb.h"
#include "server/control_metrics.h"
#include "server/state_store.h"

namespace ktls::control {

class TicketKeyManager {
 public:
  static constexpr uint32_t kDefaultKeep = 2;

  TicketKeyManager(agent::TlsContext& tls, StateStore* state, ControlMetrics& metrics);

  void Initialize(StateStore::Loaded& loaded, std::vector<StateStore::Issue>* issues);
  // `request`'s key bytes are wiped on every path.
  absl::StatusOr<v1::SessionTicketKeys> Set(v1::SetSessionTicketKeysRequest& request);
  absl::StatusOr<v1::SessionTicketKeys> Rotate(v1::RotateSessionTicketKeysRequest& request);
  v1::SessionTicketKeys Get() const;
  uint64_t generation() const;

 private:
  absl::StatusOr<v1::SessionTicketKeys> Install(
      std::shared_ptr<const agent::SessionTicketKeys> keys, const char* source)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::SessionTicketKeys Describe() const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  agent::TlsContext& tls_;
  StateStore* state_;
  ControlMetrics& metrics_;
  mutable absl::Mutex mu_;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::string source_ ABSL_GUARDED_BY(mu_) = "random";
  absl::Time updated_at_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ktls::control

#endif  // KTLS_SERVER_TICKET_KEY_MANAGER_H_
