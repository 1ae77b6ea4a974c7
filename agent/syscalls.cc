#include "agent/syscalls.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace ktls::agent {
namespace {

// Captures errno immediately after the call.
inline SysResult Wrap(ssize_t rc) { return SysResult{rc, rc < 0 ? errno : 0}; }

class LinuxSysCalls final : public SysCalls {
 public:
  SysResult Socket(int domain, int type, int protocol) override {
    return Wrap(::socket(domain, type, protocol));
  }
  SysResult SocketPair(int domain, int type, int protocol, int fds[2]) override {
    return Wrap(::socketpair(domain, type, protocol, fds));
  }
  SysResult Bind(int fd, const sockaddr* addr, socklen_t len) override {
    return Wrap(::bind(fd, addr, len));
  }
  SysResult Listen(int fd, int backlog) override { return Wrap(::listen(fd, backlog)); }
  SysResult Accept4(int fd, sockaddr* addr, socklen_t* len, int flags) override {
    return Wrap(::accept4(fd, addr, len, flags));
  }
  SysResult Connect(int fd, const sockaddr* addr, socklen_t len) override {
    return Wrap(::connect(fd, addr, len));
  }
  SysResult Close(int fd) override { return Wrap(::close(fd)); }
  SysResult Shutdown(int fd, int how) override { return Wrap(::shutdown(fd, how)); }
  SysResult Read(int fd, void* buf, size_t len) override { return Wrap(::read(fd, buf, len)); }
  SysResult Write(int fd, const void* buf, size_t len) override {
    return Wrap(::write(fd, buf, len));
  }
  SysResult RecvMsg(int fd, msghdr* msg, int flags) override {
    return Wrap(::recvmsg(fd, msg, flags));
  }
  SysResult SendMsg(int fd, const msghdr* msg, int flags) override {
    return Wrap(::sendmsg(fd, msg, flags));
  }
  SysResult SetSockOpt(int fd, int level, int name, const void* val, socklen_t len) override {
    return Wrap(::setsockopt(fd, level, name, val, len));
  }
  SysResult GetSockOpt(int fd, int level, int name, void* val, socklen_t* len) override {
    return Wrap(::getsockopt(fd, level, name, val, len));
  }
  SysResult GetSockName(int fd, sockaddr* addr, socklen_t* len) override {
    return Wrap(::getsockname(fd, addr, len));
  }
  SysResult GetPeerName(int fd, sockaddr* addr, socklen_t* len) override {
    return Wrap(::getpeername(fd, addr, len));
  }
  SysResult EpollCreate1(int flags) override { return Wrap(::epoll_create1(flags)); }
  SysResult EpollCtl(int epfd, int op, int fd, epoll_event* event) override {
    return Wrap(::epoll_ctl(epfd, op, fd, event));
  }
  SysResult EpollWait(int epfd, epoll_event* events, int max, int timeout_ms) override {
    return Wrap(::epoll_wait(epfd, events, max, timeout_ms));
  }
  SysResult EventFd(unsigned int initval, int flags) override {
    return Wrap(::eventfd(initval, flags));
  }
  SysResult Unlink(const char* path) override { return Wrap(::unlink(path)); }
  SysResult Chmod(const char* path, unsigned int mode) override {
    return Wrap(::chmod(path, mode));
  }
  SysResult Chown(const char* path, uid_t uid, gid_t gid) override {
    return Wrap(::chown(path, uid, gid));
  }
  SysResult Open(const char* path, int flags, unsigned int mode) override {
    return Wrap(::open(path, flags, static_cast<mode_t>(mode)));
  }
  SysResult Flock(int fd, int operation) override { return Wrap(::flock(fd, operation)); }
};

}  // namespace

SysCalls& RealSysCalls() {
  static LinuxSysCalls* const kInstance = new LinuxSysCalls();
  return *kInstance;
}

}  // namespace ktls::agent
