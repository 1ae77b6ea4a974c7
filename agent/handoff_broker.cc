#include "agent/handoff_broker.h"

#include <fcntl.h>
#include <linux/tls.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/log.h"
#include "agent/socket_bio.h"
#include "ktls/wire.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace ktls::agent {

class HandoffBroker::Listener final : public EventHandler {
 public:
  explicit Listener(HandoffBroker* b) : broker_(b) {}
  void OnEvents(uint32_t) override { broker_->OnAcceptable(); }

 private:
  HandoffBroker* broker_;
};

class HandoffBroker::Subscriber final : public EventHandler {
 public:
  Subscriber(HandoffBroker* b, UniqueFd fd, uint64_t id) : broker(b), fd(std::move(fd)), id(id) {}
  void OnEvents(uint32_t events) override {
    if (!closed) broker->OnSubscriberEvents(this, events);
  }
  HandoffBroker* broker;
  UniqueFd fd;
  uint64_t id;
  absl::Time accepted_at = absl::Now();
  std::string name;
  bool subscribed = false;
  bool write_blocked = false;
  bool closed = false;
  // Refused at accept (peer credentials or the connection cap): told why, write side shut, kept
  // only until the app has read that and closed (or subscribe_timeout), never subscribed.
  bool refused = false;
  uint64_t credits = 0;
  uint64_t handed = 0;
  // Dial results not yet sent because the app's socket buffer was full.
  std::deque<std::pair<v1::DialResult, UniqueFd>> dial_results;
};

namespace {

std::string Errno(int err) {
  return absl::StrCat(strerrordesc_np(err), " (", strerrorname_np(err), ")");
}

// Sends a TLS close_notify alert as a record through kTLS TX.
void SendCloseNotify(SysCalls& sys, int fd) {
  const unsigned char alert[2] = {1 /* warning */, 0 /* close_notify */};
  SendTlsRecord(sys, fd, /*record_type=*/21, alert, sizeof(alert), MSG_DONTWAIT | MSG_NOSIGNAL);
  sys.Shutdown(fd, SHUT_WR);
}

}  // namespace

HandoffBroker::HandoffBroker(SysCalls& sys, HandoffBrokerOptions options, AgentStats& stats)
    : sys_(sys), options_(std::move(options)), stats_(stats) {}

absl::StatusOr<std::unique_ptr<HandoffBroker>> HandoffBroker::Create(SysCalls& sys,
                                                                     HandoffBrokerOptions options,
                                                                     AgentStats& stats) {
  std::unique_ptr<HandoffBroker> b(new HandoffBroker(sys, std::move(options), stats));
  const std::string& path = b->options_.socket_path;
  if (absl::StatusOr<sockaddr_un> address = wire::UnixSocketAddress(path, "handoff socket path");
      !address.ok()) {
    return address.status();
  }
  if ((b->options_.socket_mode & 07) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "handoff_socket_mode %04o gives 'other' access to plaintext connections; use a group "
        "(handoff_socket_group) and a mode like 0660",
        b->options_.socket_mode));
  }
  std::vector<uid_t> uids = b->options_.allowed_uids;
  uids.push_back(::geteuid());
  std::vector<gid_t> gids = b->options_.allowed_gids;
  if (b->options_.socket_group) gids.push_back(*b->options_.socket_group);
  b->policy_ = SubscriberPolicy(std::move(uids), std::move(gids));

  auto loop = EventLoop::Create(sys);
  if (!loop.ok()) return loop.status();
  b->loop_ = std::move(*loop);

  if (absl::Status s = b->BindSocket(path); !s.ok()) return s;
  SysResult r = sys.Listen(b->listen_fd_.get(), 128);
  if (!r.ok()) return absl::InternalError(absl::StrCat("listen ", path, ": ", Errno(r.err)));
  KTLS_LOG(kInfo, "handoff socket ", path, " (mode ",
           absl::StrFormat("%04o", b->options_.socket_mode), "): apps may subscribe as ",
           b->policy_.Describe());
  b->listener_ = std::make_unique<Listener>(b.get());
  absl::Status as = b->loop_->Add(b->listen_fd_.get(), EPOLLIN, b->listener_.get());
  if (!as.ok()) return as;
  b->loop_->SetTicker(absl::Milliseconds(50), [raw = b.get()](absl::Time now) {
    raw->ExpireWaiting(now);
    raw->ExpireUnsubscribed(now);
  });
  return b;
}

// Creates the socket file, safely: the lock file decides which agent owns the path (a second
// agent started on the same path fails instead of unlinking a live socket), a leftover socket is
// removed only under the lock and only if nothing answers on it, and the mode and group are set
// before listen() so no app can connect while the file still has bind's default mode.
absl::Status HandoffBroker::BindSocket(const std::string& path) {
  std::error_code ec;
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);

  const std::string lock_path = path + ".lock";
  SysResult r = sys_.Open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (!r.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open the handoff socket's lock file ", lock_path, ": ", Errno(r.err)));
  }
  lock_fd_ = UniqueFd(sys_, static_cast<int>(r.rc));
  r = sys_.Flock(lock_fd_.get(), LOCK_EX | LOCK_NB);
  if (!r.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("handoff socket ", path, " is in use by another running agent (", lock_path,
                     " is locked", r.err == EWOULDBLOCK ? "" : absl::StrCat(": ", Errno(r.err)),
                     "); give this agent its own --handoff_socket"));
  }

  absl::StatusOr<sockaddr_un> address = wire::UnixSocketAddress(path, "handoff socket path");
  if (!address.ok()) return address.status();
  sockaddr_un addr = *address;
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "handoff socket path ", path, " exists and is not a socket; not removing it"));
    }
    // We hold the lock, so no agent of this version serves it; an older agent (no lock file)
    // still would answer a connect.
    SysResult probe = sys_.Socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe.ok()) {
      UniqueFd pfd(sys_, static_cast<int>(probe.rc));
      SysResult c = sys_.Connect(pfd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      if (c.ok() || c.err == EAGAIN) {
        return absl::FailedPreconditionError(absl::StrCat(
            "handoff socket ", path, " is served by another running process; not removing it"));
      }
    }
    sys_.Unlink(path.c_str());
  }

  SysResult s = sys_.Socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (!s.ok()) return absl::InternalError(absl::StrCat("handoff socket: ", Errno(s.err)));
  listen_fd_ = UniqueFd(sys_, static_cast<int>(s.rc));
  r = sys_.Bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  if (!r.ok()) {
    listen_fd_.reset();
    return absl::FailedPreconditionError(
        absl::StrCat("cannot bind handoff socket ", path, ": ", Errno(r.err)));
  }
  r = sys_.Chmod(path.c_str(), options_.socket_mode);
  if (r.ok() && options_.socket_group) {
    r = sys_.Chown(path.c_str(), static_cast<uid_t>(-1), *options_.socket_group);
    if (!r.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("handoff_socket_group: cannot give ", path,
                                                        " to gid ", *options_.socket_group, ": ",
                                                        Errno(r.err)));
    }
  }
  if (!r.ok()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("handoff_socket_mode: cannot chmod %s to %04o: %s", path,
                        options_.socket_mode, Errno(r.err)));
  }
  return absl::OkStatus();
}

HandoffBroker::~HandoffBroker() {
  Stop();
  // Connections nobody took are closed cleanly.
  for (auto& c : waiting_) CloseWaiting(c);
  {
    absl::MutexLock lock(&inbox_mu_);
    for (auto& c : inbox_) CloseWaiting(c);
  }
  subscribers_.clear();
  if (listen_fd_.valid()) sys_.Unlink(options_.socket_path.c_str());
}

void HandoffBroker::Start(std::function<void()> on_capacity) {
  on_capacity_ = std::move(on_capacity);
  thread_ = std::thread([this] { loop_->Run(); });
}

void HandoffBroker::Stop() {
  if (thread_.joinable()) {
    loop_->Stop();
    thread_.join();
  }
}

void HandoffBroker::Submit(ReadyConnection conn) {
  {
    absl::MutexLock lock(&inbox_mu_);
    inbox_.push_back(std::move(conn));
    inbox_size_.fetch_add(1, std::memory_order_relaxed);
  }
  Add(stats_.pending_handoffs, 1);
  loop_->Post([this] {
    TakeInbox();
    Dispatch();
  });
}

void HandoffBroker::TakeInbox() {
  std::deque<ReadyConnection> batch;
  {
    absl::MutexLock lock(&inbox_mu_);
    batch.swap(inbox_);
    inbox_size_.store(0, std::memory_order_relaxed);
  }
  for (auto& c : batch) {
    if (waiting_.size() >= options_.max_pending) {
      // Queue full: the oldest waiter has the least chance of still being wanted.
      Inc(stats_.handoffs_dropped);
      Record(HandoffOutcome::kDropped, waiting_.front(), "");
      LogWarningOncePerKey("handoff-queue-full",
                           absl::StrCat("handoff queue full (", options_.max_pending,
                                        " waiting); dropping the oldest connection"));
      CloseWaiting(waiting_.front());
      waiting_.pop_front();
    }
    waiting_.push_back(std::move(c));
  }
}

void HandoffBroker::CloseWaiting(ReadyConnection& conn) {
  if (conn.fd.valid() && conn.is_ktls) SendCloseNotify(sys_, conn.fd.get());
  conn.fd.reset();
  Add(stats_.pending_handoffs, -1);
}

void HandoffBroker::OnAcceptable() {
  for (;;) {
    SysResult r = sys_.Accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (!r.ok()) {
      if (r.would_block() || r.err == EINTR || r.err == ECONNABORTED) return;
      LogWarningOncePerKey(
          absl::StrCat("broker-accept-", r.err),
          absl::StrCat("accepting an app on ", options_.socket_path, ": ", Errno(r.err)));
      return;
    }
    UniqueFd fd(sys_, static_cast<int>(r.rc));
    // Refused connections that wait for their app to close hold slots of max_app_connections
    // too (so a flood of refused connects is bounded), but they give way first.
    if (subscribers_.size() >= options_.max_app_connections) EvictOldestRefused();
    const bool admitted = AdmitApp(fd.get());
    if (!admitted && subscribers_.size() >= options_.max_app_connections) {
      DiscardInput(fd.get());  // no slot to linger in: the app may see ECONNRESET instead
      continue;
    }
    const int raw = fd.get();
    auto sub = std::make_unique<Subscriber>(this, std::move(fd), next_subscriber_id_++);
    sub->refused = !admitted;
    if (!loop_->Add(raw, EPOLLIN, sub.get()).ok()) continue;
    subscribers_[raw] = std::move(sub);
  }
}

// The connection cap and the peer-credential check, before the app can send or receive anything.
// A refused app gets one ProtocolError saying why (its library reports it as the subscription's
// error) and is closed.
bool HandoffBroker::AdmitApp(int fd) {
  auto refuse = [&](v1::ProtocolError::Reason reason, absl::string_view why) {
    v1::AgentToApp reply;
    reply.mutable_error()->set_message(std::string(why.substr(0, 512)));
    reply.mutable_error()->set_reason(reason);
    if (absl::StatusOr<std::string> bytes = wire::Serialize(reply); bytes.ok()) {
      wire::OutgoingMessage out(*bytes, -1);
      sys_.SendMsg(fd, out.header(), MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    // Closing now would make the kernel reset the app's end if its Subscribe is already queued
    // here (a Unix socket closed with unread data sets ECONNRESET on its peer, which then loses
    // the reason it has not read yet). So: shut our write side and linger until the app closes.
    sys_.Shutdown(fd, SHUT_WR);
    return false;
  };
  if (subscribers_.size() >= options_.max_app_connections) {
    Inc(stats_.app_connections_over_limit);
    LogWarningOncePerKey(
        "broker-app-cap",
        absl::StrCat("handoff socket: ", options_.max_app_connections,
                     " app connections open (max_app_connections); refusing more"));
    return refuse(v1::ProtocolError::REASON_TOO_MANY_APPS,
                  absl::StrCat("the agent holds max_app_connections (",
                               options_.max_app_connections, ") app connections"));
  }
  absl::StatusOr<PeerCredentials> peer = GetPeerCredentials(sys_, fd);
  absl::Status allowed = peer.ok() ? policy_.Check(*peer) : peer.status();
  if (!allowed.ok()) {
    Inc(stats_.app_subscribers_refused);
    LogWarningOncePerKey(absl::StrCat("broker-refused-", peer.ok() ? peer->uid : 0xffffffffu),
                         absl::StrCat("handoff socket ", options_.socket_path,
                                      ": refused an app: ", allowed.message()));
    return refuse(v1::ProtocolError::REASON_PERMISSION_DENIED, allowed.message());
  }
  return true;
}

// Reads and discards what a refused app sent. True when the connection is finished with (EOF,
// an error, or a few reads' worth), false when nothing more is there yet.
bool HandoffBroker::DiscardInput(int fd) {
  char buf[512];
  for (int i = 0; i < 16; ++i) {
    SysResult r = sys_.Read(fd, buf, sizeof(buf));
    if (!r.ok() && r.err == EINTR) continue;
    if (!r.ok() && r.would_block()) return false;
    if (!r.ok() || r.rc == 0) return true;
  }
  return true;
}

void HandoffBroker::EvictOldestRefused() {
  Subscriber* oldest = nullptr;
  for (auto& [fd, sub] : subscribers_) {
    if (sub->refused && !sub->closed && (oldest == nullptr || sub->id < oldest->id)) {
      oldest = sub.get();
    }
  }
  if (oldest != nullptr) DropSubscriber(oldest, "refused app gave way to a new connection", false);
}

// Connections that never subscribe would otherwise hold a slot (and an fd) forever.
void HandoffBroker::ExpireUnsubscribed(absl::Time now) {
  std::vector<Subscriber*> late;
  for (auto& [fd, sub] : subscribers_) {
    if (!sub->subscribed && !sub->closed && now - sub->accepted_at > options_.subscribe_timeout) {
      late.push_back(sub.get());
    }
  }
  for (Subscriber* sub : late) {
    if (sub->refused) {
      DropSubscriber(sub, "refused app did not close", false);
      continue;
    }
    Inc(stats_.app_subscribe_timeouts);
    SendProtocolError(
        sub, absl::StrCat("no Subscribe within ", absl::FormatDuration(options_.subscribe_timeout)),
        v1::ProtocolError::REASON_SUBSCRIBE_TIMEOUT);
    DropSubscriber(sub, "no Subscribe in time", false);
  }
}

void HandoffBroker::OnSubscriberEvents(Subscriber* sub, uint32_t events) {
  if (sub->refused) {
    // Whatever it sends is discarded; its EOF (it has read the refusal) ends the linger.
    if (DiscardInput(sub->fd.get())) DropSubscriber(sub, "refused app closed", false);
    return;
  }
  if (events & EPOLLOUT) {
    sub->write_blocked = false;
    loop_->Modify(sub->fd.get(), EPOLLIN, sub);
    FlushDialResults(sub);
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    // Drain every queued message; each is one datagram.
    for (int i = 0; i < 64 && !sub->closed; ++i) {
      // Sized to the protocol's limit (a DialRequest can be larger than a page).
      wire::IncomingMessage in_msg(recv_buffer_.data(), recv_buffer_.size());
      msghdr& msg = *in_msg.header();
      char* const buf = recv_buffer_.data();
      SysResult r = sys_.RecvMsg(sub->fd.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (!r.ok()) {
        if (r.would_block() || r.err == EINTR) break;
        DropSubscriber(sub, absl::StrCat("recvmsg: ", Errno(r.err)), false);
        return;
      }
      if (r.rc == 0) {
        DropSubscriber(sub, "app closed the connection", false);
        return;
      }
      std::vector<int> fds;
      absl::Status cs = wire::ExtractFds(msg, &fds);
      for (int fd : fds) sys_.Close(fd);  // apps never send descriptors
      if (!cs.ok() || !fds.empty()) {
        SendProtocolError(
            sub, cs.ok() ? "apps must not send file descriptors" : std::string(cs.message()));
        DropSubscriber(sub, "bad control data", true);
        return;
      }
      v1::AppToAgent in;
      absl::Status ps = wire::Parse(std::string_view(buf, r.rc), &in);
      if (!ps.ok()) {
        SendProtocolError(sub, ps.message());
        DropSubscriber(sub, ps.message(), true);
        return;
      }
      HandleAppMessage(sub, in);
    }
  }
  Dispatch();
}

void HandoffBroker::HandleAppMessage(Subscriber* sub, const v1::AppToAgent& msg) {
  switch (msg.msg_case()) {
    case v1::AppToAgent::kSubscribe: {
      if (sub->subscribed) {
        SendProtocolError(sub, "already subscribed");
        DropSubscriber(sub, "duplicate Subscribe", true);
        return;
      }
      if (msg.subscribe().protocol_version() != wire::kProtocolVersion) {
        SendProtocolError(
            sub, absl::StrCat("unsupported protocol version ", msg.subscribe().protocol_version(),
                              "; agent speaks ", wire::kProtocolVersion));
        DropSubscriber(sub, "protocol version mismatch", true);
        return;
      }
      sub->subscribed = true;
      sub->name = msg.subscribe().app_name().substr(0, 64);
      sub->credits =
          std::min<uint64_t>(msg.subscribe().initial_credits(), options_.max_outstanding_credits);
      v1::AgentToApp reply;
      auto* s = reply.mutable_subscribed();
      s->set_protocol_version(wire::kProtocolVersion);
      s->set_agent_version(options_.agent_version);
      s->set_subscriber_id(sub->id);
      s->set_max_outstanding_credits(options_.max_outstanding_credits);
      absl::StatusOr<std::string> bytes = wire::Serialize(reply);
      wire::OutgoingMessage out(*bytes, -1);
      SysResult r = sys_.SendMsg(sub->fd.get(), out.header(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (!r.ok()) {
        DropSubscriber(sub, absl::StrCat("sending Subscribed: ", Errno(r.err)), false);
        return;
      }
      Inc(stats_.apps_subscribed);
      Add(stats_.apps_connected, 1);
      KTLS_LOG(kInfo, "app '", sub->name, "' subscribed (id ", sub->id, ", ", sub->credits,
               " credits)");
      return;
    }
    case v1::AppToAgent::kGrant:
      if (!sub->subscribed) {
        SendProtocolError(sub, "GrantCredits before Subscribe");
        DropSubscriber(sub, "GrantCredits before Subscribe", true);
        return;
      }
      sub->credits = std::min<uint64_t>(sub->credits + msg.grant().credits(),
                                        options_.max_outstanding_credits);
      return;
    case v1::AppToAgent::kDial: {
      if (!sub->subscribed) {
        SendProtocolError(sub, "DialRequest before Subscribe");
        DropSubscriber(sub, "DialRequest before Subscribe", true);
        return;
      }
      if (!dial_handler_) {
        v1::DialResult r;
        r.set_request_id(msg.dial().request_id());
        r.set_error("outbound dialing is not enabled in this agent");
        sub->dial_results.emplace_back(std::move(r), UniqueFd());
        FlushDialResults(sub);
        return;
      }
      dial_handler_(sub->id, msg.dial());
      return;
    }
    default:
      SendProtocolError(sub, "unknown message");
      DropSubscriber(sub, "unknown message", true);
      return;
  }
}

void HandoffBroker::SetDialHandler(
    std::function<void(uint64_t subscriber_id, v1::DialRequest)> handler) {
  dial_handler_ = std::move(handler);
}

void HandoffBroker::DeliverDialResult(uint64_t subscriber_id, v1::DialResult result, UniqueFd fd) {
  // UniqueFd is move-only and std::function needs a copyable closure: park it in a shared_ptr.
  auto parcel =
      std::make_shared<std::pair<v1::DialResult, UniqueFd>>(std::move(result), std::move(fd));
  loop_->Post([this, subscriber_id, parcel] {
    for (auto& [fd, sub] : subscribers_) {
      if (sub->id == subscriber_id && !sub->closed) {
        sub->dial_results.push_back(std::move(*parcel));
        FlushDialResults(sub.get());
        return;
      }
    }
    // The app that asked is gone: nobody will ever read this connection.
    if (parcel->second.valid()) {
      Inc(stats_.handoffs_dropped);
      LogWarningOncePerKey("dial-result-orphaned",
                           "an app disconnected before its dial completed; closing the connection");
    }
  });
}

void HandoffBroker::FlushDialResults(Subscriber* sub) {
  while (!sub->dial_results.empty() && !sub->closed && !sub->write_blocked) {
    auto& [result, fd] = sub->dial_results.front();
    v1::AgentToApp msg;
    *msg.mutable_dial_result() = result;
    absl::StatusOr<std::string> bytes = wire::Serialize(msg);
    if (!bytes.ok()) {
      msg.mutable_dial_result()->mutable_connection()->clear_initial_data();
      msg.mutable_dial_result()->set_ok(false);
      msg.mutable_dial_result()->set_error("dial result too large");
      fd.reset();
      bytes = wire::Serialize(msg);
    }
    wire::OutgoingMessage out(*bytes, fd.valid() ? fd.get() : -1);
    SysResult r = sys_.SendMsg(sub->fd.get(), out.header(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (!r.ok()) {
      if (r.would_block() || r.err == EINTR) {
        sub->write_blocked = true;
        loop_->Modify(sub->fd.get(), EPOLLIN | EPOLLOUT, sub);
        return;
      }
      DropSubscriber(sub, absl::StrCat("sendmsg: ", Errno(r.err)), false);
      return;
    }
    sub->dial_results.pop_front();  // our copy of the fd closes here; the app has its own
  }
}

void HandoffBroker::SendProtocolError(Subscriber* sub, absl::string_view message,
                                      v1::ProtocolError::Reason reason) {
  v1::AgentToApp reply;
  reply.mutable_error()->set_message(std::string(message.substr(0, 512)));
  reply.mutable_error()->set_reason(reason);
  absl::StatusOr<std::string> bytes = wire::Serialize(reply);
  if (!bytes.ok()) return;
  wire::OutgoingMessage out(*bytes, -1);
  sys_.SendMsg(sub->fd.get(), out.header(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

void HandoffBroker::DropSubscriber(Subscriber* sub, absl::string_view why, bool protocol_error) {
  if (sub->closed) return;
  sub->closed = true;
  if (protocol_error) {
    Inc(stats_.app_protocol_errors);
    LogWarningOncePerKey(absl::StrCat("app-protocol-", why),
                         absl::StrCat("dropping app '", sub->name, "': ", why));
  } else if (!sub->refused) {  // refusals were logged (once per uid) and counted at accept
    KTLS_LOG(kInfo, "app '", sub->name, "' (id ", sub->id, ") disconnected: ", why);
  }
  if (sub->subscribed) {
    Add(stats_.apps_connected, -1);
    Inc(stats_.apps_disconnected);
  }
  const int fd = sub->fd.get();
  loop_->Remove(fd);
  auto it = subscribers_.find(fd);
  if (it != subscribers_.end()) {
    loop_->DeferDelete(std::move(it->second));
    subscribers_.erase(it);
  }
  UpdateCapacity();
}

HandoffBroker::Subscriber* HandoffBroker::PickSubscriber() {
  Subscriber* best = nullptr;
  for (auto& [fd, sub] : subscribers_) {
    if (sub->closed || !sub->subscribed || sub->write_blocked || sub->credits == 0) continue;
    if (best == nullptr || sub->credits > best->credits ||
        (sub->credits == best->credits && sub->handed < best->handed)) {
      best = sub.get();
    }
  }
  return best;
}

void HandoffBroker::Dispatch() {
  while (!waiting_.empty()) {
    Subscriber* sub = PickSubscriber();
    if (sub == nullptr) break;
    ReadyConnection& conn = waiting_.front();
    v1::AgentToApp msg;
    *msg.mutable_handoff()->mutable_connection() = conn.info;
    absl::StatusOr<std::string> bytes = wire::Serialize(msg);
    if (!bytes.ok()) {
      // Only initial_data can make it too large, and workers cap that; never send half a
      // connection.
      KTLS_LOG(kError, "handoff of connection ", conn.info.connection_id(), ": ",
               bytes.status().message());
      Inc(stats_.handoffs_dropped);
      Record(HandoffOutcome::kDropped, conn, "");
      CloseWaiting(conn);
      waiting_.pop_front();
      continue;
    }
    wire::OutgoingMessage out(*bytes, conn.fd.get());
    SysResult r = sys_.SendMsg(sub->fd.get(), out.header(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (!r.ok()) {
      if (r.would_block() || r.err == EINTR) {
        sub->write_blocked = true;
        loop_->Modify(sub->fd.get(), EPOLLIN | EPOLLOUT, sub);
        continue;  // try another app
      }
      // The app vanished (EPIPE, ECONNRESET ...): the connection stays first in line.
      Inc(stats_.handoffs_requeued);
      DropSubscriber(sub, absl::StrCat("sendmsg: ", Errno(r.err)), false);
      continue;
    }
    --sub->credits;
    ++sub->handed;
    Inc(stats_.handoffs_sent);
    Add(stats_.pending_handoffs, -1);
    ObserveLatency(absl::Now() - conn.ready_at);
    Record(HandoffOutcome::kSent, conn, sub->name);
    // The app has its own reference now; ours is closed without touching the TLS stream.
    conn.fd.reset();
    waiting_.pop_front();
  }
  UpdateCapacity();
}

void HandoffBroker::ExpireWaiting(absl::Time now) {
  TakeInbox();
  while (!waiting_.empty() && now - waiting_.front().ready_at > options_.wait_timeout) {
    ReadyConnection& c = waiting_.front();
    Inc(stats_.handoffs_expired);
    Record(HandoffOutcome::kExpired, c, "");
    LogWarningOncePerKey(
        "handoff-expired",
        absl::StrCat("connection waited more than ", absl::FormatDuration(options_.wait_timeout),
                     " for an app; closing it"));
    CloseWaiting(c);
    waiting_.pop_front();
  }
  Dispatch();
}

void HandoffBroker::UpdateCapacity() {
  uint64_t credits = 0;
  for (auto& [fd, sub] : subscribers_) {
    if (sub->subscribed && !sub->closed) credits += sub->credits;
  }
  const size_t queued = waiting_.size() + inbox_size_.load(std::memory_order_relaxed);
  const bool cap = credits > queued && queued < options_.max_pending;
  const bool was = has_capacity_.exchange(cap, std::memory_order_relaxed);
  if (cap && !was && on_capacity_) on_capacity_();
}

const std::vector<double>& HandoffBroker::LatencyBuckets() {
  static const std::vector<double> kBuckets = {5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3,
                                               5e-3, 1e-2, 5e-2, 0.1,  0.5,  1,      5};
  return kBuckets;
}

void HandoffBroker::ObserveLatency(absl::Duration d) {
  const double s = absl::ToDoubleSeconds(d);
  absl::MutexLock lock(&latency_mu_);
  const auto& b = LatencyBuckets();
  if (latency_.bucket_counts.empty()) latency_.bucket_counts.resize(b.size());
  ++latency_.count;
  latency_.sum_seconds += s;
  for (size_t i = 0; i < b.size(); ++i) {
    if (s <= b[i]) ++latency_.bucket_counts[i];
  }
}

void HandoffBroker::Record(HandoffOutcome outcome, const ReadyConnection& conn,
                           absl::string_view app) {
  if (options_.activity == nullptr) return;
  HandoffRecord r;
  r.at = absl::Now();
  r.outcome = outcome;
  r.app = std::string(app);
  r.waited = r.at - conn.ready_at;
  r.info = conn.info;
  r.info.clear_initial_data();  // application plaintext: never kept for display
  options_.activity->RecordHandoff(std::move(r));
}

HandoffBroker::LatencySnapshot HandoffBroker::Latency() const {
  absl::MutexLock lock(&latency_mu_);
  return latency_;
}

}  // namespace ktls::agent
