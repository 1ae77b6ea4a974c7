// Certificates used at handshake time.
//
// A CertificateSet is immutable once built: every certificate (chain + key) with the server names
// it serves and which one is the default. Its entries are immutable too and held by
// shared_ptr<const CertificateEntry>, so the next set is built around the same entries (a commit
// shares the unchanged certificates, it never copies one). The CertStore holds the current set
// and swaps a whole new set atomically (the gRPC API and the watched directory commit through
// Swap()); the store's generation is the one number for "which set is this" that the control
// plane reports and persists. A connection pins the set current at accept time for its whole
// handshake, so a swap never changes certificates under a running handshake, and live
// connections are untouched.
#ifndef KTLS_AGENT_CERT_STORE_H_
#define KTLS_AGENT_CERT_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/openssl_ptr.h"

namespace ktls::agent {

// Input for one certificate. key_pem is secret: CertificateSet::Create wipes it
// (OPENSSL_cleanse) after parsing, whatever the outcome.
struct CertificateSource {
  std::string name;       // operator-facing label, e.g. the file name or API id
  std::string chain_pem;  // leaf first, then intermediates
  std::string key_pem;
  std::vector<std::string> server_names;  // exact or "*.example.com"; empty: the leaf's DNS SANs
  bool is_default = false;
};

// Reads a chain file and a key file (errors name the file and say what is wrong: missing,
// unreadable, not PEM, ...).
absl::StatusOr<CertificateSource> LoadCertificateFiles(const std::string& chain_path,
                                                       const std::string& key_path,
                                                       std::vector<std::string> server_names,
                                                       bool is_default);

struct CertificateEntry {
  std::string name;
  X509Ptr leaf;
  X509StackPtr chain;  // intermediates (may be empty)
  EvpPkeyPtr key;
  std::vector<std::string> server_names;  // lower-case
  std::string subject;                    // RFC 2253, for logs
  int64_t not_before_unix = 0;
  int64_t not_after_unix = 0;
  // Handshakes completed with this certificate, counted through a const entry. The entry is
  // shared by every set built around it (CertificateSet::FromEntries), so the count follows the
  // certificate across commits.
  std::shared_ptr<std::atomic<uint64_t>> handshakes = std::make_shared<std::atomic<uint64_t>>(0);
};

using CertificateEntryPtr = std::shared_ptr<const CertificateEntry>;

// Parses and validates one source as CertificateSet::Create does for a set of one (so it may
// lack server names: it would be the default), and wipes source.key_pem in place whatever the
// outcome. For callers that build sets around shared entries (CertificateSet::FromEntries).
absl::StatusOr<CertificateEntryPtr> ParseCertificate(CertificateSource& source);

// A set's entries read as `const CertificateEntry&` (range-for, size(), operator[]), while the
// set holds them by shared_ptr.
class CertificateEntries {
 public:
  using Ptrs = std::vector<CertificateEntryPtr>;
  class Iterator {
   public:
    explicit Iterator(Ptrs::const_iterator it) : it_(it) {}
    const CertificateEntry& operator*() const { return **it_; }
    const CertificateEntry* operator->() const { return it_->get(); }
    Iterator& operator++() {
      ++it_;
      return *this;
    }
    bool operator==(const Iterator& other) const { return it_ == other.it_; }
    bool operator!=(const Iterator& other) const { return it_ != other.it_; }

   private:
    Ptrs::const_iterator it_;
  };

  explicit CertificateEntries(const Ptrs& ptrs) : ptrs_(ptrs) {}
  Iterator begin() const { return Iterator(ptrs_.begin()); }
  Iterator end() const { return Iterator(ptrs_.end()); }
  size_t size() const { return ptrs_.size(); }
  bool empty() const { return ptrs_.empty(); }
  const CertificateEntry& operator[](size_t i) const { return *ptrs_[i]; }

 private:
  const Ptrs& ptrs_;
};

class CertificateSet {
 public:
  // Parses and validates every source: the PEM parses, the key matches the leaf, names are
  // well-formed. At most one default; with none, the first entry is the default.
  // Errors are specific ("certificate 'api': private key does not match certificate").
  static absl::StatusOr<std::shared_ptr<const CertificateSet>> Create(
      std::vector<CertificateSource> sources);
  // Same, for a caller that keeps `sources`: on return, whatever the outcome, every key_pem in
  // it has been overwritten with zero bytes in place (same buffer, same length).
  static absl::StatusOr<std::shared_ptr<const CertificateSet>> CreateWipingKeys(
      std::vector<CertificateSource>& sources);

  // A set around already-parsed entries (e.g. another set's entries plus a newly staged one,
  // shared, not copied), with the same checks on names as Create. `default_index` must be
  // < entries.size().
  static absl::StatusOr<std::shared_ptr<const CertificateSet>> FromEntries(
      std::vector<CertificateEntryPtr> entries, size_t default_index);

  // A self-signed ECDSA P-256 certificate for localhost / 127.0.0.1 / ::1, valid for 30 days,
  // generated in memory (never written to disk). For development when nothing is configured.
  static absl::StatusOr<std::shared_ptr<const CertificateSet>> CreateDevelopment();

  // Certificate for `sni`: exact name, then a one-label wildcard match, then the default.
  // `matched` (optional) tells whether the name matched (false: default served).
  // Returns nullptr only if the set is empty.
  const CertificateEntry* Select(std::string_view sni, bool* matched = nullptr) const;

  CertificateEntries entries() const { return CertificateEntries(entries_); }
  // The same entries as shared pointers, for building the next set around them.
  const std::vector<CertificateEntryPtr>& shared_entries() const { return entries_; }
  const CertificateEntry* default_entry() const;
  bool is_development() const { return is_development_; }

 private:
  CertificateSet() = default;
  std::vector<CertificateEntryPtr> entries_;
  // Lower-case exact names, and wildcard names keyed by their suffix ("*.example.com" ->
  // "example.com"), to indexes in entries_.
  absl::flat_hash_map<std::string, size_t> exact_;
  absl::flat_hash_map<std::string, size_t> wildcard_;
  size_t default_index_ = 0;
  bool is_development_ = false;
};

class CertStore {
 public:
  explicit CertStore(std::shared_ptr<const CertificateSet> initial);

  std::shared_ptr<const CertificateSet> Current() const;
  // Replaces the whole set; returns the new generation: the current one plus one (it starts at
  // 1). The control plane is the only caller after start-up and swaps under its own lock, so
  // the generation it persists before swapping is generation() + 1.
  uint64_t Swap(std::shared_ptr<const CertificateSet> next);
  // Start-up only, before the first handshake: the set and the generation to continue from
  // (the control plane persists the generation, so it keeps growing across restarts).
  void Restore(std::shared_ptr<const CertificateSet> set, uint64_t generation);
  uint64_t generation() const;

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const CertificateSet> current_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_CERT_STORE_H_
