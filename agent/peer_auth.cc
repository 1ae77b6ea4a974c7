#include "agent/peer_auth.h"

#include <grp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ktls::agent {

absl::StatusOr<PeerCredentials> GetPeerCredentials(SysCalls& sys, int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  SysResult r = sys.GetSockOpt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len);
  if (!r.ok()) {
    return absl::InternalError(
        absl::StrCat("SO_PEERCRED: ", strerrordesc_np(r.err), " (", strerrorname_np(r.err), ")"));
  }
  PeerCredentials peer;
  peer.pid = cred.pid;
  peer.uid = cred.uid;
  peer.gid = cred.gid;
  // Supplementary groups matter in Kubernetes: a pod's fsGroup reaches the containers only as
  // a supplementary group. Start with room for 16 and grow once if the kernel says so.
  std::vector<gid_t> groups(16);
  socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  r = sys.GetSockOpt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen);
  if (!r.ok() && r.err == ERANGE && glen <= 65536 * sizeof(gid_t)) {
    groups.resize(glen / sizeof(gid_t));
    r = sys.GetSockOpt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen);
  }
  if (r.ok()) {
    groups.resize(glen / sizeof(gid_t));
    peer.groups = std::move(groups);
  }
  return peer;
}

absl::StatusOr<gid_t> ResolveGroup(absl::string_view name_or_gid) {
  uint32_t n = 0;
  if (absl::SimpleAtoi(name_or_gid, &n)) return static_cast<gid_t>(n);
  const std::string name(name_or_gid);
  group g{};
  group* found = nullptr;
  std::vector<char> buf(16384);
  const int rc = ::getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found);
  if (rc != 0 || found == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        "no such group '", name, "' (give a numeric gid if the group has no name here)"));
  }
  return found->gr_gid;
}

SubscriberPolicy::SubscriberPolicy(std::vector<uid_t> uids, std::vector<gid_t> gids)
    : uids_(std::move(uids)), gids_(std::move(gids)) {
  std::sort(uids_.begin(), uids_.end());
  uids_.erase(std::unique(uids_.begin(), uids_.end()), uids_.end());
  std::sort(gids_.begin(), gids_.end());
  gids_.erase(std::unique(gids_.begin(), gids_.end()), gids_.end());
}

absl::Status SubscriberPolicy::Check(const PeerCredentials& peer) const {
  auto has = [](const auto& v, auto x) { return std::binary_search(v.begin(), v.end(), x); };
  if (has(uids_, peer.uid) || has(gids_, peer.gid)) return absl::OkStatus();
  for (gid_t g : peer.groups) {
    if (has(gids_, g)) return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "uid ", peer.uid, " gid ", peer.gid, " (pid ", peer.pid, ") may not subscribe: allowed are ",
      Describe(),
      "; to allow it add the uid to handoff_allowed_uids (--handoff_allowed_uids) or a group to "
      "handoff_allowed_gids, or put the app in handoff_socket_group"));
}

std::string SubscriberPolicy::Describe() const {
  return absl::StrCat("uids [", absl::StrJoin(uids_, ", "), "], gids [", absl::StrJoin(gids_, ", "),
                      "]");
}

}  // namespace ktls::agent
