// RAII owner of a file descriptor that closes through the injectable SysCalls.
#ifndef KTLS_AGENT_UNIQUE_FD_H_
#define KTLS_AGENT_UNIQUE_FD_H_

#include <utility>

#include "agent/syscalls.h"

namespace ktls {

class UniqueFd {
 public:
  UniqueFd() = default;
  UniqueFd(SysCalls& sys, int fd) : sys_(&sys), fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : sys_(o.sys_), fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      sys_ = o.sys_;
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  // Gives up ownership without closing (e.g. after the descriptor was sent to another process
  // and must still be closed by a specific path).
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0 && sys_ != nullptr) sys_->Close(fd_);
    fd_ = -1;
  }

 private:
  SysCalls* sys_ = nullptr;
  int fd_ = -1;
};

}  // namespace ktls

#endif  // KTLS_AGENT_UNIQUE_FD_H_
