// App side of the handoff protocol (proto/ktls/v1/handoff.proto): subscribe to ktls-agent over
// its SOCK_SEQPACKET socket and receive connected, already-authenticated TLS connections as file
// descriptors plus metadata.
//
//   auto sub = AgentSubscription::Connect("/run/ktls/handoff.sock", "my-app", 64);
//   if (!sub.ok()) { /* sub.status() says what went wrong */ }
//   for (;;) {
//     auto got = (*sub)->Receive();                 // blocks unless SetNonBlocking(true)
//     if (!got.ok()) { /* agent gone (kUnavailable) or a malformed message */ }
//     if (!got->has_value()) continue;              // non-blocking: nothing pending
//     HandedConnection conn = std::move(**got);
//     (*sub)->GrantCredits(1);                      // ready for one more
//     // Read with conn.Read() (pending bytes first, then ktls_recv); write with write(2);
//     // finish with ktls_close_notify(conn.fd.get()).
//   }
//
// Credits: the Subscribe message grants `initial_credits`; each Handoff uses one; GrantCredits(n)
// adds n. The agent never has more handoffs in flight than unused credits, and clamps the total to
// Subscribed.max_outstanding_credits. An app that stops granting stops receiving.
//
// Not thread-safe: one thread owns a subscription. Connections it returns are independent.
#ifndef KTLS_CLIENT_APP_H_
#define KTLS_CLIENT_APP_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ktls/ktls_client.h"
#include "ktls/unique_fd.h"
#include "ktls/v1/handoff.pb.h"

namespace ktls::client {

inline constexpr absl::Duration kDefaultSubscribeTimeout = absl::Seconds(5);

// One connection handed over by the agent.
struct HandedConnection {
  // The TCP socket with kTLS (info.data_path() == DATA_PATH_KTLS) or the app's end of a relay
  // socketpair (DATA_PATH_RELAY). Stream socket, close-on-exec, blocking as the agent left it.
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
  static absl::StatusOr<std::unique_ptr<AgentSubscription>> Connect(
      const std::string& socket_path, const std::string& app_name, uint32_t initial_credits,
      absl::Duration timeout = kDefaultSubscribeTimeout);

  AgentSubscription(const AgentSubscription&) = delete;
  AgentSubscription& operator=(const AgentSubscription&) = delete;
  ~AgentSubscription();

  // For epoll/poll: readable when a message (normally a handoff) is waiting, or the agent hung up.
  int fd() const { return fd_.get(); }

  // Receives one message.
  //   a connection       a Handoff with exactly one descriptor
  //   std::nullopt       non-blocking and nothing is waiting (EAGAIN): not an error
  //   kUnavailable       "agent closed the handoff socket" (EOF/reset): reconnect
  //   kFailedPrecondition the agent sent ProtocolError (text in the message); it normally hangs up
  //   kInvalidArgument   a malformed message (unparsable, no/extra descriptors, unexpected
  //                      control data, a descriptor that is not a stream socket ...). Every
  //                      descriptor it carried has been closed; the subscription stays usable.
  absl::StatusOr<std::optional<HandedConnection>> Receive();

  // Grants `n` more handoffs. n == 0 is a no-op. Waits up to 1 s if the socket is full.
  absl::Status GrantCredits(uint32_t n);

  // O_NONBLOCK on the subscription socket (for an event loop). Handed connections are unaffected.
  void SetNonBlocking(bool non_blocking);

  // What the agent answered.
  const v1::Subscribed& subscribed() const { return subscribed_; }
  // Credits granted and not yet used by a handoff, as this side counts them (clamped to
  // max_outstanding_credits when the agent announced one).
  uint64_t outstanding_credits() const { return outstanding_credits_; }
  // Handoffs that arrived with no credit outstanding (an agent bug; they are delivered anyway).
  uint64_t handoffs_beyond_credits() const { return handoffs_beyond_credits_; }

 private:
  AgentSubscription(UniqueFd fd, v1::Subscribed subscribed, uint32_t initial_credits);
  void AddCredits(uint64_t n);

  UniqueFd fd_;
  v1::Subscribed subscribed_;
  uint64_t outstanding_credits_ = 0;
  uint64_t handoffs_beyond_credits_ = 0;
  std::string buffer_;  // kMaxMessageBytes, reused by every Receive
};

}  // namespace ktls::client

#endif  // KTLS_CLIENT_APP_H_
