#include "base/file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

namespace ktls::base {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "ktls_base_file_" + std::to_string(::getpid()) + "_" + name;
}

std::string Write(const std::string& name, const std::string& contents) {
  const std::string path = TempPath(name);
  FILE* f = std::fopen(path.c_str(), "wb");
  EXPECT_NE(f, nullptr);
  if (f == nullptr) return path;
  std::fwrite(contents.data(), 1, contents.size(), f);
  std::fclose(f);
  return path;
}

TEST(BaseFileTest, ReadsAWholeFile) {
  const std::string path = Write("whole", "hello\nworld\n");
  absl::StatusOr<std::string> bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ("hello\nworld\n", *bytes);
  ::unlink(path.c_str());
}

TEST(BaseFileTest, ErrorsNameThePathTheRoleAndTheErrno) {
  const std::string missing = TempPath("missing");
  absl::StatusOr<std::string> plain = ReadFile(missing);
  EXPECT_EQ(absl::StatusCode::kNotFound, plain.status().code());
  EXPECT_EQ("cannot read " + missing + ": No such file or directory", plain.status().message());

  ReadFileOptions options;
  options.what = "key file";
  absl::StatusOr<std::string> named = ReadFile(missing, options);
  EXPECT_EQ("cannot read key file " + missing + ": No such file or directory",
            named.status().message());

  absl::StatusOr<std::string> dir = ReadFile(::testing::TempDir(), options);
  EXPECT_EQ(absl::StatusCode::kFailedPrecondition, dir.status().code());
  EXPECT_NE(std::string(dir.status().message()).find("Is a directory"), std::string::npos);
}

TEST(BaseFileTest, TheBoundHoldsForFilesWithAndWithoutASize) {
  const std::string path = Write("bound", std::string(101, 'x'));
  EXPECT_FALSE(ReadFile(path, 100).ok());
  EXPECT_EQ(path + " is larger than 100 bytes", ReadFile(path, 100).status().message());
  EXPECT_TRUE(ReadFile(path, 101).ok());
  ::unlink(path.c_str());

  // /proc files report size 0: read until EOF.
  absl::StatusOr<std::string> status = ReadFile("/proc/self/status");
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_NE(status->find("Name:"), std::string::npos);
}

// A pipe has no size: the buffer grows (past its first 16 KiB) up to the bound.
TEST(BaseFileTest, APipeIsReadThroughGrowingBuffersUpToTheBound) {
  std::signal(SIGPIPE, SIG_IGN);
  const std::string fifo = TempPath("fifo");
  ASSERT_EQ(0, ::mkfifo(fifo.c_str(), 0600));
  const std::string payload(40000, 'p');
  std::thread writer([&] {
    const int fd = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    size_t done = 0;
    while (done < payload.size()) {
      const ssize_t n = ::write(fd, payload.data() + done, payload.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    ::close(fd);
  });
  ReadFileOptions options;
  options.secret = true;
  absl::StatusOr<std::string> bytes = ReadFile(fifo, options);
  writer.join();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(payload, *bytes);
  ::unlink(fifo.c_str());
}

TEST(BaseFileTest, WipeStringZeroesAndEmpties) {
  std::string s = "secret bytes";
  const char* data = s.data();
  const size_t capacity = s.capacity();
  WipeString(s);
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(data, s.data()) << "the buffer moved: the old one was not wiped";
  for (size_t i = 0; i < capacity; ++i) EXPECT_EQ('\0', data[i]) << i;
}

}  // namespace
}  // namespace ktls::base
