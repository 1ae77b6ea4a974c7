// Listening sockets: parsing addresses, opening SO_REUSEPORT sockets (one per worker, so the
// kernel spreads connections over the workers' epoll loops), and formatting socket addresses.
#ifndef KTLS_AGENT_LISTENER_H_
#define KTLS_AGENT_LISTENER_H_

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "agent/syscalls.h"
#include "agent/unique_fd.h"

namespace ktls::agent {

struct ListenAddress {
  std::string name;  // listener name for logs and ConnectionInfo.listener
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string ToString() const;  // "127.0.0.1:8443" / "[::1]:8443"
};

// `address` is a numeric IPv4 or IPv6 address (no brackets); port 0 asks for a free port.
absl::StatusOr<ListenAddress> ParseListenAddress(std::string name, const std::string& address,
                                                 uint32_t port);
// Parses "host:port" or "[v6]:port".
absl::StatusOr<ListenAddress> ParseHostPort(std::string name, const std::string& host_port);

// A non-blocking listening socket with SO_REUSEADDR and SO_REUSEPORT (and IPV6_V6ONLY for IPv6,
// so an IPv4 and an IPv6 listener on the same port can coexist).
absl::StatusOr<UniqueFd> OpenListenSocket(SysCalls& sys, const ListenAddress& address, int backlog);
// The port a socket is bound to (after binding port 0), or 0.
uint16_t BoundPort(SysCalls& sys, int fd);

// Numeric address and port of a sockaddr.
void FormatSockaddr(const sockaddr* sa, std::string* address, uint32_t* port);

}  // namespace ktls::agent

#endif  // KTLS_AGENT_LISTENER_H_
