// AgentSubscription: the app end of the handoff socket. The framing and ancillary-data checks are
// proto/ktls/wire.h's, shared with the agent; this file adds the app's side of the conversation
// and turns errno and protocol surprises into statuses an operator can act on.
#include "ktls/app.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ktls/wire.h"

namespace ktls::client {
namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

void CloseAll(const std::vector<int>& fds) {
  for (int fd : fds) ::close(fd);
}

struct Datagram {
  ssize_t n = -1;
  int err = 0;  // errno when n < 0
  std::vector<int> fds;
  absl::Status control;  // wire::ExtractFds' verdict on the ancillary data
};

// One recvmsg into `buffer` (kMaxMessageBytes) with room for extra descriptors, so that a peer
// sending several is detected and every one of them closed.
Datagram ReceiveDatagram(int fd, std::string* buffer, int flags) {
  Datagram d;
  iovec iov{buffer->data(), buffer->size()};
  wire::ControlBuffer control;
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.bytes;
  msg.msg_controllen = sizeof(control.bytes);
  do {
    d.n = ::recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC);
  } while (d.n < 0 && errno == EINTR);
  if (d.n < 0) {
    d.err = errno;
    return d;
  }
  d.control = wire::ExtractFds(msg, &d.fds);
  return d;
}

absl::Status SendMessage(int fd, const v1::AppToAgent& message, int flags) {
  absl::StatusOr<std::string> bytes = wire::Serialize(message);
  if (!bytes.ok()) return bytes.status();
  wire::OutgoingMessage out(*bytes, /*fd=*/-1);
  ssize_t n;
  do {
    n = ::sendmsg(fd, out.header(), flags | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    const int err = errno;
    if (err == EPIPE || err == ECONNRESET || err == ENOTCONN) {
      return absl::UnavailableError("agent closed the handoff socket");
    }
    if (err == EAGAIN || err == EWOULDBLOCK) {
      return absl::ResourceExhaustedError("handoff socket is full (the agent is not reading)");
    }
    return absl::UnavailableError(absl::StrCat("sending to the agent failed: ", ErrnoText(err)));
  }
  return absl::OkStatus();
}

absl::Status ConnectError(int err, const std::string& path) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(
          absl::StrCat("no agent socket at ", path, " (is ktls-agent running?)"));
    case ECONNREFUSED:
      return absl::UnavailableError(absl::StrCat(
          "no agent is accepting on ", path, " (stale socket: ktls-agent not running?)"));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(
          absl::StrCat("not allowed to connect to the agent socket ", path,
                       " (check its owner and mode)"));
    case EPROTOTYPE:
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is not a SOCK_SEQPACKET socket (not a ktls-agent handoff socket)"));
    case EAGAIN:
    case EINPROGRESS:
      return absl::DeadlineExceededError(
          absl::StrCat("agent at ", path, " is not accepting connections (backlog full)"));
    default:
      return absl::UnavailableError(
          absl::StrCat("connecting to the agent at ", path, " failed: ", ErrnoText(err)));
  }
}

timeval TimeoutToTimeval(absl::Duration d) {
  if (d < absl::Milliseconds(1)) d = absl::Milliseconds(1);
  return absl::ToTimeval(d);
}

}  // namespace

ssize_t HandedConnection::Read(void* buf, size_t len, int flags, ktls_record_info* info_out) {
  if (!pending.empty()) {
    if (info_out != nullptr) {
      *info_out = ktls_record_info{};
      info_out->record_type = KTLS_RECORD_APPLICATION_DATA;
    }
    const size_t n = std::min(len, pending.size());
    std::memcpy(buf, pending.data(), n);
    if (!(flags & MSG_PEEK)) pending.erase(0, n);
    return static_cast<ssize_t>(n);
  }
  return ktls_recv(fd.get(), buf, len, flags, info_out);
}

AgentSubscription::AgentSubscription(UniqueFd fd, v1::Subscribed subscribed,
                                     uint32_t initial_credits)
    : fd_(std::move(fd)), subscribed_(std::move(subscribed)), buffer_(wire::kMaxMessageBytes, '\0') {
  AddCredits(initial_credits);
}

AgentSubscription::~AgentSubscription() = default;

absl::StatusOr<std::unique_ptr<AgentSubscription>> AgentSubscription::Connect(
    const std::string& socket_path, const std::string& app_name, uint32_t initial_credits,
    absl::Duration timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("agent socket path \"", socket_path,
                                                   "\" is empty or longer than ",
                                                   sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  const absl::Time deadline = absl::Now() + timeout;

  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot create a Unix socket: ", ErrnoText(errno)));
  }
  // A blocking Unix connect waits while the listener's backlog is full, and a send while its
  // queue is full; bound both by the timeout (cleared again once subscribed).
  const timeval tv = TimeoutToTimeval(timeout);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return ConnectError(errno, socket_path);

  v1::AppToAgent subscribe;
  subscribe.mutable_subscribe()->set_protocol_version(wire::kProtocolVersion);
  subscribe.mutable_subscribe()->set_app_name(app_name);
  subscribe.mutable_subscribe()->set_initial_credits(initial_credits);
  if (absl::Status s = SendMessage(fd.get(), subscribe, 0); !s.ok()) {
    if (s.code() == absl::StatusCode::kResourceExhausted) {
      return absl::DeadlineExceededError(
          absl::StrCat("agent at ", socket_path, " did not take the Subscribe message in time"));
    }
    return absl::Status(s.code(), absl::StrCat("subscribing to the agent at ", socket_path,
                                               ": ", s.message()));
  }

  // Wait for exactly one answer: Subscribed or ProtocolError.
  std::string buffer(wire::kMaxMessageBytes, '\0');
  for (;;) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) {
      return absl::DeadlineExceededError(absl::StrCat(
          "agent at ", socket_path, " did not answer Subscribe within ",
          absl::FormatDuration(timeout)));
    }
    pollfd p{fd.get(), POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 1 << 30)));
    if (ready < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("poll on the agent socket: ", ErrnoText(errno)));
    }
    if (ready > 0) break;
  }
  Datagram d = ReceiveDatagram(fd.get(), &buffer, MSG_DONTWAIT);
  CloseAll(d.fds);  // nothing before a handoff may carry descriptors
  if (d.n < 0 && (d.err == EAGAIN || d.err == EWOULDBLOCK)) {
    return absl::InternalError("agent socket was readable but held no message");
  }
  if (d.n <= 0) {
    return absl::UnavailableError(absl::StrCat(
        "agent at ", socket_path, " closed the connection before answering Subscribe",
        d.n < 0 ? absl::StrCat(" (", ErrnoText(d.err), ")") : ""));
  }
  if (!d.control.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed answer to Subscribe: ", d.control.message()));
  }
  if (!d.fds.empty()) {
    return absl::InvalidArgumentError("agent's answer to Subscribe carried file descriptors");
  }
  v1::AgentToApp answer;
  if (absl::Status s = wire::Parse(std::string_view(buffer.data(), d.n), &answer); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed answer to Subscribe: ", s.message()));
  }
  switch (answer.msg_case()) {
    case v1::AgentToApp::kSubscribed:
      break;
    case v1::AgentToApp::kError:
      return absl::FailedPreconditionError(absl::StrCat(
          "agent at ", socket_path, " rejected the subscription: ", answer.error().message()));
    case v1::AgentToApp::kHandoff:
      return absl::InvalidArgumentError(
          "agent sent a Handoff before Subscribed (protocol violation)");
    default:
      return absl::InvalidArgumentError(
          "agent answered Subscribe with an unknown message (newer protocol?)");
  }
  if (answer.subscribed().protocol_version() != wire::kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "protocol version mismatch: agent at ", socket_path, " speaks version ",
        answer.subscribed().protocol_version(), " (agent ", answer.subscribed().agent_version(),
        "), this library speaks version ", wire::kProtocolVersion));
  }
  const timeval zero{};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof(zero));
  return std::unique_ptr<AgentSubscription>(new AgentSubscription(
      std::move(fd), std::move(*answer.mutable_subscribed()), initial_credits));
}

void AgentSubscription::AddCredits(uint64_t n) {
  outstanding_credits_ += n;
  const uint32_t max = subscribed_.max_outstanding_credits();
  if (max != 0 && outstanding_credits_ > max) outstanding_credits_ = max;
}

absl::StatusOr<std::optional<HandedConnection>> AgentSubscription::Receive() {
  Datagram d = ReceiveDatagram(fd_.get(), &buffer_, 0);
  if (d.n < 0) {
    if (d.err == EAGAIN || d.err == EWOULDBLOCK) return std::nullopt;
    if (d.err == ECONNRESET || d.err == EPIPE || d.err == ENOTCONN) {
      return absl::UnavailableError("agent closed the handoff socket");
    }
    return absl::UnavailableError(
        absl::StrCat("receiving from the agent failed: ", ErrnoText(d.err)));
  }
  if (d.n == 0) {  // SOCK_SEQPACKET: end of stream (the agent never sends empty messages)
    CloseAll(d.fds);
    return absl::UnavailableError("agent closed the handoff socket");
  }
  if (!d.control.ok()) {
    CloseAll(d.fds);
    return absl::InvalidArgumentError(
        absl::StrCat("malformed message from the agent: ", d.control.message()));
  }
  v1::AgentToApp message;
  if (absl::Status s = wire::Parse(std::string_view(buffer_.data(), d.n), &message); !s.ok()) {
    CloseAll(d.fds);
    return absl::InvalidArgumentError(
        absl::StrCat("malformed message from the agent: ", s.message()));
  }
  switch (message.msg_case()) {
    case v1::AgentToApp::kHandoff:
      break;
    case v1::AgentToApp::kError:
      CloseAll(d.fds);
      return absl::FailedPreconditionError(
          absl::StrCat("agent reported a protocol error: ", message.error().message()));
    case v1::AgentToApp::kSubscribed:
      CloseAll(d.fds);
      return absl::InvalidArgumentError("malformed message from the agent: Subscribed twice");
    default:
      CloseAll(d.fds);
      return absl::InvalidArgumentError(
          "malformed message from the agent: no known message set (newer protocol?)");
  }

  // Every Handoff uses a credit on the agent's side, whether or not it is usable here.
  if (outstanding_credits_ > 0) {
    --outstanding_credits_;
  } else {
    ++handoffs_beyond_credits_;
  }
  if (d.fds.size() != 1) {
    CloseAll(d.fds);
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed handoff: carried ", d.fds.size(), " file descriptors, expected exactly 1"));
  }
  UniqueFd conn_fd(d.fds[0]);
  int type = 0;
  socklen_t type_len = sizeof(type);
  if (::getsockopt(conn_fd.get(), SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 ||
      type != SOCK_STREAM) {
    return absl::InvalidArgumentError(
        "malformed handoff: the descriptor is not a stream socket");
  }
  v1::ConnectionInfo* info = message.mutable_handoff()->mutable_connection();
  if (info->initial_data().size() > wire::kMaxInitialDataBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed handoff: ", info->initial_data().size(), " bytes of initial data exceed the ",
        wire::kMaxInitialDataBytes, "-byte limit"));
  }
  HandedConnection conn;
  conn.fd = std::move(conn_fd);
  conn.pending = std::move(*info->mutable_initial_data());
  info->clear_initial_data();
  conn.initial_data_bytes = conn.pending.size();
  conn.info = std::move(*info);
  return std::optional<HandedConnection>(std::move(conn));
}

absl::Status AgentSubscription::GrantCredits(uint32_t n) {
  if (n == 0) return absl::OkStatus();
  v1::AppToAgent grant;
  grant.mutable_grant()->set_credits(n);
  absl::Status s = SendMessage(fd_.get(), grant, MSG_DONTWAIT);
  if (s.code() == absl::StatusCode::kResourceExhausted) {
    // The agent reads its sockets from an event loop; a full queue means it is stalled. Give it a
    // moment rather than dropping the grant (which would leave the app short of connections).
    pollfd p{fd_.get(), POLLOUT, 0};
    if (::poll(&p, 1, 1000) > 0) s = SendMessage(fd_.get(), grant, MSG_DONTWAIT);
    if (s.code() == absl::StatusCode::kResourceExhausted) {
      return absl::UnavailableError(
          "agent is not reading its handoff socket (credit grant could not be sent for 1 s)");
    }
  }
  if (!s.ok()) return s;
  AddCredits(n);
  return absl::OkStatus();
}

void AgentSubscription::SetNonBlocking(bool non_blocking) {
  const int flags = ::fcntl(fd_.get(), F_GETFL);
  if (flags < 0) return;
  ::fcntl(fd_.get(), F_SETFL, non_blocking ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK));
}

}  // namespace ktls::client
