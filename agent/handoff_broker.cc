#include "agent/handoff_broker.h"

#include <linux/tls.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "agent/log.h"
#include "agent/socket_bio.h"
#include "ktls/wire.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace ktls {

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
  std::string name;
  bool subscribed = false;
  bool write_blocked = false;
  bool closed = false;
  uint64_t credits = 0;
  uint64_t handed = 0;
  // Dial results not yet sent because the app's socket buffer was full.
  std::deque<std::pair<v1::DialResult, UniqueFd>> dial_results;
};

namespace {

std::string Errno(int err) { return absl::StrCat(strerrordesc_np(err), " (", strerrorname_np(err), ")"); }

// Sends a TLS close_notify alert as a record through kTLS TX.
void SendCloseNotify(SysCalls& sys, int fd) {
  const unsigned char alert[2] = {1 /* warning */, 0 /* close_notify */};
  SendTlsRecord(sys, fd, /*record_type=*/21, alert, sizeof(alert), MSG_DONTWAIT | MSG_NOSIGNAL);
  sys.Shutdown(fd, SHUT_WR);
}

}  // namespace

HandoffBroker::HandoffBroker(SysCalls& sys, HandoffBrokerOptions options, AgentStats& stats)
    : sys_(sys), options_(std::move(options)), stats_(stats) {}

absl::StatusOr<std::unique_ptr<HandoffBroker>> HandoffBroker::Create(
    SysCalls& sys, HandoffBrokerOptions options, AgentStats& stats) {
  std::unique_ptr<HandoffBroker> b(new HandoffBroker(sys, std::move(options), stats));
  const std::string& path = b->options_.socket_path;
  absl::StatusOr<sockaddr_un> address = wire::UnixSocketAddress(path, "handoff socket path");
  if (!address.ok()) return address.status();
  sockaddr_un addr = *address;
  std::error_code ec;
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);

  auto loop = EventLoop::Create(sys);
  if (!loop.ok()) return loop.status();
  b->loop_ = std::move(*loop);

  SysResult s = sys.Socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (!s.ok()) return absl::InternalError(absl::StrCat("handoff socket: ", Errno(s.err)));
  b->listen_fd_ = UniqueFd(sys, static_cast<int>(s.rc));
  // A stale socket file from a previous run would make bind fail with EADDRINUSE.
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) sys.Unlink(path.c_str());
  SysResult r = sys.Bind(b->listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  if (!r.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot bind handoff socket ", path, ": ", Errno(r.err)));
  }
  sys.Chmod(path.c_str(), b->options_.socket_mode);
  r = sys.Listen(b->listen_fd_.get(), 128);
  if (!r.ok()) return absl::InternalError(absl::StrCat("listen ", path, ": ", Errno(r.err)));
  b->listener_ = std::make_unique<Listener>(b.get());
  absl::Status as = b->loop_->Add(b->listen_fd_.get(), EPOLLIN, b->listener_.get());
  if (!as.ok()) return as;
  b->loop_->SetTicker(absl::Milliseconds(50), [raw = b.get()](absl::Time now) {
    raw->ExpireWaiting(now);
  });
  return b;
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
      LogWarningOncePerKey(absl::StrCat("broker-accept-", r.err),
                           absl::StrCat("accepting an app on ", options_.socket_path, ": ",
                                        Errno(r.err)));
      return;
    }
    UniqueFd fd(sys_, static_cast<int>(r.rc));
    const int raw = fd.get();
    auto sub = std::make_unique<Subscriber>(this, std::move(fd), next_subscriber_id_++);
    if (!loop_->Add(raw, EPOLLIN, sub.get()).ok()) continue;
    subscribers_[raw] = std::move(sub);
  }
}

void HandoffBroker::OnSubscriberEvents(Subscriber* sub, uint32_t events) {
  if (events & EPOLLOUT) {
    sub->write_blocked = false;
    loop_->Modify(sub->fd.get(), EPOLLIN, sub);
    FlushDialResults(sub);
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    // Drain every queued message; each is one datagram.
    for (int i = 0; i < 64 && !sub->closed; ++i) {
      char buf[4096];
      iovec iov{buf, sizeof(buf)};
      wire::ControlBuffer control;
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control.bytes;
      msg.msg_controllen = sizeof(control.bytes);
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
        SendProtocolError(sub, cs.ok() ? "apps must not send file descriptors"
                                       : std::string(cs.message()));
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
        SendProtocolError(sub, absl::StrCat("unsupported protocol version ",
                                            msg.subscribe().protocol_version(), "; agent speaks ",
                                            wire::kProtocolVersion));
        DropSubscriber(sub, "protocol version mismatch", true);
        return;
      }
      sub->subscribed = true;
      sub->name = msg.subscribe().app_name().substr(0, 64);
      sub->credits = std::min<uint64_t>(msg.subscribe().initial_credits(),
                                        options_.max_outstanding_credits);
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
  auto parcel = std::make_shared<std::pair<v1::DialResult, UniqueFd>>(std::move(result),
                                                                      std::move(fd));
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

void HandoffBroker::SendProtocolError(Subscriber* sub, absl::string_view message) {
  v1::AgentToApp reply;
  reply.mutable_error()->set_message(std::string(message.substr(0, 512)));
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
  } else {
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
    LogWarningOncePerKey("handoff-expired",
                         absl::StrCat("connection waited more than ",
                                      absl::FormatDuration(options_.wait_timeout),
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
  static const std::vector<double> kBuckets = {5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
                                               1e-3, 5e-3, 1e-2, 5e-2, 0.1,  0.5,    1,
                                               5};
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

}  // namespace ktls
