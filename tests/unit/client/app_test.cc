// AgentSubscription against a fake agent (fake_agent.h): subscribing, handoffs, credits, dials,
// resubscribing, and the epoll descriptor's readiness.
#include "client/lib/app.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ktls/wire.h"
#include "tests/unit/client/fake_agent.h"

namespace ktls::client {
namespace {

using testing::DialResultMessage;
using testing::FakeAgent;
using testing::HandoffMessage;
using testing::OpenFds;
using testing::Readable;
using testing::StreamPair;

using ::testing::HasSubstr;

// Connects in a thread while the fake agent answers on this one.
std::unique_ptr<AgentSubscription> Subscribe(FakeAgent& agent, uint32_t credits = 8,
                                             uint32_t max_credits = 0) {
  auto pending = std::async(std::launch::async, [&] {
    return AgentSubscription::Connect(agent.path(), "unit-test-app", credits);
  });
  v1::Subscribe sub = agent.AcceptAndReadSubscribe();
  EXPECT_EQ(wire::kProtocolVersion, sub.protocol_version());
  EXPECT_EQ("unit-test-app", sub.app_name());
  EXPECT_EQ(credits, sub.initial_credits());
  agent.SendSubscribed(wire::kProtocolVersion, max_credits);
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s = pending.get();
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(AgentSubscriptionTest, SubscribesAndReceivesAHandoffWithPendingBytes) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 8, 32);
  ASSERT_NE(nullptr, sub);
  EXPECT_EQ("fake-1.0", sub->subscribed().agent_version());
  EXPECT_EQ(8u, sub->outstanding_credits());

  StreamPair tls;  // fd[0] goes to the app, fd[1] plays the relay
  agent.Send(HandoffMessage(41, "GET / HTTP/1.1\r\n"), {tls.fd[0]});
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  HandedConnection conn = std::move(**got);
  EXPECT_TRUE(conn.fd.valid());
  EXPECT_NE(tls.fd[0], conn.fd.get());
  EXPECT_EQ(FD_CLOEXEC, fcntl(conn.fd.get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(41u, conn.info.connection_id());
  EXPECT_EQ("example.test", conn.info.sni());
  EXPECT_EQ(v1::DATA_PATH_RELAY, conn.info.data_path());
  EXPECT_EQ("CN=client", conn.info.peer_identity().subject());
  EXPECT_EQ("GET / HTTP/1.1\r\n", conn.pending);
  EXPECT_EQ(16u, conn.initial_data_bytes);
  EXPECT_TRUE(conn.info.initial_data().empty());  // moved into pending
  EXPECT_EQ(7u, sub->outstanding_credits());

  // Read() serves pending bytes first, then the descriptor.
  ASSERT_EQ(11, write(tls.fd[1], "Host: a\r\n\r\n", 11));
  char buf[64];
  EXPECT_EQ(10, conn.Read(buf, 10));
  EXPECT_EQ("GET / HTTP", std::string(buf, 10));
  EXPECT_EQ(6, conn.Read(buf, sizeof(buf)));
  EXPECT_EQ("/1.1\r\n", std::string(buf, 6));
  EXPECT_TRUE(conn.pending.empty());
  EXPECT_EQ(11, conn.Read(buf, sizeof(buf)));
  EXPECT_EQ("Host: a\r\n\r\n", std::string(buf, 11));
}

TEST(AgentSubscriptionTest, GrantCreditsReachesTheAgentAndIsClamped) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 4, 6);
  ASSERT_NE(nullptr, sub);
  ASSERT_TRUE(sub->GrantCredits(3).ok());
  v1::AppToAgent m = agent.ReadFromApp();
  ASSERT_TRUE(m.has_grant());
  EXPECT_EQ(3u, m.grant().credits());
  EXPECT_EQ(6u, sub->outstanding_credits());  // 4 + 3, clamped to the agent's 6
  EXPECT_TRUE(sub->GrantCredits(0).ok());     // no message
}

TEST(AgentSubscriptionTest, HandoffWithTwoDescriptorsIsRejectedAndBothAreClosed) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  StreamPair a, b;
  const std::set<int> before = OpenFds();
  agent.Send(HandoffMessage(1, ""), {a.fd[0], b.fd[0]});
  // Our copies go away, so only the app's received copies keep the pairs open.
  close(a.fd[0]);
  close(b.fd[0]);
  a.fd[0] = b.fd[0] = -1;
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, got.status().code());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("2 file descriptors"));
  // Nothing new is open in this process, and the peers see end of stream.
  std::set<int> after = OpenFds();
  after.insert(before.begin(), before.end());
  EXPECT_EQ(before.size(), after.size());
  char c;
  EXPECT_EQ(0, read(a.fd[1], &c, 1));
  EXPECT_EQ(0, read(b.fd[1], &c, 1));
  // The subscription is still usable.
  StreamPair ok;
  agent.Send(HandoffMessage(2, ""), {ok.fd[0]});
  got = sub->Receive();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(2u, (*got)->info.connection_id());
}

TEST(AgentSubscriptionTest, HandoffWithoutADescriptorIsRejected) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  agent.Send(HandoffMessage(1, "x"));
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, got.status().code());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("0 file descriptors"));
}

TEST(AgentSubscriptionTest, HandoffOfANonSocketIsRejectedAndClosed) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  int pipefd[2];
  ASSERT_EQ(0, pipe2(pipefd, O_CLOEXEC));
  agent.Send(HandoffMessage(1, ""), {pipefd[1]});
  close(pipefd[1]);
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("not a stream socket"));
  char c;
  EXPECT_EQ(0, read(pipefd[0], &c, 1));  // the received write end was closed
  close(pipefd[0]);
}

TEST(AgentSubscriptionTest, GarbageIsRejectedAndItsDescriptorClosed) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  StreamPair p;
  agent.SendRaw(std::string("\xff\xff\xff\xff garbage", 12), {p.fd[0]});
  close(p.fd[0]);
  p.fd[0] = -1;
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, got.status().code());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("malformed message"));
  char c;
  EXPECT_EQ(0, read(p.fd[1], &c, 1));
}

TEST(AgentSubscriptionTest, ProtocolErrorIsSurfaced) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  v1::AgentToApp m;
  m.mutable_error()->set_message("credit grant exceeds max_outstanding_credits");
  agent.Send(m);
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(absl::StatusCode::kFailedPrecondition, got.status().code());
  EXPECT_THAT(std::string(got.status().message()),
              HasSubstr("credit grant exceeds max_outstanding_credits"));
}

TEST(AgentSubscriptionTest, AgentHangupIsUnavailable) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  agent.Hangup();
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(absl::StatusCode::kUnavailable, got.status().code());
  EXPECT_EQ("agent closed the handoff socket", got.status().message());
}

TEST(AgentSubscriptionTest, NonBlockingWithNothingPendingIsNullopt) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  sub->SetNonBlocking(true);
  absl::StatusOr<std::optional<HandedConnection>> got = sub->Receive();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->has_value());
}

TEST(AgentSubscriptionConnectTest, NoAgentAtPath) {
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s =
      AgentSubscription::Connect("/nonexistent/ktls/handoff.sock", "app", 1);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(absl::StatusCode::kNotFound, s.status().code());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("no agent socket at"));
}

TEST(AgentSubscriptionConnectTest, StaleSocketFile) {
  std::string path;
  {
    FakeAgent agent;  // bound and listening, then closed below
    path = agent.path() + ".stale";
    int s = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(0, bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
    close(s);
    absl::StatusOr<std::unique_ptr<AgentSubscription>> sub =
        AgentSubscription::Connect(path, "app", 1);
    ASSERT_FALSE(sub.ok());
    EXPECT_EQ(absl::StatusCode::kUnavailable, sub.status().code());
    EXPECT_THAT(std::string(sub.status().message()), HasSubstr("stale socket"));
    unlink(path.c_str());
  }
}

TEST(AgentSubscriptionConnectTest, BadPath) {
  EXPECT_EQ(absl::StatusCode::kInvalidArgument,
            AgentSubscription::Connect("", "app", 1).status().code());
  EXPECT_EQ(absl::StatusCode::kInvalidArgument,
            AgentSubscription::Connect(std::string(200, 'x'), "app", 1).status().code());
}

TEST(AgentSubscriptionConnectTest, ProtocolVersionMismatch) {
  FakeAgent agent;
  auto pending = std::async(std::launch::async,
                            [&] { return AgentSubscription::Connect(agent.path(), "app", 1); });
  agent.AcceptAndReadSubscribe();
  agent.SendSubscribed(/*version=*/99);
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s = pending.get();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(absl::StatusCode::kFailedPrecondition, s.status().code());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("protocol version mismatch"));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("speaks version 99"));
}

TEST(AgentSubscriptionConnectTest, RejectedWithProtocolError) {
  FakeAgent agent;
  auto pending = std::async(std::launch::async,
                            [&] { return AgentSubscription::Connect(agent.path(), "app", 1); });
  agent.AcceptAndReadSubscribe();
  v1::AgentToApp m;
  m.mutable_error()->set_message("app_name not allowed");
  agent.Send(m);
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s = pending.get();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(absl::StatusCode::kFailedPrecondition, s.status().code());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("app_name not allowed"));
}

TEST(AgentSubscriptionConnectTest, AgentThatNeverAnswersTimesOut) {
  FakeAgent agent;
  auto pending = std::async(std::launch::async, [&] {
    return AgentSubscription::Connect(agent.path(), "app", 1, absl::Milliseconds(200));
  });
  agent.AcceptAndReadSubscribe();
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s = pending.get();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(absl::StatusCode::kDeadlineExceeded, s.status().code());
}

TEST(AgentSubscriptionConnectTest, AgentThatHangsUpIsUnavailable) {
  FakeAgent agent;
  auto pending = std::async(std::launch::async,
                            [&] { return AgentSubscription::Connect(agent.path(), "app", 1); });
  agent.AcceptAndReadSubscribe();
  agent.Hangup();
  absl::StatusOr<std::unique_ptr<AgentSubscription>> s = pending.get();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(absl::StatusCode::kUnavailable, s.status().code());
}

// ---- the stable epoll descriptor, dials, resubscribing ----

// A dial answered by the fake agent on another thread: `answer` runs with the request it read.
template <typename Answer>
absl::StatusOr<HandedConnection> DialWith(AgentSubscription& sub, FakeAgent& agent,
                                          v1::DialRequest request, Answer answer,
                                          std::optional<absl::Duration> wait = std::nullopt) {
  std::thread t([&] {
    v1::AppToAgent m = agent.ReadFromApp();
    ASSERT_TRUE(m.has_dial());
    answer(m.dial());
  });
  absl::StatusOr<HandedConnection> r = sub.Dial(std::move(request), wait);
  t.join();
  return r;
}

v1::DialRequest Request(const std::string& host = "upstream.test", uint32_t port = 8443) {
  v1::DialRequest r;
  r.set_host(host);
  r.set_port(port);
  r.set_ca_file("/etc/ca.pem");
  r.add_alpn("h2");
  r.add_alpn("http/1.1");
  r.set_timeout_ms(3000);
  return r;
}

TEST(AgentSubscriptionTest, FdIsReadableExactlyWhenReceiveHasSomething) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  sub->SetNonBlocking(true);
  EXPECT_FALSE(Readable(sub->fd()));
  StreamPair p;
  agent.Send(HandoffMessage(1, ""), {p.fd[0]});
  EXPECT_TRUE(Readable(sub->fd(), 1000));
  auto got = sub->Receive();
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_FALSE(Readable(sub->fd()));
  auto none = sub->Receive();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST(AgentSubscriptionTest, DialSendsTheRequestAndReturnsTheMatchingConnection) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 0);
  ASSERT_NE(nullptr, sub);
  StreamPair upstream;
  absl::StatusOr<HandedConnection> conn =
      DialWith(*sub, agent, Request(), [&](const v1::DialRequest& d) {
        EXPECT_EQ("upstream.test", d.host());
        EXPECT_EQ(8443u, d.port());
        EXPECT_EQ("/etc/ca.pem", d.ca_file());
        ASSERT_EQ(2, d.alpn_size());
        EXPECT_EQ("http/1.1", d.alpn(1));
        EXPECT_EQ(1u, d.request_id());
        v1::AgentToApp m = DialResultMessage(d.request_id(), true, "", 77);
        m.mutable_dial_result()->mutable_connection()->set_initial_data("early");
        agent.Send(m, {upstream.fd[0]});
      });
  ASSERT_TRUE(conn.ok()) << conn.status();
  EXPECT_TRUE(conn->info.outbound());
  EXPECT_EQ(77u, conn->info.connection_id());
  EXPECT_EQ(1u, conn->info.dial_request_id());
  EXPECT_TRUE(conn->info.resumed());
  EXPECT_EQ("early", conn->pending);
  EXPECT_EQ(0u, sub->outstanding_credits());  // dials use no credits
  // Request ids increase.
  absl::StatusOr<HandedConnection> second =
      DialWith(*sub, agent, Request(), [&](const v1::DialRequest& d) {
        EXPECT_EQ(2u, d.request_id());
        agent.Send(DialResultMessage(d.request_id(), false, "connect 127.0.0.1:8443: refused"));
      });
  EXPECT_EQ(absl::StatusCode::kAborted, second.status().code());
}

TEST(AgentSubscriptionTest, HandoffsArrivingDuringADialAreQueuedNotLost) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 4);
  ASSERT_NE(nullptr, sub);
  sub->SetNonBlocking(true);
  StreamPair in1, in2, out;
  absl::StatusOr<HandedConnection> conn =
      DialWith(*sub, agent, Request(), [&](const v1::DialRequest& d) {
        agent.Send(HandoffMessage(101, "first"), {in1.fd[0]});
        agent.Send(DialResultMessage(d.request_id() + 100, true, "", 5), {out.fd[0]});  // stale
        agent.Send(HandoffMessage(102, ""), {in2.fd[0]});
        agent.Send(DialResultMessage(d.request_id(), true, "", 9), {out.fd[0]});
      });
  ASSERT_TRUE(conn.ok()) << conn.status();
  EXPECT_EQ(9u, conn->info.connection_id());
  EXPECT_EQ(1u, sub->stale_dial_results());
  EXPECT_EQ(2u, sub->queued());
  EXPECT_EQ(2u, sub->outstanding_credits());  // both handoffs used a credit
  // The queue makes the descriptor readable although the socket is empty.
  EXPECT_TRUE(Readable(sub->fd()));
  auto a = sub->Receive();
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ(101u, (*a)->info.connection_id());
  EXPECT_EQ("first", (*a)->pending);
  EXPECT_TRUE(Readable(sub->fd()));
  auto b = sub->Receive();
  ASSERT_TRUE(b.ok() && b->has_value());
  EXPECT_EQ(102u, (*b)->info.connection_id());
  EXPECT_FALSE(Readable(sub->fd()));
  auto none = sub->Receive();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST(AgentSubscriptionTest, DialFailureCarriesTheAgentsReasonAndNoDescriptor) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 0);
  ASSERT_NE(nullptr, sub);
  const std::set<int> before = OpenFds();
  absl::StatusOr<HandedConnection> conn =
      DialWith(*sub, agent, Request("bad.test", 443), [&](const v1::DialRequest& d) {
        agent.Send(
            DialResultMessage(d.request_id(), false,
                              "certificate verify failed: unable to get local issuer certificate"));
      });
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(absl::StatusCode::kAborted, conn.status().code());
  EXPECT_THAT(std::string(conn.status().message()),
              HasSubstr("dial bad.test:443: certificate verify failed"));
  EXPECT_EQ(before, OpenFds());
}

TEST(AgentSubscriptionTest, OkDialResultWithoutADescriptorIsMalformed) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 0);
  ASSERT_NE(nullptr, sub);
  absl::StatusOr<HandedConnection> conn =
      DialWith(*sub, agent, Request(), [&](const v1::DialRequest& d) {
        agent.Send(DialResultMessage(d.request_id(), true, "", 3));
      });
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, conn.status().code());
  EXPECT_THAT(std::string(conn.status().message()), HasSubstr("0 file descriptors"));
}

TEST(AgentSubscriptionTest, DialTimeoutThenTheLateAnswerIsDiscarded) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 2);
  ASSERT_NE(nullptr, sub);
  uint64_t id = 0;
  absl::StatusOr<HandedConnection> conn = DialWith(
      *sub, agent, Request(), [&](const v1::DialRequest& d) { id = d.request_id(); },
      absl::Milliseconds(100));
  EXPECT_EQ(absl::StatusCode::kDeadlineExceeded, conn.status().code());
  // The answer arrives late: Receive() closes its descriptor and returns the next handoff.
  StreamPair late, in;
  agent.Send(DialResultMessage(id, true, "", 1), {late.fd[0]});
  close(late.fd[0]);
  late.fd[0] = -1;
  agent.Send(HandoffMessage(5, ""), {in.fd[0]});
  auto got = sub->Receive();
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status();
  EXPECT_EQ(5u, (*got)->info.connection_id());
  EXPECT_EQ(1u, sub->stale_dial_results());
  char c;
  EXPECT_EQ(0, read(late.fd[1], &c, 1));  // the late connection was closed
}

TEST(AgentSubscriptionTest, DialRefusedByAnAgentWithoutOutboundSupport) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 0);
  ASSERT_NE(nullptr, sub);
  absl::StatusOr<HandedConnection> conn =
      DialWith(*sub, agent, Request(), [&](const v1::DialRequest&) {
        v1::AgentToApp m;
        m.mutable_error()->set_message("unexpected message from app");
        agent.Send(m);
        agent.Hangup();
      });
  EXPECT_EQ(absl::StatusCode::kFailedPrecondition, conn.status().code());
  EXPECT_THAT(std::string(conn.status().message()), HasSubstr("unexpected message from app"));
}

TEST(AgentSubscriptionTest, DialWhenTheAgentHangsUpIsUnavailableAndReceiveSaysSoToo) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 0);
  ASSERT_NE(nullptr, sub);
  absl::StatusOr<HandedConnection> conn =
      DialWith(*sub, agent, Request(), [&](const v1::DialRequest&) { agent.Hangup(); });
  EXPECT_EQ(absl::StatusCode::kUnavailable, conn.status().code());
  EXPECT_FALSE(sub->connected());
  EXPECT_TRUE(Readable(sub->fd()));  // an event loop hears about it too
  auto got = sub->Receive();
  EXPECT_EQ(absl::StatusCode::kUnavailable, got.status().code());
  EXPECT_FALSE(Readable(sub->fd()));
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, sub->Dial(v1::DialRequest()).status().code());
}

TEST(AgentSubscriptionTest, ReconnectKeepsQueueCreditsAndDescriptor) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 5);
  ASSERT_NE(nullptr, sub);
  sub->SetNonBlocking(true);
  const int fd = sub->fd();
  // A handoff gets queued during a dial, then the agent dies.
  StreamPair in, out;
  ASSERT_TRUE(DialWith(*sub, agent, Request(), [&](const v1::DialRequest& d) {
                agent.Send(HandoffMessage(1, ""), {in.fd[0]});
                agent.Send(DialResultMessage(d.request_id(), true, "", 2), {out.fd[0]});
              }).ok());
  agent.Hangup();
  agent.StopListening();
  // The queued connection comes first, then the news.
  auto queued = sub->Receive();
  ASSERT_TRUE(queued.ok() && queued->has_value());
  auto gone = sub->Receive();
  EXPECT_EQ(absl::StatusCode::kUnavailable, gone.status().code());
  EXPECT_EQ("agent closed the handoff socket", gone.status().message());
  EXPECT_FALSE(sub->connected());
  EXPECT_EQ(4u, sub->outstanding_credits());
  // While it is away: grants are kept, Reconnect fails with the connect error.
  EXPECT_EQ(absl::StatusCode::kUnavailable, sub->GrantCredits(2).code());
  EXPECT_EQ(6u, sub->outstanding_credits());
  EXPECT_EQ(absl::StatusCode::kNotFound, sub->Reconnect(absl::Milliseconds(200)).code());
  EXPECT_EQ(absl::StatusCode::kUnavailable, sub->Receive().status().code());
  // The agent is back: the new Subscribe carries the outstanding credits.
  agent.Relisten();
  auto pending = std::async(std::launch::async, [&] { return sub->Reconnect(); });
  v1::Subscribe s = agent.AcceptAndReadSubscribe();
  EXPECT_EQ(6u, s.initial_credits());
  EXPECT_EQ("unit-test-app", s.app_name());
  agent.SendSubscribed();
  ASSERT_TRUE(pending.get().ok());
  EXPECT_TRUE(sub->connected());
  EXPECT_EQ(1u, sub->reconnects());
  EXPECT_EQ(fd, sub->fd());
  // Still non-blocking, and handoffs flow through the same descriptor.
  auto none = sub->Receive();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  StreamPair again;
  agent.Send(HandoffMessage(3, ""), {again.fd[0]});
  EXPECT_TRUE(Readable(fd, 1000));
  auto got = sub->Receive();
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(3u, (*got)->info.connection_id());
  EXPECT_EQ(5u, sub->outstanding_credits());
}

TEST(AgentSubscriptionTest, GrantThatFindsTheAgentGoneIsRememberedAndReported) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent, 1);
  ASSERT_NE(nullptr, sub);
  agent.Hangup();
  // The first send may still succeed into the dead socket's buffer on some kernels; loop until
  // the agent's absence is noticed.
  absl::Status s;
  for (int i = 0; i < 3 && s.ok(); ++i) s = sub->GrantCredits(1);
  EXPECT_EQ(absl::StatusCode::kUnavailable, s.code());
  EXPECT_FALSE(sub->connected());
  EXPECT_TRUE(Readable(sub->fd()));
  EXPECT_EQ(absl::StatusCode::kUnavailable, sub->Receive().status().code());
}

TEST(AgentSubscriptionTest, ReadVServesPendingBytesFirst) {
  HandedConnection c;
  StreamPair p;
  c.fd.reset(dup(p.fd[0]));
  c.pending = "abcdef";
  ASSERT_EQ(3, write(p.fd[1], "xyz", 3));
  char a[4], b[8];
  iovec iov[2] = {{a, sizeof(a)}, {b, sizeof(b)}};
  EXPECT_EQ(6, c.ReadV(iov, 2));
  EXPECT_EQ("abcd", std::string(a, 4));
  EXPECT_EQ("ef", std::string(b, 2));
  EXPECT_EQ(3, c.ReadV(iov, 2));
  EXPECT_EQ("xyz", std::string(a, 3));
}

TEST(AgentSubscriptionTest, HandedDescriptorsAreBlockingWhateverTheAgentLeftThem) {
  FakeAgent agent;
  std::unique_ptr<AgentSubscription> sub = Subscribe(agent);
  ASSERT_NE(nullptr, sub);
  int nb[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, nb));
  agent.Send(HandoffMessage(1, ""), {nb[0]});
  close(nb[0]);
  auto got = sub->Receive();
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(0, fcntl((*got)->fd.get(), F_GETFL) & O_NONBLOCK);
  close(nb[1]);
}

}  // namespace
}  // namespace ktls::client
