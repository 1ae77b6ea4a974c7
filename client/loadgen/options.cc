#include "client/loadgen/options.h"

#include <charconv>
#include <cmath>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/file_name.h"
#include "base/options.h"

namespace ktls::loadgen {
namespace {

absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }
std::string_view Sv(absl::string_view s) { return std::string_view(s.data(), s.size()); }

bool ParseUint(std::string_view s, uint64_t max, uint64_t* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size() && *out <= max;
}

// Sizes: a number with an optional k/K, m/M, g/G suffix (powers of 1024).
bool ParseSize(std::string_view s, uint64_t max, uint64_t* out) {
  uint64_t mult = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'k':
      case 'K':
        mult = 1024;
        break;
      case 'm':
      case 'M':
        mult = 1024 * 1024;
        break;
      case 'g':
      case 'G':
        mult = 1024 * 1024 * 1024;
        break;
      default:
        break;
    }
    if (mult != 1) s.remove_suffix(1);
  }
  uint64_t n = 0;
  if (!ParseUint(s, UINT64_MAX / mult, &n)) return false;
  *out = n * mult;
  return *out <= max;
}

// Seconds: "2.5", "2.5s", "500ms".
bool ParseSeconds(std::string_view s, double min, double max, double* out) {
  double scale = 1;
  if (s.size() > 2 && s.substr(s.size() - 2) == "ms") {
    scale = 0.001;
    s.remove_suffix(2);
  } else if (!s.empty() && s.back() == 's') {
    s.remove_suffix(1);
  }
  double v = 0;
  if (s.empty() || !absl::SimpleAtod(Av(s), &v) || !std::isfinite(v)) return false;
  v *= scale;
  if (v < min || v > max) return false;
  *out = v;
  return true;
}

}  // namespace

const char* ScenarioName(Scenario s) {
  switch (s) {
    case Scenario::kGet:
      return "get";
    case Scenario::kClose:
      return "close";
    case Scenario::kPost:
      return "post";
    case Scenario::kStatic:
      return "static";
    case Scenario::kBulkDown:
      return "bulk-down";
    case Scenario::kBulkUp:
      return "bulk-up";
  }
  return "?";
}

namespace {

constexpr char kSummary[] =
    R"(usage: ktls-loadgen --target=[https://|http://]HOST:PORT [--scenario=NAME] [options]

HTTP/1.1 load over TLS (OpenSSL) from one epoll loop per thread; every response is verified.

Scenarios (--scenario):
  get        GET /bytes/SIZE on keep-alive connections (SIZE default 0)
  close      GET /bytes/SIZE, Connection: close: one TLS handshake per request (SIZE default 0);
             --resume resumes each connection slot's previous session
  post       POST /echo with a SIZE-byte body; the echo must match (SIZE default 64K)
  static     GET /static/NAME (--static_name); --static_file=LOCAL_COPY, or --static_size and
             --static_sha256, give the expected length and SHA-256
  bulk-down  GET /bytes/SIZE, keep-alive (SIZE default 64M): download throughput
  bulk-up    POST /discard with a SIZE-byte body, keep-alive (SIZE default 16M): upload throughput
)";

constexpr char kEpilog[] =
    "Exit status: 0 when every measured and warm-up request succeeded, 1 when any failed, 2 on "
    "usage\nerrors.\n";

using base::OptionParser;

// A setter that stores a bounded duration ("2.5", "2.5s", "500ms").
OptionParser::Setter Seconds(double min, double max, double* out, const char* expected) {
  return [=](absl::string_view v) {
    if (!ParseSeconds(Sv(v), min, max, out)) return absl::InvalidArgumentError(expected);
    return absl::OkStatus();
  };
}

OptionParser::Setter ScenarioSetter(Scenario* out) {
  return [out](absl::string_view v) {
    for (Scenario s : {Scenario::kGet, Scenario::kClose, Scenario::kPost, Scenario::kStatic,
                       Scenario::kBulkDown, Scenario::kBulkUp}) {
      if (v == ScenarioName(s)) {
        *out = s;
        return absl::OkStatus();
      }
    }
    return absl::InvalidArgumentError("expected get, close, post, static, bulk-down or bulk-up");
  };
}

void DeclareLoad(OptionParser& p, Options& o, std::string* target) {
  p.Group("Target and scenario");
  p.Add("target", target, "the server (required)").ValueName("[https://|http://]HOST:PORT");
  p.AddCustom("scenario", "NAME", "get", "see above", ScenarioSetter(&o.scenario));
  p.AddCustom("size", "N", "per scenario", "body bytes, suffixes K M G (powers of 1024)",
              [&o](absl::string_view v) {
                if (!ParseSize(Sv(v), kMaxGetBytes, &o.size)) {
                  return absl::InvalidArgumentError("expected 0..1G bytes");
                }
                o.size_set = true;
                return absl::OkStatus();
              });
  p.Add("resume", &o.resume, "close: resume each connection slot's previous session");
  p.Group("Load");
  p.Add("connections", &o.connections, "concurrent connections").Range(1, kMaxConnections);
  p.Add("threads", &o.threads, "event-loop threads, at most --connections").Range(1, kMaxThreads);
  p.AddCustom("duration", "T", "10s", "measured time, e.g. 10s, 500ms",
              Seconds(0.001, kMaxDurationS, &o.duration_s, "expected 1ms..3600s"));
  p.AddCustom("warmup", "T", "1s", "load before measuring; not counted",
              Seconds(0, 600, &o.warmup_s, "expected 0..600s"));
  p.AddCustom("requests", "N", "0",
              "stop after N measured requests (the duration still caps the "
              "run; 0: duration only)",
              [&o](absl::string_view v) {
                if (!ParseUint(Sv(v), uint64_t{1} << 40, &o.requests)) {
                  return absl::InvalidArgumentError("expected a count");
                }
                return absl::OkStatus();
              });
  p.AddCustom("timeout", "T", "10s", "per request; for close: connect + handshake + request",
              Seconds(0.001, 600, &o.timeout_s, "expected 1ms..600s"));
}

void DeclareStatic(OptionParser& p, Options& o) {
  p.Group("Static files (--scenario=static)");
  p.AddCustom("static_name", "NAME", "", "GET /static/NAME", [&o](absl::string_view v) {
    if (!base::IsSafeFileName(v)) {
      return absl::InvalidArgumentError(
          "one path component of [A-Za-z0-9._-], not starting with '.'");
    }
    o.static_name = std::string(v);
    return absl::OkStatus();
  });
  p.Add("static_file", &o.static_file, "local copy, for the expected size and SHA-256")
      .ValueName("LOCAL_COPY");
  p.Add("static_sha256", &o.static_sha256, "expected SHA-256 (hex), with --static_size")
      .ValueName("HEX");
  p.AddCustom("static_size", "N", "", "expected length, with --static_sha256",
              [&o](absl::string_view v) {
                if (!ParseSize(Sv(v), UINT64_MAX, &o.static_size)) {
                  return absl::InvalidArgumentError("expected a byte count");
                }
                o.static_size_set = true;
                return absl::OkStatus();
              });
}

void DeclareTls(OptionParser& p, Options& o) {
  p.Group("TLS");
  p.AddCustom("tls_version", "1.3|1.2|any", o.tls_version, "protocol version",
              [&o](absl::string_view v) {
                if (v != "1.2" && v != "1.3" && v != "any") {
                  return absl::InvalidArgumentError("expected 1.2, 1.3 or any");
                }
                o.tls_version = std::string(v);
                return absl::OkStatus();
              });
  p.Add("ciphers", &o.ciphers, "TLS 1.3 suites or TLS 1.2 cipher list; empty: AES-128-GCM")
      .ValueName("LIST");
  p.Add("groups", &o.groups, "key exchange groups").ValueName("LIST");
  p.Add("sni", &o.sni, "server name to send; empty: none").ValueName("NAME");
  p.AddCustom("host_header", "NAME", o.host_header, "Host: header", [&o](absl::string_view v) {
    if (v.empty() || v.find_first_of("\r\n ") != absl::string_view::npos) {
      return absl::InvalidArgumentError("bad host");
    }
    o.host_header = std::string(v);
    return absl::OkStatus();
  });
}

void DeclareOutput(OptionParser& p, Options& o) {
  p.Group("Output");
  p.Add("json", &o.json, "one JSON object on stdout (schema \"ktls-loadgen/1\") instead of text");
  p.Add("label", &o.label, "copied into the JSON").ValueName("TEXT");
  p.AddCustom("watch_pids", "PID[,PID...]", "",
              "also report the CPU time these processes and "
              "their descendants used during the measurement (the server's cost), and "
              "/proc/net/tls_stat deltas",
              [&o](absl::string_view v) {
                o.watch_pids.clear();
                if (v.empty()) return absl::OkStatus();
                for (absl::string_view pid : absl::StrSplit(v, ',')) {
                  uint64_t n = 0;
                  if (!ParseUint(Sv(pid), INT32_MAX, &n) || n == 0) {
                    return absl::InvalidArgumentError("expected PID[,PID...]");
                  }
                  o.watch_pids.push_back(static_cast<int>(n));
                }
                return absl::OkStatus();
              });
  p.AddCustom("progress", "auto|on|off", "auto",
              "a progress line on stderr each second (auto: "
              "when stderr is a tty)",
              [&o](absl::string_view v) {
                if (v == "auto") o.progress = Progress::kAuto;
                else if (v == "on") o.progress = Progress::kOn;
                else if (v == "off") o.progress = Progress::kOff;
                else return absl::InvalidArgumentError("expected auto, on or off");
                return absl::OkStatus();
              });
}

void Declare(OptionParser& p, Options& o, std::string* target) {
  DeclareLoad(p, o, target);
  DeclareStatic(p, o);
  DeclareTls(p, o);
  DeclareOutput(p, o);
  p.SetEpilog(kEpilog);
}

// --target=[scheme://]host:port, host may be [v6].
absl::Status ParseTarget(const std::string& target, Options* o) {
  std::string_view t = target;
  if (t.empty())
    return absl::InvalidArgumentError("--target=[https://|http://]HOST:PORT is required");
  if (t.substr(0, 8) == "https://") {
    t.remove_prefix(8);
  } else if (t.substr(0, 7) == "http://") {
    o->tls = false;
    t.remove_prefix(7);
  } else if (t.find("://") != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--target=", target, ": scheme must be https or http"));
  }
  if (!t.empty() && t.back() == '/') t.remove_suffix(1);
  const size_t colon = t.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat("--target=", target, ": expected HOST:PORT"));
  }
  std::string_view host = t.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  uint64_t port = 0;
  if (!ParseUint(t.substr(colon + 1), 65535, &port) || port == 0) {
    return absl::InvalidArgumentError(absl::StrCat("--target=", target, ": bad port"));
  }
  o->host = std::string(host);
  o->port = static_cast<uint16_t>(port);
  return absl::OkStatus();
}

// Per-scenario sizes and requirements, and the options that only go together.
absl::Status CheckScenario(Options* o, bool threads_set) {
  if (!o->size_set) {
    switch (o->scenario) {
      case Scenario::kPost:
        o->size = 64 * 1024;
        break;
      case Scenario::kBulkDown:
        o->size = 64 * 1024 * 1024;
        break;
      case Scenario::kBulkUp:
        o->size = kMaxPostBytes;
        break;
      default:
        o->size = 0;
        break;
    }
  }
  if ((o->scenario == Scenario::kPost || o->scenario == Scenario::kBulkUp) &&
      o->size > kMaxPostBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--size=", o->size, ": ", ScenarioName(o->scenario), " bodies are at most 16M"));
  }
  if (o->scenario == Scenario::kStatic) {
    if (o->static_name.empty())
      return absl::InvalidArgumentError("--scenario=static needs --static_name");
    const bool by_digest = !o->static_sha256.empty() || o->static_size_set;
    if (o->static_file.empty() == !by_digest) {
      return absl::InvalidArgumentError(
          "--scenario=static needs --static_file, or --static_size and --static_sha256");
    }
    if (by_digest && (o->static_sha256.empty() || !o->static_size_set)) {
      return absl::InvalidArgumentError("--static_size and --static_sha256 go together");
    }
  }
  if (o->resume && o->scenario != Scenario::kClose) {
    return absl::InvalidArgumentError("--resume applies to --scenario=close only");
  }
  if (threads_set && o->threads > o->connections) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads=", o->threads, " is more than --connections=", o->connections));
  }
  if (o->threads > o->connections) o->threads = o->connections;
  return absl::OkStatus();
}

}  // namespace

const char* Usage() {
  static const std::string* const text = [] {
    Options o;
    std::string target;
    OptionParser p("ktls-loadgen", kSummary);
    Declare(p, o, &target);
    return new std::string(p.Help());
  }();
  return text->c_str();
}

std::string RequestPath(const Options& o) {
  switch (o.scenario) {
    case Scenario::kGet:
    case Scenario::kClose:
    case Scenario::kBulkDown:
      return absl::StrCat("/bytes/", o.size);
    case Scenario::kPost:
      return "/echo";
    case Scenario::kBulkUp:
      return "/discard";
    case Scenario::kStatic:
      return absl::StrCat("/static/", o.static_name);
  }
  return "/";
}

absl::StatusOr<Options> ParseOptions(int argc, const char* const* argv) {
  Options o;
  std::string target;
  OptionParser p("ktls-loadgen", kSummary);
  Declare(p, o, &target);
  if (absl::Status s = p.Parse(argc, argv); !s.ok()) return s;
  o.help = p.help_requested();
  if (o.help) return o;
  if (absl::Status s = ParseTarget(target, &o); !s.ok()) return s;
  if (absl::Status s = CheckScenario(&o, p.WasGiven("threads")); !s.ok()) return s;
  return o;
}

}  // namespace ktls::loadgen
