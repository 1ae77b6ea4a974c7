// RAII owner of one file descriptor, for every layer.
//
// One class instead of two: the agent's closed through its injectable SysCalls and the app
// library's with close(2); both ended up in the same binaries (tests, benchmarks) under two
// names. Here the descriptor closes with ::close unless the owner was given an FdCloser; the
// agent's SysCalls is one, so a data-plane descriptor still closes through the syscall seam that
// tests replace (agent/unique_fd.h keeps the agent's spelling: UniqueFd(sys, fd)).
#ifndef KTLS_BASE_UNIQUE_FD_H_
#define KTLS_BASE_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace ktls::base {

// How an owned descriptor is closed when it is not ::close.
class FdCloser {
 public:
  virtual ~FdCloser() = default;
  virtual void CloseFd(int fd) = 0;
};

class UniqueFd {
 public:
  UniqueFd() = default;
  // Closes with ::close.
  explicit UniqueFd(int fd) : fd_(fd) {}
  // Closes through `closer`, which must outlive this object.
  UniqueFd(FdCloser& closer, int fd) : closer_(&closer), fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : closer_(o.closer_), fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      closer_ = o.closer_;
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
  [[nodiscard]] int release() { return std::exchange(fd_, -1); }
  // Closes the owned descriptor (if any) and owns `fd` instead, with the same closer.
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      if (closer_ != nullptr) {
        closer_->CloseFd(fd_);
      } else {
        ::close(fd_);
      }
    }
    fd_ = fd;
  }

 private:
  FdCloser* closer_ = nullptr;
  int fd_ = -1;
};

}  // namespace ktls::base

#endif  // KTLS_BASE_UNIQUE_FD_H_
