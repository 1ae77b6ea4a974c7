// sd_notify without libsystemd (agent/sd_notify.cc): the datagram reaches a socket bound where
// $NOTIFY_SOCKET says (path or @abstract), bad names are refused with a message, EINTR is retried,
// and without NOTIFY_SOCKET nothing is sent.
#include "agent/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/mocks/mock_syscalls.h"

namespace ktls::agent::testing {
namespace {

using ::testing::_;
using ::testing::NiceMock;
using ::testing::Return;

// A datagram socket bound to `name` (a path, or "@..." for an abstract name).
int BindDgram(const std::string& name) {
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, name.data(), name.size());
  if (name[0] == '@') a.sun_path[0] = '\0';
  EXPECT_EQ(0, ::bind(fd, reinterpret_cast<sockaddr*>(&a),
                      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size())));
  return fd;
}

std::string Receive(int fd) {
  char buf[512];
  const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
  return n < 0 ? std::string("<nothing>") : std::string(buf, static_cast<size_t>(n));
}

TEST(SdNotifyTest, ReachesAPathSocket) {
  char dir[] = "/tmp/ktls-sdnotify.XXXXXX";
  ASSERT_NE(nullptr, ::mkdtemp(dir));
  const std::string path = absl::StrCat(dir, "/notify");
  const int fd = BindDgram(path);
  ASSERT_TRUE(SdNotify(RealSysCalls(), path, "READY=1\nSTATUS=serving").ok());
  EXPECT_EQ("READY=1\nSTATUS=serving", Receive(fd));
  ::close(fd);
  ::unlink(path.c_str());
  ::rmdir(dir);
}

TEST(SdNotifyTest, ReachesAnAbstractSocketAndReadsTheEnvironment) {
  const std::string name = absl::StrCat("@ktls-sdnotify-test-", ::getpid());
  const int fd = BindDgram(name);
  ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
  ASSERT_TRUE(SdNotifyFromEnv(RealSysCalls(), "STOPPING=1").ok());
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_EQ("STOPPING=1", Receive(fd));
  ::close(fd);
}

TEST(SdNotifyTest, NotUnderSystemdSendsNothing) {
  NiceMock<MockSysCalls> sys;
  EXPECT_CALL(sys, Socket(_, _, _)).Times(0);
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_TRUE(SdNotifyFromEnv(sys, "READY=1").ok());
}

TEST(SdNotifyTest, BadNamesAreRefusedWithTheName) {
  const std::string too_long(200, '/');
  for (const std::string& bad : {std::string("relative/path"), std::string("@"), too_long}) {
    absl::Status s = SdNotify(RealSysCalls(), bad, "READY=1");
    EXPECT_EQ(absl::StatusCode::kInvalidArgument, s.code()) << bad;
  }
  EXPECT_NE(std::string::npos,
            SdNotify(RealSysCalls(), "relative/path", "x").message().find("relative/path"));
}

TEST(SdNotifyTest, EintrIsRetriedOtherErrorsReported) {
  const std::string name = absl::StrCat("@ktls-sdnotify-eintr-", ::getpid());
  const int fd = BindDgram(name);
  NiceMock<MockSysCalls> sys;
  EXPECT_CALL(sys, SendMsg(_, _, _))
      .WillOnce(Return(SysResult{-1, EINTR}))
      .WillOnce(
          [&sys](int f, const msghdr* m, int flags) { return sys.real().SendMsg(f, m, flags); });
  EXPECT_TRUE(SdNotify(sys, name, "READY=1").ok());
  EXPECT_EQ("READY=1", Receive(fd));

  EXPECT_CALL(sys, SendMsg(_, _, _)).WillOnce(Return(SysResult{-1, ECONNREFUSED}));
  absl::Status s = SdNotify(sys, name, "READY=1");
  EXPECT_EQ(absl::StatusCode::kUnavailable, s.code());
  EXPECT_NE(std::string::npos, s.message().find("Connection refused")) << s.message();
  ::close(fd);
}

}  // namespace
}  // namespace ktls::agent::testing
