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

namespace ktls::control {
namespace {

constexpr char kDevelopment[] = "development";

std::string SourceName(ReloadSource s) { return std::string(ReloadSourceLabel(s)); }

// The chain as PEM (leaf first): what the state file keeps.
absl::StatusOr<std::string> ChainPem(const agent::CertificateEntry& e) {
  agent::BioPtr mem(BIO_new(BIO_s_mem()));
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
  agent::BioPtr mem(BIO_new(BIO_s_secmem()));
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

CertificateEvent Event(CertificateEvent::Type type, const std::string& name) {
  CertificateEvent event;
  event.type = type;
  event.name = name;
  return event;
}

bool Covers(absl::string_view have, absl::string_view want) {
  if (have == want) return true;
  if (absl::StartsWith(want, "*.") || !absl::StartsWith(have, "*.")) return false;
  const size_t dot = want.find('.');
  return dot != absl::string_view::npos && dot > 0 && want.substr(dot + 1) == have.substr(2);
}

// Names `name` serves that no other committed certificate covers.
std::vector<std::string> OrphanedNames(const std::vector<CommittedCertificate>& committed,
                                       const std::string& name) {
  std::vector<std::string> orphaned;
  for (const CommittedCertificate& c : committed) {
    if (c.entry->name != name) continue;
    for (const std::string& mine : c.entry->server_names) {
      bool served = false;
      for (const CommittedCertificate& other : committed) {
        if (other.entry->name == name) continue;
        for (const std::string& theirs : other.entry->server_names) {
          served = served || Covers(theirs, mine);
        }
      }
      if (!served) orphaned.push_back(mine);
    }
  }
  return orphaned;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
void CertificateEventQueue::Push(const CertificateEvent& event) {
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

bool CertificateEventQueue::Pop(absl::Duration timeout, CertificateEvent* event) {
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
CertManager::CertManager(agent::CertStore& store, StateStore* state, ControlMetrics& metrics,
                         Options options)
    : store_(store), state_(state), metrics_(metrics), options_(options) {}

CertManager::~CertManager() {
  absl::MutexLock lock(&mu_);
  for (auto& w : watchers_) w->Close();
}

int CertManager::IndexOf(const std::string& name) const {
  for (size_t i = 0; i < committed_.size(); ++i) {
    if (committed_[i].entry->name == name) return static_cast<int>(i);
  }
  return -1;
}

absl::Status CertManager::Rejected(const Rejection& r) {
  metrics_.CountValidationFailure(r.reason);
  return r.status;
}

absl::Status CertManager::CheckGeneration(uint64_t expected) const {
  const uint64_t generation = store_.generation();
  if (expected != 0 && expected != generation) {
    return absl::AbortedError(absl::StrCat("generation is ", generation, ", expected ", expected,
                                           ": the certificates changed since you read them; "
                                           "read them again and retry"));
  }
  return absl::OkStatus();
}

void CertManager::Initialize(StateStore::Loaded& loaded, std::vector<StateStore::Issue>* issues) {
  absl::MutexLock lock(&mu_);
  const std::shared_ptr<const agent::CertificateSet> initial = store_.Current();
  const absl::Time now = absl::Now();
  for (const agent::CertificateEntryPtr& e : initial->shared_entries()) {
    committed_.push_back(
        CommittedCertificate{e, initial->is_development() ? kDevelopment : "config", 0, now});
  }
  if (const agent::CertificateEntry* d = initial->default_entry()) default_name_ = d->name;
  uint64_t generation = std::max<uint64_t>(1, loaded.meta.certificate_generation());
  if (!LoadRecords(loaded, issues, &generation)) {
    store_.Restore(initial, generation);
    return;
  }
  const bool has_real =
      std::any_of(committed_.begin(), committed_.end(),
                  [](const CommittedCertificate& c) { return c.source != kDevelopment; });
  if (has_real) {
    committed_.erase(
        std::remove_if(committed_.begin(), committed_.end(),
                       [](const CommittedCertificate& c) { return c.source == kDevelopment; }),
        committed_.end());
  }
  if (IndexOf(loaded.meta.default_certificate()) >= 0) {
    default_name_ = loaded.meta.default_certificate();
  } else if (IndexOf(default_name_) < 0) {
    default_name_ = committed_.front().entry->name;
  }
  store_.Restore(BuildInitialSet(issues), generation);
  KTLS_LOG(kInfo, "certificates after loading the state directory: ", committed_.size(),
           " (default '", default_name_, "', generation ", generation, ")");
}

bool CertManager::LoadRecords(StateStore::Loaded& loaded, std::vector<StateStore::Issue>* issues,
                              uint64_t* generation) {
  const absl::Time now = absl::Now();
  bool changed = false;
  for (v1::state::CertificateRecord& record : loaded.certificates) {
    const std::string path = state_ != nullptr ? state_->CertificatePath(record.name()) : "";
    agent::CertificateSource source;
    source.name = record.name();
    source.chain_pem = record.cert_chain_pem();
    source.key_pem.swap(*record.mutable_private_key_pem());  // wiped by ParseCertificate
    source.server_names.assign(record.server_names().begin(), record.server_names().end());
    absl::StatusOr<agent::CertificateEntryPtr> entry = agent::ParseCertificate(source);
    absl::Status s = entry.ok() ? ValidateCertificateName(record.name()) : entry.status();
    if (!s.ok()) {
      issues->push_back({path, std::string(s.message())});
      metrics_.state_files_skipped.fetch_add(1, std::memory_order_relaxed);
      metrics_.CountReload(ReloadSource::kState, false);
      KTLS_LOG(kWarning, "state: skipping ", path, ": ", s.message());
      continue;
    }
    CommittedCertificate c{*std::move(entry), "state", record.generation(),
                           absl::FromUnixSeconds(record.committed_at_unix())};
    if (now > absl::FromUnixSeconds(c.entry->not_after_unix)) {
      KTLS_LOG(kWarning, "state: certificate '", record.name(), "' expired at ",
               FormatRfc3339(absl::FromUnixSeconds(c.entry->not_after_unix)),
               "; serving it anyway until it is replaced");
    }
    *generation = std::max(*generation, record.generation());
    const int idx = IndexOf(record.name());
    if (idx >= 0) {
      committed_[idx] = std::move(c);
    } else {
      committed_.push_back(std::move(c));
    }
    metrics_.CountReload(ReloadSource::kState, true);
    changed = true;
  }
  return changed;
}

std::shared_ptr<const agent::CertificateSet> CertManager::BuildInitialSet(
    std::vector<StateStore::Issue>* issues) {
  // Names two records both claim (which only a hand-edited state directory can produce) fail
  // the set: then the later records are dropped one by one until it builds.
  for (;;) {
    std::vector<agent::CertificateEntryPtr> entries;
    for (const CommittedCertificate& c : committed_) entries.push_back(c.entry);
    const size_t def = static_cast<size_t>(std::max(0, IndexOf(default_name_)));
    absl::StatusOr<std::shared_ptr<const agent::CertificateSet>> set =
        agent::CertificateSet::FromEntries(std::move(entries), def);
    if (set.ok()) return *std::move(set);
    const CommittedCertificate& last = committed_.back();
    issues->push_back({state_ != nullptr ? state_->CertificatePath(last.entry->name) : "",
                       std::string(set.status().message())});
    KTLS_LOG(kWarning, "state: dropping certificate '", last.entry->name,
             "': ", set.status().message());
    committed_.pop_back();
    if (IndexOf(default_name_) < 0) default_name_ = committed_.front().entry->name;
  }
}

absl::Status CertManager::PersistCertificate(const CommittedCertificate& c) {
  if (state_ == nullptr || c.source == "config" || c.source == kDevelopment) {
    return absl::OkStatus();
  }
  v1::state::CertificateRecord record;
  absl::Cleanup wipe = [&record] { WipeAndClear(*record.mutable_private_key_pem()); };
  record.set_name(c.entry->name);
  absl::StatusOr<std::string> chain = ChainPem(*c.entry);
  if (!chain.ok()) return chain.status();
  record.set_cert_chain_pem(*std::move(chain));
  if (absl::Status s = KeyPem(c.entry->key.get(), record.mutable_private_key_pem()); !s.ok()) {
    return s;
  }
  for (const std::string& n : c.entry->server_names) record.add_server_names(n);
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

absl::Status CertManager::Install(std::vector<CommittedCertificate> next,
                                  const std::string& default_name,
                                  const std::function<absl::Status(uint64_t)>& persist) {
  if (next.empty()) return absl::FailedPreconditionError("no certificate would be left");
  if (next.size() > options_.max_certificates) {
    return absl::ResourceExhaustedError(
        absl::StrCat("at most ", options_.max_certificates, " certificates"));
  }
  // Only this manager swaps the store, under mu_: the swap below makes exactly this generation.
  const uint64_t new_generation = store_.generation() + 1;
  std::vector<agent::CertificateEntryPtr> entries;
  entries.reserve(next.size());
  size_t default_index = 0;
  for (size_t i = 0; i < next.size(); ++i) {
    if (next[i].generation == 0) next[i].generation = new_generation;
    if (next[i].entry->name == default_name) default_index = i;
    entries.push_back(next[i].entry);  // shared, not copied
  }
  absl::StatusOr<std::shared_ptr<const agent::CertificateSet>> set =
      agent::CertificateSet::FromEntries(std::move(entries), default_index);
  if (!set.ok()) {
    return Rejected(
        {ClassifyParseError(set.status()), absl::FailedPreconditionError(set.status().message())});
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
  return absl::OkStatus();
}

CommittedCertificate CertManager::Describe(size_t index) const {
  CommittedCertificate c = committed_[index];
  c.is_default = c.entry->name == default_name_;
  return c;
}

std::vector<CommittedCertificate> CertManager::DescribeAll() const {
  std::vector<CommittedCertificate> out;
  out.reserve(committed_.size());
  for (size_t i = 0; i < committed_.size(); ++i) out.push_back(Describe(i));
  return out;
}

void CertManager::Publish(CertificateEvent event) {
  event.time = absl::Now();
  event.generation = store_.generation();
  for (auto& w : watchers_) w->Push(event);
}

absl::StatusOr<StagedCertificate> CertManager::Stage(agent::CertificateSource& certificate,
                                                     ReloadSource source) {
  absl::Cleanup wipe = [&certificate] { WipeAndClear(certificate.key_pem); };
  absl::MutexLock lock(&mu_);
  return StageLocked(certificate, source);
}

std::optional<Rejection> CertManager::CheckNameConflicts(
    const agent::CertificateEntry& entry) const {
  for (const CommittedCertificate& c : committed_) {
    // The development certificate is dropped by the first real commit: no conflict with it.
    if (c.entry->name == entry.name || c.source == kDevelopment) continue;
    for (const std::string& mine : entry.server_names) {
      for (const std::string& theirs : c.entry->server_names) {
        if (mine == theirs) {
          return Rejection{ValidationFailure::kNameConflict,
                           absl::FailedPreconditionError(absl::StrCat(
                               "server name '", mine, "' is already served by certificate '",
                               c.entry->name, "'; remove it there first or pick other names"))};
        }
      }
    }
  }
  return std::nullopt;
}

absl::StatusOr<StagedCertificate> CertManager::StageLocked(agent::CertificateSource& certificate,
                                                           ReloadSource source) {
  absl::Cleanup wipe = [&certificate] { WipeAndClear(certificate.key_pem); };
  if (std::optional<Rejection> r = CheckStageRequest(certificate)) return Rejected(*r);
  const std::string name = certificate.name;
  if (staged_.size() >= options_.max_staged && staged_.count(name) == 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "at most ", options_.max_staged, " certificates may be staged; commit or abort some"));
  }
  StagedCertificate staged;
  staged.requested_names = certificate.server_names;
  staged.set_default = certificate.is_default;
  absl::StatusOr<agent::CertificateEntryPtr> parsed = agent::ParseCertificate(certificate);
  if (!parsed.ok()) return Rejected({ClassifyParseError(parsed.status()), parsed.status()});
  staged.entry = *std::move(parsed);
  staged.staged_at = absl::Now();
  staged.source = SourceName(source);
  if (std::optional<Rejection> r = ValidateForServing(*staged.entry, staged.requested_names,
                                                      staged.staged_at, &staged.warnings)) {
    return Rejected(*r);
  }
  // The names must not collide with another committed certificate's (checked again at commit).
  if (std::optional<Rejection> r = CheckNameConflicts(*staged.entry)) return Rejected(*r);
  const int idx = IndexOf(name);
  staged.base_generation = idx >= 0 ? committed_[idx].generation : 0;
  staged_[name] = staged;
  CertificateEvent event = Event(CertificateEvent::Type::kStaged, name);
  event.source = SourceName(source);
  event.staged = staged;
  Publish(std::move(event));
  KTLS_LOG(kInfo, "certificate '", name, "' staged (", staged.entry->subject, ", ",
           staged.warnings.size(), " warnings)");
  return staged;
}

absl::StatusOr<CertificateChange> CertManager::Commit(const std::string& name,
                                                      uint64_t expected_generation,
                                                      ReloadSource source) {
  absl::MutexLock lock(&mu_);
  return CommitLocked(name, expected_generation, source);
}

absl::StatusOr<CertificateChange> CertManager::CommitLocked(const std::string& name,
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
  const StagedCertificate& staged = it->second;
  const int idx = IndexOf(name);
  const uint64_t current = idx >= 0 ? committed_[idx].generation : 0;
  if (staged.base_generation != current) {
    return absl::AbortedError(
        absl::StrCat("certificate '", name, "' was ", current == 0 ? "deleted" : "committed again",
                     " (generation ", current, ") after this version was staged (over generation ",
                     staged.base_generation, "); stage it again"));
  }
  CertificateChange change;
  if (std::optional<Rejection> r = ValidateForServing(*staged.entry, staged.requested_names,
                                                      absl::Now(), &change.warnings)) {
    metrics_.CountReload(source, false);
    return Rejected({r->reason, absl::FailedPreconditionError(r->status.message())});
  }

  // The next set: every committed certificate (shared) with this one in place of its namesake.
  const CommittedCertificate fresh{staged.entry, staged.source, 0, absl::Now()};
  std::vector<CommittedCertificate> next;
  bool replaced = false;
  for (const CommittedCertificate& c : committed_) {
    if (c.source == kDevelopment) continue;  // dropped once a real certificate exists
    const bool namesake = c.entry->name == name;
    next.push_back(namesake ? fresh : c);
    replaced = replaced || namesake;
  }
  if (!replaced) next.push_back(fresh);
  std::string default_name = default_name_;
  const bool default_left = std::any_of(
      next.begin(), next.end(), [&](const auto& c) { return c.entry->name == default_name; });
  if (staged.set_default || !default_left) default_name = name;

  absl::Status installed = Install(std::move(next), default_name, [&](uint64_t generation) {
    CommittedCertificate record = fresh;
    record.generation = generation;
    if (absl::Status s = PersistCertificate(record); !s.ok()) return s;
    return PersistMeta(generation, default_name);
  });
  if (!installed.ok()) {
    metrics_.CountReload(source, false);
    return installed;
  }
  metrics_.CountReload(source, true);
  change.generation = store_.generation();
  change.certificate = Describe(static_cast<size_t>(IndexOf(name)));
  staged_.erase(it);
  CertificateEvent event = Event(CertificateEvent::Type::kCommitted, name);
  event.source = SourceName(source);
  event.certificates.push_back(change.certificate);
  Publish(std::move(event));
  KTLS_LOG(kInfo, "certificate '", name, "' committed (generation ", change.generation, ", ",
           change.certificate.entry->subject, ", names ",
           absl::StrJoin(change.certificate.entry->server_names, ","), ")");
  return change;
}

absl::Status CertManager::Abort(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = staged_.find(name);
  if (it == staged_.end()) {
    return absl::NotFoundError(absl::StrCat("nothing is staged under '", name, "'"));
  }
  staged_.erase(it);
  Publish(Event(CertificateEvent::Type::kAborted, name));
  return absl::OkStatus();
}

absl::StatusOr<CertificateChange> CertManager::Apply(agent::CertificateSource& certificate,
                                                     uint64_t expected_generation,
                                                     ReloadSource source) {
  absl::Cleanup wipe = [&certificate] { WipeAndClear(certificate.key_pem); };
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckGeneration(expected_generation); !s.ok()) return s;
  const std::string name = certificate.name;
  // A version staged earlier under this name is replaced by this one (and restored if this one
  // is rejected), so Apply never commits something other than what it was given.
  std::optional<StagedCertificate> previous;
  if (auto it = staged_.find(name); it != staged_.end()) previous = std::move(it->second);
  absl::StatusOr<StagedCertificate> staged = StageLocked(certificate, source);
  if (!staged.ok()) {
    if (previous.has_value()) staged_[name] = std::move(*previous);
    metrics_.CountReload(source, false);
    return staged.status();
  }
  absl::StatusOr<CertificateChange> committed = CommitLocked(name, 0, source);
  if (!committed.ok()) {
    staged_.erase(name);
    if (previous.has_value()) staged_[name] = std::move(*previous);
    return committed.status();
  }
  // Commit re-validated and repeated the date/usage warnings; add the others staging found.
  std::vector<std::string>& warnings = committed->warnings;
  for (const std::string& w : staged->warnings) {
    if (std::find(warnings.begin(), warnings.end(), w) == warnings.end()) warnings.push_back(w);
  }
  return committed;
}

absl::StatusOr<CertificateChange> CertManager::Delete(const std::string& name, bool force,
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
        "'", name,
        "' is the default certificate (served when SNI is absent or unknown); make "
        "another one the default first, or force (the first remaining certificate becomes the "
        "default)"));
  }
  if (std::vector<std::string> orphaned = OrphanedNames(committed_, name);
      !force && !orphaned.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", name, "' is bound to ", absl::StrJoin(orphaned, ", "),
                     ", which no other certificate serves (those clients would get the default "
                     "certificate); force to delete anyway"));
  }
  CertificateChange change;
  change.certificate = Describe(static_cast<size_t>(idx));
  const std::string source = change.certificate.source;
  std::vector<CommittedCertificate> next;
  for (const CommittedCertificate& c : committed_) {
    if (c.entry->name != name) next.push_back(c);
  }
  const std::string default_name = is_default ? next.front().entry->name : default_name_;
  absl::Status s = Install(std::move(next), default_name, [&](uint64_t generation) {
    if (state_ != nullptr && source != "config" && source != kDevelopment) {
      if (absl::Status r = state_->RemoveCertificate(name); !r.ok()) return r;
    }
    return PersistMeta(generation, default_name);
  });
  if (!s.ok()) return s;
  change.generation = store_.generation();
  if (source == "config") {
    change.warnings.push_back(
        "it comes from the configuration file or flags: it is back after a restart unless "
        "removed there");
  }
  Publish(Event(CertificateEvent::Type::kDeleted, name));
  if (is_default) Publish(Event(CertificateEvent::Type::kDefaultChanged, default_name));
  KTLS_LOG(kInfo, "certificate '", name, "' deleted (generation ", change.generation, ")");
  return change;
}

absl::StatusOr<CertificateChange> CertManager::SetDefault(const std::string& name,
                                                          uint64_t expected_generation) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckGeneration(expected_generation); !s.ok()) return s;
  if (IndexOf(name) < 0) {
    return absl::NotFoundError(absl::StrCat("no certificate named '", name, "'"));
  }
  if (name != default_name_) {
    absl::Status s = Install(committed_, name,
                             [&](uint64_t generation) { return PersistMeta(generation, name); });
    if (!s.ok()) return s;
    Publish(Event(CertificateEvent::Type::kDefaultChanged, name));
    KTLS_LOG(kInfo, "certificate '", name, "' is now the default (generation ", store_.generation(),
             ")");
  }
  CertificateChange change;
  change.generation = store_.generation();
  change.certificate = Describe(static_cast<size_t>(IndexOf(name)));
  return change;
}

CertificateListing CertManager::List() const {
  absl::MutexLock lock(&mu_);
  CertificateListing out;
  out.generation = store_.generation();
  out.default_name = default_name_;
  out.committed = DescribeAll();
  for (const auto& [name, s] : staged_) out.staged.push_back(s);
  return out;
}

absl::StatusOr<CertificateLookup> CertManager::Get(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  CertificateLookup out;
  if (const int idx = IndexOf(name); idx >= 0) out.committed = Describe(static_cast<size_t>(idx));
  if (auto it = staged_.find(name); it != staged_.end()) out.staged = it->second;
  if (!out.committed.has_value() && !out.staged.has_value()) {
    return absl::NotFoundError(absl::StrCat("no certificate named '", name, "'"));
  }
  return out;
}

uint64_t CertManager::generation() const { return store_.generation(); }

std::shared_ptr<CertificateEventQueue> CertManager::Watch(CertificateEvent* snapshot) {
  absl::MutexLock lock(&mu_);
  *snapshot = Event(CertificateEvent::Type::kSnapshot, default_name_);
  snapshot->generation = store_.generation();
  snapshot->time = absl::Now();
  snapshot->certificates = DescribeAll();
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
  CertificateEvent event = Event(CertificateEvent::Type::kReloadFailed, name);
  event.source = SourceName(source);
  event.message = message;
  Publish(std::move(event));
}

std::map<std::string, std::string> CertManager::Sources() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, std::string> out;
  for (const CommittedCertificate& c : committed_) out[c.entry->name] = c.source;
  return out;
}

}  // namespace ktls::control
