// A SysCalls whose every method is a gmock mock that, by default, forwards to the real kernel
// (folly's forwardToDefaultImpl idea): a test overrides only the call it wants to fail, e.g.
//   EXPECT_CALL(sys, SetSockOpt(_, SOL_TLS, TLS_RX, _, _))
//       .WillOnce(Return(SysResult{-1, ENOPROTOOPT}));
#ifndef KTLS_TESTS_MOCKS_MOCK_SYSCALLS_H_
#define KTLS_TESTS_MOCKS_MOCK_SYSCALLS_H_

#include <gmock/gmock.h>

#include "agent/syscalls.h"

namespace ktls::agent::testing {

class MockSysCalls : public SysCalls {
 public:
  MockSysCalls() : real_(RealSysCalls()) {
    using ::testing::_;
    using ::testing::Invoke;
    ON_CALL(*this, Socket).WillByDefault(Invoke(&real_, &SysCalls::Socket));
    ON_CALL(*this, SocketPair).WillByDefault(Invoke(&real_, &SysCalls::SocketPair));
    ON_CALL(*this, Bind).WillByDefault(Invoke(&real_, &SysCalls::Bind));
    ON_CALL(*this, Listen).WillByDefault(Invoke(&real_, &SysCalls::Listen));
    ON_CALL(*this, Accept4).WillByDefault(Invoke(&real_, &SysCalls::Accept4));
    ON_CALL(*this, Connect).WillByDefault(Invoke(&real_, &SysCalls::Connect));
    ON_CALL(*this, Close).WillByDefault(Invoke(&real_, &SysCalls::Close));
    ON_CALL(*this, Shutdown).WillByDefault(Invoke(&real_, &SysCalls::Shutdown));
    ON_CALL(*this, Read).WillByDefault(Invoke(&real_, &SysCalls::Read));
    ON_CALL(*this, Write).WillByDefault(Invoke(&real_, &SysCalls::Write));
    ON_CALL(*this, RecvMsg).WillByDefault(Invoke(&real_, &SysCalls::RecvMsg));
    ON_CALL(*this, SendMsg).WillByDefault(Invoke(&real_, &SysCalls::SendMsg));
    ON_CALL(*this, SetSockOpt).WillByDefault(Invoke(&real_, &SysCalls::SetSockOpt));
    ON_CALL(*this, GetSockOpt).WillByDefault(Invoke(&real_, &SysCalls::GetSockOpt));
    ON_CALL(*this, GetSockName).WillByDefault(Invoke(&real_, &SysCalls::GetSockName));
    ON_CALL(*this, GetPeerName).WillByDefault(Invoke(&real_, &SysCalls::GetPeerName));
    ON_CALL(*this, EpollCreate1).WillByDefault(Invoke(&real_, &SysCalls::EpollCreate1));
    ON_CALL(*this, EpollCtl).WillByDefault(Invoke(&real_, &SysCalls::EpollCtl));
    ON_CALL(*this, EpollWait).WillByDefault(Invoke(&real_, &SysCalls::EpollWait));
    ON_CALL(*this, EventFd).WillByDefault(Invoke(&real_, &SysCalls::EventFd));
    ON_CALL(*this, Unlink).WillByDefault(Invoke(&real_, &SysCalls::Unlink));
    ON_CALL(*this, Chmod).WillByDefault(Invoke(&real_, &SysCalls::Chmod));
    ON_CALL(*this, Chown).WillByDefault(Invoke(&real_, &SysCalls::Chown));
    ON_CALL(*this, Open).WillByDefault(Invoke(&real_, &SysCalls::Open));
    ON_CALL(*this, Flock).WillByDefault(Invoke(&real_, &SysCalls::Flock));
  }

  MOCK_METHOD(SysResult, Socket, (int, int, int), (override));
  MOCK_METHOD(SysResult, SocketPair, (int, int, int, int*), (override));
  MOCK_METHOD(SysResult, Bind, (int, const sockaddr*, socklen_t), (override));
  MOCK_METHOD(SysResult, Listen, (int, int), (override));
  MOCK_METHOD(SysResult, Accept4, (int, sockaddr*, socklen_t*, int), (override));
  MOCK_METHOD(SysResult, Connect, (int, const sockaddr*, socklen_t), (override));
  MOCK_METHOD(SysResult, Close, (int), (override));
  MOCK_METHOD(SysResult, Shutdown, (int, int), (override));
  MOCK_METHOD(SysResult, Read, (int, void*, size_t), (override));
  MOCK_METHOD(SysResult, Write, (int, const void*, size_t), (override));
  MOCK_METHOD(SysResult, RecvMsg, (int, msghdr*, int), (override));
  MOCK_METHOD(SysResult, SendMsg, (int, const msghdr*, int), (override));
  MOCK_METHOD(SysResult, SetSockOpt, (int, int, int, const void*, socklen_t), (override));
  MOCK_METHOD(SysResult, GetSockOpt, (int, int, int, void*, socklen_t*), (override));
  MOCK_METHOD(SysResult, GetSockName, (int, sockaddr*, socklen_t*), (override));
  MOCK_METHOD(SysResult, GetPeerName, (int, sockaddr*, socklen_t*), (override));
  MOCK_METHOD(SysResult, EpollCreate1, (int), (override));
  MOCK_METHOD(SysResult, EpollCtl, (int, int, int, epoll_event*), (override));
  MOCK_METHOD(SysResult, EpollWait, (int, epoll_event*, int, int), (override));
  MOCK_METHOD(SysResult, EventFd, (unsigned int, int), (override));
  MOCK_METHOD(SysResult, Unlink, (const char*), (override));
  MOCK_METHOD(SysResult, Chmod, (const char*, unsigned int), (override));
  MOCK_METHOD(SysResult, Chown, (const char*, uid_t, gid_t), (override));
  MOCK_METHOD(SysResult, Open, (const char*, int, unsigned int), (override));
  MOCK_METHOD(SysResult, Flock, (int, int), (override));

  SysCalls& real() { return real_; }

 private:
  SysCalls& real_;
};

}  // namespace ktls::agent::testing

#endif  // KTLS_TESTS_MOCKS_MOCK_SYSCALLS_H_
