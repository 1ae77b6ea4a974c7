#include "agent/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/unique_fd.h"

namespace ktls::agent {

absl::Status SdNotify(SysCalls& sys, absl::string_view notify_socket, absl::string_view state) {
  if (notify_socket.empty()) return absl::OkStatus();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // A path must be absolute; '@' names an abstract socket (the '@' becomes a NUL byte).
  if ((notify_socket[0] != '/' && notify_socket[0] != '@') || notify_socket.size() < 2 ||
      notify_socket.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("NOTIFY_SOCKET=", notify_socket, ": not an absolute path or @abstract name"));
  }
  std::memcpy(addr.sun_path, notify_socket.data(), notify_socket.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  const socklen_t len =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + notify_socket.size());

  SysResult s = sys.Socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (!s.ok()) {
    return absl::InternalError(absl::StrCat("sd_notify: socket: ", std::strerror(s.err)));
  }
  UniqueFd fd(sys, static_cast<int>(s.rc));
  iovec iov{const_cast<char*>(state.data()), state.size()};
  msghdr msg{};
  msg.msg_name = &addr;
  msg.msg_namelen = len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  SysResult r{-1, EINTR};
  for (int i = 0; i < 3 && !r.ok() && r.err == EINTR; ++i) {
    r = sys.SendMsg(fd.get(), &msg, MSG_NOSIGNAL);
  }
  if (!r.ok()) {
    return absl::UnavailableError(
        absl::StrCat("sd_notify to ", notify_socket, ": ", std::strerror(r.err)));
  }
  return absl::OkStatus();
}

absl::Status SdNotifyFromEnv(SysCalls& sys, absl::string_view state) {
  const char* env = std::getenv("NOTIFY_SOCKET");
  return SdNotify(sys, env == nullptr ? "" : env, state);
}

}  // namespace ktls::agent
