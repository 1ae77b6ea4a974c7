// App side of the handoff protocol (proto/ktls/v1/handoff.proto) in C++ with the protocol's own
// types: subscribe to ktls-agent over its SOCK_SEQPACKET socket, receive connected, authenticated
// TLS connections as descriptors plus metadata, ask the agent to dial upstreams, and resubscribe
// after the agent restarts.
//
// This is the in-tree layer (it exposes protobuf and Abseil types; ktls-demo-app uses it), kept in
// client/lib/ with the sources, not in client/include/ with the public headers. The
// stable C API (ktls/ktls_client.h) and its header-only C++ wrapper (ktls/ktls_client.hpp) are
// built on it; applications outside this repository should use those.
//
//   auto sub = AgentSubscription::Connect("/run/ktls/handoff.sock", "my-app", 64);
//   if (!sub.ok()) { /* sub.status() says what went wrong */ }
//   for (;;) {
//     auto got = (*sub)->Receive();                 // blocks unless SetNonBlocking(true)
//     if (!got.ok()) { /* agent gone (kUnavailable: Reconnect()) or a refused message */ }
//     if (!got->has_value()) continue;              // non-blocking: nothing pending
//     HandedConnection conn = std::move(**got);
//     (*sub)->GrantCredits(1);                      // ready for one more
//     // Read with conn.Read() (pending bytes first, then ktls_recv); write with write(2);
//     // finish with ktls_shutdown(conn.fd.get(), SHUT_WR).
//   }
//
// Credits: Subscribe grants `initial_credits`; each Handoff uses one; GrantCredits(n) adds n. The
// agent never has more handoffs in flight than unused credits, and clamps the total to
// Subscribed.max_outstanding_credits. An app that stops granting stops receiving.
//
// fd(): an epoll descriptor owned by the subscription, readable (level-triggered) whenever
// Receive() has something to return: a message on the agent socket, a handoff queued while Dial()
// waited, or the news that the agent went away. It survives Reconnect(), so an event loop
// registers it once.
//
// Agent restarts: when the agent goes away, Receive() reports kUnavailable once and the
// subscription is disconnected (fd() quiet). Reconnect() subscribes again with the credits that
// were outstanding, keeping queued handoffs, the blocking mode and the dial request counter;
// connections already taken never depended on the subscription.
//
// Not thread-safe: one thread owns a subscription. Connections it returns are independent.
#ifndef KTLS_CLIENT_APP_H_
#define KTLS_CLIENT_APP_H_

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/unique_fd.h"
#include "ktls/ktls_client.h"
#include "ktls/v1/handoff.pb.h"

namespace ktls::client {

// Closes with close(2): the app library has no syscall seam of its own.
using UniqueFd = base::UniqueFd;

inline constexpr absl::Duration kDefaultSubscribeTimeout = absl::Seconds(5);
// Added to a dial's own timeout (enforced by the agent) to get how long Dial() waits for the
// answer.
inline constexpr absl::Duration kDialAnswerMargin = absl::Seconds(5);
inline constexpr uint32_t kDefaultDialTimeoutMs = 10000;

// One connection handed over by the agent (inbound) or returned by Dial (outbound).
struct HandedConnection {
  // The TCP socket with kTLS (info.data_path() == DATA_PATH_KTLS) or the app's end of a relay
  // socketpair (DATA_PATH_RELAY). Stream socket, close-on-exec, blocking (the agent passes its
  // non-blocking sockets; the library clears O_NONBLOCK on the app's copy).
  UniqueFd fd;
  // Metadata as the agent sent it, except initial_data, which is moved into `pending`.
  v1::ConnectionInfo info;
  // Plaintext the agent decrypted before the handoff (starts as info.initial_data). It comes
  // before anything read from `fd`: consume it first (Read() does), and note that epoll will not
  // report it, so process it as soon as the connection is taken.
  std::string pending;
  // Size of info.initial_data as received (pending shrinks as it is read).
  size_t initial_data_bytes = 0;

  // Reads plaintext: from `pending` while it lasts, then ktls_recv(fd, ...). Same return values
  // and errno as ktls_recv (info_out may be null; it is left zeroed when served from pending).
  ssize_t Read(void* buf, size_t len, int flags = 0, ktls_record_info* info_out = nullptr);
  // The same into several buffers (pending bytes alone make a short read).
  ssize_t ReadV(const iovec* iov, int iovcnt, int flags = 0, ktls_record_info* info_out = nullptr);
};

class AgentSubscription {
 public:
  // Connects to the agent at `socket_path`, sends Subscribe{protocol_version, app_name,
  // initial_credits} and waits up to `timeout` for Subscribed. Errors say what went wrong:
  //   kNotFound            no socket at the path (agent not running, or wrong path)
  //   kUnavailable         nothing accepting at the path (stale socket), or the agent hung up
  //   kPermissionDenied    the socket exists but this process may not connect to it
  //   kFailedPrecondition  protocol version mismatch, or the agent answered with ProtocolError
  //                        (its text is in the message)
  //   kDeadlineExceeded    no Subscribed within `timeout`
  //   kInvalidArgument     bad path, or a malformed answer
  //   kResourceExhausted   no descriptors or memory for the sockets
  static absl::StatusOr<std::unique_ptr<AgentSubscription>> Connect(
      const std::string& socket_path, const std::string& app_name, uint32_t initial_credits,
      absl::Duration timeout = kDefaultSubscribeTimeout);

  AgentSubscription(const AgentSubscription&) = delete;
  AgentSubscription& operator=(const AgentSubscription&) = delete;
  ~AgentSubscription();

  // For epoll/poll (see the top of this file). Stable across Reconnect().
  int fd() const { return epoll_.get(); }

  // Receives one connection (queued ones first).
  //   a connection       a Handoff with exactly one descriptor
  //   std::nullopt       non-blocking and nothing is waiting (EAGAIN): not an error
  //   kUnavailable       "agent closed the handoff socket" (EOF/reset; reported once, then
  //                      "not connected to the agent"): Reconnect()
  //   kFailedPrecondition the agent sent ProtocolError (text in the message); it normally hangs up
  //   kInvalidArgument   a malformed message (unparsable, no/extra descriptors, unexpected
  //                      control data, a descriptor that is not a stream socket ...). Every
  //                      descriptor it carried has been closed; the subscription stays usable.
  // DialResults nobody waits for (their Dial timed out) are discarded, descriptors closed.
  absl::StatusOr<std::optional<HandedConnection>> Receive();

  // Grants `n` more handoffs. n == 0 is a no-op. Waits up to 1 s if the socket is full. While
  // disconnected, or when the send finds the agent gone, returns kUnavailable but keeps the
  // credits: Reconnect() grants them in its Subscribe.
  absl::Status GrantCredits(uint32_t n);

  // Subscribes again (same path, app name; initial credits = outstanding_credits()). Keeps fd(),
  // the blocking mode, queued handoffs and the dial request counter. Errors as Connect(); on
  // error the subscription stays disconnected and Reconnect() may be retried.
  absl::Status Reconnect(absl::Duration timeout = kDefaultSubscribeTimeout);

  // Outbound: sends `request` (its request_id is assigned here) and waits for the matching
  // DialResult, up to its timeout_ms (0: 10 s) plus kDialAnswerMargin, or `wait` if given.
  // Handoffs that arrive meanwhile are queued for Receive() (fd() readable).
  //   the connection     info.outbound() is true; `pending` holds data the upstream sent early
  //   kAborted           the agent could not dial (DialResult.error, e.g. verification failed)
  //   kDeadlineExceeded  no answer in time (a late one is discarded by Receive/Dial)
  //   kUnavailable       the agent went away (or is disconnected)
  //   kFailedPrecondition the agent answered ProtocolError (e.g. it has no outbound support)
  //   kInvalidArgument   a malformed answer (descriptors closed), or no host/port in `request`
  // Blocking whatever SetNonBlocking says.
  absl::StatusOr<HandedConnection> Dial(v1::DialRequest request,
                                        std::optional<absl::Duration> wait = std::nullopt);

  // Non-blocking Receive() (an event loop). Survives Reconnect(). Handed connections unaffected.
  void SetNonBlocking(bool non_blocking) { non_blocking_ = non_blocking; }

  bool connected() const { return sock_.valid(); }
  // What the agent answered (the latest subscription).
  const v1::Subscribed& subscribed() const { return subscribed_; }
  // Credits granted and not yet used by a handoff, as this side counts them (clamped to
  // max_outstanding_credits when the agent announced one).
  uint64_t outstanding_credits() const { return outstanding_credits_; }
  // Handoffs that arrived with no credit outstanding (an agent bug; they are delivered anyway).
  uint64_t handoffs_beyond_credits() const { return handoffs_beyond_credits_; }
  // DialResults that matched no waiting Dial (late answers); their descriptors were closed.
  uint64_t stale_dial_results() const { return stale_dial_results_; }
  // Handoffs queued while a Dial waited and not yet taken by Receive().
  size_t queued() const { return queue_.size(); }
  uint64_t reconnects() const { return reconnects_; }

 private:
  AgentSubscription(std::string socket_path, std::string app_name, UniqueFd epoll, UniqueFd event);
  void AddCredits(uint64_t n);
  // Adopts a freshly subscribed socket (Connect, Reconnect).
  absl::Status Adopt(UniqueFd sock, v1::Subscribed subscribed);
  // Forgets the agent socket: out of epoll, closed; `report` makes fd() readable until Receive()
  // has said kUnavailable once.
  void Disconnect(bool report);
  // eventfd level == "Receive() has something that is not on the socket".
  void UpdateSignal();

  // One message from the socket, classified. kHandoff results are validated connections.
  struct Incoming;
  Incoming ReceiveOne(int flags);
  // A parsed message from the agent and the descriptors that came with it (all closed or owned by
  // the result).
  Incoming OnMessage(v1::AgentToApp& message, std::vector<int> fds);
  // Dial()'s two halves: send the request (retrying while the socket is full), then wait for
  // the DialResult with request id `id`, queueing handoffs that arrive meanwhile.
  absl::Status SendDialRequest(const v1::AppToAgent& message, const std::string& target,
                               absl::Time deadline);
  absl::StatusOr<HandedConnection> AwaitDialResult(uint64_t id, const std::string& target,
                                                   absl::Time deadline, absl::Duration timeout);

  std::string socket_path_;
  std::string app_name_;
  UniqueFd epoll_;  // what fd() returns; holds sock_ and event_
  UniqueFd event_;  // eventfd: queued handoffs or an unreported disconnect
  UniqueFd sock_;   // the SOCK_SEQPACKET socket; invalid while disconnected
  v1::Subscribed subscribed_;
  bool non_blocking_ = false;
  bool disconnect_unreported_ = false;
  bool signalled_ = false;
  uint64_t outstanding_credits_ = 0;
  uint64_t handoffs_beyond_credits_ = 0;
  uint64_t stale_dial_results_ = 0;
  uint64_t reconnects_ = 0;
  uint64_t next_request_id_ = 1;
  std::deque<HandedConnection> queue_;
  std::string buffer_;  // kMaxMessageBytes, reused by every receive
};

}  // namespace ktls::client

#endif  // KTLS_CLIENT_APP_H_
