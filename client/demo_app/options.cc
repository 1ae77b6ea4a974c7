#include "options.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "base/options.h"

namespace ktls::demo {
namespace {

constexpr char kSummary[] =
    "usage: ktls-demo-app --agent_socket=PATH [options]\n"
    "HTTP/1.1 server on connections handed over by ktls-agent; --tls_listen terminates TLS\n"
    "in process (OpenSSL) and --plain_listen serves plain HTTP, with or without the agent.\n"
    "Routes: GET /healthz, GET /bytes/N, POST /echo, POST /discard, GET /static/NAME,\n"
    "GET /conninfo\n";

void Declare(base::OptionParser& p, Options& o) {
  p.Group("With the agent");
  p.Add("agent_socket", &o.agent_socket,
        "the agent's handoff socket (required without "
        "--tls_listen / --plain_listen)")
      .ValueName("PATH");
  p.Add("app_name", &o.app_name, "the name this app subscribes with").ValueName("NAME");
  p.Add("workers", &o.workers, "processes, one subscription each").Range(1, 256);
  p.Add("credits", &o.credits, "initial credits per subscription").Range(1, 1 << 20);
  p.Group("Serving");
  p.Add("static_dir", &o.static_dir,
        "directory served under /static/; empty: /static/ answers "
        "404")
      .ValueName("DIR");
  p.Add("idle_timeout_ms", &o.idle_timeout_ms, "close a connection idle this long")
      .Range(1, 24LL * 3600 * 1000)
      .ValueName("MS");
  p.Add("debug", &o.debug, "one line per connection on stderr");
  p.Group("Without the agent (benchmarks)");
  p.Add("tls_listen", &o.tls_listen,
        "accept here and terminate TLS in process (needs --tls_cert "
        "and --tls_key)")
      .ValueName("HOST:PORT")
      .NonEmpty();
  p.Add("tls_cert", &o.tls_cert, "certificate chain for --tls_listen").ValueName("PEM").NonEmpty();
  p.Add("tls_key", &o.tls_key, "private key for --tls_listen").ValueName("PEM").NonEmpty();
  p.Add("plain_listen", &o.plain_listen, "accept here and serve plain HTTP")
      .ValueName("HOST:PORT")
      .NonEmpty();
}

}  // namespace

const char* Usage() {
  static const std::string* const text = [] {
    Options o;
    base::OptionParser p("ktls-demo-app", kSummary);
    Declare(p, o);
    return new std::string(p.Help());
  }();
  return text->c_str();
}

absl::StatusOr<Options> ParseOptions(int argc, char** argv) {
  Options o;
  base::OptionParser p("ktls-demo-app", kSummary);
  Declare(p, o);
  if (absl::Status s = p.Parse(argc, argv); !s.ok()) return s;
  o.help = p.help_requested();
  if (!o.help && o.agent_socket.empty() && o.tls_listen.empty() && o.plain_listen.empty()) {
    return absl::InvalidArgumentError("--agent_socket=PATH is required");
  }
  if (!o.tls_listen.empty() && (o.tls_cert.empty() || o.tls_key.empty())) {
    return absl::InvalidArgumentError("--tls_listen needs --tls_cert and --tls_key");
  }
  return o;
}

}  // namespace ktls::demo
