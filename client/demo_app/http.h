// HTTP/1.1 request-head parsing and response heads for ktls-demo-app. Pure functions over
// bytes; the event loop (server.cc) owns all I/O.
#ifndef KTLS_CLIENT_DEMO_APP_HTTP_H_
#define KTLS_CLIENT_DEMO_APP_HTTP_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ktls::demo {

inline constexpr size_t kMaxHeaderBytes = 64 * 1024;
inline constexpr uint64_t kMaxBodyBytes = 16 * 1024 * 1024;

struct Request {
  std::string method;
  std::string target;  // as sent
  std::string path;    // target without its query string
  int version_minor = 1;
  uint64_t content_length = 0;
  bool keep_alive = true;
  bool expect_continue = false;
  size_t head_bytes = 0;  // request line + headers + the blank line
};

enum class ParseStatus { kIncomplete, kComplete, kError };

struct ParseResult {
  ParseStatus status = ParseStatus::kIncomplete;
  Request request;         // kComplete
  int error_status = 0;    // kError: status to answer with before closing
  std::string error_text;  // kError: body of that answer
};

// Parses the request head at the start of `in` (the body, if any, follows it). Refuses heads over
// kMaxHeaderBytes (431), bodies over kMaxBodyBytes (413), Transfer-Encoding (411 for chunked:
// only Content-Length bodies are accepted; 501 otherwise), versions other than HTTP/1.0 and 1.1
// (505) and anything malformed (400).
ParseResult ParseRequestHead(std::string_view in);

const char* StatusText(int status);

// "HTTP/1.1 <status> <text>\r\n" + Content-Length/Type, Connection: close when !keep_alive,
// `extra` (complete header lines) and the blank line.
std::string ResponseHead(int status, std::string_view content_type, uint64_t content_length,
                         bool keep_alive, std::string_view extra = {});

}  // namespace ktls::demo

#endif  // KTLS_CLIENT_DEMO_APP_HTTP_H_
