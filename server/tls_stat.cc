#include "server/tls_stat.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ktls::control {

absl::StatusOr<std::map<std::string, uint64_t>> ParseTlsStat(absl::string_view text) {
  std::map<std::string, uint64_t> out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    uint64_t value = 0;
    if (fields.size() != 2 || !absl::SimpleAtoi(fields[1], &value) || fields[0].size() > 64) {
      return absl::DataLossError(absl::StrCat("tls_stat line ", line_no, " is not 'Name value'"));
    }
    out[std::string(fields[0])] = value;
  }
  return out;
}

absl::StatusOr<std::map<std::string, uint64_t>> ReadTlsStat(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat(
          path, " does not exist: the tls module is not loaded (or the kernel has no CONFIG_TLS)"));
    }
    return absl::UnavailableError(absl::StrCat("cannot read ", path, ": ", strerror(err)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseTlsStat(ss.str());
}

}  // namespace ktls::control
