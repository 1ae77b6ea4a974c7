#include "client/loadgen/http_response.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ktls::loadgen {
namespace {

// Debian's Abseil has its own string_view type; absl::StrCat and friends do not take std's.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr size_t kMaxLineBytes = 4096;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return absl::ascii_tolower(static_cast<unsigned char>(x)) ==
                  absl::ascii_tolower(static_cast<unsigned char>(y));
         });
}

bool ContainsTokenIgnoreCase(std::string_view list, std::string_view token) {
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    if (EqualsIgnoreCase(Trim(list.substr(start, comma - start)), token)) return true;
    start = comma + 1;
  }
  return false;
}

}  // namespace

void ResponseParser::Reset(bool head_request) {
  state_ = State::kHead;
  head_request_ = head_request;
  head_.clear();
  line_.clear();
  status_ = 0;
  keep_alive_ = true;
  chunked_ = false;
  has_length_ = false;
  content_length_ = 0;
  remaining_ = 0;
  body_bytes_ = 0;
  error_.clear();
}

ResponseParser::Result ResponseParser::Fail(std::string why) {
  state_ = State::kError;
  error_ = std::move(why);
  return Result::kError;
}

bool ResponseParser::ParseHead(std::string_view head) {
  // Status line: HTTP/1.x SP 3DIGIT [SP reason]
  const size_t eol = head.find("\r\n");
  std::string_view status_line = head.substr(0, eol);
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." ||
      (status_line[7] != '0' && status_line[7] != '1') || status_line[8] != ' ') {
    error_ = absl::StrCat("bad status line \"", Av(status_line.substr(0, 64)), "\"");
    return false;
  }
  const bool http10 = status_line[7] == '0';
  int status = 0;
  if (!absl::SimpleAtoi(Av(status_line.substr(9, 3)), &status) || status < 100 || status > 999) {
    error_ = absl::StrCat("bad status code in \"", Av(status_line.substr(0, 64)), "\"");
    return false;
  }
  status_ = status;
  keep_alive_ = !http10;
  std::string_view rest = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
  while (!rest.empty()) {
    size_t end = rest.find("\r\n");
    if (end == std::string_view::npos) end = rest.size();
    std::string_view line = rest.substr(0, end);
    rest.remove_prefix(std::min(rest.size(), end + 2));
    if (line.empty()) break;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      error_ = absl::StrCat("bad header line \"", Av(line.substr(0, 64)), "\"");
      return false;
    }
    std::string_view name = line.substr(0, colon);
    std::string_view value = Trim(line.substr(colon + 1));
    if (EqualsIgnoreCase(name, "content-length")) {
      uint64_t n = 0;
      if (!absl::SimpleAtoi(Av(value), &n) || (has_length_ && n != content_length_)) {
        error_ = absl::StrCat("bad Content-Length \"", Av(value.substr(0, 32)), "\"");
        return false;
      }
      has_length_ = true;
      content_length_ = n;
    } else if (EqualsIgnoreCase(name, "transfer-encoding")) {
      if (!ContainsTokenIgnoreCase(value, "chunked")) {
        error_ = absl::StrCat("unsupported Transfer-Encoding \"", Av(value.substr(0, 32)), "\"");
        return false;
      }
      chunked_ = true;
    } else if (EqualsIgnoreCase(name, "connection")) {
      if (ContainsTokenIgnoreCase(value, "close")) keep_alive_ = false;
      if (http10 && ContainsTokenIgnoreCase(value, "keep-alive")) keep_alive_ = true;
    }
  }
  return true;
}

// Appends bytes up to and including "\n" to *line; *got when the line is complete (CRLF removed).
ResponseParser::Result ResponseParser::ConsumeLine(const char* data, size_t len, size_t* used,
                                                   std::string* line, bool* got) {
  const void* nl = std::memchr(data, '\n', len);
  const size_t take = nl ? static_cast<const char*>(nl) - data + 1 : len;
  if (line->size() + take > kMaxLineBytes) return Fail("chunk framing line too long");
  line->append(data, take);
  *used = take;
  *got = nl != nullptr;
  if (*got) {
    line->pop_back();
    if (!line->empty() && line->back() == '\r') line->pop_back();
  }
  return Result::kNeedMore;
}

bool ResponseParser::StepHead(const char* data, size_t len, size_t* pos, Result* result) {
  *result = Result::kNeedMore;
  if (*pos == len) return false;
  const size_t old = head_.size();
  const size_t take = std::min(len - *pos, kMaxResponseHeadBytes + 4 - old);
  head_.append(data + *pos, take);
  const size_t from = old >= 3 ? old - 3 : 0;
  const size_t end = head_.find("\r\n\r\n", from);
  if (end == std::string::npos) {
    *pos += take;
    if (head_.size() > kMaxResponseHeadBytes) {
      Fail("response head over 64 KiB");
      *result = Result::kError;
    }
    return false;
  }
  const size_t head_len = end + 4;
  *pos += head_len - old;
  head_.resize(head_len);
  if (!ParseHead(head_)) {
    state_ = State::kError;
    *result = Result::kError;
    return false;
  }
  if (status_ >= 100 && status_ < 200) {  // interim (100 Continue): the real one follows
    head_.clear();
    return true;
  }
  if (head_request_ || status_ == 204 || status_ == 304) {
    state_ = State::kDone;
  } else if (chunked_) {
    state_ = State::kChunkSize;
  } else if (has_length_) {
    remaining_ = content_length_;
    state_ = remaining_ == 0 ? State::kDone : State::kBody;
  } else {
    keep_alive_ = false;
    state_ = State::kUntilEof;
  }
  return true;
}

bool ResponseParser::StepBody(const char* data, size_t len, size_t* pos, BodySink* sink,
                              Result* result) {
  *result = Result::kNeedMore;
  if (*pos == len) return false;
  size_t take = len - *pos;
  if (state_ != State::kUntilEof) take = static_cast<size_t>(std::min<uint64_t>(take, remaining_));
  if (sink != nullptr) sink->Body(data + *pos, take);
  body_bytes_ += take;
  *pos += take;
  if (state_ != State::kUntilEof) {
    remaining_ -= take;
    if (remaining_ == 0) {
      state_ = state_ == State::kBody ? State::kDone : State::kChunkDataEnd;
    }
  }
  return true;
}

bool ResponseParser::StepChunkLine(const char* data, size_t len, size_t* pos, Result* result) {
  *result = Result::kNeedMore;
  if (*pos == len) return false;
  size_t n = 0;
  bool got = false;
  if (ConsumeLine(data + *pos, len - *pos, &n, &line_, &got) == Result::kError) {
    *result = Result::kError;
    return false;
  }
  *pos += n;
  if (!got) return true;
  std::string line = std::move(line_);
  line_.clear();
  if (!OnChunkLine(line)) {
    *result = Result::kError;
    return false;
  }
  return true;
}

bool ResponseParser::OnChunkLine(const std::string& line) {
  if (state_ == State::kChunkDataEnd) {
    if (!line.empty()) {
      Fail("chunk not followed by CRLF");
      return false;
    }
    state_ = State::kChunkSize;
    return true;
  }
  if (state_ == State::kTrailer) {
    if (line.empty()) state_ = State::kDone;
    return true;
  }
  std::string_view size_field = line;
  size_field = size_field.substr(0, size_field.find(';'));
  size_field = Trim(size_field);
  uint64_t size = 0;
  if (size_field.empty() || size_field.size() > 15 || !absl::SimpleHexAtoi(Av(size_field), &size)) {
    Fail(absl::StrCat("bad chunk size \"", Av(std::string_view(line).substr(0, 32)), "\""));
    return false;
  }
  if (size == 0) {
    state_ = State::kTrailer;
  } else {
    remaining_ = size;
    state_ = State::kChunkData;
  }
  return true;
}

ResponseParser::Result ResponseParser::Feed(const char* data, size_t len, size_t* used,
                                            BodySink* sink) {
  size_t pos = 0;
  Result result = Result::kNeedMore;
  for (bool more = true; more;) {
    switch (state_) {
      case State::kDone:
        result = Result::kComplete;
        more = false;
        break;
      case State::kError:
        result = Result::kError;
        more = false;
        break;
      case State::kHead:
        more = StepHead(data, len, &pos, &result);
        break;
      case State::kBody:
      case State::kChunkData:
      case State::kUntilEof:
        more = StepBody(data, len, &pos, sink, &result);
        break;
      case State::kChunkSize:
      case State::kChunkDataEnd:
      case State::kTrailer:
        more = StepChunkLine(data, len, &pos, &result);
        break;
    }
  }
  *used = pos;
  return result;
}

ResponseParser::Result ResponseParser::FeedEof() {
  if (state_ == State::kDone) return Result::kComplete;
  if (state_ == State::kUntilEof) {
    state_ = State::kDone;
    return Result::kComplete;
  }
  if (state_ == State::kError) return Result::kError;
  return Fail(state_ == State::kHead ? "connection closed before the response head"
                                     : "connection closed in the middle of the body");
}

}  // namespace ktls::loadgen
