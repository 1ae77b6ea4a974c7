#include "ktls/wire.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "google/protobuf/message_lite.h"

namespace ktls::wire {

absl::StatusOr<sockaddr_un> UnixSocketAddress(std::string_view path, std::string_view what) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat(absl::string_view(what.data(), what.size()), " '",
                     absl::string_view(path.data(), path.size()), "' is empty or longer than ",
                     sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

absl::StatusOr<std::string> Serialize(const google::protobuf::MessageLite& message) {
  const size_t size = message.ByteSizeLong();
  if (size > kMaxMessageBytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "handoff message of ", size, " bytes exceeds the ", kMaxMessageBytes, "-byte limit"));
  }
  std::string out;
  if (!message.SerializeToString(&out)) {
    return absl::InternalError("handoff message failed to serialize");
  }
  return out;
}

absl::Status Parse(std::string_view datagram, google::protobuf::MessageLite* message) {
  if (datagram.empty()) return absl::InvalidArgumentError("empty handoff message");
  if (datagram.size() > kMaxMessageBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("handoff message of ", datagram.size(), " bytes exceeds the limit"));
  }
  if (!message->ParseFromArray(datagram.data(), static_cast<int>(datagram.size()))) {
    return absl::InvalidArgumentError("handoff message is not a valid protobuf");
  }
  return absl::OkStatus();
}

absl::Status ExtractFds(const msghdr& msg, std::vector<int>* fds) {
  absl::Status status;
  // CMSG_NXTHDR takes a non-const msghdr even though it only reads it.
  auto* m = const_cast<msghdr*>(&msg);
  for (cmsghdr* c = CMSG_FIRSTHDR(m); c != nullptr; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
      status.Update(absl::InvalidArgumentError(absl::StrCat(
          "unexpected control message level=", c->cmsg_level, " type=", c->cmsg_type)));
      continue;
    }
    if (c->cmsg_len < CMSG_LEN(0)) {
      status.Update(absl::InvalidArgumentError("control message shorter than its header"));
      continue;
    }
    // Never read past the buffer, whatever cmsg_len claims (found by tests/fuzz).
    const size_t offset = static_cast<size_t>(reinterpret_cast<const unsigned char*>(c) -
                                              static_cast<const unsigned char*>(msg.msg_control));
    if (c->cmsg_len > msg.msg_controllen - offset) {
      status.Update(absl::InvalidArgumentError("control message longer than the control buffer"));
      break;
    }
    const size_t payload = c->cmsg_len - CMSG_LEN(0);
    if (payload % sizeof(int) != 0) {
      status.Update(absl::InvalidArgumentError("SCM_RIGHTS payload is not a whole number of fds"));
    }
    const size_t n = payload / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds->push_back(fd);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    status.Update(absl::InvalidArgumentError("control data truncated (MSG_CTRUNC)"));
  }
  if (msg.msg_flags & MSG_TRUNC) {
    status.Update(absl::InvalidArgumentError("message truncated (MSG_TRUNC)"));
  }
  return status;
}

OutgoingMessage::OutgoingMessage(std::string_view payload, int fd) {
  iov_.iov_base = const_cast<char*>(payload.data());
  iov_.iov_len = payload.size();
  header_.msg_iov = &iov_;
  header_.msg_iovlen = 1;
  if (fd >= 0) {
    header_.msg_control = control_.bytes;
    header_.msg_controllen = CMSG_SPACE(sizeof(int));
    cmsghdr* c = CMSG_FIRSTHDR(&header_);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
}

IncomingMessage::IncomingMessage(char* buffer, size_t size) {
  iov_.iov_base = buffer;
  iov_.iov_len = size;
  header_.msg_iov = &iov_;
  header_.msg_iovlen = 1;
  header_.msg_control = control_.bytes;
  header_.msg_controllen = sizeof(control_.bytes);
}

}  // namespace ktls::wire
