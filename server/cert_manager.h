// Certificate transactions on top of the data plane's CertStore (HAProxy's "set/commit ssl
// cert" model, with Envoy SDS-style watches).
//
//   Stage   validates a certificate (see cert_validation.h) and keeps it under its name; nothing
//           is served yet. The request's private key bytes are wiped once parsed.
//   Commit  builds the next CertificateSet around the unchanged certificates (their OpenSSL
//           objects and handshake counters are shared, not re-parsed), persists the change
//           (state_store.h), then swaps it into the CertStore: handshakes accepted from then on
//           use it; handshakes in progress and live connections keep the set they pinned.
//           Persist first, then swap: a commit the caller saw succeed survives a restart; one
//           that could not be persisted changes nothing.
//   Abort, Delete, SetDefault, List, Get, Watch.
//
// Optimistic concurrency: every change moves the generation by one; a request carrying
// expected_generation fails with ABORTED when it moved. There is one generation: the CertStore's
// (the number of the set being served). The manager persists it with each change and restores
// it at start-up, so it keeps growing across restarts. A staged certificate remembers the
// generation of the certificate it replaces and refuses to commit over a newer one.
//
// Domain types in, domain types out: the gRPC edge (services.cc) turns requests into a
// CertificateSource and these results into v1 messages; the manager never sees a proto except
// the state directory's records. Committed and staged certificates hold the parsed entry by
// shared_ptr<const CertificateEntry>, the very object the served set holds: a commit builds the
// next set around the same entries and copies none.
//
// One mutex serializes every change (changes are rare and each is a few milliseconds of
// parsing); readers (List, Get, the metrics) take it briefly. The data plane never waits on it.
#ifndef KTLS_SERVER_CERT_MANAGER_H_
#define KTLS_SERVER_CERT_MANAGER_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/cert_store.h"
#include "server/cert_validation.h"
#include "server/control_metrics.h"
#include "server/state_store.h"

namespace ktls::control {

// A certificate being served.
struct CommittedCertificate {
  agent::CertificateEntryPtr entry;  // shared with the served CertificateSet
  std::string source;                // "api", "config", "state", "cert_dir", "development"
  uint64_t generation = 0;           // the generation that committed it (0: from the configuration)
  absl::Time committed_at;
  // In what the manager returns: whether it is the default (the manager keeps the default by
  // name, so this is filled on the way out).
  bool is_default = false;
};

// A certificate validated and kept under its name, not served yet.
struct StagedCertificate {
  agent::CertificateEntryPtr entry;
  std::vector<std::string> requested_names;  // as given; empty: the names came from the SANs
  bool set_default = false;
  std::vector<std::string> warnings;
  uint64_t base_generation = 0;  // the generation of the certificate it replaces (0: new name)
  absl::Time staged_at;
  std::string source;
};

// What a commit, delete or default change did.
struct CertificateChange {
  uint64_t generation = 0;           // the generation after the change
  CommittedCertificate certificate;  // the one committed / made default / deleted
  std::vector<std::string> warnings;
};

struct CertificateListing {
  uint64_t generation = 0;
  std::string default_name;
  std::vector<CommittedCertificate> committed;  // in set order
  std::vector<StagedCertificate> staged;        // by name
};

// GetCertificate: either or both.
struct CertificateLookup {
  std::optional<CommittedCertificate> committed;
  std::optional<StagedCertificate> staged;
};

struct CertificateEvent {
  enum class Type {
    kSnapshot,        // certificates = every committed one; name = the default
    kCommitted,       // certificates = [the committed one]
    kDeleted,         // name
    kDefaultChanged,  // name = the new default
    kStaged,          // staged
    kAborted,         // name
    kReloadFailed,    // a watched-directory update was rejected; message says why
  };
  Type type = Type::kSnapshot;
  uint64_t generation = 0;
  absl::Time time;
  std::string name;
  std::vector<CommittedCertificate> certificates;
  std::optional<StagedCertificate> staged;
  std::string source;
  std::string message;
};

// Events for WatchCertificates: a bounded queue per watcher.
class CertificateEventQueue {
 public:
  static constexpr size_t kMaxQueued = 256;
  void Push(const CertificateEvent& event);
  // Waits up to `timeout` for an event. false: none (or closed).
  bool Pop(absl::Duration timeout, CertificateEvent* event);
  bool overflowed() const;
  void Close();

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<CertificateEvent> events_;
  bool overflowed_ = false;
  bool closed_ = false;
};

class CertManager {
 public:
  struct Options {
    size_t max_certificates = 1000;
    size_t max_staged = 64;
  };
  CertManager(agent::CertStore& store, StateStore* state, ControlMetrics& metrics, Options options);
  ~CertManager();

  // Start-up, before the data plane runs: takes the data plane's initial set (from the
  // configuration, source "config", or the development certificate), then the state
  // directory's certificates (replacing configuration ones of the same name, each re-validated;
  // a record that fails is added to `issues` and skipped), and restores the store with the
  // result and the persisted generation.
  void Initialize(StateStore::Loaded& loaded, std::vector<StateStore::Issue>* issues);

  // `certificate.is_default` asks to make it the default at commit. Its key_pem is wiped (and
  // cleared) on every path.
  absl::StatusOr<StagedCertificate> Stage(agent::CertificateSource& certificate,
                                          ReloadSource source);
  absl::StatusOr<CertificateChange> Commit(const std::string& name, uint64_t expected_generation,
                                           ReloadSource source);
  absl::Status Abort(const std::string& name);
  // Stage + commit under one lock (no other change can come between).
  absl::StatusOr<CertificateChange> Apply(agent::CertificateSource& certificate,
                                          uint64_t expected_generation, ReloadSource source);
  absl::StatusOr<CertificateChange> Delete(const std::string& name, bool force,
                                           uint64_t expected_generation);
  absl::StatusOr<CertificateChange> SetDefault(const std::string& name,
                                               uint64_t expected_generation);

  CertificateListing List() const;
  absl::StatusOr<CertificateLookup> Get(const std::string& name) const;
  // The store's generation.
  uint64_t generation() const;

  // A queue that receives every event from now on, and the snapshot to send first.
  std::shared_ptr<CertificateEventQueue> Watch(CertificateEvent* snapshot);
  void Unwatch(const std::shared_ptr<CertificateEventQueue>& queue);
  // A watched-directory update that was rejected (published as RELOAD_FAILED).
  void ReportRejectedReload(const std::string& name, ReloadSource source,
                            const std::string& message);

  // The committed certificates' names and the source each came from.
  std::map<std::string, std::string> Sources() const;

 private:
  absl::StatusOr<StagedCertificate> StageLocked(agent::CertificateSource& certificate,
                                                ReloadSource source)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<CertificateChange> CommitLocked(const std::string& name,
                                                 uint64_t expected_generation, ReloadSource source)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckGeneration(uint64_t expected) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The staged entry's names against the other committed certificates'.
  std::optional<Rejection> CheckNameConflicts(const agent::CertificateEntry& entry) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Initialize: the state directory's records on top of the initial set (raising *generation to
  // the highest record's); true if any was taken.
  bool LoadRecords(StateStore::Loaded& loaded, std::vector<StateStore::Issue>* issues,
                   uint64_t* generation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Initialize: the set built from committed_ (records dropped from the end until it builds).
  std::shared_ptr<const agent::CertificateSet> BuildInitialSet(
      std::vector<StateStore::Issue>* issues) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Builds the data-plane set from `next` (default by name), persists via `persist` with the
  // next generation, swaps, and makes `next` current.
  absl::Status Install(std::vector<CommittedCertificate> next, const std::string& default_name,
                       const std::function<absl::Status(uint64_t generation)>& persist)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PersistCertificate(const CommittedCertificate& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PersistMeta(uint64_t generation, const std::string& default_name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // committed_[index] with is_default filled in.
  CommittedCertificate Describe(size_t index) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  std::vector<CommittedCertificate> DescribeAll() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Publish(CertificateEvent event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int IndexOf(const std::string& name) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status Rejected(const Rejection& r);

  agent::CertStore& store_;
  StateStore* state_;  // nullptr: nothing persisted
  ControlMetrics& metrics_;
  const Options options_;

  mutable absl::Mutex mu_;
  std::vector<CommittedCertificate> committed_ ABSL_GUARDED_BY(mu_);  // in set order
  std::string default_name_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, StagedCertificate> staged_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<CertificateEventQueue>> watchers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ktls::control

#endif  // KTLS_SERVER_CERT_MANAGER_H_
