// The app library trusts nothing on the handoff socket before it knows who serves it: the
// serving process's SO_PEERCRED uid must be $KTLS_AGENT_UID, or else the socket file's owner
// (client/lib/app.cc, VerifyAgentPeer; docs/security.md). The fake agent here is a socket file
// owned by root whose listen() is done by a child running as nobody — the kernel reports the
// uid of the process that called listen() as the peer.
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "ktls/ktls_client.h"
#include "ktls/v1/handoff.pb.h"
#include "ktls/wire.h"
#include "tests/unit/temp_dir.h"

namespace ktls::client::testing {
namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

class FakeAgentAsNobody {
 public:
  // Binds as root (the file is root's), then the child becomes nobody, listens and serves
  // `connections` connections: it answers a Subscribe with Subscribed and counts the Subscribe
  // messages it saw. The child's exit code is that count.
  FakeAgentAsNobody(const std::string& path, int connections) {
    const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    EXPECT_EQ(0, bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)));
    EXPECT_EQ(0, chmod(path.c_str(), 0666));
    int ready[2];
    EXPECT_EQ(0, pipe(ready));
    pid_ = fork();
    if (pid_ == 0) {
      alarm(20);
      if (setgroups(0, nullptr) != 0 || setresgid(kNogroup, kNogroup, kNogroup) != 0 ||
          setresuid(kNobody, kNobody, kNobody) != 0 || listen(fd, 4) != 0) {
        _exit(100);
      }
      (void)!write(ready[1], "x", 1);
      int subscribes = 0;
      for (int i = 0; i < connections; ++i) {
        const int c = accept(fd, nullptr, nullptr);
        if (c < 0) _exit(101);
        char buf[4096];
        const ssize_t n = recv(c, buf, sizeof(buf), 0);
        v1::AppToAgent in;
        if (n > 0 && wire::Parse(std::string_view(buf, n), &in).ok() && in.has_subscribe()) {
          ++subscribes;
          v1::AgentToApp out;
          out.mutable_subscribed()->set_protocol_version(wire::kProtocolVersion);
          out.mutable_subscribed()->set_agent_version("fake");
          std::string bytes = *wire::Serialize(out);
          (void)!send(c, bytes.data(), bytes.size(), MSG_NOSIGNAL);
          (void)!recv(c, buf, sizeof(buf), 0);  // until the app closes
        }
        close(c);
      }
      _exit(subscribes);
    }
    close(fd);
    close(ready[1]);
    char x;
    EXPECT_EQ(1, read(ready[0], &x, 1)) << "the fake agent did not start";
    close(ready[0]);
  }
  // The number of Subscribe messages the fake agent received.
  int Finish() {
    int status = 0;
    waitpid(pid_, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
};

class AgentPeerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    ASSERT_EQ(0, chmod(dir_.path().c_str(), 0755));  // nobody's child must reach the socket
    unsetenv("KTLS_AGENT_UID");
  }
  void TearDown() override { unsetenv("KTLS_AGENT_UID"); }
  ::ktls::testing::ScopedTempDir dir_{"ktls-peer-test"};
  const std::string path_ = dir_.path() + "/handoff.sock";
};

TEST_F(AgentPeerTest, AgentUnderAnotherUidThanTheSocketOwnerIsRejectedBeforeAnyMessage) {
  ASSERT_EQ(0u, geteuid()) << "this test needs root to act as another uid";
  FakeAgentAsNobody fake(path_, 1);
  ktls_agent* agent = nullptr;
  EXPECT_EQ(KTLS_E_PERMISSION, ktls_agent_connect(path_.c_str(), "app", 1, 2000, &agent));
  EXPECT_EQ(nullptr, agent);
  const std::string error = ktls_last_error();
  EXPECT_NE(std::string::npos, error.find("runs as uid 65534, expected uid 0")) << error;
  EXPECT_NE(std::string::npos, error.find("the socket file's owner")) << error;
  EXPECT_EQ(0, fake.Finish()) << "the library sent Subscribe to an untrusted agent";
}

TEST_F(AgentPeerTest, PinnedUidDecides) {
  ASSERT_EQ(0u, geteuid());
  {
    // Pinned to the uid that really serves: accepted although the file is root's.
    FakeAgentAsNobody fake(path_, 1);
    setenv("KTLS_AGENT_UID", "65534", 1);
    ktls_agent* agent = nullptr;
    ASSERT_EQ(KTLS_OK, ktls_agent_connect(path_.c_str(), "app", 1, 2000, &agent))
        << ktls_last_error();
    ktls_agent_close(agent);
    EXPECT_EQ(1, fake.Finish());
  }
  unlink(path_.c_str());
  {
    FakeAgentAsNobody fake(path_, 1);
    setenv("KTLS_AGENT_UID", "10001", 1);
    ktls_agent* agent = nullptr;
    EXPECT_EQ(KTLS_E_PERMISSION, ktls_agent_connect(path_.c_str(), "app", 1, 2000, &agent));
    EXPECT_NE(std::string::npos, std::string(ktls_last_error()).find("KTLS_AGENT_UID"));
    EXPECT_EQ(0, fake.Finish());
  }
}

TEST_F(AgentPeerTest, MalformedPinnedUidIsAnError) {
  FakeAgentAsNobody fake(path_, 1);
  setenv("KTLS_AGENT_UID", "agent", 1);
  ktls_agent* agent = nullptr;
  EXPECT_EQ(KTLS_E_INVALID_ARGUMENT, ktls_agent_connect(path_.c_str(), "app", 1, 2000, &agent));
  EXPECT_EQ(0, fake.Finish());
}

}  // namespace
}  // namespace ktls::client::testing
