#include "server/control_metrics.h"

namespace ktls::control {

absl::string_view ValidationFailureLabel(ValidationFailure f) {
  return agent::EnumLabel(kValidationFailureLabels, f, "other");
}

agent::MetricLabels MetricLabelsOf(ValidationFailure f) {
  return {{"reason", std::string(ValidationFailureLabel(f))}};
}

absl::string_view ReloadSourceLabel(ReloadSource s) {
  return agent::EnumLabel(kReloadSourceLabels, s, "api");
}

void ControlMetrics::CountRequest(absl::string_view method, absl::string_view code) {
  absl::MutexLock lock(&mu_);
  ++requests_[{std::string(method), std::string(code)}];
}

std::map<std::pair<std::string, std::string>, uint64_t> ControlMetrics::Requests() const {
  absl::MutexLock lock(&mu_);
  return requests_;
}

}  // namespace ktls::control
