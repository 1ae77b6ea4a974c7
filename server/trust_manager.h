// Client-certificate trust (CA certificates + CRLs) with the certificates' transaction model:
// stage (parse + validate, see cert_validation.h), commit (persist, then swap into the TLS
// context: handshakes accepted afterwards verify against it), abort, delete (back to the
// configuration's client_ca_file). One mutex serializes changes.
#ifndef KTLS_SERVER_TRUST_MANAGER_H_
#define KTLS_SERVER_TRUST_MANAGER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/tls_context.h"
#include "ktls/v1/control.pb.h"
#include "server/control_metrics.h"
#include "server/state_store.h"

namespace ktls::control {

class TrustManager {
 public:
  TrustManager(agent::TlsContext& tls, StateStore* state, ControlMetrics& metrics,
               std::string configured_client_ca_file);

  // Applies the persisted bundle, if any (a bad one is reported in `issues` and skipped).
  void Initialize(const StateStore::Loaded& loaded, std::vector<StateStore::Issue>* issues);

  absl::StatusOr<v1::StagedTrustBundle> Stage(const v1::StageTrustBundleRequest& request);
  absl::StatusOr<v1::TrustBundleResponse> Commit(uint64_t expected_generation);
  absl::Status Abort();
  absl::StatusOr<v1::TrustBundleResponse> Apply(const v1::StageTrustBundleRequest& request);
  v1::GetTrustBundleResponse Get() const;
  absl::StatusOr<v1::TrustBundleResponse> Delete(uint64_t expected_generation);
  uint64_t generation() const;

 private:
  struct Bundle {
    std::shared_ptr<const agent::TrustBundle> parsed;
    std::string ca_pem;
    std::string crl_pem;
    v1::TrustBundle description;
    std::vector<std::string> warnings;
  };
  absl::StatusOr<Bundle> Build(const std::string& ca_pem, const std::string& crl_pem,
                               bool require_client_cert);
  absl::StatusOr<v1::StagedTrustBundle> StageLocked(const v1::StageTrustBundleRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::TrustBundleResponse> CommitLocked(uint64_t expected_generation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckGeneration(uint64_t expected) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  agent::TlsContext& tls_;
  StateStore* state_;
  ControlMetrics& metrics_;
  const std::string configured_client_ca_file_;

  mutable absl::Mutex mu_;
  std::optional<Bundle> committed_ ABSL_GUARDED_BY(mu_);
  std::optional<Bundle> staged_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ktls::control

#endif  // KTLS_SERVER_TRUST_MANAGER_H_
