#include "server/trust_manager.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/log.h"
#include "server/cert_validation.h"

namespace ktls::control {

TrustManager::TrustManager(agent::TlsContext& tls, StateStore* state, ControlMetrics& metrics,
                           std::string configured_client_ca_file)
    : tls_(tls),
      state_(state),
      metrics_(metrics),
      configured_client_ca_file_(std::move(configured_client_ca_file)) {}

absl::StatusOr<TrustManager::Bundle> TrustManager::Build(const std::string& ca_pem,
                                                         const std::string& crl_pem,
                                                         bool require_client_cert) {
  const auto reject = [this](ValidationFailure reason, absl::Status s) {
    metrics_.CountValidationFailure(reason);
    return s;
  };
  if (ca_pem.size() > kMaxCaPemBytes) {
    return reject(ValidationFailure::kTooLarge,
                  absl::InvalidArgumentError(absl::StrCat(
                      "ca_pem: ", ca_pem.size(), " bytes exceeds the limit of ", kMaxCaPemBytes)));
  }
  if (crl_pem.size() > kMaxCrlPemBytes) {
    return reject(
        ValidationFailure::kTooLarge,
        absl::InvalidArgumentError(absl::StrCat("crl_pem: ", crl_pem.size(),
                                                " bytes exceeds the limit of ", kMaxCrlPemBytes)));
  }
  absl::StatusOr<std::shared_ptr<const agent::TrustBundle>> parsed =
      agent::TrustBundle::Create(ca_pem, crl_pem, require_client_cert);
  if (!parsed.ok()) {
    const bool crl = absl::StrContains(parsed.status().message(), "CRL");
    return reject(crl ? ValidationFailure::kBadCrl : ValidationFailure::kBadCa,
                  absl::InvalidArgumentError(
                      absl::StrCat(crl ? "crl_pem: " : "ca_pem: ", parsed.status().message())));
  }
  Bundle b;
  b.parsed = *std::move(parsed);
  b.ca_pem = ca_pem;
  b.crl_pem = crl_pem;
  if (std::optional<Rejection> r = ValidateTrustBundle(ca_pem, crl_pem, *b.parsed, absl::Now(),
                                                       &b.warnings, &b.description)) {
    return reject(r->reason, r->status);
  }
  return b;
}

void TrustManager::Initialize(const StateStore::Loaded& loaded,
                              std::vector<StateStore::Issue>* issues) {
  if (!loaded.trust.has_value()) return;
  const v1::state::TrustBundleRecord& r = *loaded.trust;
  // Loaded as it was committed: a CRL past its nextUpdate is reported, not dropped (dropping
  // the bundle would silently fall back to the configuration).
  absl::StatusOr<std::shared_ptr<const agent::TrustBundle>> parsed =
      agent::TrustBundle::Create(r.ca_pem(), r.crl_pem(), r.require_client_cert());
  if (!parsed.ok()) {
    const std::string path = state_ != nullptr ? state_->dir() + "/trust_bundle.state" : "";
    issues->push_back({path, std::string(parsed.status().message())});
    metrics_.state_files_skipped.fetch_add(1, std::memory_order_relaxed);
    KTLS_LOG(kWarning, "state: skipping the trust bundle: ", parsed.status().message());
    return;
  }
  Bundle b;
  b.parsed = *parsed;
  b.ca_pem = r.ca_pem();
  b.crl_pem = r.crl_pem();
  if (std::optional<Rejection> rej = ValidateTrustBundle(
          b.ca_pem, b.crl_pem, *b.parsed, absl::Now(), &b.warnings, &b.description)) {
    KTLS_LOG(kWarning, "state: the persisted trust bundle is no longer valid (",
             rej->status.message(), "); using it until a new one is committed");
  }
  absl::MutexLock lock(&mu_);
  generation_ = r.generation();
  b.description.set_generation(generation_);
  b.description.set_source("state");
  SetTimestamp(absl::FromUnixSeconds(r.committed_at_unix()), b.description.mutable_committed_at());
  tls_.SetClientTrust(b.parsed);
  committed_ = std::move(b);
  KTLS_LOG(kInfo, "client trust bundle loaded from the state directory (generation ", generation_,
           ")");
}

absl::Status TrustManager::CheckGeneration(uint64_t expected) const {
  if (expected != 0 && expected != generation_) {
    return absl::AbortedError(absl::StrCat("trust generation is ", generation_, ", expected ",
                                           expected, ": it changed since you read it; retry"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::StagedTrustBundle> TrustManager::Stage(
    const v1::StageTrustBundleRequest& request) {
  absl::MutexLock lock(&mu_);
  return StageLocked(request);
}

absl::StatusOr<v1::StagedTrustBundle> TrustManager::StageLocked(
    const v1::StageTrustBundleRequest& request) {
  absl::StatusOr<Bundle> b =
      Build(request.ca_pem(), request.crl_pem(), request.require_client_cert());
  if (!b.ok()) return b.status();
  b->description.set_source("api");
  v1::StagedTrustBundle out;
  *out.mutable_bundle() = b->description;
  for (const std::string& w : b->warnings) out.add_warnings(w);
  staged_ = *std::move(b);
  return out;
}

absl::StatusOr<v1::TrustBundleResponse> TrustManager::Commit(uint64_t expected_generation) {
  absl::MutexLock lock(&mu_);
  return CommitLocked(expected_generation);
}

absl::StatusOr<v1::TrustBundleResponse> TrustManager::CommitLocked(uint64_t expected_generation) {
  if (absl::Status s = CheckGeneration(expected_generation); !s.ok()) return s;
  if (!staged_.has_value()) {
    return absl::FailedPreconditionError("no trust bundle is staged; stage one first");
  }
  const uint64_t next = generation_ + 1;
  const absl::Time now = absl::Now();
  if (state_ != nullptr) {
    v1::state::TrustBundleRecord record;
    record.set_ca_pem(staged_->ca_pem);
    record.set_crl_pem(staged_->crl_pem);
    record.set_require_client_cert(staged_->parsed->require_client_cert);
    record.set_generation(next);
    record.set_committed_at_unix(absl::ToUnixSeconds(now));
    if (absl::Status s = state_->PutTrustBundle(record); !s.ok()) {
      metrics_.state_write_errors.fetch_add(1, std::memory_order_relaxed);
      return absl::InternalError(
          absl::StrCat("cannot persist the trust bundle (", s.message(), "); nothing changed"));
    }
  }
  tls_.SetClientTrust(staged_->parsed);
  generation_ = next;
  staged_->description.set_generation(next);
  SetTimestamp(now, staged_->description.mutable_committed_at());
  committed_ = std::move(staged_);
  staged_.reset();
  v1::TrustBundleResponse out;
  out.set_generation(generation_);
  *out.mutable_bundle() = committed_->description;
  for (const std::string& w : committed_->warnings) out.add_warnings(w);
  KTLS_LOG(kInfo, "client trust bundle committed (generation ", generation_, ", ",
           committed_->description.cas_size(), " CAs, ", committed_->description.crls_size(),
           " CRLs, require_client_cert=", committed_->parsed->require_client_cert, ")");
  return out;
}

absl::Status TrustManager::Abort() {
  absl::MutexLock lock(&mu_);
  if (!staged_.has_value()) return absl::NotFoundError("no trust bundle is staged");
  staged_.reset();
  return absl::OkStatus();
}

absl::StatusOr<v1::TrustBundleResponse> TrustManager::Apply(
    const v1::StageTrustBundleRequest& request) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckGeneration(request.expected_generation()); !s.ok()) return s;
  std::optional<Bundle> previous = std::move(staged_);
  staged_.reset();
  absl::StatusOr<v1::StagedTrustBundle> staged = StageLocked(request);
  if (!staged.ok()) {
    staged_ = std::move(previous);
    return staged.status();
  }
  return CommitLocked(0);
}

v1::GetTrustBundleResponse TrustManager::Get() const {
  absl::MutexLock lock(&mu_);
  v1::GetTrustBundleResponse out;
  if (committed_.has_value()) *out.mutable_bundle() = committed_->description;
  if (staged_.has_value()) {
    *out.mutable_staged()->mutable_bundle() = staged_->description;
    for (const std::string& w : staged_->warnings) out.mutable_staged()->add_warnings(w);
  }
  out.set_configured_client_ca_file(configured_client_ca_file_);
  out.set_generation(generation_);
  return out;
}

absl::StatusOr<v1::TrustBundleResponse> TrustManager::Delete(uint64_t expected_generation) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckGeneration(expected_generation); !s.ok()) return s;
  if (!committed_.has_value()) {
    return absl::NotFoundError("no trust bundle was committed through the API");
  }
  if (state_ != nullptr) {
    if (absl::Status s = state_->RemoveTrustBundle(); !s.ok()) {
      return absl::InternalError(absl::StrCat("cannot remove the persisted trust bundle (",
                                              s.message(), "); nothing changed"));
    }
  }
  tls_.SetClientTrust(nullptr);
  ++generation_;
  v1::TrustBundleResponse out;
  out.set_generation(generation_);
  *out.mutable_bundle() = committed_->description;
  committed_.reset();
  out.add_warnings(
      configured_client_ca_file_.empty()
          ? "client certificates are no longer requested"
          : absl::StrCat("back to the configured client_ca_file ", configured_client_ca_file_));
  KTLS_LOG(kInfo, "client trust bundle deleted (generation ", generation_, ")");
  return out;
}

uint64_t TrustManager::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

}  // namespace ktls::control
