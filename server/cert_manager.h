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
// Optimistic concurrency: every change moves `generation` by one (persisted, so it keeps
// growing across restarts); a request carrying expected_generation fails with ABORTED when it
// moved. A staged certificate remembers the generation of the certificate it replaces and
// refuses to commit over a newer one.
//
// One mutex serializes every change (changes are rare and each is a few milliseconds of
// parsing); readers (List, Get, the metrics) take it briefly. The data plane never waits on it.
#ifndef KTLS_SERVER_CERT_MANAGER_H_
#define KTLS_SERVER_CERT_MANAGER_H_

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/cert_store.h"
#include "ktls/v1/control.pb.h"
#include "server/cert_validation.h"
#include "server/control_metrics.h"
#include "server/state_store.h"

namespace ktls {

// Events for WatchCertificates: a bounded queue per watcher.
class CertificateEventQueue {
 public:
  static constexpr size_t kMaxQueued = 256;
  void Push(const v1::CertificateEvent& event);
  // Waits up to `timeout` for an event. false: none (or closed).
  bool Pop(absl::Duration timeout, v1::CertificateEvent* event);
  bool overflowed() const;
  void Close();

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::CertificateEvent> events_;
  bool overflowed_ = false;
  bool closed_ = false;
};

class CertManager {
 public:
  struct Options {
    size_t max_certificates = 1000;
    size_t max_staged = 64;
  };
  CertManager(CertStore& store, StateStore* state, ControlMetrics& metrics, Options options);
  ~CertManager();

  // Start-up, before the data plane runs: takes the data plane's initial set (from the
  // configuration, source "config", or the development certificate), then the state
  // directory's certificates (replacing configuration ones of the same name, each re-validated;
  // a record that fails is added to `issues` and skipped), and swaps the result in.
  void Initialize(StateStore::Loaded& loaded, std::vector<StateStore::Issue>* issues);

  // The request's private_key_pem is wiped (and cleared) on every path.
  absl::StatusOr<v1::StagedCertificate> Stage(v1::StageCertificateRequest& request,
                                              ReloadSource source);
  absl::StatusOr<v1::CommitResponse> Commit(const std::string& name, uint64_t expected_generation,
                                            ReloadSource source);
  absl::Status Abort(const std::string& name);
  // Stage + commit under one lock (no other change can come between).
  absl::StatusOr<v1::CommitResponse> Apply(v1::StageCertificateRequest& request,
                                           ReloadSource source);
  absl::StatusOr<v1::CommitResponse> Delete(const std::string& name, bool force,
                                            uint64_t expected_generation);
  absl::StatusOr<v1::CommitResponse> SetDefault(const std::string& name,
                                                uint64_t expected_generation);

  v1::ListCertificatesResponse List() const;
  absl::StatusOr<v1::GetCertificateResponse> Get(const std::string& name) const;
  uint64_t generation() const;

  // A queue that receives every event from now on, and the snapshot to send first.
  std::shared_ptr<CertificateEventQueue> Watch(v1::CertificateEvent* snapshot);
  void Unwatch(const std::shared_ptr<CertificateEventQueue>& queue);
  // A watched-directory update that was rejected (published as RELOAD_FAILED).
  void ReportRejectedReload(const std::string& name, ReloadSource source,
                            const std::string& message);

  // The committed certificates' names and the source each came from.
  std::map<std::string, std::string> Sources() const;

 private:
  struct Committed {
    CertificateEntry entry;
    std::string source;  // "api", "config", "state", "cert_dir", "development"
    uint64_t generation = 0;
    absl::Time committed_at;
  };
  struct Staged {
    CertificateEntry entry;
    std::vector<std::string> requested_names;
    bool set_default = false;
    std::vector<std::string> warnings;
    uint64_t base_generation = 0;
    absl::Time staged_at;
    std::string source;
  };

  absl::StatusOr<v1::StagedCertificate> StageLocked(v1::StageCertificateRequest& request,
                                                    ReloadSource source)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::CommitResponse> CommitLocked(const std::string& name,
                                                  uint64_t expected_generation, ReloadSource source)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckGeneration(uint64_t expected) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Builds the data-plane set from `next` (default by name), persists via `persist`, swaps, and
  // makes `next` current with generation + 1.
  absl::Status Install(std::vector<Committed> next, const std::string& default_name,
                       const std::function<absl::Status(uint64_t generation)>& persist)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PersistCertificate(const Committed& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PersistMeta(uint64_t generation, const std::string& default_name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Certificate Describe(const Committed& c) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  v1::StagedCertificate Describe(const std::string& name, const Staged& s) const;
  void Publish(v1::CertificateEvent event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int IndexOf(const std::string& name) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status Rejected(const Rejection& r);

  CertStore& store_;
  StateStore* state_;  // nullptr: nothing persisted
  ControlMetrics& metrics_;
  const Options options_;

  mutable absl::Mutex mu_;
  std::vector<Committed> committed_ ABSL_GUARDED_BY(mu_);  // in set order
  std::string default_name_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Staged> staged_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<std::shared_ptr<CertificateEventQueue>> watchers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ktls

#endif  // KTLS_SERVER_CERT_MANAGER_H_
