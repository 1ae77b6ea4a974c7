// The one door through which the data plane talks to the kernel.
//
// Every syscall the agent's data plane makes goes through a SysCalls&, passed to the objects that
// need it (never a global), so tests can swap in tests/mocks/mock_syscalls.h and make one call
// fail with EAGAIN, EINTR, ENOMEM, ENOPROTOOPT, EMFILE ... while the rest reach the kernel.
// Results are {rc, err} captured right after the call (as Envoy's OsSysCalls does): errno is never
// read later, when another call may have overwritten it. No exceptions, no allocation.
#ifndef KTLS_AGENT_SYSCALLS_H_
#define KTLS_AGENT_SYSCALLS_H_

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <cerrno>
#include <cstddef>

#include "base/unique_fd.h"

namespace ktls::agent {

struct SysResult {
  ssize_t rc = -1;
  int err = 0;  // errno when rc < 0, else 0
  bool ok() const { return rc >= 0; }
  bool would_block() const { return rc < 0 && (err == EAGAIN || err == EWOULDBLOCK); }
};

// A base::FdCloser, so that base::UniqueFd(sys, fd) closes through this seam too.
class SysCalls : public base::FdCloser {
 public:
  ~SysCalls() override = default;

  void CloseFd(int fd) final { Close(fd); }

  virtual SysResult Socket(int domain, int type, int protocol) = 0;
  virtual SysResult SocketPair(int domain, int type, int protocol, int fds[2]) = 0;
  virtual SysResult Bind(int fd, const sockaddr* addr, socklen_t len) = 0;
  virtual SysResult Listen(int fd, int backlog) = 0;
  virtual SysResult Accept4(int fd, sockaddr* addr, socklen_t* len, int flags) = 0;
  virtual SysResult Connect(int fd, const sockaddr* addr, socklen_t len) = 0;
  virtual SysResult Close(int fd) = 0;
  virtual SysResult Shutdown(int fd, int how) = 0;
  virtual SysResult Read(int fd, void* buf, size_t len) = 0;
  virtual SysResult Write(int fd, const void* buf, size_t len) = 0;
  virtual SysResult RecvMsg(int fd, msghdr* msg, int flags) = 0;
  virtual SysResult SendMsg(int fd, const msghdr* msg, int flags) = 0;
  virtual SysResult SetSockOpt(int fd, int level, int name, const void* val, socklen_t len) = 0;
  virtual SysResult GetSockOpt(int fd, int level, int name, void* val, socklen_t* len) = 0;
  virtual SysResult GetSockName(int fd, sockaddr* addr, socklen_t* len) = 0;
  virtual SysResult GetPeerName(int fd, sockaddr* addr, socklen_t* len) = 0;
  virtual SysResult EpollCreate1(int flags) = 0;
  virtual SysResult EpollCtl(int epfd, int op, int fd, epoll_event* event) = 0;
  virtual SysResult EpollWait(int epfd, epoll_event* events, int max, int timeout_ms) = 0;
  virtual SysResult EventFd(unsigned int initval, int flags) = 0;
  virtual SysResult Unlink(const char* path) = 0;
  virtual SysResult Chmod(const char* path, unsigned int mode) = 0;
  // Setup-time calls of the handoff socket (its group and its lock file): behind the seam so a
  // test can make them fail and check that the agent refuses to start instead of running with a
  // socket that has the wrong owner or that another agent still serves.
  virtual SysResult Chown(const char* path, uid_t uid, gid_t gid) = 0;
  virtual SysResult Open(const char* path, int flags, unsigned int mode) = 0;
  virtual SysResult Flock(int fd, int operation) = 0;
};

// The real kernel. Stateless; one instance serves every thread.
SysCalls& RealSysCalls();

}  // namespace ktls::agent

#endif  // KTLS_AGENT_SYSCALLS_H_
