#include "client/loadgen/report.h"

#include <cstdio>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/json.h"

namespace ktls::loadgen {
namespace {

double PerSecond(uint64_t n, double s) { return s > 0 ? n / s : 0; }
double Micros(uint64_t ns) { return ns / 1000.0; }

std::string Target(const Options& o) {
  const bool v6 = o.host.find(':') != std::string::npos;
  return absl::StrCat(o.tls ? "https://" : "http://", v6 ? "[" : "", o.host, v6 ? "]" : "", ":",
                      o.port);
}

}  // namespace

namespace {

void AddLatency(base::JsonWriter& w, const Results& r) {
  w.Key("latency_us").BeginObject();
  w.Key("mean").Fixed(r.latency.mean() / 1000.0, 1);
  w.Key("p50").Fixed(Micros(r.latency.Quantile(0.5)), 1);
  w.Key("p90").Fixed(Micros(r.latency.Quantile(0.9)), 1);
  w.Key("p99").Fixed(Micros(r.latency.Quantile(0.99)), 1);
  w.Key("p999").Fixed(Micros(r.latency.Quantile(0.999)), 1);
  w.Key("max").Fixed(Micros(r.latency.max()), 1);
  w.EndObject();
}

void AddErrorsAndCpu(base::JsonWriter& w, const Results& r) {
  w.Key("errors").BeginObject().Field("total", r.total_errors());
  for (int i = 0; i < kErrorKinds; ++i) w.Field(kErrorNames[i], r.errors[i]);
  w.EndObject();
  w.Field("warmup_errors", r.warmup_errors);
  w.Field("first_error", r.first_error);
  const double cpu = r.cpu_user_s + r.cpu_system_s;
  w.Key("cpu").BeginObject();
  w.Field("user_s", r.cpu_user_s);
  w.Field("system_s", r.cpu_system_s);
  w.Field("per_request_us", r.requests > 0 ? cpu * 1e6 / r.requests : 0.0);
  w.EndObject();
  w.Field("watched_cpu_s", r.watched_cpu_s);
  w.Key("tls_stat").BeginObject();
  for (const auto& [name, delta] : r.tls_stat) w.Field(name, delta);
  w.EndObject();
}

}  // namespace

std::string FormatJson(const Options& o, const Results& r) {
  base::JsonWriter w;
  w.BeginObject();
  w.Field("schema", kJsonSchema);
  w.Field("label", o.label);
  w.Field("scenario", ScenarioName(o.scenario));
  w.Field("target", Target(o));
  w.Field("path", RequestPath(o));
  w.Field("tls", o.tls);
  w.Field("tls_version", r.tls_version);
  w.Field("cipher", r.cipher);
  w.Field("resume", o.resume);
  w.Field("size", o.size);
  w.Field("connections", o.connections);
  w.Field("threads", o.threads);
  w.Field("warmup_s", o.warmup_s);
  w.Field("duration_s", r.measured_s);
  w.Field("requests", r.requests);
  w.Field("requests_per_s", PerSecond(r.requests, r.measured_s));
  w.Field("body_bytes_in", r.body_bytes_in);
  w.Field("body_bytes_out", r.body_bytes_out);
  w.Field("mib_per_s_in", PerSecond(r.body_bytes_in, r.measured_s) / (1024.0 * 1024.0));
  w.Field("mib_per_s_out", PerSecond(r.body_bytes_out, r.measured_s) / (1024.0 * 1024.0));
  w.Field("handshakes", r.handshakes);
  w.Field("handshakes_per_s", PerSecond(r.handshakes, r.measured_s));
  w.Field("resumed", r.resumed);
  AddLatency(w, r);
  AddErrorsAndCpu(w, r);
  w.EndObject();
  return w.Take() + "\n";
}

std::string FormatText(const Options& o, const Results& r) {
  std::string s;
  absl::StrAppendFormat(&s, "ktls-loadgen: %s %s%s, %d connections, %d threads, %.1fs measured\n",
                        ScenarioName(o.scenario), Target(o), RequestPath(o), o.connections,
                        o.threads, r.measured_s);
  if (o.tls) {
    absl::StrAppendFormat(&s, "  tls:        %s %s%s\n",
                          r.tls_version.empty() ? "-" : r.tls_version,
                          r.cipher.empty() ? "-" : r.cipher, o.resume ? ", resumption on" : "");
  }
  absl::StrAppendFormat(&s, "  requests:   %d (%.1f/s)\n", r.requests,
                        PerSecond(r.requests, r.measured_s));
  absl::StrAppendFormat(&s, "  throughput: %.2f MiB/s down, %.2f MiB/s up (bodies)\n",
                        PerSecond(r.body_bytes_in, r.measured_s) / 1048576.0,
                        PerSecond(r.body_bytes_out, r.measured_s) / 1048576.0);
  absl::StrAppendFormat(
      &s, "  latency:    p50 %.1f us, p90 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us\n",
      Micros(r.latency.Quantile(0.5)), Micros(r.latency.Quantile(0.9)),
      Micros(r.latency.Quantile(0.99)), Micros(r.latency.Quantile(0.999)), Micros(r.latency.max()));
  absl::StrAppendFormat(&s, "  handshakes: %d (%.1f/s), %d resumed\n", r.handshakes,
                        PerSecond(r.handshakes, r.measured_s), r.resumed);
  absl::StrAppendFormat(&s, "  errors:     %d", r.total_errors());
  for (int i = 0; i < kErrorKinds; ++i) {
    if (r.errors[i] > 0) absl::StrAppend(&s, " ", kErrorNames[i], "=", r.errors[i]);
  }
  if (r.warmup_errors > 0) absl::StrAppend(&s, " (+", r.warmup_errors, " during warm-up)");
  s += "\n";
  if (!r.first_error.empty()) absl::StrAppend(&s, "  first error: ", r.first_error, "\n");
  absl::StrAppendFormat(&s, "  loadgen cpu: %.2fs user, %.2fs system (%.1f us/request)\n",
                        r.cpu_user_s, r.cpu_system_s,
                        r.requests > 0 ? (r.cpu_user_s + r.cpu_system_s) * 1e6 / r.requests : 0.0);
  if (!o.watch_pids.empty()) {
    absl::StrAppendFormat(&s, "  server cpu:  %.2fs (%.1f us/request)\n", r.watched_cpu_s,
                          r.requests > 0 ? r.watched_cpu_s * 1e6 / r.requests : 0.0);
  }
  if (!r.tls_stat.empty()) {
    s += "  tls_stat:   ";
    for (const auto& [name, delta] : r.tls_stat) absl::StrAppend(&s, " ", name, "=", delta);
    s += "\n";
  }
  return s;
}

}  // namespace ktls::loadgen
