// Reading a whole file into memory with a size bound, for configuration, PEM files and /proc.
//
// One reader instead of one per caller: every caller wants the same three things — a bound (a
// certificate directory is operator input, and /dev/zero is a file too), an error that names the
// path and the errno's meaning, and no exceptions (the data plane has none). Private keys are
// files too, so the reader can also promise that no buffer it lets go of still holds the bytes.
#ifndef KTLS_BASE_FILE_H_
#define KTLS_BASE_FILE_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ktls::base {

// Files larger than this are refused unless the caller passes its own bound.
inline constexpr size_t kDefaultMaxFileBytes = 16 << 20;

struct ReadFileOptions {
  size_t max_bytes = kDefaultMaxFileBytes;
  // The file's role, for messages: "cannot read key file /x: ..." rather than "cannot read /x".
  absl::string_view what;
  // The bytes are secret (a private key): every buffer the reader frees or gives up on is
  // overwritten first, so the only copy left is the one returned.
  bool secret = false;
};

// The file's bytes (read through symlinks, until EOF: /proc files report size 0), or
// NOT_FOUND / PERMISSION_DENIED / FAILED_PRECONDITION (too large: "<what> <path> is larger than
// 1 MiB"; a directory; a read error) with a message that names the path.
absl::StatusOr<std::string> ReadFile(absl::string_view path, const ReadFileOptions& options);
absl::StatusOr<std::string> ReadFile(absl::string_view path,
                                     size_t max_bytes = kDefaultMaxFileBytes);

// Overwrites every byte `s` owns, spare capacity included, in a way the compiler keeps; then
// empties it. For secrets in plain std::strings.
void WipeString(std::string& s);

}  // namespace ktls::base

#endif  // KTLS_BASE_FILE_H_
