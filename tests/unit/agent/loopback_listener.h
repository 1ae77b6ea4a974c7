// A listening TCP socket on 127.0.0.1 (kernel-chosen port) for in-process handshake tests that
// need a real TCP connection: the agent's BIO and kTLS setsockopts only make sense on one.
#ifndef KTLS_TESTS_UNIT_AGENT_LOOPBACK_LISTENER_H_
#define KTLS_TESTS_UNIT_AGENT_LOOPBACK_LISTENER_H_

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace ktls::agent::testing {

class LoopbackListener {
 public:
  LoopbackListener() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr_.sin_family = AF_INET;
    addr_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = bind(fd_, reinterpret_cast<sockaddr*>(&addr_), sizeof(addr_)) == 0;
    socklen_t len = sizeof(addr_);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr_), &len);
    ok_ = ok_ && listen(fd_, 4) == 0;
  }
  ~LoopbackListener() { close(fd_); }
  LoopbackListener(const LoopbackListener&) = delete;
  LoopbackListener& operator=(const LoopbackListener&) = delete;

  bool ok() const { return ok_; }
  int port() const { return ntohs(addr_.sin_port); }
  // The server end of the next connection, non-blocking as the agent's accept makes it (-1 on
  // error; the caller owns it).
  int Accept() { return accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC); }
  // A client connected to this listener, made non-blocking once connected (-1 on error; the
  // caller owns it).
  int Connect() {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr_), sizeof(addr_)) != 0) {
      close(fd);
      return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
  }

 private:
  int fd_ = -1;
  sockaddr_in addr_{};
  bool ok_ = false;
};

}  // namespace ktls::agent::testing

#endif  // KTLS_TESTS_UNIT_AGENT_LOOPBACK_LISTENER_H_
