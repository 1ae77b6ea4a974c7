// The handoff socket's trust boundary (agent/peer_auth.*, agent/handoff_broker.cc): who may
// subscribe (SO_PEERCRED uid, primary and supplementary gids), the socket file's mode and group,
// the lock that keeps a second agent from unlinking a live socket, and the deadline and cap for
// connections that never subscribe. Processes under other uids are made with fork + setres*id
// (the tests run as root, like the rest of the suite); see docs/security.md.
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <signal.h>

#include <functional>
#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/handoff_broker.h"
#include "agent/peer_auth.h"
#include "agent/stats.h"
#include "tests/mocks/mock_syscalls.h"
#include "tests/unit/agent/agent_test_util.h"
#include "tests/unit/temp_dir.h"

namespace ktls::agent::testing {
namespace {

using ::testing::_;
using ::testing::NiceMock;
using ::testing::Return;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

TEST(SubscriberPolicyTest, UidPrimaryAndSupplementaryGidsAreChecked) {
  SubscriberPolicy p({10001}, {2000});
  EXPECT_TRUE(p.Check({.pid = 1, .uid = 10001, .gid = 5}).ok());
  EXPECT_TRUE(p.Check({.pid = 1, .uid = 7, .gid = 2000}).ok());
  EXPECT_TRUE(p.Check({.pid = 1, .uid = 7, .gid = 5, .groups = {9, 2000}}).ok());
  absl::Status s = p.Check({.pid = 42, .uid = 7, .gid = 5, .groups = {9}});
  EXPECT_EQ(absl::StatusCode::kPermissionDenied, s.code());
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("uid 7 gid 5 (pid 42)"));
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("handoff_allowed_uids"));
  EXPECT_EQ("uids [10001], gids [2000]", p.Describe());
}

TEST(SubscriberPolicyTest, EmptyPolicyAllowsNobody) {
  EXPECT_FALSE(SubscriberPolicy().Check({.uid = 0, .gid = 0}).ok());
}

TEST(ResolveGroupTest, NumbersAndNames) {
  EXPECT_EQ(1234u, *ResolveGroup("1234"));
  EXPECT_EQ(0u, *ResolveGroup("root"));
  EXPECT_EQ(absl::StatusCode::kNotFound, ResolveGroup("no-such-group-here").status().code());
}

class HandoffTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    // Other uids must be able to reach the socket inside; the socket's own mode decides.
    ASSERT_EQ(0, chmod(dir_.path().c_str(), 0711));
  }
  void TearDown() override { broker_.reset(); }

  HandoffBrokerOptions Options() {
    HandoffBrokerOptions o;
    o.socket_path = path_;
    o.agent_version = "test";
    return o;
  }
  absl::Status Start(HandoffBrokerOptions o) {
    auto b = HandoffBroker::Create(sys_, std::move(o), stats_);
    if (!b.ok()) return b.status();
    broker_ = std::move(*b);
    broker_->Start([] {});
    return absl::OkStatus();
  }

  // Runs `body` in a child with the given supplementary groups, gid and uid; returns its exit
  // code (99: could not switch identity).
  static int RunAs(std::vector<gid_t> groups, gid_t gid, uid_t uid, std::function<int()> body) {
    const pid_t pid = fork();
    if (pid == 0) {
      if (setgroups(groups.size(), groups.data()) != 0 || setresgid(gid, gid, gid) != 0 ||
          setresuid(uid, uid, uid) != 0) {
        _exit(99);
      }
      _exit(body());
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // In the child: connect, Subscribe, read the answer. 0 = Subscribed; 10 = connect failed;
  // 11 = refused with REASON_PERMISSION_DENIED and a message naming the uid; 12 = other answer.
  int SubscribeExitCode() const {
    FakeApp app(path_);
    if (!app.connected()) return 10;
    v1::AppToAgent m;
    m.mutable_subscribe()->set_protocol_version(wire::kProtocolVersion);
    m.mutable_subscribe()->set_initial_credits(1);
    app.Send(m);  // may fail with EPIPE after a refusal; the answer is already queued
    v1::AgentToApp answer;
    std::vector<int> fds;
    if (!app.Receive(&answer, &fds, 5000)) return 12;
    if (answer.has_subscribed()) return 0;
    if (answer.has_error() &&
        answer.error().reason() == v1::ProtocolError::REASON_PERMISSION_DENIED &&
        answer.error().message().find(absl::StrCat("uid ", getuid())) != std::string::npos) {
      return 11;
    }
    return 12;
  }

  ::ktls::testing::ScopedTempDir dir_{"ktls-trust-test"};
  const std::string path_ = dir_.path() + "/handoff.sock";
  NiceMock<MockSysCalls> sys_;
  AgentStats stats_;
  std::unique_ptr<HandoffBroker> broker_;
};

// Group root (0) owns the socket (0660, created by root), so a process with supplementary group
// 0 can connect; whether it may subscribe is then the broker's SO_PEERCRED decision alone.
TEST_F(HandoffTrustTest, SubscriberUnderAnotherUidIsRefusedAndCounted) {
  ASSERT_TRUE(Start(Options()).ok());
  EXPECT_EQ(11, RunAs({0}, kNogroup, kNobody, [&] { return SubscribeExitCode(); }));
  EXPECT_EQ(1u, stats_.app_subscribers_refused.load());
  EXPECT_EQ(0u, stats_.apps_subscribed.load());
  // The agent's own uid is allowed.
  EXPECT_EQ(0, SubscribeExitCode());
}

TEST_F(HandoffTrustTest, SameProcessInAnAllowedGroupIsAccepted) {
  HandoffBrokerOptions o = Options();
  o.allowed_gids = {kNogroup};
  ASSERT_TRUE(Start(o).ok());
  EXPECT_EQ(0, RunAs({0}, kNogroup, kNobody, [&] { return SubscribeExitCode(); }));
  EXPECT_EQ(0u, stats_.app_subscribers_refused.load());
}

TEST_F(HandoffTrustTest, SupplementaryGroupAndAllowedUidAreAccepted) {
  HandoffBrokerOptions o = Options();
  o.allowed_gids = {4242};
  ASSERT_TRUE(Start(o).ok());
  EXPECT_EQ(0, RunAs({0, 4242}, kNogroup, kNobody, [&] { return SubscribeExitCode(); }));
  broker_.reset();
  o.allowed_gids = {};
  o.allowed_uids = {kNobody};
  ASSERT_TRUE(Start(o).ok());
  EXPECT_EQ(0, RunAs({0}, kNogroup, kNobody, [&] { return SubscribeExitCode(); }));
}

TEST_F(HandoffTrustTest, SocketGroupOwnsTheFileAndItsMembersMaySubscribe) {
  HandoffBrokerOptions o = Options();
  o.socket_group = kNogroup;
  o.socket_mode = 0660;
  ASSERT_TRUE(Start(o).ok());
  struct stat st;
  ASSERT_EQ(0, stat(path_.c_str(), &st));
  EXPECT_EQ(0660u, st.st_mode & 07777);
  EXPECT_EQ(kNogroup, st.st_gid);
  // A member of the group connects through the mode and subscribes through the policy.
  EXPECT_EQ(0, RunAs({}, kNogroup, kNobody, [&] { return SubscribeExitCode(); }));
  // Someone else cannot even connect (the file mode).
  EXPECT_EQ(10, RunAs({}, 4242, 4242, [&] { return SubscribeExitCode(); }));
}

TEST_F(HandoffTrustTest, ConfiguredModeIsAppliedAndOtherAccessIsRefused) {
  HandoffBrokerOptions o = Options();
  o.socket_mode = 0600;
  ASSERT_TRUE(Start(o).ok());
  struct stat st;
  ASSERT_EQ(0, stat(path_.c_str(), &st));
  EXPECT_EQ(0600u, st.st_mode & 07777);
  broker_.reset();
  o.socket_mode = 0666;
  absl::Status s = Start(o);
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, s.code());
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("gives 'other' access"));
}

TEST_F(HandoffTrustTest, ChmodAndChownFailuresAreFatal) {
  EXPECT_CALL(sys_, Chmod(_, _)).WillOnce(Return(SysResult{-1, EPERM}));
  absl::Status s = Start(Options());
  EXPECT_EQ(absl::StatusCode::kFailedPrecondition, s.code());
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("cannot chmod"));
  ::testing::Mock::VerifyAndClearExpectations(&sys_);
  HandoffBrokerOptions o = Options();
  o.socket_group = kNogroup;
  EXPECT_CALL(sys_, Chown(_, _, _)).WillOnce(Return(SysResult{-1, EPERM}));
  s = Start(o);
  EXPECT_EQ(absl::StatusCode::kFailedPrecondition, s.code());
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("handoff_socket_group"));
}

TEST_F(HandoffTrustTest, SecondAgentNeverUnlinksALiveSocket) {
  ASSERT_TRUE(Start(Options()).ok());
  struct stat before;
  ASSERT_EQ(0, stat(path_.c_str(), &before));
  AgentStats other_stats;
  auto second = HandoffBroker::Create(sys_, Options(), other_stats);
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(std::string(second.status().message()),
              ::testing::HasSubstr("in use by another running agent"));
  struct stat after;
  ASSERT_EQ(0, stat(path_.c_str(), &after));
  EXPECT_EQ(before.st_ino, after.st_ino) << "the live socket was replaced";
  EXPECT_EQ(0, SubscribeExitCode()) << "the first agent must still serve";
}

TEST_F(HandoffTrustTest, StaleSocketIsReplacedButARegularFileIsNot) {
  {
    // A socket file nobody serves (an agent that was killed).
    const int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
    ASSERT_EQ(0, bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)));
    close(fd);
  }
  ASSERT_TRUE(Start(Options()).ok());
  EXPECT_EQ(0, SubscribeExitCode());
  broker_.reset();
  ASSERT_EQ(0, access(path_.c_str(), F_OK) == 0 ? unlink(path_.c_str()) : 0);
  FILE* f = fopen(path_.c_str(), "w");
  ASSERT_NE(nullptr, f);
  fclose(f);
  absl::Status s = Start(Options());
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("is not a socket"));
  EXPECT_EQ(0, access(path_.c_str(), F_OK)) << "a regular file must not be removed";
}

TEST_F(HandoffTrustTest, NeverSubscribingConnectionIsClosedAfterTheDeadline) {
  HandoffBrokerOptions o = Options();
  o.subscribe_timeout = absl::Milliseconds(200);
  ASSERT_TRUE(Start(o).ok());
  FakeApp silent(path_);
  ASSERT_TRUE(silent.connected());
  v1::AgentToApp answer;
  std::vector<int> fds;
  ASSERT_TRUE(silent.Receive(&answer, &fds, 5000)) << "no ProtocolError before the close";
  EXPECT_EQ(v1::ProtocolError::REASON_SUBSCRIBE_TIMEOUT, answer.error().reason());
  EXPECT_FALSE(silent.Receive(&answer, &fds, 5000)) << "the agent must close the connection";
  EXPECT_EQ(1u, stats_.app_subscribe_timeouts.load());
}

TEST_F(HandoffTrustTest, AppConnectionsAreCapped) {
  HandoffBrokerOptions o = Options();
  o.max_app_connections = 2;
  ASSERT_TRUE(Start(o).ok());
  FakeApp a(path_), b(path_);
  ASSERT_TRUE(a.Subscribe(1));
  ASSERT_TRUE(b.Subscribe(1));
  FakeApp c(path_);
  ASSERT_TRUE(c.connected());
  v1::AgentToApp answer;
  std::vector<int> fds;
  ASSERT_TRUE(c.Receive(&answer, &fds, 5000));
  EXPECT_EQ(v1::ProtocolError::REASON_TOO_MANY_APPS, answer.error().reason());
  EXPECT_TRUE(WaitFor([&] { return stats_.app_connections_over_limit.load() == 1; }));
  EXPECT_EQ(2u, stats_.apps_subscribed.load());
}

// A refused connection waiting for its app to close holds a slot, but gives way to a new one:
// refused connects can neither pile up beyond the cap nor keep the real app out.
TEST_F(HandoffTrustTest, RefusedConnectionsGiveWayToTheApp) {
  HandoffBrokerOptions o = Options();
  o.max_app_connections = 1;
  ASSERT_TRUE(Start(o).ok());
  int ready[2];
  ASSERT_EQ(0, pipe(ready));
  const pid_t pid = fork();
  if (pid == 0) {
    close(ready[0]);
    if (setgroups(1, std::vector<gid_t>{0}.data()) != 0 ||
        setresgid(kNogroup, kNogroup, kNogroup) != 0 || setresuid(kNobody, kNobody, kNobody) != 0) {
      _exit(99);
    }
    FakeApp refused(path_);  // connected, refused, and kept open
    (void)!write(ready[1], "x", 1);
    sleep(3);
    _exit(refused.connected() ? 0 : 10);
  }
  close(ready[1]);
  char x;
  ASSERT_EQ(1, read(ready[0], &x, 1));
  close(ready[0]);
  ASSERT_TRUE(WaitFor([&] { return stats_.app_subscribers_refused.load() == 1; }));
  FakeApp app(path_);
  EXPECT_TRUE(app.Subscribe(1)) << "the refused connection kept the app out";
  EXPECT_EQ(0u, stats_.app_connections_over_limit.load());
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

}  // namespace
}  // namespace ktls::agent::testing
