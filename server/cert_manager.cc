#include "server/cert_manager.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <algorithm>
#include <chrono>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/log.h"
#include "server/cert_validation.h"
#include "server/secrets.h"

namespace ktls {
namespace {

constexpr char kDevelopment[] = "development";

std::string SourceName(ReloadSource s) { return std::string(ReloadSourceLabel(s)); }

// The chain as PEM (leaf first): what the state file keeps.
absl::StatusOr<std::string> ChainPem(const CertificateEntry& e) {
  BioPtr mem(BIO_new(BIO_s_mem()));
  if (mem == nullptr || PEM_write_bio_X509(mem.get(), e.leaf.get()) != 1) {
    ERR_clear_error();
    return absl::InternalError("cannot encode the certificate");
  }
  for (int i = 0; i < sk_X509_num(e.chain.get()); ++i) {
    if (PEM_write_bio_X509(mem.get(), sk_X509_value(e.chain.get(), i)) != 1) {
      ERR_clear_error();
      return absl::InternalError("cannot encode the chain");
    }
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(mem.get(), &data);
  return std::string(data, len > 0 ? static_cast<size_t>(len) : 0);
}

// The private key as unencrypted PKCS#8 PEM into `out` (secret). The BIO is a secure-memory
// BIO: its buffer is cleared when freed.
absl::Status KeyPem(EVP_PKEY* key, std::string* out) {
  BioPtr mem(BIO_new(BIO_s_secmem()));
  if (mem == nullptr ||
      PEM_write_bio_PrivateKey(mem.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    ERR_clear_error();
    return absl::InternalError("cannot encode the private key");
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(mem.get(), &data);
  out->assign(data, len > 0 ? static_cast<size_t>(len) : 0);
  return absl::OkStatus();
}

bool Covers(absl::string_view have, absl::string_view want) {
  if (have == want) return true;
  if (absl::StartsWith(want, "*.") || !absl::StartsWith(have, "*.")) return false;
  const size_t dot = want.find('.');
  return dot != absl::string_view::npos && dot > 0 && want.substr(dot + 1) == have.substr(2);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
void CertificateEventQueue::Push(const v1::CertificateEvent& event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    if (events_.size() >= kMaxQueued) {
      overflowed_ = true;
    } else {
      events_.push_back(event);
    }
  }
  cv_.notify_all();
}

bool CertificateEventQueue::Pop(absl::Duration timeout, v1::CertificateEvent* event) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoMilliseconds(timeout),
               [this] { return closed_ || overflowed_ || !events_.empty(); });
  if (events_.empty()) return false;
  *event = std::move(events_.front());
  events_.pop_front();
  return true;
}

bool CertificateEventQueue::overflowed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return overflowed_;
}

void CertificateEventQueue::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

// ---------------------------------------------------------------------------------------------
CertManager::CertManager(CertStore& store, StateStore* state, ControlMetrics& metrics,
                         Options options)
    : store_(store), state_(state), metrics_(metrics), options_(options) {}

CertManager::~CertManager() {
  absl::MutexLock lock(&mu_);
  for (auto& w : watchers_) w->Close();
}

int CertManager::IndexOf(const std::string& name) const {
  for (size_t i = 0; i < committed_.size(); ++i) {
    if (committed_[i].entry.name == name) return static_cast<int>(i);
  }
  return -1;
}

absl::Status CertManager::Rejected(const Rejection& r) {
  metrics_.CountValidationFailure(r.reason);
  return r.status;
}

absl::Status CertManager::CheckGeneration(uint64_t expected) const {
  if (expected != 0 && expected != generation_) {
    return absl::AbortedError(absl::StrCat("generation is ", generation_, ", expected ", expected,
                                           ": the certificates changed since you read them; "
                                           "read them again and retry"));
  }
  return absl::OkStatus();
}

void CertManager::Initialize(StateStore::Loaded& loaded, std::vector<StateStore::Issue>* issues) {
  absl::MutexLock lock(&mu_);
  const std::shared_ptr<const CertificateSet> initial = store_.Current();
  const absl::Time now = absl::Now();
  for (const CertificateEntry& e : initial->entries()) {
    committed_.push_back(
        Committed{e.Clone(), initial->is_development() ? kDevelopment : "config", 0, now});
  }
  if (const CertificateEntry* d = initial->default_entry()) default_name_ = d->name;
  generation_ = std::max<uint64_t>(1, loaded.meta.certificate_generation());

  bool changed = false;
  for (v1::state::CertificateRecord& record : loaded.certificates) {
    const std::string path = state_ != nullptr ? state_->CertificatePath(record.name()) : "";
    std::vector<CertificateSource> sources(1);
    sources[0].name = record.name();
    sources[0].chain_pem = record.cert_chain_pem();
    sources[0].key_pem.swap(*record.mutable_private_key_pem());  // wiped by CreateWipingKeys
    sources[0].server_names.assign(record.server_names().begin(), record.server_names().end());
    absl::StatusOr<std::shared_ptr<const CertificateSet>> set =
        CertificateSet::CreateWipingKeys(sources);
    absl::Status s = set.ok() ? ValidateCertificateName(record.name()) : set.status();
    if (!s.ok()) {
      issues->push_back({path, std::string(s.message())});
      metrics_.state_files_skipped.fetch_add(1, std::memory_order_relaxed);
      metrics_.CountReload(ReloadSource::kState, false);
      KTLS_LOG(kWarning, "state: skipping ", path, ": ", s.message());
      continue;
    }
    Committed c{(*set)->entries()[0].Clone(), "state", record.generation(),
                absl::FromUnixSeconds(record.committed_at_unix())};
    if (now > absl::FromUnixSeconds(c.entry.not_after_unix)) {
      KTLS_LOG(kWarning, "state: certificate '", record.name(), "' expired at ",
               FormatRfc3339(absl::FromUnixSeconds(c.entry.not_after_unix)),
               "; serving it anyway until it is replaced");
    }
    generation_ = std::max(generation_, record.generation());
    const int idx = IndexOf(record.name());
    if (idx >= 0) {
      committed_[idx] = std::move(c);
    } else {
      committed_.push_back(std::move(c));
    }
    metrics_.CountReload(ReloadSource::kState, true);
    changed = true;
  }
  if (!changed) return;
  const bool has_real = std::any_of(committed_.begin(), committed_.end(),
                                    [](const Committed& c) { return c.source != kDevelopment; });
  if (has_real) {
    committed_.erase(std::remove_if(committed_.begin(), committed_.end(),
                                    [](const Committed& c) { return c.source == kDevelopment; }),
                     committed_.end());
  }
  if (IndexOf(loaded.meta.default_certificate()) >= 0) {
    default_name_ = loaded.meta.default_certificate();
  } else if (IndexOf(default_name_) < 0) {
    default_name_ = committed_.front().entry.name;
  }
  // Names two records both claim (which only a hand-edited state directory can produce) fail
  // the set: then the later records are dropped one by one until it builds.
  for (;;) {
    std::vector<CertificateEntry> entries;
    for (const Committed& c : committed_) entries.push_back(c.entry.Clone());
    const size_t def = static_cast<size_t>(std::max(0, IndexOf(default_name_)));
    absl::StatusOr<std::shared_ptr<const CertificateSet>> set =
        CertificateSet::FromEntries(std::move(entries), def);
    if (set.ok()) {
      store_.Swap(*std::move(set));
      break;
    }
    const Committed& last = committed_.back();
    issues->push_back({state_ != nullptr ? state_->CertificatePath(last.entry.name) : "",
                       std::string(set.status().message())});
    KTLS_LOG(kWarning, "state: dropping certificate '", last.entry.name, "': ",
             set.status().message());
    committed_.pop_back();
    if (IndexOf(default_name_) < 0) default_name_ = committed_.front().entry.name;
  }
  KTLS_LOG(kInfo, "certificates after loading the state directory: ",
           committed_.size(), " (default '", default_name_, "', generation ", generation_, ")");
}

absl::Status CertManager::PersistCertificate(const Committed& c) {
  if (state_ == nullptr || c.source == "config" || c.source == kDevelopment) {
    return absl::OkStatus();
  }
  v1::state::CertificateRecord record;
  absl::Cleanup wipe = [&record] { WipeAndClear(*record.mutable_private_key_pem()); };
  record.set_name(c.entry.name);
  absl::StatusOr<std::string> chain = ChainPem(c.entry);
  if (!chain.ok()) return chain.status();
  record.set_cert_chain_pem(*std::move(chain));
  if (absl::Status s = KeyPem(c.entry.key.get(), record.mutable_private_key_pem()); !s.ok()) {
    return s;
  }
  for (const std::string& n : c.entry.server_names) record.add_server_names(n);
  record.set_generation(c.generation);
  record.set_committed_at_unix(absl::ToUnixSeconds(c.committed_at));
  record.set_source(c.source);
  return state_->PutCertificate(record);
}

absl::Status CertManager::PersistMeta(uint64_t generation, const std::string& default_name) {
  if (state_ == nullptr) return absl::OkStatus();
  v1::state::StateMeta meta;
  meta.set_certificate_generation(generation);
  meta.set_default_certificate(default_name);
  return state_->PutMeta(meta);
}

absl::Status CertManager::Install(std::vector<Committed> next, const std::string& default_name,
                                  const std::function<absl::Status(uint64_t)>& persist) {
  if (next.empty()) return absl::FailedPreconditionError("no certificate would be left");
  if (next.size() > options_.max_certificates) {
    return absl::ResourceExhaustedError(
        absl::StrCat("at most ", options_.max_certificates, " certificates"));
  }
  const uint64_t new_generation = generation_ + 1;
  std::vector<CertificateEntry> entries;
  size_t default_index = 0;
  for (size_t i = 0; i < next.size(); ++i) {
    if (next[i].generation == 0) next[i].generation = new_generation;
    if (next[i].entry.name == default_name) default_index = i;
    entries.push_back(next[i].entry.Clone());
  }
  absl::StatusOr<std::shared_ptr<const CertificateSet>> set =
      CertificateSet::FromEntries(std::move(entries), default_index);
  if (!set.ok()) {
    return Rejected({ClassifyParseError(set.status()),
                     absl::FailedPreconditionError(set.status().message())});
  }
  if (absl::Status s = persist(new_generation); !s.ok()) {
    metrics_.state_write_errors.fetch_add(1, std::memory_order_relaxed);
    KTLS_LOG(kError, "state: cannot persist a certificate change: ", s.message());
    return absl::InternalError(absl::StrCat("cannot persist the change in the state directory (",
                                            s.message(), "); nothing changed"));
  }
  store_.Swap(*std::move(set));
  committed_ = std::move(next);
  default_name_ = default_name;
  generation_ = new_generation;
  return absl::OkStatus();
}

v1::Certificate CertManager::Describe(const Committed& c) const {
  v1::Certificate d = DescribeCertificate(c.entry);
  d.set_is_default(c.entry.name == default_name_);
  d.set_generation(c.generation);
  d.set_source(c.source);
  SetTimestamp(c.committed_at, d.mutable_committed_at());
  return d;
}

v1::StagedCertificate CertManager::Describe(const std::string& name, const Staged& s) const {
  v1::StagedCertificate d;
  *d.mutable_certificate() = DescribeCertificate(s.entry);
  d.mutable_certificate()->set_source(s.source);
  d.mutable_certificate()->set_is_default(s.set_default);
  for (const std::string& w : s.warnings) d.add_warnings(w);
  d.set_base_generation(s.base_generation);
  SetTimestamp(s.staged_at, d.mutable_staged_at());
  return d;
}

void CertManager::Publish(v1::CertificateEvent event) {
  SetTimestamp(absl::Now(), event.mutable_time());
  event.set_generation(generation_);
  for (auto& w : watchers_) w->Push(event);
}

absl::StatusOr<v1::StagedCertificate> CertManager::Stage(v1::StageCertificateRequest& request,
                                                         ReloadSource source) {
  absl::Cleanup wipe = [&request] { WipeAndClear(*request.mutable_private_key_pem()); };
  absl::MutexLock lock(&mu_);
  return StageLocked(request, source);
}

absl::StatusOr<v1::StagedCertificate> CertManager::StageLocked(
    v1::StageCertificateRequest& request, ReloadSource source) {
  absl::Cleanup wipe = [&request] { WipeAndClear(*request.mutable_private_key_pem()); };
  if (std::optional<Rejection> r = CheckStageRequest(request)) return Rejected(*r);
  const std::string& name = request.name();
  if (staged_.size() >= options_.max_staged && staged_.count(name) == 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "at most ", options_.max_staged, " certificates may be staged; commit or abort some"));
  }
  std::vector<CertificateSource> sources(1);
  sources[0].name = name;
  sources[0].chain_pem = request.cert_chain_pem();
  sources[0].key_pem.swap(*request.mutable_private_key_pem());  // wiped by CreateWipingKeys
  sources[0].server_names.assign(request.server_names().begin(), request.server_names().end());
  sources[0].is_default = request.set_default();
  absl::StatusOr<std::shared_ptr<const CertificateSet>> parsed =
      CertificateSet::CreateWipingKeys(sources);
  if (!parsed.ok()) return Rejected({ClassifyParseError(parsed.status()), parsed.status()});

  Staged staged;
  staged.entry = (*parsed)->entries()[0].Clone();
  staged.requested_names.assign(request.server_names().begin(), request.server_names().end());
  staged.set_default = request.set_default();
  staged.staged_at = absl::Now();
  staged.source = SourceName(source);
  if (std::optional<Rejection> r = ValidateForServing(staged.entry, staged.requested_names,
                                                      staged.staged_at, &staged.warnings)) {
    return Rejected(*r);
  }
  // The names must not collide with another committed certificate's (checked again at commit).
  const int idx = IndexOf(name);
  for (const Committed& c : committed_) {
    // The development certificate is dropped by the first real commit: no conflict with it.
    if (c.entry.name == name || c.source == kDevelopment) continue;
    for (const std::string& mine : staged.entry.server_names) {
      for (const std::string& theirs : c.entry.server_names) {
        if (mine == theirs) {
          return Rejected({ValidationFailure::kNameConflict,
                           absl::FailedPreconditionError(absl::StrCat(
                               "server name '", mine, "' is already served by certificate '",
                               c.entry.name, "'; remove it there first or pick other names"))});
        }
      }
    }
  }
  staged.base_generation = idx >= 0 ? committed_[idx].generation : 0;
  v1::StagedCertificate out = Describe(name, staged);
  staged_[name] = std::move(staged);
  v1::CertificateEvent event;
  event.set_type(v1::CertificateEvent::STAGED);
  event.set_name(name);
  event.set_source(SourceName(source));
  *event.add_certificates() = out.certificate();
  Publish(std::move(event));
  KTLS_LOG(kInfo, "certificate '", name, "' staged (", out.certificate().subject(), ", ",
           out.warnings_size(), " warnings)");
  return out;
}

absl::StatusOr<v1::CommitResponse> CertManager::Commit(const std::string& name,
                                                       uint64_t expected_generation,
                                                       ReloadSource source) {
  absl::MutexLock lock(&mu_);
  return CommitLocked(name, expected_generation, source);
}

absl::StatusOr<v1::CommitResponse> CertManager::CommitLocked(const std::string& name,
                                                             uint64_t expected_generation,
                                                             ReloadSource source) {
  if (absl::Status s = CheckGeneration(expected_generation); !s.ok()) return s;
  auto it = staged_.find(name);
  if (it == staged_.end()) {
    if (absl::Status s = ValidateCertificateName(name); !s.ok()) {
      return Rejected({ValidationFailure::kInvalidName, s});
    }
    return absl::FailedPreconditionError(
        absl::StrCat("nothing is staged under '", name, "'; stage it first"));
  }
  Staged& staged = it->second;
  const int idx = IndexOf(name);
  const uint64_t current = idx >= 0 ? committed_[idx].generation : 0;
  if (staged.base_generation != current) {
    return absl::AbortedError(absl::StrCat(
        "certificate '", name, "' was ", current == 0 ? "deleted" : "committed again",
        " (generation ", current, ") after this version was staged (over generation ",
        staged.base_generation, "); stage it again"));
  }
  std::vector<std::string> warnings;
  if (std::optional<Rejection> r =
          ValidateForServing(staged.entry, staged.requested_names, absl::Now(), &warnings)) {
    metrics_.CountReload(source, false);
    return Rejected({r->reason, absl::FailedPreconditionError(r->status.message())});
  }

  std::vector<Committed> next;
  for (const Committed& c : committed_) {
    if (c.source == kDevelopment) continue;  // dropped once a real certificate exists
    next.push_back(Committed{c.entry.Clone(), c.source, c.generation, c.committed_at});
  }
  Committed fresh{staged.entry.Clone(), staged.source, 0, absl::Now()};
  bool replaced = false;
  for (Committed& c : next) {
    if (c.entry.name == name) {
      c = std::move(fresh);
      replaced = true;
      break;
    }
  }
  if (!replaced) next.push_back(std::move(fresh));
  std::string default_name = default_name_;
  const bool default_left = std::any_of(next.begin(), next.end(), [&](const Committed& c) {
    return c.entry.name == default_name;
  });
  if (staged.set_default || !default_left) default_name = name;

  absl::Status installed = Install(std::move(next), default_name, [&](uint64_t generation) {
    Committed record{staged.entry.Clone(), staged.source, generation, absl::Now()};
    if (absl::Status s = PersistCertificate(record); !s.ok()) return s;
    return PersistMeta(generation, default_name);
  });
  if (!installed.ok()) {
    metrics_.CountReload(source, false);
    return installed;
  }
  metrics_.CountReload(source, true);
  v1::CommitResponse response;
  response.set_generation(generation_);
  const int now_idx = IndexOf(name);
  *response.mutable_certificate() = Describe(committed_[now_idx]);
  for (const std::string& w : warnings) response.add_warnings(w);
  staged_.erase(it);
  v1::CertificateEvent event;
  event.set_type(v1::CertificateEvent::COMMITTED);
  event.set_name(name);
  event.set_source(SourceName(source));
  *event.add_certificates() = response.certificate();
  Publish(std::move(event));
  KTLS_LOG(kInfo, "certificate '", name, "' committed (generation ", generation_, ", ",
           response.certificate().subject(), ", names ",
           absl::StrJoin(response.certificate().server_names(), ","), ")");
  return response;
}

absl::Status CertManager::Abort(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = staged_.find(name);
  if (it == staged_.end()) {
    return absl::NotFoundError(absl::StrCat("nothing is staged under '", name, "'"));
  }
  staged_.erase(it);
  v1::CertificateEvent event;
  event.set_type(v1::CertificateEvent::ABORTED);
  event.set_name(name);
  Publish(std::move(event));
  return absl::OkStatus();
}

absl::StatusOr<v1::CommitResponse> CertManager::Apply(v1::StageCertificateRequest& request,
                                                      ReloadSource source) {
  absl::Cleanup wipe = [&request] { WipeAndClear(*request.mutable_private_key_pem()); };
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckGeneration(request.expected_generation()); !s.ok()) return s;
  const std::string name = request.name();
  // A version staged earlier under this name is replaced by this one (and restored if this one
  // is rejected), so Apply never commits something other than what it was given.
  std::optional<Staged> previous;
  if (auto it = staged_.find(name); it != staged_.end()) previous = std::move(it->second);
  absl::StatusOr<v1::StagedCertificate> staged = StageLocked(request, source);
  if (!staged.ok()) {
    if (previous.has_value()) staged_[name] = std::move(*previous);
    metrics_.CountReload(source, false);
    return staged.status();
  }
  absl::StatusOr<v1::CommitResponse> committed = CommitLocked(name, 0, source);
  if (!committed.ok()) {
    staged_.erase(name);
    if (previous.has_value()) staged_[name] = std::move(*previous);
    return committed.status();
  }
  // Commit re-validated and repeated the date/usage warnings; add the others staging found.
  for (const std::string& w : staged->warnings()) {
    if (std::find(committed->warnings().begin(), committed->warnings().end(), w) ==
        committed->warnings().end()) {
      committed->add_warnings(w);
    }
  }
  return committed;
}

absl::StatusOr<v1::CommitResponse> CertManager::Delete(const std::string& name, bool force,
                                                       uint64_t expected_generation) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckGeneration(expected_generation); !s.ok()) return s;
  const int idx = IndexOf(name);
  if (idx < 0) return absl::NotFoundError(absl::StrCat("no certificate named '", name, "'"));
  if (committed_.size() == 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "'", name, "' is the only certificate; commit another one before deleting it"));
  }
  const bool is_default = name == default_name_;
  if (is_default && !force) {
    return absl::FailedPreconditionError(absl::StrCat(
        "'", name, "' is the default certificate (served when SNI is absent or unknown); make "
        "another one the default first, or force (the first remaining certificate becomes the "
        "default)"));
  }
  if (!force) {
    std::vector<std::string> orphaned;
    for (const std::string& mine : committed_[idx].entry.server_names) {
      bool served = false;
      for (const Committed& c : committed_) {
        if (c.entry.name == name) continue;
        for (const std::string& theirs : c.entry.server_names) served = served || Covers(theirs, mine);
      }
      if (!served) orphaned.push_back(mine);
    }
    if (!orphaned.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "'", name, "' is bound to ", absl::StrJoin(orphaned, ", "),
          ", which no other certificate serves (those clients would get the default "
          "certificate); force to delete anyway"));
    }
  }
  v1::CommitResponse response;
  *response.mutable_certificate() = Describe(committed_[idx]);
  const std::string source = committed_[idx].source;
  std::vector<Committed> next;
  for (const Committed& c : committed_) {
    if (c.entry.name != name) next.push_back(Committed{c.entry.Clone(), c.source, c.generation, c.committed_at});
  }
  const std::string default_name = is_default ? next.front().entry.name : default_name_;
  absl::Status s = Install(std::move(next), default_name, [&](uint64_t generation) {
    if (state_ != nullptr && source != "config" && source != kDevelopment) {
      if (absl::Status r = state_->RemoveCertificate(name); !r.ok()) return r;
    }
    return PersistMeta(generation, default_name);
  });
  if (!s.ok()) return s;
  response.set_generation(generation_);
  if (source == "config") {
    response.add_warnings("it comes from the configuration file or flags: it is back after a restart "
                          "unless removed there");
  }
  v1::CertificateEvent event;
  event.set_type(v1::CertificateEvent::DELETED);
  event.set_name(name);
  Publish(event);
  if (is_default) {
    v1::CertificateEvent d;
    d.set_type(v1::CertificateEvent::DEFAULT_CHANGED);
    d.set_name(default_name);
    Publish(std::move(d));
  }
  KTLS_LOG(kInfo, "certificate '", name, "' deleted (generation ", generation_, ")");
  return response;
}

absl::StatusOr<v1::CommitResponse> CertManager::SetDefault(const std::string& name,
                                                           uint64_t expected_generation) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckGeneration(expected_generation); !s.ok()) return s;
  const int idx = IndexOf(name);
  if (idx < 0) return absl::NotFoundError(absl::StrCat("no certificate named '", name, "'"));
  v1::CommitResponse response;
  if (name != default_name_) {
    std::vector<Committed> next;
    for (const Committed& c : committed_) {
      next.push_back(Committed{c.entry.Clone(), c.source, c.generation, c.committed_at});
    }
    absl::Status s = Install(std::move(next), name,
                             [&](uint64_t generation) { return PersistMeta(generation, name); });
    if (!s.ok()) return s;
    v1::CertificateEvent event;
    event.set_type(v1::CertificateEvent::DEFAULT_CHANGED);
    event.set_name(name);
    Publish(std::move(event));
    KTLS_LOG(kInfo, "certificate '", name, "' is now the default (generation ", generation_, ")");
  }
  response.set_generation(generation_);
  *response.mutable_certificate() = Describe(committed_[IndexOf(name)]);
  return response;
}

v1::ListCertificatesResponse CertManager::List() const {
  absl::MutexLock lock(&mu_);
  v1::ListCertificatesResponse out;
  out.set_generation(generation_);
  out.set_default_certificate(default_name_);
  for (const Committed& c : committed_) *out.add_certificates() = Describe(c);
  for (const auto& [name, s] : staged_) *out.add_staged() = Describe(name, s);
  return out;
}

absl::StatusOr<v1::GetCertificateResponse> CertManager::Get(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  v1::GetCertificateResponse out;
  const int idx = IndexOf(name);
  if (idx >= 0) *out.mutable_certificate() = Describe(committed_[idx]);
  if (auto it = staged_.find(name); it != staged_.end()) {
    *out.mutable_staged() = Describe(name, it->second);
  }
  if (idx < 0 && !out.has_staged()) {
    return absl::NotFoundError(absl::StrCat("no certificate named '", name, "'"));
  }
  return out;
}

uint64_t CertManager::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

std::shared_ptr<CertificateEventQueue> CertManager::Watch(v1::CertificateEvent* snapshot) {
  absl::MutexLock lock(&mu_);
  snapshot->set_type(v1::CertificateEvent::SNAPSHOT);
  snapshot->set_generation(generation_);
  SetTimestamp(absl::Now(), snapshot->mutable_time());
  snapshot->set_name(default_name_);
  for (const Committed& c : committed_) *snapshot->add_certificates() = Describe(c);
  auto queue = std::make_shared<CertificateEventQueue>();
  watchers_.push_back(queue);
  return queue;
}

void CertManager::Unwatch(const std::shared_ptr<CertificateEventQueue>& queue) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(std::remove(watchers_.begin(), watchers_.end(), queue), watchers_.end());
}

void CertManager::ReportRejectedReload(const std::string& name, ReloadSource source,
                                       const std::string& message) {
  absl::MutexLock lock(&mu_);
  v1::CertificateEvent event;
  event.set_type(v1::CertificateEvent::RELOAD_FAILED);
  event.set_name(name);
  event.set_source(SourceName(source));
  event.set_message(message);
  Publish(std::move(event));
}

std::map<std::string, std::string> CertManager::Sources() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, std::string> out;
  for (const Committed& c : committed_) out[c.entry.name] = c.source;
  return out;
}

}  // namespace ktls
