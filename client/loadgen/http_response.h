// Incremental HTTP/1.1 response parser for ktls-loadgen: status line, headers, then the body by
// Content-Length, chunked transfer coding, or until EOF. Body bytes go to a BodySink as they
// arrive (nothing is buffered but the head). Pure: no I/O.
#ifndef KTLS_CLIENT_LOADGEN_HTTP_RESPONSE_H_
#define KTLS_CLIENT_LOADGEN_HTTP_RESPONSE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ktls::loadgen {

class BodySink {
 public:
  virtual ~BodySink() = default;
  virtual void Body(const char* data, size_t len) = 0;
};

inline constexpr size_t kMaxResponseHeadBytes = 64 * 1024;

class ResponseParser {
 public:
  enum class Result { kNeedMore, kComplete, kError };

  // Starts a new response. `head_request`: the request was HEAD (no body whatever the headers say).
  void Reset(bool head_request = false);

  // Consumes bytes of this response from `data`; `*used` says how many (fewer than `len` only
  // when the response completed or failed). Interim 1xx responses are skipped.
  Result Feed(const char* data, size_t len, size_t* used, BodySink* sink);
  // The connection reached EOF: completes a response delimited by EOF, else kError.
  Result FeedEof();

  int status() const { return status_; }
  // False when the server said Connection: close (or HTTP/1.0 without keep-alive), or the body
  // was delimited by EOF.
  bool keep_alive() const { return keep_alive_; }
  bool chunked() const { return chunked_; }
  bool has_content_length() const { return has_length_; }
  uint64_t content_length() const { return content_length_; }
  uint64_t body_bytes() const { return body_bytes_; }
  const std::string& error() const { return error_; }

 private:
  enum class State {
    kHead,
    kBody,
    kChunkSize,
    kChunkData,
    kChunkDataEnd,
    kTrailer,
    kUntilEof,
    kDone,
    kError
  };
  Result Fail(std::string why);
  bool ParseHead(std::string_view head);
  Result ConsumeLine(const char* data, size_t len, size_t* used, std::string* line, bool* got);
  // Feed()'s steps, one per group of states: each consumes from data[*pos, len) and returns true
  // to go on with the next state, or false with *result to return.
  bool StepHead(const char* data, size_t len, size_t* pos, Result* result);
  bool StepBody(const char* data, size_t len, size_t* pos, BodySink* sink, Result* result);
  bool StepChunkLine(const char* data, size_t len, size_t* pos, Result* result);
  // A complete chunk-size, chunk-end or trailer line; false (after Fail) when it is malformed.
  bool OnChunkLine(const std::string& line);

  State state_ = State::kHead;
  bool head_request_ = false;
  std::string head_;
  std::string line_;  // chunk-size / trailer line being assembled
  int status_ = 0;
  bool keep_alive_ = true;
  bool chunked_ = false;
  bool has_length_ = false;
  uint64_t content_length_ = 0;
  uint64_t remaining_ = 0;
  uint64_t body_bytes_ = 0;
  std::string error_;
};

}  // namespace ktls::loadgen

#endif  // KTLS_CLIENT_LOADGEN_HTTP_RESPONSE_H_
