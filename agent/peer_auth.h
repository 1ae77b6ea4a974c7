// Who is on the other end of the handoff socket, and may it receive plaintext connections?
//
// The handoff socket hands out sockets that read and write plaintext, so "can connect to the
// path" is not enough: filesystem modes are set by whoever deploys the agent, a shared volume
// can be mounted into more containers than intended, and a mode of 0666 is one typo away. The
// kernel tells us who connected (SO_PEERCRED: uid/gid of the connecting process at connect(2);
// SO_PEERGROUPS: its supplementary groups, Linux 4.13+), and the broker admits a subscriber only
// if that identity is on the allow-list. See docs/security.md for the threat model.
#ifndef KTLS_AGENT_PEER_AUTH_H_
#define KTLS_AGENT_PEER_AUTH_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/syscalls.h"

namespace ktls::agent {

// The identity the kernel recorded for a Unix socket peer when it connected.
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups{};  // supplementary groups (SO_PEERGROUPS); may be empty
};

// Reads SO_PEERCRED and SO_PEERGROUPS of a connected Unix socket. SO_PEERGROUPS failing (old
// kernel) leaves `groups` empty: the primary gid still counts.
absl::StatusOr<PeerCredentials> GetPeerCredentials(SysCalls& sys, int fd);

// A group name or a numeric gid (containers often have no /etc/group entry for the pod's
// fsGroup). Errors name the group.
absl::StatusOr<gid_t> ResolveGroup(absl::string_view name_or_gid);

// Which peers may subscribe to the handoff socket: a uid on `uids`, or a primary or
// supplementary gid on `gids`.
class SubscriberPolicy {
 public:
  SubscriberPolicy() = default;
  SubscriberPolicy(std::vector<uid_t> uids, std::vector<gid_t> gids);

  // OK, or PERMISSION_DENIED with a message naming the peer's uid/gid, what is allowed and
  // the settings that change it (the app sees this text in its ProtocolError).
  absl::Status Check(const PeerCredentials& peer) const;
  // "uids [0, 10001], gids [2000]" for logs.
  std::string Describe() const;

  const std::vector<uid_t>& uids() const { return uids_; }
  const std::vector<gid_t>& gids() const { return gids_; }

 private:
  std::vector<uid_t> uids_;
  std::vector<gid_t> gids_;
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_PEER_AUTH_H_
