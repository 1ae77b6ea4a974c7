#include "options.h"

#include <charconv>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace ktls::demo {
namespace {

bool ParseInt(std::string_view s, int64_t min, int64_t max, int64_t* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size() && *out >= min && *out <= max;
}

}  // namespace

const char* Usage() {
  return "usage: ktls-demo-app --agent_socket=PATH [--workers=N] [--credits=N]\n"
         "                     [--static_dir=DIR] [--app_name=NAME] [--idle_timeout_ms=MS]\n"
         "                     [--debug]\n"
         "                     [--tls_listen=HOST:PORT --tls_cert=PEM --tls_key=PEM]\n"
         "                     [--plain_listen=HOST:PORT]\n"
         "HTTP/1.1 server on connections handed over by ktls-agent; --tls_listen terminates TLS\n"
         "in process (OpenSSL) and --plain_listen serves plain HTTP, with or without the agent.\n"
         "Routes: GET /healthz, GET /bytes/N, POST /echo, POST /discard, GET /static/NAME,\n"
         "GET /conninfo\n";
}

absl::StatusOr<Options> ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      o.help = true;
      continue;
    }
    if (arg.substr(0, 2) != "--") {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", std::string(arg), "\""));
    }
    arg.remove_prefix(2);
    const size_t eq = arg.find('=');
    const std::string name(arg.substr(0, eq));
    const bool has_value = eq != std::string_view::npos;
    const std::string value(has_value ? arg.substr(eq + 1) : std::string_view());
    int64_t n = 0;
    auto need_value = [&]() -> absl::Status {
      if (!has_value) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs =VALUE"));
      return absl::OkStatus();
    };
    auto bad = [&](const char* what) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, "=", value, ": ", what));
    };
    if (name == "agent_socket") {
      if (auto s = need_value(); !s.ok()) return s;
      o.agent_socket = value;
    } else if (name == "app_name") {
      if (auto s = need_value(); !s.ok()) return s;
      o.app_name = value;
    } else if (name == "static_dir") {
      if (auto s = need_value(); !s.ok()) return s;
      o.static_dir = value;
    } else if (name == "workers") {
      if (auto s = need_value(); !s.ok()) return s;
      if (!ParseInt(value, 1, 256, &n)) return bad("expected 1..256");
      o.workers = static_cast<int>(n);
    } else if (name == "credits") {
      if (auto s = need_value(); !s.ok()) return s;
      if (!ParseInt(value, 1, 1 << 20, &n)) return bad("expected 1..1048576");
      o.credits = static_cast<uint32_t>(n);
    } else if (name == "idle_timeout_ms") {
      if (auto s = need_value(); !s.ok()) return s;
      if (!ParseInt(value, 1, 24LL * 3600 * 1000, &n)) return bad("expected 1..86400000");
      o.idle_timeout_ms = static_cast<int>(n);
    } else if (name == "tls_listen" || name == "tls_cert" || name == "tls_key" ||
               name == "plain_listen") {
      if (auto s = need_value(); !s.ok()) return s;
      if (value.empty()) return bad("expected a value");
      (name == "tls_listen"   ? o.tls_listen
       : name == "tls_cert"   ? o.tls_cert
       : name == "tls_key"    ? o.tls_key
                              : o.plain_listen) = value;
    } else if (name == "debug") {
      o.debug = !has_value || value == "true" || value == "1";
      if (has_value && !o.debug && value != "false" && value != "0") return bad("expected a bool");
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  if (!o.help && o.agent_socket.empty() && o.tls_listen.empty() && o.plain_listen.empty()) {
    return absl::InvalidArgumentError("--agent_socket=PATH is required");
  }
  if (!o.tls_listen.empty() && (o.tls_cert.empty() || o.tls_key.empty())) {
    return absl::InvalidArgumentError("--tls_listen needs --tls_cert and --tls_key");
  }
  return o;
}

}  // namespace ktls::demo
