// ktls-loadgen's pure parts: latency histogram, HTTP response parser, body checks, options, JSON.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "client/loadgen/histogram.h"
#include "client/loadgen/http_response.h"
#include "client/loadgen/options.h"
#include "client/loadgen/proc_stats.h"
#include "client/loadgen/report.h"
#include "client/loadgen/verify.h"

namespace ktls::loadgen {
namespace {

// --- histogram ---------------------------------------------------------------------------------

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  LatencyHistogram h;
  for (uint64_t v = 1; v <= 50; ++v) h.Record(v);
  EXPECT_EQ(h.count(), 50u);
  EXPECT_EQ(h.Quantile(0.5), 25u);
  EXPECT_EQ(h.Quantile(1.0), 50u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_DOUBLE_EQ(h.mean(), 25.5);
}

TEST(LatencyHistogramTest, LargeValuesWithinBucketPrecision) {
  LatencyHistogram h;
  for (uint64_t i = 1; i <= 1000; ++i) h.Record(i * 1000);  // 1 us .. 1 ms
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const double exact = q * 1000 * 1000;
    EXPECT_NEAR(static_cast<double>(h.Quantile(q)), exact, exact * 0.016) << q;
  }
  EXPECT_EQ(h.Quantile(1.0), 1000000u);  // clamped to the true max
}

TEST(LatencyHistogramTest, BucketsCoverEveryValue) {
  for (uint64_t v :
       {uint64_t{0}, uint64_t{63}, uint64_t{64}, uint64_t{65}, uint64_t{1} << 40, UINT64_MAX}) {
    const int b = LatencyHistogram::BucketOf(v);
    EXPECT_GE(LatencyHistogram::BucketUpper(b), v);
    if (b > 0) EXPECT_LT(LatencyHistogram::BucketUpper(b - 1), v);
  }
}

TEST(LatencyHistogramTest, MergeAddsCounts) {
  LatencyHistogram a, b;
  a.Record(10);
  b.Record(1000000);
  a.Merge(b);
  EXPECT_EQ(a.count(), 2u);
  EXPECT_EQ(a.max(), 1000000u);
  EXPECT_EQ(a.min(), 10u);
}

// --- response parser ---------------------------------------------------------------------------

struct Collect : BodySink {
  std::string body;
  void Body(const char* d, size_t n) override { body.append(d, n); }
};

// Feeds `in` in pieces of `step` bytes; returns the final result and how many bytes were used.
ResponseParser::Result FeedAll(ResponseParser* p, const std::string& in, size_t step, Collect* sink,
                               size_t* total_used) {
  *total_used = 0;
  ResponseParser::Result r = ResponseParser::Result::kNeedMore;
  for (size_t pos = 0; pos < in.size() && r == ResponseParser::Result::kNeedMore; pos += step) {
    size_t used = 0;
    const size_t n = std::min(step, in.size() - pos);
    r = p->Feed(in.data() + pos, n, &used, sink);
    *total_used += used;
    if (r != ResponseParser::Result::kNeedMore) break;
    EXPECT_EQ(used, n);
  }
  return r;
}

TEST(ResponseParserTest, ContentLengthInAnySplit) {
  const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello";
  for (size_t step : {size_t{1}, size_t{2}, size_t{7}, resp.size()}) {
    ResponseParser p;
    p.Reset();
    Collect c;
    size_t used = 0;
    ASSERT_EQ(FeedAll(&p, resp + "EXTRA", step, &c, &used), ResponseParser::Result::kComplete)
        << step;
    EXPECT_EQ(used, resp.size()) << step;
    EXPECT_EQ(c.body, "hello");
    EXPECT_EQ(p.status(), 200);
    EXPECT_TRUE(p.keep_alive());
  }
}

TEST(ResponseParserTest, ChunkedBodyAndTrailers) {
  const std::string resp =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
  for (size_t step : {size_t{1}, size_t{3}, resp.size()}) {
    ResponseParser p;
    p.Reset();
    Collect c;
    size_t used = 0;
    ASSERT_EQ(FeedAll(&p, resp, step, &c, &used), ResponseParser::Result::kComplete) << step;
    EXPECT_EQ(c.body, "hello world");
    EXPECT_TRUE(p.chunked());
  }
}

TEST(ResponseParserTest, ConnectionCloseAndEofDelimitedBody) {
  ResponseParser p;
  p.Reset();
  Collect c;
  size_t used = 0;
  const std::string resp = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc";
  EXPECT_EQ(p.Feed(resp.data(), resp.size(), &used, &c), ResponseParser::Result::kNeedMore);
  EXPECT_EQ(p.FeedEof(), ResponseParser::Result::kComplete);
  EXPECT_EQ(c.body, "abc");
  EXPECT_FALSE(p.keep_alive());
}

TEST(ResponseParserTest, SkipsInterimResponses) {
  ResponseParser p;
  p.Reset();
  Collect c;
  size_t used = 0;
  const std::string resp =
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  EXPECT_EQ(p.Feed(resp.data(), resp.size(), &used, &c), ResponseParser::Result::kComplete);
  EXPECT_EQ(p.status(), 200);
  EXPECT_EQ(c.body, "ok");
}

TEST(ResponseParserTest, EarlyEofIsAnError) {
  ResponseParser p;
  p.Reset();
  size_t used = 0;
  const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
  EXPECT_EQ(p.Feed(resp.data(), resp.size(), &used, nullptr), ResponseParser::Result::kNeedMore);
  EXPECT_EQ(p.FeedEof(), ResponseParser::Result::kError);
  EXPECT_NE(p.error().find("middle of the body"), std::string::npos);
}

TEST(ResponseParserTest, RejectsMalformedInput) {
  for (const std::string bad :
       {"HTTX/1.1 200 OK\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}) {
    ResponseParser p;
    p.Reset();
    size_t used = 0;
    EXPECT_EQ(p.Feed(bad.data(), bad.size(), &used, nullptr), ResponseParser::Result::kError)
        << bad;
    EXPECT_FALSE(p.error().empty());
  }
}

TEST(ResponseParserTest, HeadOver64KiBIsAnError) {
  ResponseParser p;
  p.Reset();
  std::string resp = "HTTP/1.1 200 OK\r\nX: " + std::string(70 * 1024, 'a');
  size_t used = 0;
  EXPECT_EQ(p.Feed(resp.data(), resp.size(), &used, nullptr), ResponseParser::Result::kError);
}

// --- body checks -------------------------------------------------------------------------------

TEST(BodyCheckTest, PatternAcceptsTheRightBytesInAnySplit) {
  const std::string body = PatternString(200000);
  auto check = MakePatternCheck(body.size());
  check->Reset();
  for (size_t pos = 0; pos < body.size(); pos += 777) {
    check->Body(body.data() + pos, std::min<size_t>(777, body.size() - pos));
  }
  ErrorKind kind;
  std::string why;
  EXPECT_TRUE(check->Finish(body.size(), &kind, &why)) << why;
}

TEST(BodyCheckTest, PatternCatchesOneCorruptedByte) {
  std::string body = PatternString(100000);
  body[65537] ^= 0x20;
  auto check = MakePatternCheck(body.size());
  check->Reset();
  check->Body(body.data(), body.size());
  ErrorKind kind;
  std::string why;
  ASSERT_FALSE(check->Finish(body.size(), &kind, &why));
  EXPECT_EQ(kind, ErrorKind::kBody);
  EXPECT_NE(why.find("offset 65537"), std::string::npos) << why;
  // Reset makes the check reusable for the next response.
  check->Reset();
  const std::string good = PatternString(100000);
  check->Body(good.data(), good.size());
  EXPECT_TRUE(check->Finish(good.size(), &kind, &why));
}

TEST(BodyCheckTest, PatternCatchesWrongLength) {
  const std::string body = PatternString(10);
  auto check = MakePatternCheck(11);
  check->Reset();
  check->Body(body.data(), body.size());
  ErrorKind kind;
  std::string why;
  ASSERT_FALSE(check->Finish(body.size(), &kind, &why));
  EXPECT_EQ(kind, ErrorKind::kLength);
}

TEST(BodyCheckTest, Sha256CatchesCorruptionAndAcceptsTheFile) {
  const std::string content = "static file contents\n";
  EXPECT_FALSE(ParseSha256Hex("abc").ok());
  char path[] = "/tmp/loadgen_sha_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  close(fd);
  absl::StatusOr<FileDigest> d = DigestFile(path);
  unlink(path);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->size, content.size());
  EXPECT_EQ(ParseSha256Hex(Sha256Hex(d->sha256)).value(), d->sha256);

  auto check = MakeSha256Check(d->size, d->sha256);
  ErrorKind kind;
  std::string why;
  check->Reset();
  check->Body(content.data(), 5);
  check->Body(content.data() + 5, content.size() - 5);
  EXPECT_TRUE(check->Finish(content.size(), &kind, &why)) << why;
  std::string bad = content;
  bad[3] = 'X';
  check->Reset();
  check->Body(bad.data(), bad.size());
  ASSERT_FALSE(check->Finish(bad.size(), &kind, &why));
  EXPECT_EQ(kind, ErrorKind::kHash);
}

TEST(BodyCheckTest, ExactCatchesDifferences) {
  auto check = MakeExactCheck("16777216\n");
  ErrorKind kind;
  std::string why;
  check->Reset();
  check->Body("16777216\n", 9);
  EXPECT_TRUE(check->Finish(9, &kind, &why));
  check->Reset();
  check->Body("16777215\n", 9);
  ASSERT_FALSE(check->Finish(9, &kind, &why));
  EXPECT_EQ(kind, ErrorKind::kBody);
}

// --- options -----------------------------------------------------------------------------------

absl::StatusOr<Options> Parse(std::vector<std::string> args) {
  std::vector<const char*> argv = {"ktls-loadgen"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  return ParseOptions(static_cast<int>(argv.size()), argv.data());
}

TEST(LoadgenOptionsTest, DefaultsAndTarget) {
  absl::StatusOr<Options> o = Parse({"--target=127.0.0.1:8443"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->tls);
  EXPECT_EQ(o->port, 8443);
  EXPECT_EQ(o->scenario, Scenario::kGet);
  EXPECT_EQ(o->connections, 1);
  EXPECT_EQ(RequestPath(*o), "/bytes/0");
  o = Parse({"--target=http://[::1]:80/", "--scenario=bulk-up"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->tls);
  EXPECT_EQ(o->host, "::1");
  EXPECT_EQ(o->size, kMaxPostBytes);
  EXPECT_EQ(RequestPath(*o), "/discard");
}

TEST(LoadgenOptionsTest, BoundsAreEnforced) {
  EXPECT_TRUE(Parse({"--target=h:1", "--connections=10000"}).ok());
  EXPECT_FALSE(Parse({"--target=h:1", "--connections=10001"}).ok());
  EXPECT_FALSE(Parse({"--target=h:1", "--connections=0"}).ok());
  EXPECT_FALSE(Parse({"--target=h:1", "--connections=4", "--threads=5"}).ok());
  EXPECT_FALSE(Parse({"--target=h:1", "--threads=65", "--connections=100"}).ok());
  EXPECT_FALSE(Parse({"--target=h:1", "--duration=0"}).ok());
  EXPECT_FALSE(Parse({"--target=h:1", "--duration=3601s"}).ok());
  EXPECT_TRUE(Parse({"--target=h:1", "--duration=250ms", "--warmup=0"}).ok());
  EXPECT_FALSE(Parse({"--target=h:1", "--size=2G"}).ok());
  EXPECT_FALSE(Parse({"--target=h:1", "--scenario=post", "--size=17M"}).ok());
  EXPECT_TRUE(Parse({"--target=h:1", "--scenario=post", "--size=16M"}).ok());
  EXPECT_FALSE(Parse({"--target=h:1", "--resume"}).ok());  // only with close
  EXPECT_TRUE(Parse({"--target=h:1", "--scenario=close", "--resume"}).ok());
  EXPECT_FALSE(Parse({"--target=h:0"}).ok());
  EXPECT_FALSE(Parse({"--target=ftp://h:1"}).ok());
  EXPECT_FALSE(Parse({}).ok());
  EXPECT_FALSE(Parse({"--target=h:1", "--bogus=1"}).ok());
}

TEST(LoadgenOptionsTest, StaticNeedsAnExpectedDigest) {
  EXPECT_FALSE(Parse({"--target=h:1", "--scenario=static"}).ok());
  EXPECT_FALSE(Parse({"--target=h:1", "--scenario=static", "--static_name=a.bin"}).ok());
  EXPECT_FALSE(
      Parse({"--target=h:1", "--scenario=static", "--static_name=../x", "--static_file=/x"}).ok());
  EXPECT_TRUE(
      Parse({"--target=h:1", "--scenario=static", "--static_name=a.bin", "--static_file=/x"}).ok());
  EXPECT_FALSE(
      Parse({"--target=h:1", "--scenario=static", "--static_name=a.bin", "--static_size=5"}).ok());
}

// --- JSON report -------------------------------------------------------------------------------

// The harness (tests/bench/) and anyone scripting against --json rely on these keys, in this
// order. Adding a key at the end is fine; renaming or removing one is a schema change.
TEST(LoadgenReportTest, JsonSchemaIsStable) {
  Options o = Parse({"--target=127.0.0.1:8443", "--scenario=close", "--resume"}).value();
  Results r;
  r.measured_s = 2;
  r.requests = 10;
  r.latency.Record(1000);
  r.errors[static_cast<int>(ErrorKind::kHash)] = 1;
  const std::string j = FormatJson(o, r);
  std::vector<std::string> keys;
  for (size_t pos = 0; (pos = j.find("\":", pos)) != std::string::npos; ++pos) {
    const size_t start = j.rfind('"', pos - 1);
    keys.push_back(j.substr(start + 1, pos - start - 1));
  }
  const std::vector<std::string> expected = {"schema",
                                             "label",
                                             "scenario",
                                             "target",
                                             "path",
                                             "tls",
                                             "tls_version",
                                             "cipher",
                                             "resume",
                                             "size",
                                             "connections",
                                             "threads",
                                             "warmup_s",
                                             "duration_s",
                                             "requests",
                                             "requests_per_s",
                                             "body_bytes_in",
                                             "body_bytes_out",
                                             "mib_per_s_in",
                                             "mib_per_s_out",
                                             "handshakes",
                                             "handshakes_per_s",
                                             "resumed",
                                             "latency_us",
                                             "mean",
                                             "p50",
                                             "p90",
                                             "p99",
                                             "p999",
                                             "max",
                                             "errors",
                                             "total",
                                             "connect",
                                             "handshake",
                                             "tls",
                                             "io",
                                             "timeout",
                                             "closed_early",
                                             "http_parse",
                                             "http_status",
                                             "length",
                                             "body",
                                             "hash",
                                             "warmup_errors",
                                             "first_error",
                                             "cpu",
                                             "user_s",
                                             "system_s",
                                             "per_request_us",
                                             "watched_cpu_s",
                                             "tls_stat"};
  EXPECT_EQ(keys, expected) << j;
  EXPECT_NE(j.find("\"schema\":\"ktls-loadgen/1\""), std::string::npos);
  EXPECT_NE(j.find("\"requests_per_s\":5,"), std::string::npos) << j;
  EXPECT_NE(j.find("\"total\":1,"), std::string::npos) << j;
  EXPECT_EQ(j.back(), '\n');
  r.tls_stat["TlsTxSw"] = 3;
  EXPECT_NE(FormatJson(o, r).find("\"tls_stat\":{\"TlsTxSw\":3}}"), std::string::npos);
}

// --- /proc sampling ----------------------------------------------------------------------------

TEST(ProcStatsTest, CountsTheCpuOfAProcessTreeIncludingChildren) {
  const double before = ProcessTreeCpuSeconds({getpid()});
  int ready[2];
  ASSERT_EQ(0, pipe(ready));
  const pid_t child = fork();
  if (child == 0) {
    // Spin until this process has used 150 ms of CPU (not wall time: on a loaded machine the
    // scheduler decides how much CPU 300 ms of wall time is), then report and stay alive.
    volatile uint64_t x = 0;
    timespec cpu{};
    do {
      for (int i = 0; i < 100000; ++i) x = x + 1;
      clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    } while (cpu.tv_sec == 0 && cpu.tv_nsec < 150 * 1000 * 1000);
    char c = 1;
    (void)!write(ready[1], &c, 1);
    pause();  // stay alive (and counted) until killed
    _exit(0);
  }
  close(ready[1]);
  char c;
  ASSERT_EQ(1, read(ready[0], &c, 1));
  close(ready[0]);
  const double tree = ProcessTreeCpuSeconds({getpid()});
  const double only_child = ProcessTreeCpuSeconds({child});
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_GT(only_child, 0.1);  // it used 150 ms of CPU; ticks are 10 ms
  EXPECT_GE(tree - before, only_child - 0.02);
  EXPECT_EQ(ProcessTreeCpuSeconds({}), 0);
}

}  // namespace
}  // namespace ktls::loadgen
