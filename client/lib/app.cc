// AgentSubscription: the app end of the handoff socket. The framing and ancillary-data checks are
// proto/ktls/wire.h's, shared with the agent; this file adds the app's side of the conversation
// (subscribe, credits, handoffs, dials, resubscribing) and turns errno and protocol surprises into
// statuses an operator can act on.
//
// Descriptors: each subscription owns an epoll instance (what fd() returns) holding the agent
// socket and an eventfd. The eventfd is non-zero exactly while Receive() has something that is
// not on the socket (handoffs queued by Dial, an unreported disconnect), so "fd() readable" means
// "Receive() has an answer" and the app's epoll registration survives Reconnect().
#include "client/lib/app.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
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
  wire::IncomingMessage in(buffer->data(), buffer->size());
  msghdr& msg = *in.header();
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
      return absl::UnavailableError(absl::StrCat("no agent is accepting on ", path,
                                                 " (stale socket: ktls-agent not running?)"));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(absl::StrCat("not allowed to connect to the agent socket ",
                                                      path, " (check its owner and mode)"));
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

// The uid the agent must run as: $KTLS_AGENT_UID when set (deployments pin it), otherwise the
// owner of the socket file. The check runs before any message is read, so a process that put its
// own socket at the path (or took the agent's place) never gets to send a ConnectionInfo the app
// would trust (peer_identity.verified, SNI ...). See docs/security.md.
absl::Status VerifyAgentPeer(int fd, const std::string& socket_path) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return absl::InternalError(absl::StrCat("SO_PEERCRED on the agent socket: ", ErrnoText(errno)));
  }
  uid_t expected = 0;
  std::string source;
  if (const char* env = std::getenv("KTLS_AGENT_UID"); env != nullptr && *env != '\0') {
    uint32_t n = 0;
    if (!absl::SimpleAtoi(env, &n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("KTLS_AGENT_UID='", env, "' is not a numeric uid"));
    }
    expected = static_cast<uid_t>(n);
    source = "KTLS_AGENT_UID";
  } else {
    struct stat st;
    if (::stat(socket_path.c_str(), &st) != 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot stat the agent socket ", socket_path, ": ", ErrnoText(errno)));
    }
    expected = st.st_uid;
    source = "the socket file's owner";
  }
  if (cred.uid != expected) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the process serving ", socket_path, " (pid ", cred.pid, ") runs as uid ", cred.uid,
        ", expected uid ", expected, " (", source,
        "); not trusting it (set KTLS_AGENT_UID to the agent's uid if this is intended)"));
  }
  return absl::OkStatus();
}

// The agent's refusal as a status whose code says what the app can do about it.
absl::Status SubscriptionRefused(const std::string& socket_path, const v1::ProtocolError& e) {
  std::string message =
      absl::StrCat("agent at ", socket_path, " rejected the subscription: ", e.message());
  switch (e.reason()) {
    case v1::ProtocolError::REASON_PERMISSION_DENIED:
      return absl::PermissionDeniedError(message);
    case v1::ProtocolError::REASON_TOO_MANY_APPS:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::FailedPreconditionError(message);
  }
}

struct Subscription {
  UniqueFd sock;
  v1::Subscribed subscribed;
};

// A blocking SOCK_SEQPACKET socket connected to the agent. A blocking Unix connect waits while
// the listener's backlog is full, and a send while its queue is full; both are bounded by the
// timeout (SO_SNDTIMEO, cleared again once subscribed).
absl::StatusOr<UniqueFd> ConnectToAgent(const std::string& socket_path, absl::Duration timeout) {
  absl::StatusOr<sockaddr_un> address = wire::UnixSocketAddress(socket_path, "agent socket path");
  if (!address.ok()) return address.status();
  const sockaddr_un addr = *address;
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot create a Unix socket: ", ErrnoText(errno)));
  }
  const timeval tv = TimeoutToTimeval(timeout);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return ConnectError(errno, socket_path);
  if (absl::Status s = VerifyAgentPeer(fd.get(), socket_path); !s.ok()) return s;
  return fd;
}

absl::Status SendSubscribe(int fd, const std::string& socket_path, const std::string& app_name,
                           uint32_t initial_credits) {
  v1::AppToAgent subscribe;
  subscribe.mutable_subscribe()->set_protocol_version(wire::kProtocolVersion);
  subscribe.mutable_subscribe()->set_app_name(app_name);
  subscribe.mutable_subscribe()->set_initial_credits(initial_credits);
  absl::Status s = SendMessage(fd, subscribe, 0);
  if (s.ok()) return s;
  // An agent that refuses this process (peer credentials, connection cap) sends its reason and
  // shuts its side at once, so the send can fail with EPIPE while the reason waits in our queue.
  std::string buffer(wire::kMaxMessageBytes, '\0');
  Datagram d = ReceiveDatagram(fd, &buffer, MSG_DONTWAIT);
  CloseAll(d.fds);
  v1::AgentToApp answer;
  if (d.n > 0 && wire::Parse(std::string_view(buffer.data(), d.n), &answer).ok() &&
      answer.has_error()) {
    return SubscriptionRefused(socket_path, answer.error());
  }
  if (s.code() == absl::StatusCode::kResourceExhausted) {
    return absl::DeadlineExceededError(
        absl::StrCat("agent at ", socket_path, " did not take the Subscribe message in time"));
  }
  return absl::Status(s.code(),
                      absl::StrCat("subscribing to the agent at ", socket_path, ": ", s.message()));
}

// Waits until the agent's answer to Subscribe can be read, or the deadline.
absl::Status WaitForAnswer(int fd, const std::string& socket_path, absl::Time deadline,
                           absl::Duration timeout) {
  for (;;) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) {
      return absl::DeadlineExceededError(absl::StrCat("agent at ", socket_path,
                                                      " did not answer Subscribe within ",
                                                      absl::FormatDuration(timeout)));
    }
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 1 << 30)));
    if (ready < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("poll on the agent socket: ", ErrnoText(errno)));
    }
    if (ready > 0) return absl::OkStatus();
  }
}

// Reads exactly one answer to Subscribe: Subscribed (returned) or ProtocolError (an error).
absl::StatusOr<v1::Subscribed> ReadSubscribeAnswer(int fd, const std::string& socket_path) {
  std::string buffer(wire::kMaxMessageBytes, '\0');
  Datagram d = ReceiveDatagram(fd, &buffer, MSG_DONTWAIT);
  CloseAll(d.fds);  // nothing before a handoff may carry descriptors
  if (d.n < 0 && (d.err == EAGAIN || d.err == EWOULDBLOCK)) {
    return absl::InternalError("agent socket was readable but held no message");
  }
  if (d.n <= 0) {
    return absl::UnavailableError(
        absl::StrCat("agent at ", socket_path, " closed the connection before answering Subscribe",
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
    return absl::InvalidArgumentError(absl::StrCat("malformed answer to Subscribe: ", s.message()));
  }
  switch (answer.msg_case()) {
    case v1::AgentToApp::kSubscribed:
      break;
    case v1::AgentToApp::kError:
      return SubscriptionRefused(socket_path, answer.error());
    case v1::AgentToApp::kHandoff:
      return absl::InvalidArgumentError(
          "agent sent a Handoff before Subscribed (protocol violation)");
    default:
      return absl::InvalidArgumentError(
          "agent answered Subscribe with an unexpected message (newer protocol?)");
  }
  if (answer.subscribed().protocol_version() != wire::kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "protocol version mismatch: agent at ", socket_path, " speaks version ",
        answer.subscribed().protocol_version(), " (agent ", answer.subscribed().agent_version(),
        "), this library speaks version ", wire::kProtocolVersion));
  }
  return std::move(*answer.mutable_subscribed());
}

// Connects to the agent, sends Subscribe and waits for exactly one answer.
absl::StatusOr<Subscription> ConnectAndSubscribe(const std::string& socket_path,
                                                 const std::string& app_name,
                                                 uint32_t initial_credits, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<UniqueFd> fd = ConnectToAgent(socket_path, timeout);
  if (!fd.ok()) return fd.status();
  if (absl::Status s = SendSubscribe(fd->get(), socket_path, app_name, initial_credits); !s.ok()) {
    return s;
  }
  if (absl::Status s = WaitForAnswer(fd->get(), socket_path, deadline, timeout); !s.ok()) return s;
  absl::StatusOr<v1::Subscribed> subscribed = ReadSubscribeAnswer(fd->get(), socket_path);
  if (!subscribed.ok()) return subscribed.status();
  const timeval zero{};
  ::setsockopt(fd->get(), SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof(zero));
  return Subscription{*std::move(fd), *std::move(subscribed)};
}

// Turns the descriptors and metadata of a Handoff or a successful DialResult into a connection:
// exactly one descriptor, a stream socket, initial data within bounds. `what` names the message
// for errors. On error every descriptor is closed.
absl::StatusOr<HandedConnection> MakeConnection(v1::ConnectionInfo* info, std::vector<int> fds,
                                                const char* what) {
  if (fds.size() != 1) {
    CloseAll(fds);
    return absl::InvalidArgumentError(absl::StrCat("malformed ", what, ": carried ", fds.size(),
                                                   " file descriptors, expected exactly 1"));
  }
  UniqueFd conn_fd(fds[0]);
  int type = 0;
  socklen_t type_len = sizeof(type);
  if (::getsockopt(conn_fd.get(), SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 ||
      type != SOCK_STREAM) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed ", what, ": the descriptor is not a stream socket"));
  }
  // The agent's sockets are non-blocking (it drives them from epoll) and O_NONBLOCK belongs to
  // the open file description that SCM_RIGHTS passes on; the app's copy is its own, so the same
  // state for every connection is set here: blocking, like a fresh accept(2).
  const int flags = ::fcntl(conn_fd.get(), F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK)) ::fcntl(conn_fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  if (info->initial_data().size() > wire::kMaxInitialDataBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed ", what, ": ", info->initial_data().size(), " bytes of initial data exceed the ",
        wire::kMaxInitialDataBytes, "-byte limit"));
  }
  HandedConnection conn;
  conn.fd = std::move(conn_fd);
  conn.pending = std::move(*info->mutable_initial_data());
  info->clear_initial_data();
  conn.initial_data_bytes = conn.pending.size();
  conn.info = std::move(*info);
  return conn;
}

absl::Status ErrnoStatus(const char* what, int err) {
  if (err == EMFILE || err == ENFILE || err == ENOMEM) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": ", ErrnoText(err)));
  }
  return absl::InternalError(absl::StrCat(what, ": ", ErrnoText(err)));
}

}  // namespace

// ---- HandedConnection ---------------------------------------------------------------------------

ssize_t HandedConnection::Read(void* buf, size_t len, int flags, ktls_record_info* info_out) {
  iovec iov{buf, len};
  return ReadV(&iov, 1, flags, info_out);
}

ssize_t HandedConnection::ReadV(const iovec* iov, int iovcnt, int flags,
                                ktls_record_info* info_out) {
  if (!pending.empty()) {
    if (info_out != nullptr) {
      *info_out = ktls_record_info{};
      info_out->record_type = KTLS_RECORD_APPLICATION_DATA;
    }
    size_t n = 0;
    for (int i = 0; i < iovcnt && n < pending.size(); ++i) {
      const size_t take = std::min(iov[i].iov_len, pending.size() - n);
      std::memcpy(iov[i].iov_base, pending.data() + n, take);
      n += take;
    }
    if (!(flags & MSG_PEEK)) pending.erase(0, n);
    return static_cast<ssize_t>(n);
  }
  return ktls_readv(fd.get(), iov, iovcnt, flags, info_out);
}

// ---- AgentSubscription --------------------------------------------------------------------------

struct AgentSubscription::Incoming {
  enum class Kind {
    kNothing,     // non-blocking, no message
    kHandoff,     // conn
    kDialResult,  // request_id; status ok: conn
    kError,       // status
  };
  Kind kind = Kind::kNothing;
  absl::Status status;
  HandedConnection conn;
  uint64_t request_id = 0;
};

AgentSubscription::AgentSubscription(std::string socket_path, std::string app_name, UniqueFd epoll,
                                     UniqueFd event)
    : socket_path_(std::move(socket_path)),
      app_name_(std::move(app_name)),
      epoll_(std::move(epoll)),
      event_(std::move(event)),
      buffer_(wire::kMaxMessageBytes, '\0') {}

AgentSubscription::~AgentSubscription() = default;

absl::StatusOr<std::unique_ptr<AgentSubscription>> AgentSubscription::Connect(
    const std::string& socket_path, const std::string& app_name, uint32_t initial_credits,
    absl::Duration timeout) {
  absl::StatusOr<Subscription> s =
      ConnectAndSubscribe(socket_path, app_name, initial_credits, timeout);
  if (!s.ok()) return s.status();
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) return ErrnoStatus("epoll_create1", errno);
  UniqueFd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event) return ErrnoStatus("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = event.get();
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, event.get(), &ev) != 0) {
    return ErrnoStatus("epoll_ctl(eventfd)", errno);
  }
  std::unique_ptr<AgentSubscription> sub(
      new AgentSubscription(socket_path, app_name, std::move(epoll), std::move(event)));
  sub->AddCredits(initial_credits);
  if (absl::Status a = sub->Adopt(std::move(s->sock), std::move(s->subscribed)); !a.ok()) {
    return a;
  }
  return sub;
}

absl::Status AgentSubscription::Adopt(UniqueFd sock, v1::Subscribed subscribed) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = sock.get();
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, sock.get(), &ev) != 0) {
    return ErrnoStatus("epoll_ctl(agent socket)", errno);
  }
  sock_ = std::move(sock);
  subscribed_ = std::move(subscribed);
  AddCredits(0);  // clamp to this agent's limit
  return absl::OkStatus();
}

void AgentSubscription::AddCredits(uint64_t n) {
  outstanding_credits_ += n;
  const uint32_t max = subscribed_.max_outstanding_credits();
  if (max != 0 && outstanding_credits_ > max) outstanding_credits_ = max;
}

void AgentSubscription::Disconnect(bool report) {
  if (sock_) {
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, sock_.get(), nullptr);
    sock_.reset();
    disconnect_unreported_ = report;
  }
  UpdateSignal();
}

void AgentSubscription::UpdateSignal() {
  const bool want = !queue_.empty() || disconnect_unreported_;
  if (want == signalled_) return;
  if (want) {
    const uint64_t one = 1;
    (void)!::write(event_.get(), &one, sizeof(one));
  } else {
    uint64_t value;
    (void)!::read(event_.get(), &value, sizeof(value));
  }
  signalled_ = want;
}

AgentSubscription::Incoming AgentSubscription::ReceiveOne(int flags) {
  Incoming in;
  in.kind = Incoming::Kind::kError;
  if (!sock_) {
    in.status = absl::UnavailableError("not connected to the agent (call Reconnect)");
    return in;
  }
  Datagram d = ReceiveDatagram(sock_.get(), &buffer_, flags);
  if (d.n < 0) {
    if (d.err == EAGAIN || d.err == EWOULDBLOCK) {
      in.kind = Incoming::Kind::kNothing;
      return in;
    }
    in.status = (d.err == ECONNRESET || d.err == EPIPE || d.err == ENOTCONN)
                    ? absl::UnavailableError("agent closed the handoff socket")
                    : absl::UnavailableError(
                          absl::StrCat("receiving from the agent failed: ", ErrnoText(d.err)));
    return in;
  }
  if (d.n == 0) {  // SOCK_SEQPACKET: end of stream (the agent never sends empty messages)
    CloseAll(d.fds);
    in.status = absl::UnavailableError("agent closed the handoff socket");
    return in;
  }
  if (!d.control.ok()) {
    CloseAll(d.fds);
    in.status = absl::InvalidArgumentError(
        absl::StrCat("malformed message from the agent: ", d.control.message()));
    return in;
  }
  v1::AgentToApp message;
  if (absl::Status s = wire::Parse(std::string_view(buffer_.data(), d.n), &message); !s.ok()) {
    CloseAll(d.fds);
    in.status =
        absl::InvalidArgumentError(absl::StrCat("malformed message from the agent: ", s.message()));
    return in;
  }
  return OnMessage(message, std::move(d.fds));
}

AgentSubscription::Incoming AgentSubscription::OnMessage(v1::AgentToApp& message,
                                                         std::vector<int> fds) {
  Incoming in;
  in.kind = Incoming::Kind::kError;
  switch (message.msg_case()) {
    case v1::AgentToApp::kHandoff: {
      // Every Handoff uses a credit on the agent's side, whether or not it is usable here.
      if (outstanding_credits_ > 0) {
        --outstanding_credits_;
      } else {
        ++handoffs_beyond_credits_;
      }
      absl::StatusOr<HandedConnection> conn = MakeConnection(
          message.mutable_handoff()->mutable_connection(), std::move(fds), "handoff");
      if (!conn.ok()) {
        in.status = conn.status();
        return in;
      }
      in.kind = Incoming::Kind::kHandoff;
      in.conn = std::move(*conn);
      return in;
    }
    case v1::AgentToApp::kDialResult: {
      v1::DialResult* r = message.mutable_dial_result();
      in.kind = Incoming::Kind::kDialResult;
      in.request_id = r->request_id();
      if (!r->ok()) {
        CloseAll(fds);
        in.status =
            absl::AbortedError(r->error().empty() ? "the agent gave no reason" : r->error());
        return in;
      }
      absl::StatusOr<HandedConnection> conn =
          MakeConnection(r->mutable_connection(), std::move(fds), "dial result");
      if (!conn.ok()) {
        in.status = conn.status();
        return in;
      }
      in.conn = std::move(*conn);
      return in;
    }
    case v1::AgentToApp::kError:
      CloseAll(fds);
      in.status = absl::FailedPreconditionError(
          absl::StrCat("agent reported a protocol error: ", message.error().message()));
      return in;
    case v1::AgentToApp::kSubscribed:
      CloseAll(fds);
      in.status = absl::InvalidArgumentError("malformed message from the agent: Subscribed twice");
      return in;
    default:
      CloseAll(fds);
      in.status = absl::InvalidArgumentError(
          "malformed message from the agent: no known message set (newer protocol?)");
      return in;
  }
}

absl::StatusOr<std::optional<HandedConnection>> AgentSubscription::Receive() {
  for (;;) {
    if (!queue_.empty()) {
      HandedConnection conn = std::move(queue_.front());
      queue_.pop_front();
      UpdateSignal();
      return std::optional<HandedConnection>(std::move(conn));
    }
    if (disconnect_unreported_) {
      disconnect_unreported_ = false;
      UpdateSignal();
      return absl::UnavailableError("agent closed the handoff socket");
    }
    Incoming in = ReceiveOne(non_blocking_ ? MSG_DONTWAIT : 0);
    switch (in.kind) {
      case Incoming::Kind::kNothing:
        return std::nullopt;
      case Incoming::Kind::kHandoff:
        return std::optional<HandedConnection>(std::move(in.conn));
      case Incoming::Kind::kDialResult:
        ++stale_dial_results_;  // nobody waits for it; its descriptor closes with `in`
        continue;
      case Incoming::Kind::kError:
        if (in.status.code() == absl::StatusCode::kUnavailable) Disconnect(/*report=*/false);
        return in.status;
    }
  }
}

absl::Status AgentSubscription::GrantCredits(uint32_t n) {
  if (n == 0) return absl::OkStatus();
  if (!sock_) {
    AddCredits(n);
    return absl::UnavailableError(
        "not connected to the agent (the credits are granted again by Reconnect)");
  }
  v1::AppToAgent grant;
  grant.mutable_grant()->set_credits(n);
  absl::Status s = SendMessage(sock_.get(), grant, MSG_DONTWAIT);
  if (s.code() == absl::StatusCode::kResourceExhausted) {
    // The agent reads its sockets from an event loop; a full queue means it is stalled. Give it a
    // moment rather than dropping the grant (which would leave the app short of connections).
    pollfd p{sock_.get(), POLLOUT, 0};
    if (::poll(&p, 1, 1000) > 0) s = SendMessage(sock_.get(), grant, MSG_DONTWAIT);
    if (s.code() == absl::StatusCode::kResourceExhausted) {
      return absl::UnavailableError(
          "agent is not reading its handoff socket (credit grant could not be sent for 1 s)");
    }
  }
  if (s.code() == absl::StatusCode::kUnavailable) {
    AddCredits(n);  // for the next subscription
    Disconnect(/*report=*/true);
    return s;
  }
  if (!s.ok()) return s;
  AddCredits(n);
  return absl::OkStatus();
}

absl::Status AgentSubscription::Reconnect(absl::Duration timeout) {
  Disconnect(/*report=*/false);
  disconnect_unreported_ = false;
  UpdateSignal();
  const uint32_t credits = static_cast<uint32_t>(
      std::min<uint64_t>(outstanding_credits_, std::numeric_limits<uint32_t>::max()));
  absl::StatusOr<Subscription> s = ConnectAndSubscribe(socket_path_, app_name_, credits, timeout);
  if (!s.ok()) return s.status();
  if (absl::Status a = Adopt(std::move(s->sock), std::move(s->subscribed)); !a.ok()) return a;
  ++reconnects_;
  return absl::OkStatus();
}

absl::StatusOr<HandedConnection> AgentSubscription::Dial(v1::DialRequest request,
                                                         std::optional<absl::Duration> wait) {
  if (request.host().empty() || request.port() == 0 || request.port() > 65535) {
    return absl::InvalidArgumentError("dial needs a host and a port in 1..65535");
  }
  const std::string target = absl::StrCat(request.host(), ":", request.port());
  if (!sock_) {
    return absl::UnavailableError(
        absl::StrCat("dial ", target, ": not connected to the agent (call Reconnect)"));
  }
  const uint64_t id = next_request_id_++;
  request.set_request_id(id);
  const absl::Duration timeout =
      wait.has_value() ? *wait
                       : absl::Milliseconds(request.timeout_ms() != 0 ? request.timeout_ms()
                                                                      : kDefaultDialTimeoutMs) +
                             kDialAnswerMargin;
  const absl::Time deadline = absl::Now() + timeout;

  v1::AppToAgent message;
  *message.mutable_dial() = std::move(request);
  if (absl::Status s = SendDialRequest(message, target, deadline); !s.ok()) return s;
  return AwaitDialResult(id, target, deadline, timeout);
}

namespace {

int64_t MillisecondsLeft(absl::Time deadline) {
  return std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now()));
}

}  // namespace

absl::Status AgentSubscription::SendDialRequest(const v1::AppToAgent& message,
                                                const std::string& target, absl::Time deadline) {
  auto left_ms = [&deadline] { return MillisecondsLeft(deadline); };
  for (;;) {
    absl::Status s = SendMessage(sock_.get(), message, MSG_DONTWAIT);
    if (s.ok()) return s;
    if (s.code() == absl::StatusCode::kResourceExhausted && left_ms() > 0) {
      pollfd p{sock_.get(), POLLOUT, 0};
      ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms(), 100)));
      continue;
    }
    if (s.code() == absl::StatusCode::kUnavailable) Disconnect(/*report=*/true);
    if (s.code() == absl::StatusCode::kResourceExhausted) {
      return absl::DeadlineExceededError(
          absl::StrCat("dial ", target, ": the agent did not take the request in time"));
    }
    return absl::Status(s.code(), absl::StrCat("dial ", target, ": ", s.message()));
  }
}

absl::StatusOr<HandedConnection> AgentSubscription::AwaitDialResult(uint64_t id,
                                                                    const std::string& target,
                                                                    absl::Time deadline,
                                                                    absl::Duration timeout) {
  auto left_ms = [&deadline] { return MillisecondsLeft(deadline); };
  for (;;) {
    const int64_t ms = left_ms();
    if (ms <= 0) {
      return absl::DeadlineExceededError(absl::StrCat(
          "dial ", target, ": no answer from the agent within ", absl::FormatDuration(timeout)));
    }
    pollfd p{sock_.get(), POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1 << 30)));
    if (ready < 0 && errno != EINTR) return ErrnoStatus("poll on the agent socket", errno);
    if (ready <= 0) continue;
    Incoming in = ReceiveOne(MSG_DONTWAIT);
    switch (in.kind) {
      case Incoming::Kind::kNothing:
        continue;
      case Incoming::Kind::kHandoff:
        queue_.push_back(std::move(in.conn));
        UpdateSignal();
        continue;
      case Incoming::Kind::kDialResult:
        if (in.request_id != id) {
          ++stale_dial_results_;
          continue;
        }
        if (!in.status.ok()) {
          return absl::Status(in.status.code(),
                              absl::StrCat("dial ", target, ": ", in.status.message()));
        }
        return std::move(in.conn);
      case Incoming::Kind::kError:
        switch (in.status.code()) {
          case absl::StatusCode::kUnavailable:
            Disconnect(/*report=*/true);
            return absl::UnavailableError(absl::StrCat("dial ", target, ": ", in.status.message()));
          case absl::StatusCode::kFailedPrecondition:
            return absl::FailedPreconditionError(
                absl::StrCat("dial ", target, ": ", in.status.message()));
          default:
            continue;  // a refused message that is not our answer: keep waiting
        }
    }
  }
}

}  // namespace ktls::client
