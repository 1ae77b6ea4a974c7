// ktls-agent: the daemon's entry point. Parses flags over the configuration, builds the data
// plane (agent/agent.h), runs until SIGTERM/SIGINT, then prints what was offloaded.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/internal/parse.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
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
#include "google/protobuf/text_format.h"
#include "server/control_plane.h"

ABSL_FLAG(std::string, config, "", "configuration file (protobuf text format, see proto/ktls/v1/config.proto)");
ABSL_FLAG(std::string, listen, "", "comma-separated listen addresses host:port ([v6]:port); overrides the config's listeners");
ABSL_FLAG(std::string, handoff_socket, "", "Unix socket path where apps subscribe");
ABSL_FLAG(std::string, cert, "", "comma-separated CHAIN.pem:KEY.pem pairs; the first is the default");
ABSL_FLAG(std::string, offload, "", "kTLS policy: preferred | required | off");
ABSL_FLAG(int, workers, -1, "event-loop threads (0 = number of CPUs)");
ABSL_FLAG(std::string, alpn, "", "comma-separated ALPN protocols in server preference order");
ABSL_FLAG(std::string, client_ca, "", "CA bundle to verify client certificates");
ABSL_FLAG(bool, require_client_cert, false, "fail handshakes without a valid client certificate");
ABSL_FLAG(std::string, min_tls_version, "", "TLSv1.2 or TLSv1.3");
ABSL_FLAG(std::string, tls13_ciphersuites, "", "OpenSSL TLS 1.3 ciphersuites list");
ABSL_FLAG(std::string, tls12_ciphers, "", "OpenSSL TLS 1.2 cipher list");
ABSL_FLAG(int, handshake_timeout_ms, 0, "handshake timeout");
ABSL_FLAG(int, handoff_wait_timeout_ms, 0, "how long a ready connection may wait for an app");
ABSL_FLAG(std::string, handoff_socket_mode, "", "file mode of --handoff_socket (octal; default 0660)");
ABSL_FLAG(std::string, handoff_socket_group, "",
          "group owning --handoff_socket (name or gid); its members may subscribe");
ABSL_FLAG(std::string, handoff_allowed_uids, "",
          "comma-separated uids allowed to subscribe besides the agent's own (SO_PEERCRED)");
ABSL_FLAG(std::string, handoff_allowed_gids, "",
          "comma-separated gids (primary or supplementary) allowed to subscribe");
ABSL_FLAG(int, app_subscribe_timeout_ms, 0, "an app connection must subscribe within this (default 5000)");
ABSL_FLAG(int, max_app_connections, 0, "connections held on the handoff socket (default 256)");
ABSL_FLAG(std::string, log_level, "", "debug | info | warning | error");
ABSL_FLAG(bool, probe_only, false, "probe the kernel's kTLS support, print the table and exit");
ABSL_FLAG(bool, probe_require_all, false,
          "with --probe_only: exit 1 unless the kernel accepted every version x cipher x direction");
ABSL_FLAG(bool, print_config, false, "print the effective configuration and exit");
ABSL_FLAG(std::string, ready_file, "", "write the bound addresses here once serving (for scripts and tests)");
ABSL_FLAG(int, stats_interval_s, 0, "log a stats line every N seconds (0 = only at exit)");

// Control plane (server/, docs/operations.md).
ABSL_FLAG(std::string, control_socket, ktls::kDefaultControlSocket,
          "Unix socket of the gRPC control API (ktlsctl); empty = none");
ABSL_FLAG(std::string, control_socket_mode, "0600",
          "file mode of --control_socket (octal; 0660 with --control_socket_group for group access)");
ABSL_FLAG(std::string, control_socket_group, "", "group owning --control_socket");
ABSL_FLAG(std::string, control_tcp_address, "",
          "host:port for the control API over TCP: mutual TLS only, needs --control_tls_cert, "
          "--control_tls_key, --control_client_ca and --control_allowed_clients");
ABSL_FLAG(std::string, control_tls_cert, "", "server certificate chain (PEM) for --control_tcp_address");
ABSL_FLAG(std::string, control_tls_key, "", "its private key (PEM)");
ABSL_FLAG(std::string, control_client_ca, "", "CA bundle that issues control clients' certificates");
ABSL_FLAG(std::string, control_allowed_clients, "",
          "comma-separated client identities allowed on TCP: URI SAN (SPIFFE ID), DNS SAN or CN");
ABSL_FLAG(std::string, metrics_address, ktls::kDefaultMetricsAddress,
          "host:port for Prometheus /metrics; empty = off");
ABSL_FLAG(std::string, state_dir, "",
          "directory where committed certificates, trust bundles and ticket keys persist");
ABSL_FLAG(std::string, cert_dir, "",
          "comma-separated watched certificate directories (DIR or NAME=DIR): X.crt + X.key is "
          "certificate X, tls.crt + tls.key (Kubernetes Secret) is named after the directory");
ABSL_FLAG(int, cert_dir_poll_ms, 0, "rescan interval of --cert_dir besides inotify (0 = 10000)");

namespace {

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
absl::Status ApplyHandoffTrustFlags(ktls::v1::AgentConfig* c) {
  if (auto v = absl::GetFlag(FLAGS_handoff_socket_mode); !v.empty()) {
    absl::StatusOr<uint32_t> m = ParseOctalMode("handoff_socket_mode", v);
    if (!m.ok()) return m.status();
    c->set_handoff_socket_mode(*m);
  }
  if (auto v = absl::GetFlag(FLAGS_handoff_socket_group); !v.empty()) c->set_handoff_socket_group(v);
  if (auto v = absl::GetFlag(FLAGS_handoff_allowed_uids); !v.empty()) {
    if (absl::Status s = ParseIdList("handoff_allowed_uids", v, c->mutable_handoff_allowed_uids());
        !s.ok()) {
      return s;
    }
  }
  if (auto v = absl::GetFlag(FLAGS_handoff_allowed_gids); !v.empty()) {
    if (absl::Status s = ParseIdList("handoff_allowed_gids", v, c->mutable_handoff_allowed_gids());
        !s.ok()) {
      return s;
    }
  }
  if (int v = absl::GetFlag(FLAGS_app_subscribe_timeout_ms); v > 0) c->set_app_subscribe_timeout_ms(v);
  if (int v = absl::GetFlag(FLAGS_max_app_connections); v > 0) c->set_max_app_connections(v);
  return absl::OkStatus();
}

absl::StatusOr<ktls::v1::AgentConfig> BuildConfig() {
  ktls::v1::AgentConfig c;
  if (std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    auto loaded = ktls::LoadConfigFile(path);
    if (!loaded.ok()) return loaded.status();
    c = *loaded;
  } else {
    c = ktls::DefaultConfig();
  }
  if (std::string l = absl::GetFlag(FLAGS_listen); !l.empty()) {
    c.clear_listeners();
    int i = 0;
    for (absl::string_view hp : absl::StrSplit(l, ',', absl::SkipEmpty())) {
      auto addr = ktls::ParseHostPort("", std::string(hp));
      if (!addr.ok()) return addr.status();
      std::string host;
      uint32_t port;
      ktls::FormatSockaddr(reinterpret_cast<const sockaddr*>(&addr->addr), &host, &port);
      auto* lc = c.add_listeners();
      lc->set_name(i == 0 ? "https" : absl::StrCat("https", i));
      lc->set_address(host);
      lc->set_port(port);
      ++i;
    }
  }
  if (auto v = absl::GetFlag(FLAGS_handoff_socket); !v.empty()) c.set_handoff_socket(v);
  if (auto v = absl::GetFlag(FLAGS_cert); !v.empty()) {
    c.clear_certificates();
    bool first = true;
    for (absl::string_view pair : absl::StrSplit(v, ',', absl::SkipEmpty())) {
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
  }
  if (auto v = absl::GetFlag(FLAGS_offload); !v.empty()) {
    if (v == "preferred") c.set_offload(ktls::v1::OFFLOAD_POLICY_PREFERRED);
    else if (v == "required") c.set_offload(ktls::v1::OFFLOAD_POLICY_REQUIRED);
    else if (v == "off") c.set_offload(ktls::v1::OFFLOAD_POLICY_OFF);
    else return absl::InvalidArgumentError(absl::StrCat("--offload: '", v, "' is not preferred, required or off"));
  }
  if (int v = absl::GetFlag(FLAGS_workers); v >= 0) c.set_workers(v);
  if (auto v = absl::GetFlag(FLAGS_alpn); !v.empty()) {
    c.clear_alpn();
    for (absl::string_view p : absl::StrSplit(v, ',', absl::SkipEmpty())) c.add_alpn(std::string(p));
  }
  if (auto v = absl::GetFlag(FLAGS_client_ca); !v.empty()) c.set_client_ca_file(v);
  if (absl::GetFlag(FLAGS_require_client_cert)) c.set_require_client_cert(true);
  if (auto v = absl::GetFlag(FLAGS_min_tls_version); !v.empty()) c.set_min_tls_version(v);
  if (auto v = absl::GetFlag(FLAGS_tls13_ciphersuites); !v.empty()) c.set_tls13_ciphersuites(v);
  if (auto v = absl::GetFlag(FLAGS_tls12_ciphers); !v.empty()) c.set_tls12_ciphers(v);
  if (int v = absl::GetFlag(FLAGS_handshake_timeout_ms); v > 0) c.set_handshake_timeout_ms(v);
  if (int v = absl::GetFlag(FLAGS_handoff_wait_timeout_ms); v > 0) c.set_handoff_wait_timeout_ms(v);
  if (auto v = absl::GetFlag(FLAGS_log_level); !v.empty()) c.set_log_level(v);
  if (absl::Status s = ApplyHandoffTrustFlags(&c); !s.ok()) return s;

  // Control plane. control_socket and metrics_address stay unset unless the command line or the
  // config file gives them: unset, their defaults apply best-effort (a second agent on the same
  // host starts without them, with a warning); given, they are required.
  const auto given = [](absl::string_view name) {
    return absl::flags_internal::WasPresentOnCommandLine(name);
  };
  if (given("control_socket")) c.set_control_socket(absl::GetFlag(FLAGS_control_socket));
  if (given("metrics_address")) c.set_metrics_address(absl::GetFlag(FLAGS_metrics_address));
  if (given("control_socket_mode") || c.control_socket_mode() == 0) {
    const std::string mode = absl::GetFlag(FLAGS_control_socket_mode);
    char* end = nullptr;
    const unsigned long m = std::strtoul(mode.c_str(), &end, 8);
    if (mode.empty() || *end != '\0' || m > 0777) {
      return absl::InvalidArgumentError(
          absl::StrCat("--control_socket_mode: '", mode, "' is not an octal mode like 0600"));
    }
    c.set_control_socket_mode(static_cast<uint32_t>(m));
  }
  if (auto v = absl::GetFlag(FLAGS_control_socket_group); !v.empty()) c.set_control_socket_group(v);
  if (auto v = absl::GetFlag(FLAGS_control_tcp_address); !v.empty()) c.set_control_tcp_address(v);
  if (auto v = absl::GetFlag(FLAGS_control_tls_cert); !v.empty()) c.set_control_tls_cert_file(v);
  if (auto v = absl::GetFlag(FLAGS_control_tls_key); !v.empty()) c.set_control_tls_key_file(v);
  if (auto v = absl::GetFlag(FLAGS_control_client_ca); !v.empty()) c.set_control_client_ca_file(v);
  if (auto v = absl::GetFlag(FLAGS_control_allowed_clients); !v.empty()) {
    c.clear_control_allowed_clients();
    for (absl::string_view id : absl::StrSplit(v, ',', absl::SkipEmpty())) {
      c.add_control_allowed_clients(std::string(id));
    }
  }
  if (auto v = absl::GetFlag(FLAGS_state_dir); !v.empty()) c.set_state_dir(v);
  if (auto v = absl::GetFlag(FLAGS_cert_dir); !v.empty()) {
    c.clear_cert_dirs();
    for (absl::string_view d : absl::StrSplit(v, ',', absl::SkipEmpty())) {
      c.add_cert_dirs(std::string(d));
    }
  }
  if (int v = absl::GetFlag(FLAGS_cert_dir_poll_ms); v > 0) c.set_cert_dir_poll_interval_ms(v);
  ktls::ApplyDefaults(&c);
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "ktls-agent: terminates TLS, installs the keys into the kernel (kTLS) and hands the "
      "socket to the application over a Unix socket.");
  absl::ParseCommandLine(argc, argv);

  if (absl::GetFlag(FLAGS_probe_only)) {
    ktls::KernelProbeResult probe = ktls::ProbeKernel(ktls::RealSysCalls());
    std::cout << probe.FormatTable() << std::flush;
    if (absl::GetFlag(FLAGS_probe_require_all)) {
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
  absl::StatusOr<ktls::v1::AgentConfig> config = BuildConfig();
  if (!config.ok()) {
    std::cerr << "ktls-agent: configuration error: " << config.status().message() << "\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_print_config)) {
    std::string text;
    google::protobuf::TextFormat::PrintToString(*config, &text);
    std::cout << text;
    return 0;
  }

  // Signals are taken synchronously by this thread (sigwait); every thread started afterwards
  // inherits the blocked mask. SIGPIPE is ignored: a peer that vanished is an EPIPE, not a kill.
  signal(SIGPIPE, SIG_IGN);
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  absl::StatusOr<ktls::ControlPlaneOptions> control_options =
      ktls::ControlPlaneOptions::FromConfig(*config);
  if (!control_options.ok()) {
    std::cerr << "ktls-agent: configuration error: " << control_options.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<ktls::Agent>> agent =
      ktls::Agent::Create(*config, ktls::RealSysCalls());
  if (!agent.ok()) {
    std::cerr << "ktls-agent: cannot start: " << agent.status().message() << "\n";
    return 1;
  }
  // The control plane loads the state and watched directories into the data plane before it
  // accepts its first connection.
  absl::StatusOr<std::unique_ptr<ktls::ControlPlane>> control =
      ktls::ControlPlane::Create(**agent, *std::move(control_options));
  if (!control.ok()) {
    std::cerr << "ktls-agent: cannot start the control plane: " << control.status().message()
              << "\n";
    return 1;
  }
  (*agent)->Start();
  if (absl::Status s = (*control)->Start(); !s.ok()) {
    std::cerr << "ktls-agent: cannot start the control plane: " << s.message() << "\n";
    return 1;
  }
  if (std::string rf = absl::GetFlag(FLAGS_ready_file); !rf.empty()) {
    std::string tmp = rf + ".tmp";
    {
      std::ofstream out(tmp);
      out << "listen=" << absl::StrJoin((*agent)->listen_addresses(), ",") << "\n"
          << "handoff_socket=" << (*agent)->config().handoff_socket() << "\n"
          << "ktls_available=" << ((*agent)->probe().AnySupported() ? 1 : 0) << "\n"
          << "control_socket=" << (*control)->control_socket() << "\n"
          << "control_tcp=" << (*control)->tcp_address() << "\n"
          << "metrics=" << (*control)->metrics_address() << "\n";
    }
    std::rename(tmp.c_str(), rf.c_str());
  }
  KTLS_LOG(kInfo, "ready");
  // Type=notify units: "started" now (listeners, handoff socket and control plane are up).
  if (absl::Status s = ktls::SdNotifyFromEnv(
          ktls::RealSysCalls(),
          absl::StrCat("READY=1\nSTATUS=serving on ",
                       absl::StrJoin((*agent)->listen_addresses(), ","), "; kTLS ",
                       (*agent)->probe().AnySupported() ? "available" : "unavailable (relaying)"));
      !s.ok()) {
    KTLS_LOG(kWarning, "could not tell systemd we are ready: ", s.message());
  }

  const int interval = absl::GetFlag(FLAGS_stats_interval_s);
  for (;;) {
    int sig = 0;
    if (interval > 0) {
      timespec ts{interval, 0};
      sig = sigtimedwait(&sigs, nullptr, &ts);
      if (sig < 0) {
        KTLS_LOG(kInfo, "stats: ", (*agent)->stats().Summary());
        continue;
      }
    } else if (sigwait(&sigs, &sig) != 0) {
      continue;
    }
    KTLS_LOG(kInfo, "signal ", sig, ": shutting down");
    (void)ktls::SdNotifyFromEnv(ktls::RealSysCalls(), "STOPPING=1\nSTATUS=shutting down");
    break;
  }
  (*control)->Stop();
  (*agent)->Stop();
  KTLS_LOG(kInfo, "final stats: ", (*agent)->stats().Summary());
  control->reset();
  agent->reset();
  return 0;
}
