// Framing and ancillary-data checks for the handoff protocol (proto/ktls/v1/handoff.proto).
//
// Shared by the agent and the app-side library so both enforce the same limits. Pure functions
// over buffers and msghdr: no syscalls here, each side does its own I/O (the agent through its
// injectable SysCalls).
#ifndef KTLS_PROTO_WIRE_H_
#define KTLS_PROTO_WIRE_H_

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace google::protobuf {
class MessageLite;
}

namespace ktls::wire {

inline constexpr uint32_t kProtocolVersion = 1;
// Largest datagram either side sends or accepts. A handoff's metadata is a few hundred bytes;
// initial_data is capped separately.
inline constexpr size_t kMaxMessageBytes = 64 * 1024;
inline constexpr size_t kMaxInitialDataBytes = 32 * 1024;
// The receive control buffer has room for this many descriptors so that a peer sending extras
// is detected (and the extras closed) instead of being silently truncated by the kernel.
inline constexpr int kControlFdSlots = 8;

// The address of the handoff socket at `path`; INVALID_ARGUMENT when the path is empty or does
// not fit sockaddr_un (the message starts with `what`, e.g. "handoff socket path").
absl::StatusOr<sockaddr_un> UnixSocketAddress(std::string_view path, std::string_view what);

// Serializes `message`; fails (without allocating a huge buffer) if it exceeds kMaxMessageBytes.
absl::StatusOr<std::string> Serialize(const google::protobuf::MessageLite& message);

// Parses one datagram into `message`. Rejects empty, oversize and unparsable input.
absl::Status Parse(std::string_view datagram, google::protobuf::MessageLite* message);

// Storage for the control part of a sendmsg/recvmsg, correctly aligned for cmsghdr.
struct ControlBuffer {
  alignas(cmsghdr) unsigned char bytes[CMSG_SPACE(sizeof(int) * kControlFdSlots)];
};

// Collects every descriptor carried by a received message into `fds` (always, even on error, so
// the caller can close what it does not keep), then validates the control data: no MSG_CTRUNC,
// only SOL_SOCKET/SCM_RIGHTS messages, lengths that are a whole number of ints.
// `recvmsg_flags` is msg.msg_flags as recvmsg returned it.
absl::Status ExtractFds(const msghdr& msg, std::vector<int>* fds);

// A ready-to-send msghdr for `payload` with at most one descriptor attached (fd < 0: none).
// `payload` must outlive the sendmsg call.
class OutgoingMessage {
 public:
  OutgoingMessage(std::string_view payload, int fd);
  OutgoingMessage(const OutgoingMessage&) = delete;
  OutgoingMessage& operator=(const OutgoingMessage&) = delete;
  msghdr* header() { return &header_; }

 private:
  iovec iov_{};
  msghdr header_{};
  ControlBuffer control_{};
};

// The receiving side: a msghdr over `buffer` (size it kMaxMessageBytes: a shorter buffer would
// truncate a valid message) with control space for kControlFdSlots descriptors, so that a peer
// sending more than one is detected by ExtractFds and every descriptor closed.
class IncomingMessage {
 public:
  IncomingMessage(char* buffer, size_t size);
  IncomingMessage(const IncomingMessage&) = delete;
  IncomingMessage& operator=(const IncomingMessage&) = delete;
  msghdr* header() { return &header_; }

 private:
  iovec iov_{};
  msghdr header_{};
  ControlBuffer control_{};
};

}  // namespace ktls::wire

#endif  // KTLS_PROTO_WIRE_H_
