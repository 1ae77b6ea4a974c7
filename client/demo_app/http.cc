#include "http.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>

#include <vector>

#include "absl/strings/str_cat.h"

namespace ktls::demo {
namespace {

// (Debian's Abseil has its own string_view type, so these few helpers work on std::string_view.)
char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

bool ContainsIgnoreCase(std::string_view haystack, std::string_view needle) {
  for (size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    if (EqualsIgnoreCase(haystack.substr(i, needle.size()), needle)) return true;
  }
  return false;
}

std::string_view StripWhitespace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> Split(std::string_view s, std::string_view delimiter) {
  std::vector<std::string_view> out;
  for (;;) {
    const size_t at = s.find(delimiter);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + delimiter.size());
  }
}

ParseResult Error(int status, std::string text) {
  ParseResult r;
  r.status = ParseStatus::kError;
  r.error_status = status;
  r.error_text = std::move(text);
  return r;
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c <= 0x20 || c >= 0x7f ||
        std::string_view("()<>@,;:\\\"/[]?={}").find(c) != std::string_view::npos) {
      return false;
    }
  }
  return true;
}

bool ParseUint(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

namespace {

// Request line: METHOD SP target SP HTTP/1.x. An error result, or nullopt when it was fine.
std::optional<ParseResult> ParseRequestLine(std::string_view line, Request* req) {
  std::vector<std::string_view> parts = Split(line, " ");
  if (parts.size() != 3 || !IsToken(parts[0]) || parts[1].empty() ||
      parts[1].find_first_of("\t\r\n") != std::string_view::npos) {
    return Error(400, "malformed request line\n");
  }
  if (parts[2] == "HTTP/1.1") {
    req->version_minor = 1;
  } else if (parts[2] == "HTTP/1.0") {
    req->version_minor = 0;
  } else if (parts[2].substr(0, 5) == "HTTP/") {
    return Error(505, "only HTTP/1.0 and HTTP/1.1 are supported\n");
  } else {
    return Error(400, "malformed request line\n");
  }
  req->method = std::string(parts[0]);
  req->target = std::string(parts[1]);
  req->path = req->target.substr(0, req->target.find('?'));
  req->keep_alive = req->version_minor == 1;
  return std::nullopt;
}

// What the header fields said about the connection and the body, across fields.
struct FieldState {
  bool have_length = false;
  bool connection_close = false;
  bool connection_keep_alive = false;
};

// One "name: value" field. An error result, or nullopt when it was fine.
std::optional<ParseResult> ParseField(std::string_view field, Request* req, FieldState* st) {
  if (field.front() == ' ' || field.front() == '\t') {
    return Error(400, "obsolete header line folding is not accepted\n");
  }
  const size_t colon = field.find(':');
  if (colon == std::string_view::npos || !IsToken(field.substr(0, colon))) {
    return Error(400, "malformed header field\n");
  }
  std::string_view name = field.substr(0, colon);
  std::string_view value = StripWhitespace(field.substr(colon + 1));
  if (EqualsIgnoreCase(name, "Content-Length")) {
    uint64_t n;
    if (!ParseUint(value, &n)) return Error(400, "invalid Content-Length\n");
    if (st->have_length && n != req->content_length) {
      return Error(400, "conflicting Content-Length headers\n");
    }
    st->have_length = true;
    req->content_length = n;
  } else if (EqualsIgnoreCase(name, "Transfer-Encoding")) {
    if (ContainsIgnoreCase(value, "chunked")) {
      return Error(411,
                   "chunked request bodies are not supported: send the body with a "
                   "Content-Length\n");
    }
    return Error(501,
                 absl::StrCat("Transfer-Encoding \"", std::string(value), "\" is not supported\n"));
  } else if (EqualsIgnoreCase(name, "Connection")) {
    for (std::string_view token : Split(value, ",")) {
      token = StripWhitespace(token);
      if (EqualsIgnoreCase(token, "close")) st->connection_close = true;
      if (EqualsIgnoreCase(token, "keep-alive")) st->connection_keep_alive = true;
    }
  } else if (EqualsIgnoreCase(name, "Expect")) {
    if (!EqualsIgnoreCase(value, "100-continue")) {
      return Error(417, "only Expect: 100-continue is supported\n");
    }
    req->expect_continue = req->version_minor == 1;
  }
  return std::nullopt;
}

}  // namespace

ParseResult ParseRequestHead(std::string_view in) {
  const size_t end = in.substr(0, kMaxHeaderBytes).find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (in.size() >= kMaxHeaderBytes) {
      return Error(431, absl::StrCat("request head exceeds ", kMaxHeaderBytes, " bytes\n"));
    }
    return ParseResult{};
  }
  ParseResult r;
  Request& req = r.request;
  req.head_bytes = end + 4;
  std::string_view head = in.substr(0, end);

  const size_t line_end = head.find("\r\n");
  std::string_view line = head.substr(0, line_end);
  std::string_view fields =
      line_end == std::string_view::npos ? std::string_view() : head.substr(line_end + 2);
  if (std::optional<ParseResult> error = ParseRequestLine(line, &req)) return *std::move(error);

  FieldState st;
  for (std::string_view field : Split(fields, "\r\n")) {
    if (field.empty()) continue;
    if (std::optional<ParseResult> error = ParseField(field, &req, &st)) return *std::move(error);
  }
  if (req.content_length > kMaxBodyBytes) {
    return Error(413, absl::StrCat("request body of ", req.content_length,
                                   " bytes exceeds the limit of ", kMaxBodyBytes, "\n"));
  }
  if (st.connection_close) {
    req.keep_alive = false;
  } else if (st.connection_keep_alive) {
    req.keep_alive = true;
  }
  r.status = ParseStatus::kComplete;
  return r;
}

const char* StatusText(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 417:
      return "Expectation Failed";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

std::string ResponseHead(int status, std::string_view content_type, uint64_t content_length,
                         bool keep_alive, std::string_view extra) {
  std::string out =
      absl::StrCat("HTTP/1.1 ", status, " ", StatusText(status),
                   "\r\nServer: ktls-demo-app\r\nContent-Length: ", content_length, "\r\n");
  if (!content_type.empty()) {
    out += "Content-Type: ";
    out += content_type;
    out += "\r\n";
  }
  if (!keep_alive) out += "Connection: close\r\n";
  out += extra;
  out += "\r\n";
  return out;
}

}  // namespace ktls::demo
