#include "agent/log.h"

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"

namespace ktls::agent {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

const char* LevelTag(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "D";
    case LogLevel::kInfo:
      return "I";
    case LogLevel::kWarning:
      return "W";
    case LogLevel::kError:
      return "E";
  }
  return "?";
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
LogLevel GetLogLevel() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }

bool ParseLogLevel(absl::string_view name, LogLevel* out) {
  if (name == "debug") *out = LogLevel::kDebug;
  else if (name == "info" || name.empty()) *out = LogLevel::kInfo;
  else if (name == "warning") *out = LogLevel::kWarning;
  else if (name == "error") *out = LogLevel::kError;
  else return false;
  return true;
}

void LogLine(LogLevel level, absl::string_view message) {
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  gmtime_r(&tv.tv_sec, &t);
  char ts[32];
  strftime(ts, sizeof(ts), "%H:%M:%S", &t);
  std::string line = absl::StrCat(LevelTag(level), " ", ts, ".",
                                  absl::StrFormat("%03d", static_cast<int>(tv.tv_usec / 1000)),
                                  " ktls-agent: ", message, "\n");
  // One write(2) per line so lines from several threads do not interleave.
  ssize_t unused = ::write(STDERR_FILENO, line.data(), line.size());
  (void)unused;
}

void LogWarningOncePerKey(absl::string_view key, absl::string_view message) {
  static absl::Mutex mu;
  static auto* seen = new absl::flat_hash_set<std::string>();
  {
    absl::MutexLock lock(&mu);
    if (!seen->insert(std::string(key)).second) return;
  }
  LogLine(LogLevel::kWarning,
          absl::StrCat(message, " (further occurrences are counted, not logged)"));
}

}  // namespace ktls::agent
