#include "base/file_name.h"

#include <string>

#include "gtest/gtest.h"

namespace ktls::base {
namespace {

TEST(FileNameTest, OnlyOnePlainPathComponent) {
  EXPECT_TRUE(IsSafeFileName("index.html"));
  EXPECT_TRUE(IsSafeFileName("a-b_c.1"));
  EXPECT_TRUE(IsSafeFileName(std::string(255, 'x')));
  EXPECT_FALSE(IsSafeFileName(std::string(256, 'x')));
  EXPECT_FALSE(IsSafeFileName(""));
  EXPECT_FALSE(IsSafeFileName(".."));
  EXPECT_FALSE(IsSafeFileName(".hidden"));
  EXPECT_FALSE(IsSafeFileName("a/b"));
  EXPECT_FALSE(IsSafeFileName("a b"));
  EXPECT_FALSE(IsSafeFileName(std::string("a\0b", 3)));
  EXPECT_FALSE(IsSafeFileName("caf\xc3\xa9"));
}

}  // namespace
}  // namespace ktls::base
