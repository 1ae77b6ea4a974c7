#include "agent/listener.h"

#include <netinet/in.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/mocks/mock_syscalls.h"

namespace ktls::agent {
namespace {

using ::testing::_;
using ::testing::NiceMock;
using ::testing::Return;

TEST(ListenerTest, ParsesIpv4AndIpv6HostPorts) {
  auto v4 = ParseHostPort("a", "127.0.0.1:8443");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(AF_INET, v4->addr.ss_family);
  EXPECT_EQ("127.0.0.1:8443", v4->ToString());
  auto v6 = ParseHostPort("b", "[::1]:443");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(AF_INET6, v6->addr.ss_family);
  EXPECT_EQ("[::1]:443", v6->ToString());
}

TEST(ListenerTest, RejectsBadAddressesWithTheReason) {
  EXPECT_NE(std::string::npos,
            ParseHostPort("x", "localhost:80").status().message().find("not a numeric"));
  EXPECT_NE(std::string::npos, ParseHostPort("x", "127.0.0.1").status().message().find("port"));
  EXPECT_FALSE(ParseHostPort("x", "[::1:80").ok());
  EXPECT_FALSE(ParseHostPort("x", "127.0.0.1:http").ok());
  EXPECT_FALSE(ParseListenAddress("x", "127.0.0.1", 70000).ok());
}

TEST(ListenerTest, OpensReusePortSocketsOnBothFamilies) {
  SysCalls& sys = RealSysCalls();
  auto v4 = ParseListenAddress("v4", "127.0.0.1", 0);
  auto fd = OpenListenSocket(sys, *v4, 16);
  ASSERT_TRUE(fd.ok()) << fd.status();
  const uint16_t port = BoundPort(sys, fd->get());
  ASSERT_NE(0, port);
  // A second socket joins the same port (one per worker).
  auto same = ParseListenAddress("v4", "127.0.0.1", port);
  auto fd2 = OpenListenSocket(sys, *same, 16);
  EXPECT_TRUE(fd2.ok()) << fd2.status();
  // IPv6 loopback, where the machine has it (some containers disable IPv6).
  auto v6 = ParseListenAddress("v6", "::1", port);
  auto fd6 = OpenListenSocket(sys, *v6, 16);
  if (fd6.ok()) {
    EXPECT_EQ(port, BoundPort(sys, fd6->get())) << "IPV6_V6ONLY lets v4 and v6 share the port";
  } else {
    EXPECT_NE(std::string::npos, fd6.status().message().find("[::1]")) << fd6.status();
  }
}

TEST(ListenerTest, BindFailureNamesTheAddress) {
  NiceMock<testing::MockSysCalls> sys;
  EXPECT_CALL(sys, Bind(_, _, _)).WillOnce(Return(SysResult{-1, EADDRINUSE}));
  auto addr = ParseListenAddress("x", "127.0.0.1", 8443);
  auto fd = OpenListenSocket(sys, *addr, 16);
  ASSERT_FALSE(fd.ok());
  EXPECT_NE(std::string::npos, fd.status().message().find("127.0.0.1:8443"));
  EXPECT_NE(std::string::npos, fd.status().message().find("in use"));
}

}  // namespace
}  // namespace ktls::agent
