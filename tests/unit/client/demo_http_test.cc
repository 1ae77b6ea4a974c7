// ktls-demo-app's HTTP request-head parser and JSON string encoding.
//
// The demo app is an executable, not a library, and tests/CMakeLists.txt links ktls_unit_tests
// against ktls_agent and ktls_client only; its one pure source file is compiled in here instead.
#include "client/demo_app/http.cc"  // NOLINT(build/include): see above

#include <gtest/gtest.h>

namespace ktls::demo {
namespace {

TEST(ParseRequestHeadTest, IncompleteUntilTheBlankLine) {
  EXPECT_EQ(ParseStatus::kIncomplete, ParseRequestHead("GET / HTTP/1.1\r\nHost: a\r\n").status);
  EXPECT_EQ(ParseStatus::kIncomplete, ParseRequestHead("").status);
}

TEST(ParseRequestHeadTest, ParsesAPipelinedRequestAndStopsAtItsEnd) {
  const std::string in =
      "POST /echo?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n";
  ParseResult r = ParseRequestHead(in);
  ASSERT_EQ(ParseStatus::kComplete, r.status);
  EXPECT_EQ("POST", r.request.method);
  EXPECT_EQ("/echo?x=1", r.request.target);
  EXPECT_EQ("/echo", r.request.path);
  EXPECT_EQ(5u, r.request.content_length);
  EXPECT_TRUE(r.request.keep_alive);
  EXPECT_EQ("hello", in.substr(r.request.head_bytes, 5));
  ParseResult next = ParseRequestHead(std::string_view(in).substr(r.request.head_bytes + 5));
  ASSERT_EQ(ParseStatus::kComplete, next.status);
  EXPECT_EQ("GET", next.request.method);
}

TEST(ParseRequestHeadTest, KeepAliveRules) {
  EXPECT_FALSE(ParseRequestHead("GET / HTTP/1.0\r\n\r\n").request.keep_alive);
  EXPECT_TRUE(
      ParseRequestHead("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").request.keep_alive);
  EXPECT_FALSE(
      ParseRequestHead("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").request.keep_alive);
}

TEST(ParseRequestHeadTest, ExpectContinue) {
  ParseResult r =
      ParseRequestHead("POST /echo HTTP/1.1\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n");
  ASSERT_EQ(ParseStatus::kComplete, r.status);
  EXPECT_TRUE(r.request.expect_continue);
  EXPECT_EQ(417, ParseRequestHead("GET / HTTP/1.1\r\nExpect: magic\r\n\r\n").error_status);
}

TEST(ParseRequestHeadTest, RefusesWhatItDoesNotServe) {
  EXPECT_EQ(
      411,
      ParseRequestHead("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").error_status);
  EXPECT_EQ(
      501, ParseRequestHead("POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").error_status);
  EXPECT_EQ(
      413,
      ParseRequestHead("POST /echo HTTP/1.1\r\nContent-Length: 16777217\r\n\r\n").error_status);
  EXPECT_EQ(ParseStatus::kComplete,
            ParseRequestHead("POST /echo HTTP/1.1\r\nContent-Length: 16777216\r\n\r\n").status);
  EXPECT_EQ(505, ParseRequestHead("GET / HTTP/2.0\r\n\r\n").error_status);
  EXPECT_EQ(431, ParseRequestHead("GET / HTTP/1.1\r\nX: " + std::string(70000, 'a')).error_status);
}

TEST(ParseRequestHeadTest, RejectsMalformedHeads) {
  for (const char* bad : {
           "GARBAGE\r\n\r\n",
           "GET  / HTTP/1.1\r\n\r\n",
           "GET / HTTP/1.1 extra\r\n\r\n",
           "GET / FTP/1.1\r\n\r\n",
           "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
           "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
           "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
       }) {
    ParseResult r = ParseRequestHead(bad);
    EXPECT_EQ(ParseStatus::kError, r.status) << bad;
    EXPECT_EQ(400, r.error_status) << bad;
  }
  // Repeating the same length is allowed (RFC 9110 8.6).
  EXPECT_EQ(
      ParseStatus::kComplete,
      ParseRequestHead("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n").status);
}

TEST(ResponseHeadTest, Shape) {
  EXPECT_EQ(
      "HTTP/1.1 404 Not Found\r\nServer: ktls-demo-app\r\nContent-Length: 10\r\n"
      "Content-Type: text/plain\r\nConnection: close\r\n\r\n",
      ResponseHead(404, "text/plain", 10, false));
}

}  // namespace
}  // namespace ktls::demo
