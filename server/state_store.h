// The control plane's state directory (--state_dir): what was committed through the API or the
// watched directories survives a restart.
//
//   <dir>/certificates/<name>.state   one per committed certificate (chain + private key)
//   <dir>/trust_bundle.state          the committed client trust bundle
//   <dir>/session_ticket_keys.state   the session-ticket keys set through the API
//   <dir>/meta.state                  certificate generation, default certificate
//
// Every file is a ktls.v1.state.StateFile envelope (proto/ktls/v1/state.proto) holding the
// record and its SHA-256, written atomically: a temporary file in the same directory (0600),
// write, fsync, rename over the old file, fsync the directory. A crash leaves either the old or
// the new file, never half of one. Load() checks every file on its own: one that is truncated,
// corrupt, of another kind or unreadable is reported (path + reason) and skipped, and the others
// still load. Directories are 0700, files 0600: they hold private keys.
//
// Buffers that held records are wiped (they contain private keys and ticket keys).
#ifndef KTLS_SERVER_STATE_STORE_H_
#define KTLS_SERVER_STATE_STORE_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ktls/v1/state.pb.h"

namespace ktls::control {

// Replaces `path` atomically with `data` (see above). `mode` applies to the new file.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view data,
                                 mode_t mode = 0600);

// Reads a file of at most `max_bytes` into `out` (wiped when it has to grow).
absl::Status ReadSecretFile(const std::string& path, size_t max_bytes, std::string* out);

class StateStore {
 public:
  // Creates the directories (0700) when missing.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  std::string CertificatePath(const std::string& name) const;

  absl::Status PutCertificate(const v1::state::CertificateRecord& record);
  absl::Status RemoveCertificate(const std::string& name);
  absl::Status PutTrustBundle(const v1::state::TrustBundleRecord& record);
  absl::Status RemoveTrustBundle();
  absl::Status PutTicketKeys(const v1::state::SessionTicketKeysRecord& record);
  absl::Status PutMeta(const v1::state::StateMeta& meta);

  struct Issue {
    std::string path;
    std::string error;
  };
  struct Loaded {
    Loaded() = default;
    Loaded(Loaded&&) = default;
    Loaded& operator=(Loaded&&) = default;
    ~Loaded();  // wipes the secret fields of whatever the caller left here
    std::vector<v1::state::CertificateRecord> certificates;  // sorted by name
    std::optional<v1::state::TrustBundleRecord> trust;
    std::optional<v1::state::SessionTicketKeysRecord> ticket_keys;
    v1::state::StateMeta meta;
    std::vector<Issue> issues;
    int files_loaded = 0;
  };
  Loaded Load() const;

  static constexpr size_t kMaxStateFileBytes = 8 << 20;

 private:
  explicit StateStore(std::string dir) : dir_(std::move(dir)) {}
  absl::Status Put(const std::string& path, absl::string_view kind,
                   const google::protobuf::MessageLite& record);
  std::string dir_;
};

}  // namespace ktls::control

#endif  // KTLS_SERVER_STATE_STORE_H_
