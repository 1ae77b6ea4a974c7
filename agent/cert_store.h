// Certificates used at handshake time.
//
// A CertificateSet is immutable once built: every certificate (chain + key) with the server names
// it serves and which one is the default. The CertStore holds the current set behind a
// shared_ptr and swaps a whole new set atomically (the gRPC API and the watched directory commit
// through Swap()). A connection pins the set current at accept time for its whole handshake, so a
// swap never changes certificates under a running handshake, and live connections are untouched.
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

namespace ktls {

// Input for one certificate. key_pem is secret: CertificateSet::Create wipes it
// (OPENSSL_cleanse) after parsing, whatever the outcome.
struct CertificateSource {
  std::string name;            // operator-facing label, e.g. the file name or API id
  std::string chain_pem;       // leaf first, then intermediates
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
  // Handshakes completed with this certificate. Shared by the entry's clones, so a set rebuilt
  // around an unchanged certificate (CertificateSet::FromEntries) keeps counting where it was.
  std::shared_ptr<std::atomic<uint64_t>> handshakes = std::make_shared<std::atomic<uint64_t>>(0);

  // Another entry holding references on the same OpenSSL objects and the same counter.
  CertificateEntry Clone() const;
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

  // A set from already-parsed entries (e.g. clones of another set's entries plus a newly staged
  // one), with the same checks on names as Create. `default_index` must be < entries.size().
  static absl::StatusOr<std::shared_ptr<const CertificateSet>> FromEntries(
      std::vector<CertificateEntry> entries, size_t default_index);

  // A self-signed ECDSA P-256 certificate for localhost / 127.0.0.1 / ::1, valid for 30 days,
  // generated in memory (never written to disk). For development when nothing is configured.
  static absl::StatusOr<std::shared_ptr<const CertificateSet>> CreateDevelopment();

  // Certificate for `sni`: exact name, then a one-label wildcard match, then the default.
  // `matched` (optional) tells whether the name matched (false: default served).
  // Returns nullptr only if the set is empty.
  const CertificateEntry* Select(std::string_view sni, bool* matched = nullptr) const;

  const std::vector<CertificateEntry>& entries() const { return entries_; }
  const CertificateEntry* default_entry() const;
  bool is_development() const { return is_development_; }

 private:
  CertificateSet() = default;
  std::vector<CertificateEntry> entries_;
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
  // Replaces the whole set; returns the new generation (starts at 1).
  uint64_t Swap(std::shared_ptr<const CertificateSet> next);
  uint64_t generation() const;

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const CertificateSet> current_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace ktls

#endif  // KTLS_AGENT_CERT_STORE_H_
