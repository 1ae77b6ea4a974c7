#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ktls::base {
namespace {

// The first buffer when stat does not know the size (/proc, pipes).
constexpr size_t kInitialBytes = 16384;

// "key file /x" or just "/x".
std::string Named(absl::string_view what, absl::string_view path) {
  return what.empty() ? std::string(path) : absl::StrCat(what, " ", path);
}

absl::Status ErrnoStatus(int err, absl::string_view what, absl::string_view path) {
  std::string message = absl::StrCat("cannot read ", Named(what, path), ": ", strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::FailedPreconditionError(message);
  }
}

std::string FormatLimit(size_t bytes) {
  constexpr size_t kMiB = size_t{1} << 20;
  if (bytes >= kMiB && bytes % kMiB == 0) return absl::StrCat(bytes / kMiB, " MiB");
  return absl::StrCat(bytes, " bytes");
}

}  // namespace

void WipeString(std::string& s) {
  s.resize(s.capacity());  // never reallocates
  explicit_bzero(s.data(), s.size());
  s.clear();
}

absl::StatusOr<std::string> ReadFile(absl::string_view path, const ReadFileOptions& options) {
  const std::string p(path);
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, options.what, path);
  const size_t limit = options.max_bytes;
  const auto too_large = [&] {
    return absl::FailedPreconditionError(
        absl::StrCat(Named(options.what, path), " is larger than ", FormatLimit(limit)));
  };
  // Sized from stat when it knows (one read, no growth), plus one byte so that reaching it tells
  // the file grew or is over the limit.
  struct stat st {};
  size_t capacity = kInitialBytes;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    if (static_cast<uint64_t>(st.st_size) > limit) {
      ::close(fd);
      return too_large();
    }
    capacity = static_cast<size_t>(st.st_size) + 1;
  }
  std::string buf(std::min(capacity, limit + 1), '\0');
  size_t used = 0;
  absl::Status status;
  for (;;) {
    if (used == buf.size()) {
      if (used > limit) {
        status = too_large();
        break;
      }
      std::string bigger(std::min(2 * buf.size(), limit + 1), '\0');
      bigger.replace(0, used, buf, 0, used);
      if (options.secret) WipeString(buf);
      buf.swap(bigger);
    }
    const ssize_t n = ::read(fd, buf.data() + used, buf.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      status = ErrnoStatus(errno, options.what, path);
      break;
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  ::close(fd);
  if (!status.ok()) {
    if (options.secret) WipeString(buf);
    return status;
  }
  buf.resize(used);  // shrinks in place
  return buf;
}

absl::StatusOr<std::string> ReadFile(absl::string_view path, size_t max_bytes) {
  ReadFileOptions options;
  options.max_bytes = max_bytes;
  return ReadFile(path, options);
}

}  // namespace ktls::base
