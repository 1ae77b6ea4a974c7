// Whether a name taken from a request or a command line can be used as one file name inside a
// directory the program serves or reads (ktls-demo-app's /static/NAME, ktls-loadgen's
// --static_name): one path component of [A-Za-z0-9._-], at most 255 bytes, not starting with
// '.', so nothing can leave the directory ("..", "/"; symlinks are the opener's business:
// O_NOFOLLOW). One rule for both ends, so the load generator refuses what the server would.
#ifndef KTLS_BASE_FILE_NAME_H_
#define KTLS_BASE_FILE_NAME_H_

#include "absl/strings/string_view.h"

namespace ktls::base {

bool IsSafeFileName(absl::string_view name);

}  // namespace ktls::base

#endif  // KTLS_BASE_FILE_NAME_H_
