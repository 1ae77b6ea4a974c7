// Reading a whole file into memory with a size bound, for configuration, PEM files and /proc.
//
// One reader instead of one per caller: every caller wants the same three things — a bound (a
// certificate directory is operator input, and /dev/zero is a file too), an error that names the
// path and the errno's meaning, and no exceptions (the data plane has none).
#ifndef KTLS_BASE_FILE_H_
#define KTLS_BASE_FILE_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ktls::base {

// Files larger than this are refused unless the caller passes its own bound.
inline constexpr size_t kDefaultMaxFileBytes = 16 << 20;

// The file's bytes, or NOT_FOUND / PERMISSION_DENIED / FAILED_PRECONDITION (too large, not a
// regular file or a /proc file, read error) with a message that names the path.
absl::StatusOr<std::string> ReadFile(absl::string_view path,
                                     size_t max_bytes = kDefaultMaxFileBytes);

}  // namespace ktls::base

#endif  // KTLS_BASE_FILE_H_
