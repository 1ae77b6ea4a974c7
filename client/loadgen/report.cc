#include "client/loadgen/report.h"

#include <cstdio>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ktls::loadgen {
namespace {

void AppendJsonString(std::string* out, std::string_view s) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (c < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

double PerSecond(uint64_t n, double s) { return s > 0 ? n / s : 0; }
double Micros(uint64_t ns) { return ns / 1000.0; }

std::string Target(const Options& o) {
  const bool v6 = o.host.find(':') != std::string::npos;
  return absl::StrCat(o.tls ? "https://" : "http://", v6 ? "[" : "", o.host, v6 ? "]" : "", ":",
                      o.port);
}

}  // namespace

std::string FormatJson(const Options& o, const Results& r) {
  std::string j = "{";
  bool first = true;
  auto key = [&](std::string_view k) {
    if (!first) j += ",";
    first = false;
    AppendJsonString(&j, k);
    j += ":";
  };
  auto str = [&](std::string_view k, std::string_view v) {
    key(k);
    AppendJsonString(&j, v);
  };
  auto num = [&](std::string_view k, uint64_t v) {
    key(k);
    absl::StrAppend(&j, v);
  };
  auto real = [&](std::string_view k, double v) {
    key(k);
    absl::StrAppendFormat(&j, "%.6g", v);
  };
  auto boolean = [&](std::string_view k, bool v) {
    key(k);
    j += v ? "true" : "false";
  };
  str("schema", kJsonSchema);
  str("label", o.label);
  str("scenario", ScenarioName(o.scenario));
  str("target", Target(o));
  str("path", RequestPath(o));
  boolean("tls", o.tls);
  str("tls_version", r.tls_version);
  str("cipher", r.cipher);
  boolean("resume", o.resume);
  num("size", o.size);
  num("connections", o.connections);
  num("threads", o.threads);
  real("warmup_s", o.warmup_s);
  real("duration_s", r.measured_s);
  num("requests", r.requests);
  real("requests_per_s", PerSecond(r.requests, r.measured_s));
  num("body_bytes_in", r.body_bytes_in);
  num("body_bytes_out", r.body_bytes_out);
  real("mib_per_s_in", PerSecond(r.body_bytes_in, r.measured_s) / (1024.0 * 1024.0));
  real("mib_per_s_out", PerSecond(r.body_bytes_out, r.measured_s) / (1024.0 * 1024.0));
  num("handshakes", r.handshakes);
  real("handshakes_per_s", PerSecond(r.handshakes, r.measured_s));
  num("resumed", r.resumed);
  key("latency_us");
  {
    std::string l;
    absl::StrAppendFormat(&l, "{\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
                          "\"max\":%.1f}",
                          r.latency.mean() / 1000.0, Micros(r.latency.Quantile(0.5)),
                          Micros(r.latency.Quantile(0.9)), Micros(r.latency.Quantile(0.99)),
                          Micros(r.latency.Quantile(0.999)), Micros(r.latency.max()));
    j += l;
  }
  key("errors");
  j += "{";
  absl::StrAppend(&j, "\"total\":", r.total_errors());
  for (int i = 0; i < kErrorKinds; ++i) absl::StrAppend(&j, ",\"", kErrorNames[i], "\":", r.errors[i]);
  j += "}";
  num("warmup_errors", r.warmup_errors);
  str("first_error", r.first_error);
  key("cpu");
  {
    const double cpu = r.cpu_user_s + r.cpu_system_s;
    absl::StrAppendFormat(&j, "{\"user_s\":%.6g,\"system_s\":%.6g,\"per_request_us\":%.6g}",
                          r.cpu_user_s, r.cpu_system_s,
                          r.requests > 0 ? cpu * 1e6 / r.requests : 0.0);
  }
  real("watched_cpu_s", r.watched_cpu_s);
  key("tls_stat");
  j += "{";
  bool first_stat = true;
  for (const auto& [name, delta] : r.tls_stat) {
    if (!first_stat) j += ",";
    first_stat = false;
    AppendJsonString(&j, name);
    absl::StrAppend(&j, ":", delta);
  }
  j += "}";
  j += "}\n";
  return j;
}

std::string FormatText(const Options& o, const Results& r) {
  std::string s;
  absl::StrAppendFormat(&s, "ktls-loadgen: %s %s%s, %d connections, %d threads, %.1fs measured\n",
                        ScenarioName(o.scenario), Target(o), RequestPath(o), o.connections,
                        o.threads, r.measured_s);
  if (o.tls) {
    absl::StrAppendFormat(&s, "  tls:        %s %s%s\n", r.tls_version.empty() ? "-" : r.tls_version,
                          r.cipher.empty() ? "-" : r.cipher, o.resume ? ", resumption on" : "");
  }
  absl::StrAppendFormat(&s, "  requests:   %d (%.1f/s)\n", r.requests,
                        PerSecond(r.requests, r.measured_s));
  absl::StrAppendFormat(&s, "  throughput: %.2f MiB/s down, %.2f MiB/s up (bodies)\n",
                        PerSecond(r.body_bytes_in, r.measured_s) / 1048576.0,
                        PerSecond(r.body_bytes_out, r.measured_s) / 1048576.0);
  absl::StrAppendFormat(&s, "  latency:    p50 %.1f us, p90 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us\n",
                        Micros(r.latency.Quantile(0.5)), Micros(r.latency.Quantile(0.9)),
                        Micros(r.latency.Quantile(0.99)), Micros(r.latency.Quantile(0.999)),
                        Micros(r.latency.max()));
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
