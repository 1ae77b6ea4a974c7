// A small leveled logger to stderr (Abseil's logging is not in Debian 12's Abseil).
// Thread-safe; one line per call. Never pass key material to it.
#ifndef KTLS_AGENT_LOG_H_
#define KTLS_AGENT_LOG_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/strings/str_cat.h"

namespace ktls::agent {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// "debug", "info", "warning", "error"; false when unknown.
bool ParseLogLevel(absl::string_view name, LogLevel* out);
void LogLine(LogLevel level, absl::string_view message);
// Logs at warning the first time `key` is seen in this process, and never again: degraded paths
// (a fallback reason, a dropped handoff) are reported once per reason, not once per connection;
// their counters carry the volume.
void LogWarningOncePerKey(absl::string_view key, absl::string_view message);

}  // namespace ktls::agent

#define KTLS_LOG(level, ...)                                                               \
  do {                                                                                     \
    if (::ktls::agent::LogLevel::level >= ::ktls::agent::GetLogLevel())                    \
      ::ktls::agent::LogLine(::ktls::agent::LogLevel::level, ::absl::StrCat(__VA_ARGS__)); \
  } while (0)

#endif  // KTLS_AGENT_LOG_H_
