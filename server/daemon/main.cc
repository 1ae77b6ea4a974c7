// ktls-agent: the daemon's entry point and the composition root. Parses the command line over the
// configuration, builds the data plane (agent/agent.h) and the control plane on it
// (server/control_plane.h), runs until SIGTERM/SIGINT, then prints what was offloaded.
//
// It lives in server/daemon/ because it is the one place that sees both layers: the data plane
// (agent/) never includes server/; the control plane depends on the data plane.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/agent.h"
#include "agent/config.h"
#include "agent/kernel_probe.h"
#include "agent/listener.h"
#include "agent/log.h"
#include "agent/sd_notify.h"
#include "agent/syscalls.h"
#include "base/options.h"
#include "google/protobuf/text_format.h"
#include "server/control_plane.h"

namespace {

// Exit codes (scripts and systemd rely on them): 0 clean stop (or --version), 1 cannot start,
// bad command line, or --help (as with absl flags before), 2 configuration error.
constexpr int kExitStartFailure = 1;
constexpr int kExitConfigError = 2;

constexpr char kSummary[] =
    "ktls-agent: terminates TLS, installs the keys into the kernel (kTLS) and hands the socket to\n"
    "the application over a Unix socket.\n\n"
    "Usage: ktls-agent [--config=FILE] [options]  (options override the configuration file)\n";

// The command line. Empty strings, -1 and 0 mean "not given: the configuration file or its
// defaults decide"; the control plane's two addresses are the exception (see ApplyControlPlane).
struct Flags {
  std::string config;
  std::string listen;
  std::string handoff_socket;
  std::string cert;
  std::string offload;
  int workers = -1;
  std::string alpn;
  std::string client_ca;
  bool require_client_cert = false;
  std::string min_tls_version;
  std::string tls13_ciphersuites;
  std::string tls12_ciphers;
  int handshake_timeout_ms = 0;
  int handoff_wait_timeout_ms = 0;
  std::string log_level;
  bool probe_only = false;
  bool probe_require_all = false;
  bool print_config = false;
  std::string ready_file;
  int stats_interval_s = 0;
  // Control plane (server/, docs/operations.md).
  std::string control_socket = ktls::control::kDefaultControlSocket;
  std::string control_socket_mode = "0600";
  std::string control_socket_group;
  std::string control_tcp_address;
  std::string control_tls_cert;
  std::string control_tls_key;
  std::string control_client_ca;
  std::string control_allowed_clients;
  std::string metrics_address = ktls::control::kDefaultMetricsAddress;
  std::string state_dir;
  std::string cert_dir;
  int cert_dir_poll_ms = 0;
  // Who may subscribe to the handoff socket (docs/security.md).
  std::string handoff_socket_mode;
  std::string handoff_socket_group;
  std::string handoff_allowed_uids;
  std::string handoff_allowed_gids;
  int app_subscribe_timeout_ms = 0;
  int max_app_connections = 0;
};

void DeclareDataPlaneFlags(ktls::base::OptionParser& p, Flags& f) {
  p.Group("Data plane");
  p.Add("config", &f.config,
        "configuration file (protobuf text format, see proto/ktls/v1/config.proto)");
  p.Add("listen", &f.listen,
        "comma-separated listen addresses host:port ([v6]:port); overrides the config's listeners");
  p.Add("handoff_socket", &f.handoff_socket, "Unix socket path where apps subscribe");
  p.Add("cert", &f.cert, "comma-separated CHAIN.pem:KEY.pem pairs; the first is the default");
  p.Add("offload", &f.offload, "kTLS policy: preferred | required | off");
  p.Add("workers", &f.workers, "event-loop threads (0 = number of CPUs)");
  p.Add("alpn", &f.alpn, "comma-separated ALPN protocols in server preference order");
  p.Add("client_ca", &f.client_ca, "CA bundle to verify client certificates");
  p.Add("require_client_cert", &f.require_client_cert,
        "fail handshakes without a valid client certificate");
  p.Add("min_tls_version", &f.min_tls_version, "TLSv1.2 or TLSv1.3");
  p.Add("tls13_ciphersuites", &f.tls13_ciphersuites, "OpenSSL TLS 1.3 ciphersuites list");
  p.Add("tls12_ciphers", &f.tls12_ciphers, "OpenSSL TLS 1.2 cipher list");
  p.Add("handshake_timeout_ms", &f.handshake_timeout_ms, "handshake timeout");
  p.Add("handoff_wait_timeout_ms", &f.handoff_wait_timeout_ms,
        "how long a ready connection may wait for an app");
  p.Add("log_level", &f.log_level, "debug | info | warning | error");
  p.Group("Handoff socket trust (docs/security.md)");
  p.Add("handoff_socket_mode", &f.handoff_socket_mode,
        "file mode of --handoff_socket (octal; default 0660; 'other' access is refused)");
  p.Add("handoff_socket_group", &f.handoff_socket_group,
        "group owning --handoff_socket (name or gid); its members may subscribe");
  p.Add("handoff_allowed_uids", &f.handoff_allowed_uids,
        "comma-separated uids allowed to subscribe besides the agent's own (SO_PEERCRED)");
  p.Add("handoff_allowed_gids", &f.handoff_allowed_gids,
        "comma-separated gids (primary or supplementary) allowed to subscribe");
  p.Add("app_subscribe_timeout_ms", &f.app_subscribe_timeout_ms,
        "an app connection must subscribe within this (default 5000)");
  p.Add("max_app_connections", &f.max_app_connections,
        "connections held on the handoff socket, subscribed or not (default 256)");
  p.Group("Operation");
  p.Add("probe_only", &f.probe_only, "probe the kernel's kTLS support, print the table and exit");
  p.Add("probe_require_all", &f.probe_require_all,
        "with --probe_only: exit 1 unless the kernel accepted every version x cipher x direction");
  p.Add("print_config", &f.print_config, "print the effective configuration and exit");
  p.Add("ready_file", &f.ready_file,
        "write the bound addresses here once serving (for scripts and tests)");
  p.Add("stats_interval_s", &f.stats_interval_s,
        "log a stats line every N seconds (0 = only at exit)");
}

void DeclareControlPlaneFlags(ktls::base::OptionParser& p, Flags& f) {
  p.Group("Control plane (docs/operations.md)");
  p.Add("control_socket", &f.control_socket,
        "Unix socket of the gRPC control API (ktlsctl); empty = none");
  p.Add("control_socket_mode", &f.control_socket_mode,
        "file mode of --control_socket (octal; 0660 with --control_socket_group for group access)");
  p.Add("control_socket_group", &f.control_socket_group, "group owning --control_socket");
  p.Add("control_tcp_address", &f.control_tcp_address,
        "host:port for the control API over TCP: mutual TLS only, needs --control_tls_cert, "
        "--control_tls_key, --control_client_ca and --control_allowed_clients");
  p.Add("control_tls_cert", &f.control_tls_cert,
        "server certificate chain (PEM) for --control_tcp_address");
  p.Add("control_tls_key", &f.control_tls_key, "its private key (PEM)");
  p.Add("control_client_ca", &f.control_client_ca,
        "CA bundle that issues control clients' certificates");
  p.Add("control_allowed_clients", &f.control_allowed_clients,
        "comma-separated client identities allowed on TCP: URI SAN (SPIFFE ID), DNS SAN or CN");
  p.Add("metrics_address", &f.metrics_address, "host:port for Prometheus /metrics; empty = off");
  p.Add("state_dir", &f.state_dir,
        "directory where committed certificates, trust bundles and ticket keys persist");
  p.Add("cert_dir", &f.cert_dir,
        "comma-separated watched certificate directories (DIR or NAME=DIR): X.crt + X.key is "
        "certificate X, tls.crt + tls.key (Kubernetes Secret) is named after the directory");
  p.Add("cert_dir_poll_ms", &f.cert_dir_poll_ms,
        "rescan interval of --cert_dir besides inotify (0 = 10000)");
}

absl::Status ApplyListen(const std::string& list, ktls::v1::AgentConfig& c) {
  c.clear_listeners();
  int i = 0;
  for (absl::string_view hp : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    auto addr = ktls::agent::ParseHostPort("", std::string(hp));
    if (!addr.ok()) return addr.status();
    std::string host;
    uint32_t port;
    ktls::agent::FormatSockaddr(reinterpret_cast<const sockaddr*>(&addr->addr), &host, &port);
    auto* lc = c.add_listeners();
    lc->set_name(i == 0 ? "https" : absl::StrCat("https", i));
    lc->set_address(host);
    lc->set_port(port);
    ++i;
  }
  return absl::OkStatus();
}

absl::Status ApplyCerts(const std::string& list, ktls::v1::AgentConfig& c) {
  c.clear_certificates();
  bool first = true;
  for (absl::string_view pair : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    std::vector<std::string> parts = absl::StrSplit(pair, ':');
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat("--cert: '", pair, "' is not CHAIN:KEY"));
    }
    auto* cc = c.add_certificates();
    cc->set_cert_chain_file(parts[0]);
    cc->set_private_key_file(parts[1]);
    cc->set_is_default(first);
    first = false;
  }
  return absl::OkStatus();
}

absl::Status ApplyOffload(const std::string& v, ktls::v1::AgentConfig& c) {
  if (v == "preferred") c.set_offload(ktls::v1::OFFLOAD_POLICY_PREFERRED);
  else if (v == "required") c.set_offload(ktls::v1::OFFLOAD_POLICY_REQUIRED);
  else if (v == "off") c.set_offload(ktls::v1::OFFLOAD_POLICY_OFF);
  else
    return absl::InvalidArgumentError(
        absl::StrCat("--offload: '", v, "' is not preferred, required or off"));
  return absl::OkStatus();
}

absl::Status ApplyDataPlane(const Flags& f, ktls::v1::AgentConfig& c) {
  if (!f.listen.empty()) {
    if (absl::Status s = ApplyListen(f.listen, c); !s.ok()) return s;
  }
  if (!f.handoff_socket.empty()) c.set_handoff_socket(f.handoff_socket);
  if (!f.cert.empty()) {
    if (absl::Status s = ApplyCerts(f.cert, c); !s.ok()) return s;
  }
  if (!f.offload.empty()) {
    if (absl::Status s = ApplyOffload(f.offload, c); !s.ok()) return s;
  }
  if (f.workers >= 0) c.set_workers(f.workers);
  if (!f.alpn.empty()) {
    c.clear_alpn();
    for (absl::string_view p : absl::StrSplit(f.alpn, ',', absl::SkipEmpty()))
      c.add_alpn(std::string(p));
  }
  if (!f.client_ca.empty()) c.set_client_ca_file(f.client_ca);
  if (f.require_client_cert) c.set_require_client_cert(true);
  if (!f.min_tls_version.empty()) c.set_min_tls_version(f.min_tls_version);
  if (!f.tls13_ciphersuites.empty()) c.set_tls13_ciphersuites(f.tls13_ciphersuites);
  if (!f.tls12_ciphers.empty()) c.set_tls12_ciphers(f.tls12_ciphers);
  if (f.handshake_timeout_ms > 0) c.set_handshake_timeout_ms(f.handshake_timeout_ms);
  if (f.handoff_wait_timeout_ms > 0) c.set_handoff_wait_timeout_ms(f.handoff_wait_timeout_ms);
  if (!f.log_level.empty()) c.set_log_level(f.log_level);
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ParseOctalMode(absl::string_view flag, const std::string& mode) {
  char* end = nullptr;
  const unsigned long m = std::strtoul(mode.c_str(), &end, 8);
  if (mode.empty() || *end != '\0' || m > 0777) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": '", mode, "' is not an octal mode like 0660"));
  }
  return static_cast<uint32_t>(m);
}

absl::Status ParseIdList(absl::string_view flag, const std::string& list,
                         google::protobuf::RepeatedField<uint32_t>* out) {
  out->Clear();
  for (absl::string_view id : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    uint32_t n = 0;
    if (!absl::SimpleAtoi(id, &n)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": '", id, "' is not a number"));
    }
    out->Add(n);
  }
  return absl::OkStatus();
}

// Who may subscribe to the handoff socket (docs/security.md).
absl::Status ApplyHandoffTrust(const Flags& f, ktls::v1::AgentConfig& c) {
  if (!f.handoff_socket_mode.empty()) {
    absl::StatusOr<uint32_t> m = ParseOctalMode("handoff_socket_mode", f.handoff_socket_mode);
    if (!m.ok()) return m.status();
    c.set_handoff_socket_mode(*m);
  }
  if (!f.handoff_socket_group.empty()) c.set_handoff_socket_group(f.handoff_socket_group);
  if (!f.handoff_allowed_uids.empty()) {
    absl::Status s = ParseIdList("handoff_allowed_uids", f.handoff_allowed_uids,
                                 c.mutable_handoff_allowed_uids());
    if (!s.ok()) return s;
  }
  if (!f.handoff_allowed_gids.empty()) {
    absl::Status s = ParseIdList("handoff_allowed_gids", f.handoff_allowed_gids,
                                 c.mutable_handoff_allowed_gids());
    if (!s.ok()) return s;
  }
  if (f.app_subscribe_timeout_ms > 0) c.set_app_subscribe_timeout_ms(f.app_subscribe_timeout_ms);
  if (f.max_app_connections > 0) c.set_max_app_connections(f.max_app_connections);
  return absl::OkStatus();
}

// control_socket and metrics_address stay unset unless the command line or the config file gives
// them: unset, their defaults apply best-effort (a second agent on the same host starts without
// them, with a warning); given, they are required.
absl::Status ApplyControlPlane(const Flags& f, const ktls::base::OptionParser& given,
                               ktls::v1::AgentConfig& c) {
  if (given.WasGiven("control_socket")) c.set_control_socket(f.control_socket);
  if (given.WasGiven("metrics_address")) c.set_metrics_address(f.metrics_address);
  if (given.WasGiven("control_socket_mode") || c.control_socket_mode() == 0) {
    absl::StatusOr<uint32_t> m = ParseOctalMode("control_socket_mode", f.control_socket_mode);
    if (!m.ok()) return m.status();
    c.set_control_socket_mode(*m);
  }
  if (!f.control_socket_group.empty()) c.set_control_socket_group(f.control_socket_group);
  if (!f.control_tcp_address.empty()) c.set_control_tcp_address(f.control_tcp_address);
  if (!f.control_tls_cert.empty()) c.set_control_tls_cert_file(f.control_tls_cert);
  if (!f.control_tls_key.empty()) c.set_control_tls_key_file(f.control_tls_key);
  if (!f.control_client_ca.empty()) c.set_control_client_ca_file(f.control_client_ca);
  if (!f.control_allowed_clients.empty()) {
    c.clear_control_allowed_clients();
    for (absl::string_view id : absl::StrSplit(f.control_allowed_clients, ',', absl::SkipEmpty())) {
      c.add_control_allowed_clients(std::string(id));
    }
  }
  if (!f.state_dir.empty()) c.set_state_dir(f.state_dir);
  if (!f.cert_dir.empty()) {
    c.clear_cert_dirs();
    for (absl::string_view d : absl::StrSplit(f.cert_dir, ',', absl::SkipEmpty())) {
      c.add_cert_dirs(std::string(d));
    }
  }
  if (f.cert_dir_poll_ms > 0) c.set_cert_dir_poll_interval_ms(f.cert_dir_poll_ms);
  return absl::OkStatus();
}

// The configuration file (or the embedded default), then the command line over it.
absl::StatusOr<ktls::v1::AgentConfig> BuildConfig(const Flags& f,
                                                  const ktls::base::OptionParser& given) {
  ktls::v1::AgentConfig c;
  if (!f.config.empty()) {
    auto loaded = ktls::agent::LoadConfigFile(f.config);
    if (!loaded.ok()) return loaded.status();
    c = *loaded;
  } else {
    c = ktls::agent::DefaultConfig();
  }
  if (absl::Status s = ApplyDataPlane(f, c); !s.ok()) return s;
  if (absl::Status s = ApplyHandoffTrust(f, c); !s.ok()) return s;
  if (absl::Status s = ApplyControlPlane(f, given, c); !s.ok()) return s;
  ktls::agent::ApplyDefaults(&c);
  return c;
}

int RunProbe(bool require_all) {
  ktls::agent::KernelProbeResult probe = ktls::agent::ProbeKernel(ktls::agent::RealSysCalls());
  std::cout << probe.FormatTable() << std::flush;
  if (require_all) {
    for (const auto& cell : probe.cells) {
      if (!cell.ok) {
        std::cerr << "ktls-agent: kTLS probe: not every combination is supported\n";
        return 1;
      }
    }
    if (probe.cells.empty()) return 1;
  }
  return 0;
}

// Written to a temporary name and renamed, so a script polling for the file never reads half.
void WriteReadyFile(const std::string& path, const ktls::agent::Agent& agent,
                    const ktls::control::ControlPlane& control) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << "listen=" << absl::StrJoin(agent.listen_addresses(), ",") << "\n"
        << "handoff_socket=" << agent.config().handoff_socket() << "\n"
        << "ktls_available=" << (agent.probe().AnySupported() ? 1 : 0) << "\n"
        << "control_socket=" << control.control_socket() << "\n"
        << "control_tcp=" << control.tcp_address() << "\n"
        << "metrics=" << control.metrics_address() << "\n";
  }
  std::rename(tmp.c_str(), path.c_str());
}

// Type=notify units: "started" now (listeners, handoff socket and control plane are up).
void NotifyReady(const ktls::agent::Agent& agent) {
  if (absl::Status s = ktls::agent::SdNotifyFromEnv(
          ktls::agent::RealSysCalls(),
          absl::StrCat("READY=1\nSTATUS=serving on ", absl::StrJoin(agent.listen_addresses(), ","),
                       "; kTLS ",
                       agent.probe().AnySupported() ? "available" : "unavailable (relaying)"));
      !s.ok()) {
    KTLS_LOG(kWarning, "could not tell systemd we are ready: ", s.message());
  }
}

// Returns on SIGTERM/SIGINT; logs a stats line every `interval_s` seconds meanwhile (0 = never).
void WaitForStopSignal(const sigset_t& sigs, int interval_s, ktls::agent::Agent& agent) {
  for (;;) {
    int sig = 0;
    if (interval_s > 0) {
      timespec ts{interval_s, 0};
      sig = sigtimedwait(&sigs, nullptr, &ts);
      if (sig < 0) {
        KTLS_LOG(kInfo, "stats: ", agent.stats().Summary());
        continue;
      }
    } else if (sigwait(&sigs, &sig) != 0) {
      continue;
    }
    KTLS_LOG(kInfo, "signal ", sig, ": shutting down");
    (void)ktls::agent::SdNotifyFromEnv(ktls::agent::RealSysCalls(),
                                       "STOPPING=1\nSTATUS=shutting down");
    return;
  }
}

// Signals are taken synchronously by the main thread (sigwait); every thread started afterwards
// inherits the blocked mask. SIGPIPE is ignored: a peer that vanished is an EPIPE, not a kill.
sigset_t BlockStopSignals() {
  signal(SIGPIPE, SIG_IGN);
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  return sigs;
}

// Builds the data plane and the control plane on it, serves until a stop signal, stops both.
int Serve(const ktls::v1::AgentConfig& config, const Flags& flags) {
  const sigset_t sigs = BlockStopSignals();
  absl::StatusOr<ktls::control::ControlPlaneOptions> control_options =
      ktls::control::ControlPlaneOptions::FromConfig(config);
  if (!control_options.ok()) {
    std::cerr << "ktls-agent: configuration error: " << control_options.status().message() << "\n";
    return kExitConfigError;
  }
  absl::StatusOr<std::unique_ptr<ktls::agent::Agent>> agent =
      ktls::agent::Agent::Create(config, ktls::agent::RealSysCalls());
  if (!agent.ok()) {
    std::cerr << "ktls-agent: cannot start: " << agent.status().message() << "\n";
    return kExitStartFailure;
  }
  // The control plane loads the state and watched directories into the data plane before it
  // accepts its first connection.
  absl::StatusOr<std::unique_ptr<ktls::control::ControlPlane>> control =
      ktls::control::ControlPlane::Create(**agent, *std::move(control_options));
  if (!control.ok()) {
    std::cerr << "ktls-agent: cannot start the control plane: " << control.status().message()
              << "\n";
    return kExitStartFailure;
  }
  (*agent)->Start();
  if (absl::Status s = (*control)->Start(); !s.ok()) {
    std::cerr << "ktls-agent: cannot start the control plane: " << s.message() << "\n";
    return kExitStartFailure;
  }
  if (!flags.ready_file.empty()) WriteReadyFile(flags.ready_file, **agent, **control);
  KTLS_LOG(kInfo, "ready");
  NotifyReady(**agent);
  WaitForStopSignal(sigs, flags.stats_interval_s, **agent);
  (*control)->Stop();
  (*agent)->Stop();
  KTLS_LOG(kInfo, "final stats: ", (*agent)->stats().Summary());
  control->reset();
  agent->reset();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  ktls::base::OptionParser parser("ktls-agent", kSummary);
  DeclareDataPlaneFlags(parser, flags);
  DeclareControlPlaneFlags(parser, flags);
  parser.SetVersion(absl::StrCat("ktls-agent ", KTLS_VERSION));
  if (absl::Status s = parser.Parse(argc, argv); !s.ok()) {
    std::cerr << "ktls-agent: " << s.message() << " (see ktls-agent --help)\n";
    return kExitStartFailure;
  }
  if (parser.help_requested()) {
    std::cout << parser.Help();
    return kExitStartFailure;
  }
  if (parser.version_requested()) {
    std::cout << parser.version_line() << "\n";
    return 0;
  }
  if (flags.probe_only) return RunProbe(flags.probe_require_all);
  absl::StatusOr<ktls::v1::AgentConfig> config = BuildConfig(flags, parser);
  if (!config.ok()) {
    std::cerr << "ktls-agent: configuration error: " << config.status().message() << "\n";
    return kExitConfigError;
  }
  if (flags.print_config) {
    std::string text;
    google::protobuf::TextFormat::PrintToString(*config, &text);
    std::cout << text;
    return 0;
  }
  return Serve(*config, flags);
}
