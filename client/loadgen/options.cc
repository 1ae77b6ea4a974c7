#include "client/loadgen/options.h"

#include <charconv>
#include <cmath>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ktls::loadgen {
namespace {

absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool ParseUint(std::string_view s, uint64_t max, uint64_t* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size() && *out <= max;
}

// Sizes: a number with an optional k/K, m/M, g/G suffix (powers of 1024).
bool ParseSize(std::string_view s, uint64_t max, uint64_t* out) {
  uint64_t mult = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'k': case 'K': mult = 1024; break;
      case 'm': case 'M': mult = 1024 * 1024; break;
      case 'g': case 'G': mult = 1024 * 1024 * 1024; break;
      default: break;
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

bool IsSafeName(std::string_view name) {
  if (name.empty() || name.size() > 255 || name.front() == '.') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

const char* ScenarioName(Scenario s) {
  switch (s) {
    case Scenario::kGet: return "get";
    case Scenario::kClose: return "close";
    case Scenario::kPost: return "post";
    case Scenario::kStatic: return "static";
    case Scenario::kBulkDown: return "bulk-down";
    case Scenario::kBulkUp: return "bulk-up";
  }
  return "?";
}

const char* Usage() {
  return R"(usage: ktls-loadgen --target=[https://|http://]HOST:PORT [--scenario=NAME] [options]

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

Load:
  --connections=N   concurrent connections, 1..10000 (default 1)
  --threads=N       event-loop threads, 1..64, at most N connections (default 1)
  --duration=T      measured time, e.g. 10s, 500ms (default 10s)
  --warmup=T        load before measuring; not counted (default 1s)
  --requests=N      stop after N measured requests (the duration still caps the run)
  --timeout=T       per request; for close: connect + handshake + request (default 10s)
  --size=N          body bytes, suffixes K M G (powers of 1024)

TLS:
  --tls_version=1.3|1.2|any (default 1.3)   --ciphers=LIST (default AES-128-GCM)
  --groups=LIST (default X25519)             --sni=NAME (default localhost; empty: none)
  --host_header=NAME (default localhost)

Output:
  --json            one JSON object on stdout (schema "ktls-loadgen/1") instead of text
  --label=TEXT      copied into the JSON
  --watch_pids=PID[,PID...]   also report the CPU time these processes and their descendants
                    used during the measurement (the server's cost), and /proc/net/tls_stat deltas
  --progress=auto|on|off   a progress line on stderr each second (auto: when stderr is a tty)
Exit status: 0 when every measured and warm-up request succeeded, 1 when any failed, 2 on usage
errors.
)";
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
  bool threads_set = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      o.help = true;
      continue;
    }
    if (arg.substr(0, 2) != "--") {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", Av(arg), "\""));
    }
    arg.remove_prefix(2);
    const size_t eq = arg.find('=');
    const std::string name(arg.substr(0, eq));
    const bool has_value = eq != std::string_view::npos;
    const std::string value(has_value ? arg.substr(eq + 1) : std::string_view());
    auto bad = [&](std::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, "=", value, ": ", Av(what)));
    };
    auto flag_bool = [&](bool* out) -> absl::Status {
      if (!has_value || value == "true" || value == "1") *out = true;
      else if (value == "false" || value == "0") *out = false;
      else return bad("expected true or false");
      return absl::OkStatus();
    };
    if (name == "json" || name == "resume") {
      if (auto s = flag_bool(name == "json" ? &o.json : &o.resume); !s.ok()) return s;
      continue;
    }
    if (!has_value) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs =VALUE"));
    uint64_t n = 0;
    if (name == "target") {
      target = value;
    } else if (name == "scenario") {
      if (value == "get") o.scenario = Scenario::kGet;
      else if (value == "close") o.scenario = Scenario::kClose;
      else if (value == "post") o.scenario = Scenario::kPost;
      else if (value == "static") o.scenario = Scenario::kStatic;
      else if (value == "bulk-down") o.scenario = Scenario::kBulkDown;
      else if (value == "bulk-up") o.scenario = Scenario::kBulkUp;
      else return bad("expected get, close, post, static, bulk-down or bulk-up");
    } else if (name == "size") {
      if (!ParseSize(value, kMaxGetBytes, &o.size)) return bad("expected 0..1G bytes");
      o.size_set = true;
    } else if (name == "connections") {
      if (!ParseUint(value, kMaxConnections, &n) || n < 1) return bad("expected 1..10000");
      o.connections = static_cast<int>(n);
    } else if (name == "threads") {
      if (!ParseUint(value, kMaxThreads, &n) || n < 1) return bad("expected 1..64");
      o.threads = static_cast<int>(n);
      threads_set = true;
    } else if (name == "duration") {
      if (!ParseSeconds(value, 0.001, kMaxDurationS, &o.duration_s)) return bad("expected 1ms..3600s");
    } else if (name == "warmup") {
      if (!ParseSeconds(value, 0, 600, &o.warmup_s)) return bad("expected 0..600s");
    } else if (name == "timeout") {
      if (!ParseSeconds(value, 0.001, 600, &o.timeout_s)) return bad("expected 1ms..600s");
    } else if (name == "requests") {
      if (!ParseUint(value, uint64_t{1} << 40, &o.requests)) return bad("expected a count");
    } else if (name == "static_name") {
      if (!IsSafeName(value)) return bad("one path component of [A-Za-z0-9._-], not starting with '.'");
      o.static_name = value;
    } else if (name == "static_file") {
      o.static_file = value;
    } else if (name == "static_sha256") {
      o.static_sha256 = value;
    } else if (name == "static_size") {
      if (!ParseSize(value, UINT64_MAX, &o.static_size)) return bad("expected a byte count");
      o.static_size_set = true;
    } else if (name == "tls_version") {
      if (value != "1.2" && value != "1.3" && value != "any") return bad("expected 1.2, 1.3 or any");
      o.tls_version = value;
    } else if (name == "ciphers") {
      o.ciphers = value;
    } else if (name == "groups") {
      o.groups = value;
    } else if (name == "sni") {
      o.sni = value;
    } else if (name == "host_header") {
      if (value.empty() || value.find_first_of("\r\n ") != std::string::npos) return bad("bad host");
      o.host_header = value;
    } else if (name == "label") {
      o.label = value;
    } else if (name == "watch_pids") {
      o.watch_pids.clear();
      std::string_view rest = value;
      while (!rest.empty()) {
        const size_t comma = rest.find(',');
        if (!ParseUint(rest.substr(0, comma), INT32_MAX, &n) || n == 0) return bad("expected PID[,PID...]");
        o.watch_pids.push_back(static_cast<int>(n));
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      }
    } else if (name == "progress") {
      if (value == "auto") o.progress = Progress::kAuto;
      else if (value == "on") o.progress = Progress::kOn;
      else if (value == "off") o.progress = Progress::kOff;
      else return bad("expected auto, on or off");
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  if (o.help) return o;

  // --target=[scheme://]host:port, host may be [v6].
  std::string_view t = target;
  if (t.empty()) return absl::InvalidArgumentError("--target=[https://|http://]HOST:PORT is required");
  if (t.substr(0, 8) == "https://") {
    t.remove_prefix(8);
  } else if (t.substr(0, 7) == "http://") {
    o.tls = false;
    t.remove_prefix(7);
  } else if (t.find("://") != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--target=", target, ": scheme must be https or http"));
  }
  if (!t.empty() && t.back() == '/') t.remove_suffix(1);
  const size_t colon = t.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat("--target=", target, ": expected HOST:PORT"));
  }
  std::string_view host = t.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  uint64_t port = 0;
  if (!ParseUint(t.substr(colon + 1), 65535, &port) || port == 0) {
    return absl::InvalidArgumentError(absl::StrCat("--target=", target, ": bad port"));
  }
  o.host = std::string(host);
  o.port = static_cast<uint16_t>(port);

  // Per-scenario sizes and requirements.
  if (!o.size_set) {
    switch (o.scenario) {
      case Scenario::kPost: o.size = 64 * 1024; break;
      case Scenario::kBulkDown: o.size = 64 * 1024 * 1024; break;
      case Scenario::kBulkUp: o.size = kMaxPostBytes; break;
      default: o.size = 0; break;
    }
  }
  if ((o.scenario == Scenario::kPost || o.scenario == Scenario::kBulkUp) && o.size > kMaxPostBytes) {
    return absl::InvalidArgumentError(absl::StrCat("--size=", o.size, ": ",
                                                   ScenarioName(o.scenario), " bodies are at most 16M"));
  }
  if (o.scenario == Scenario::kStatic) {
    if (o.static_name.empty()) return absl::InvalidArgumentError("--scenario=static needs --static_name");
    const bool by_digest = !o.static_sha256.empty() || o.static_size_set;
    if (o.static_file.empty() == !by_digest) {
      return absl::InvalidArgumentError(
          "--scenario=static needs --static_file, or --static_size and --static_sha256");
    }
    if (by_digest && (o.static_sha256.empty() || !o.static_size_set)) {
      return absl::InvalidArgumentError("--static_size and --static_sha256 go together");
    }
  }
  if (o.resume && o.scenario != Scenario::kClose) {
    return absl::InvalidArgumentError("--resume applies to --scenario=close only");
  }
  if (threads_set && o.threads > o.connections) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads=", o.threads, " is more than --connections=", o.connections));
  }
  if (o.threads > o.connections) o.threads = o.connections;
  return o;
}

}  // namespace ktls::loadgen
