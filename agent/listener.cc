#include "agent/listener.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ktls::agent {

std::string ListenAddress::ToString() const {
  std::string a;
  uint32_t p = 0;
  FormatSockaddr(reinterpret_cast<const sockaddr*>(&addr), &a, &p);
  return addr.ss_family == AF_INET6 ? absl::StrCat("[", a, "]:", p) : absl::StrCat(a, ":", p);
}

absl::StatusOr<ListenAddress> ParseListenAddress(std::string name, const std::string& address,
                                                 uint32_t port) {
  if (port > 65535) return absl::InvalidArgumentError(absl::StrCat("port ", port, " out of range"));
  ListenAddress out;
  out.name = std::move(name);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.addr);
  if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    out.len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    out.len = sizeof(sockaddr_in6);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("listener address '", address, "' is not a numeric IPv4 or IPv6 address"));
  }
  return out;
}

absl::StatusOr<ListenAddress> ParseHostPort(std::string name, const std::string& host_port) {
  std::string host;
  std::string port_text;
  if (!host_port.empty() && host_port[0] == '[') {
    size_t close = host_port.find(']');
    if (close == std::string::npos || close + 1 >= host_port.size() ||
        host_port[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("bad listen address '", host_port, "'"));
    }
    host = host_port.substr(1, close - 1);
    port_text = host_port.substr(close + 2);
  } else {
    size_t colon = host_port.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen address '", host_port, "' needs a port (host:port)"));
    }
    host = host_port.substr(0, colon);
    port_text = host_port.substr(colon + 1);
  }
  uint32_t port;
  if (!absl::SimpleAtoi(port_text, &port)) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in '", host_port, "'"));
  }
  return ParseListenAddress(std::move(name), host, port);
}

absl::StatusOr<UniqueFd> OpenListenSocket(SysCalls& sys, const ListenAddress& address,
                                          int backlog) {
  const int family = address.addr.ss_family;
  SysResult s = sys.Socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (!s.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat("socket: ", strerror(s.err)));
  }
  UniqueFd fd(sys, static_cast<int>(s.rc));
  int one = 1;
  sys.SetSockOpt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  SysResult r = sys.SetSockOpt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (!r.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("SO_REUSEPORT: ", strerror(r.err)));
  }
  if (family == AF_INET6) sys.SetSockOpt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  r = sys.Bind(fd.get(), reinterpret_cast<const sockaddr*>(&address.addr), address.len);
  if (!r.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot listen on ", address.ToString(), ": ", strerror(r.err)));
  }
  r = sys.Listen(fd.get(), backlog);
  if (!r.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("listen on ", address.ToString(), ": ", strerror(r.err)));
  }
  return fd;
}

uint16_t BoundPort(SysCalls& sys, int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (!sys.GetSockName(fd, reinterpret_cast<sockaddr*>(&ss), &len).ok()) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

void FormatSockaddr(const sockaddr* sa, std::string* address, uint32_t* port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET) {
    auto* v4 = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof(buf));
    *port = ntohs(v4->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    auto* v6 = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof(buf));
    *port = ntohs(v6->sin6_port);
  } else {
    *port = 0;
  }
  *address = buf;
}

}  // namespace ktls::agent
