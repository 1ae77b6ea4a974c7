#include "ktls/wire.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ktls/v1/handoff.pb.h"

namespace ktls::wire {
namespace {

struct Pair {
  int fd[2] = {-1, -1};
  Pair() { EXPECT_EQ(0, socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fd)); }
  ~Pair() {
    close(fd[0]);
    close(fd[1]);
  }
};

// Sends `payload` with `nfds` descriptors (copies of stdin's /dev/null) in one SCM_RIGHTS.
void SendWithFds(int sock, const std::string& payload, int nfds) {
  std::vector<int> fds;
  for (int i = 0; i < nfds; ++i) fds.push_back(open("/dev/null", O_RDONLY | O_CLOEXEC));
  iovec iov{const_cast<char*>(payload.data()), payload.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ControlBuffer control;
  if (nfds > 0) {
    msg.msg_control = control.bytes;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * nfds);
  }
  ASSERT_EQ(static_cast<ssize_t>(payload.size()), sendmsg(sock, &msg, 0));
  for (int fd : fds) close(fd);
}

// Receives one datagram into a control buffer of `control_len` bytes.
absl::Status Receive(int sock, size_t control_len, std::string* payload, std::vector<int>* fds) {
  payload->assign(kMaxMessageBytes, '\0');
  iovec iov{payload->data(), payload->size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ControlBuffer control;
  msg.msg_control = control.bytes;
  msg.msg_controllen = control_len;
  ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  EXPECT_GE(n, 0);
  payload->resize(n < 0 ? 0 : n);
  return ExtractFds(msg, fds);
}

TEST(WireTest, RoundTripsAHandoff) {
  v1::AgentToApp out;
  auto* c = out.mutable_handoff()->mutable_connection();
  c->set_connection_id(42);
  c->set_sni("example.com");
  c->set_data_path(v1::DATA_PATH_KTLS);
  c->set_initial_data(std::string("GET / HTTP/1.1\r\n\r\n"));
  absl::StatusOr<std::string> bytes = Serialize(out);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  v1::AgentToApp in;
  ASSERT_TRUE(Parse(*bytes, &in).ok());
  EXPECT_EQ(42u, in.handoff().connection().connection_id());
  EXPECT_EQ("example.com", in.handoff().connection().sni());
  EXPECT_EQ(v1::DATA_PATH_KTLS, in.handoff().connection().data_path());
}

TEST(WireTest, RejectsOversizeMessages) {
  v1::AgentToApp out;
  out.mutable_handoff()->mutable_connection()->set_initial_data(std::string(kMaxMessageBytes, 'x'));
  EXPECT_EQ(absl::StatusCode::kResourceExhausted, Serialize(out).status().code());
  v1::AgentToApp in;
  EXPECT_FALSE(Parse(std::string(kMaxMessageBytes + 1, 'x'), &in).ok());
}

TEST(WireTest, RejectsEmptyAndGarbage) {
  v1::AppToAgent in;
  EXPECT_FALSE(Parse("", &in).ok());
  EXPECT_FALSE(Parse(std::string("\xff\xff\xff\xff\xff", 5), &in).ok());
}

TEST(WireTest, OutgoingMessageCarriesExactlyOneFd) {
  Pair p;
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::string payload = "hello";
  OutgoingMessage out(payload, devnull);
  ASSERT_EQ(5, sendmsg(p.fd[0], out.header(), 0));
  close(devnull);
  std::string got;
  std::vector<int> fds;
  ASSERT_TRUE(Receive(p.fd[1], sizeof(ControlBuffer), &got, &fds).ok());
  EXPECT_EQ("hello", got);
  ASSERT_EQ(1u, fds.size());
  EXPECT_GE(fcntl(fds[0], F_GETFD), 0);
  close(fds[0]);
}

TEST(WireTest, ExtractFdsReportsEveryFdOfAMessageWithTwo) {
  Pair p;
  SendWithFds(p.fd[0], "x", 2);
  std::string got;
  std::vector<int> fds;
  ASSERT_TRUE(Receive(p.fd[1], sizeof(ControlBuffer), &got, &fds).ok());
  // Both are reported so that the caller, which expects one, can reject and close both.
  EXPECT_EQ(2u, fds.size());
  for (int fd : fds) close(fd);
}

TEST(WireTest, TruncatedControlDataIsAnError) {
  Pair p;
  SendWithFds(p.fd[0], "x", 3);
  std::string got;
  std::vector<int> fds;
  absl::Status s = Receive(p.fd[1], CMSG_SPACE(sizeof(int)), &got, &fds);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string::npos, s.message().find("MSG_CTRUNC"));
  for (int fd : fds) close(fd);
}

TEST(WireTest, ControlLengthBeyondTheBufferIsRejectedNotRead) {
  // Found by tests/fuzz: a cmsg_len larger than the control buffer made ExtractFds read past it.
  ControlBuffer control{};
  msghdr msg{};
  msg.msg_control = control.bytes;
  msg.msg_controllen = CMSG_SPACE(sizeof(int));
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * 1000);
  std::vector<int> fds;
  absl::Status s = ExtractFds(msg, &fds);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(fds.empty());
}

}  // namespace
}  // namespace ktls::wire
