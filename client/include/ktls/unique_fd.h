// RAII owner of one file descriptor for the app-side library.
//
// The agent has its own UniqueFd (agent/unique_fd.h) that closes through its injectable SysCalls;
// the client may not depend on agent/, and both can end up in one binary, so this one lives in
// ktls::client and closes with close(2) directly.
#ifndef KTLS_CLIENT_UNIQUE_FD_H_
#define KTLS_CLIENT_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace ktls::client {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  // Gives up ownership without closing.
  [[nodiscard]] int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace ktls::client

#endif  // KTLS_CLIENT_UNIQUE_FD_H_
