#include "server/control_metrics.h"

namespace ktls {

absl::string_view ValidationFailureLabel(ValidationFailure f) {
  switch (f) {
#define KTLS_CASE(e, label)  \
  case ValidationFailure::e: \
    return label;
    KTLS_VALIDATION_FAILURES(KTLS_CASE)
#undef KTLS_CASE
    case ValidationFailure::kCount:
      break;
  }
  return "other";
}

absl::string_view ReloadSourceLabel(ReloadSource s) {
  switch (s) {
#define KTLS_CASE(e, label) \
  case ReloadSource::e:     \
    return label;
    KTLS_RELOAD_SOURCES(KTLS_CASE)
#undef KTLS_CASE
    case ReloadSource::kCount:
      break;
  }
  return "api";
}

void ControlMetrics::CountRequest(absl::string_view method, absl::string_view code) {
  absl::MutexLock lock(&mu_);
  ++requests_[{std::string(method), std::string(code)}];
}

std::map<std::pair<std::string, std::string>, uint64_t> ControlMetrics::Requests() const {
  absl::MutexLock lock(&mu_);
  return requests_;
}

}  // namespace ktls
