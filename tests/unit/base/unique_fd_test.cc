#include "base/unique_fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include "gtest/gtest.h"

namespace ktls::base {
namespace {

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

class RecordingCloser : public FdCloser {
 public:
  void CloseFd(int fd) override {
    closed.push_back(fd);
    ::close(fd);
  }
  std::vector<int> closed;
};

TEST(UniqueFdTest, ClosesWithCloseByDefault) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  {
    UniqueFd a(fds[0]);
    UniqueFd b(fds[1]);
    UniqueFd moved = std::move(a);
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(moved.get(), fds[0]);
    const int raw = b.release();
    EXPECT_EQ(raw, fds[1]);
    EXPECT_FALSE(b);
  }
  EXPECT_FALSE(IsOpen(fds[0]));
  EXPECT_TRUE(IsOpen(fds[1]));  // released
  ::close(fds[1]);
}

TEST(UniqueFdTest, ClosesThroughTheInjectedCloserAndKeepsItAcrossMovesAndResets) {
  RecordingCloser closer;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  int more[2];
  ASSERT_EQ(::pipe(more), 0);
  {
    UniqueFd a(closer, fds[0]);
    UniqueFd b;
    b = std::move(a);
    b.reset(more[0]);  // closes fds[0] through the closer; more[0] keeps the closer
    EXPECT_EQ(closer.closed, std::vector<int>({fds[0]}));
    UniqueFd plain(fds[1]);
  }
  EXPECT_EQ(closer.closed, std::vector<int>({fds[0], more[0]}));
  EXPECT_FALSE(IsOpen(fds[1]));
  ::close(more[1]);
}

}  // namespace
}  // namespace ktls::base
