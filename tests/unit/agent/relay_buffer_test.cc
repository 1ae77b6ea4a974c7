// RelayBuffer (agent/relay.h): the relay's bounded byte queue. Allocated on first write only
// (a connection that never sends in one direction costs no buffer memory for it), FIFO across
// compaction, and never more than its capacity.
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "agent/relay.h"

namespace ktls::agent::testing {
namespace {

std::string Take(RelayBuffer& b, size_t n) {
  std::string out(b.head(), n);
  b.Consumed(n);
  return out;
}

void Put(RelayBuffer& b, const std::string& s) {
  size_t len = 0;
  char* p = b.tail(&len);
  ASSERT_GE(len, s.size());
  std::memcpy(p, s.data(), s.size());
  b.Produced(s.size());
}

TEST(RelayBufferTest, NoMemoryUntilFirstWrite) {
  RelayBuffer b(64);
  EXPECT_FALSE(b.allocated());
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(64u, b.space());
  size_t len = 0;
  b.tail(&len);
  EXPECT_TRUE(b.allocated());
  EXPECT_EQ(64u, len);
}

TEST(RelayBufferTest, FifoAcrossCompactionAndBounded) {
  RelayBuffer b(8);
  Put(b, "abcdef");
  EXPECT_EQ("abcd", Take(b, 4));
  EXPECT_EQ(6u, b.space());  // "ef" held: 2 free at the tail + 4 consumed at the head
  Put(b, "gh");
  size_t len = 0;
  b.tail(&len);  // full at the tail: compacts "efgh" to the front
  EXPECT_EQ(4u, len);
  Put(b, "ijkl");
  EXPECT_EQ(0u, b.space());
  b.tail(&len);
  EXPECT_EQ(0u, len);  // never past the capacity
  EXPECT_EQ("efghijkl", Take(b, 8));
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(8u, b.space());
}

}  // namespace
}  // namespace ktls::agent::testing
