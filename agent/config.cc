#include "agent/config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace ktls::agent {

const char* DefaultConfigText() {
  return R"pb(
    listeners { name: "https" address: "127.0.0.1" port: 8443 }
    handoff_socket: "/run/ktls/handoff.sock"
    offload: OFFLOAD_POLICY_PREFERRED
    alpn: "http/1.1"
    min_tls_version: "TLSv1.2"
    handshake_timeout_ms: 10000
    max_concurrent_handshakes: 4096
    handoff_wait_timeout_ms: 5000
    max_pending_handoffs: 1024
    handoff_socket_mode: 0660  # octal
    app_subscribe_timeout_ms: 5000
    max_app_connections: 256
    relay_buffer_bytes: 65536
    max_connections: 65536
    log_level: "info"
  )pb";
}

namespace {

class ErrorCollector final : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first.empty()) first = absl::StrCat("line ", line + 1, ":", column + 1, ": ", message);
  }
  std::string first;
};

}  // namespace

absl::StatusOr<v1::AgentConfig> ParseConfigText(const std::string& text,
                                                const std::string& origin) {
  v1::AgentConfig config;
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": ", errors.first));
  }
  return config;
}

v1::AgentConfig DefaultConfig() {
  absl::StatusOr<v1::AgentConfig> c = ParseConfigText(DefaultConfigText(), "embedded default");
  return c.ok() ? *c : v1::AgentConfig();
}

absl::StatusOr<v1::AgentConfig> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open config file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("config file ", path, " is larger than 1 MiB"));
  }
  return ParseConfigText(ss.str(), path);
}

void ApplyDefaults(v1::AgentConfig* c) {
  const v1::AgentConfig d = DefaultConfig();
  if (c->listeners().empty()) *c->mutable_listeners() = d.listeners();
  for (int i = 0; i < c->listeners_size(); ++i) {
    auto* l = c->mutable_listeners(i);
    if (l->name().empty()) l->set_name(absl::StrCat("listener", i));
  }
  if (c->handoff_socket().empty()) c->set_handoff_socket(d.handoff_socket());
  if (c->offload() == v1::OFFLOAD_POLICY_UNSPECIFIED) c->set_offload(v1::OFFLOAD_POLICY_PREFERRED);
  if (c->min_tls_version().empty()) c->set_min_tls_version("TLSv1.2");
  if (c->handshake_timeout_ms() == 0) c->set_handshake_timeout_ms(d.handshake_timeout_ms());
  if (c->max_concurrent_handshakes() == 0) {
    c->set_max_concurrent_handshakes(d.max_concurrent_handshakes());
  }
  if (c->handoff_wait_timeout_ms() == 0)
    c->set_handoff_wait_timeout_ms(d.handoff_wait_timeout_ms());
  if (c->max_pending_handoffs() == 0) c->set_max_pending_handoffs(d.max_pending_handoffs());
  if (c->handoff_socket_mode() == 0) c->set_handoff_socket_mode(d.handoff_socket_mode());
  if (c->app_subscribe_timeout_ms() == 0) {
    c->set_app_subscribe_timeout_ms(d.app_subscribe_timeout_ms());
  }
  if (c->max_app_connections() == 0) c->set_max_app_connections(d.max_app_connections());
  if (c->relay_buffer_bytes() == 0) c->set_relay_buffer_bytes(d.relay_buffer_bytes());
  if (c->max_connections() == 0) c->set_max_connections(d.max_connections());
  if (c->log_level().empty()) c->set_log_level("info");
}

absl::Status ValidateConfig(const v1::AgentConfig& c) {
  if (c.listeners().empty()) return absl::InvalidArgumentError("listeners: at least one is needed");
  for (const auto& l : c.listeners()) {
    if (l.port() > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("listeners.port ", l.port(), " out of range"));
    }
  }
  if (c.workers() > 256) return absl::InvalidArgumentError("workers: at most 256");
  if (c.min_tls_version() != "TLSv1.2" && c.min_tls_version() != "TLSv1.3") {
    return absl::InvalidArgumentError(
        absl::StrCat("min_tls_version: '", c.min_tls_version(), "' is not TLSv1.2 or TLSv1.3"));
  }
  if (c.relay_buffer_bytes() < 4096 || c.relay_buffer_bytes() > (16u << 20)) {
    return absl::InvalidArgumentError("relay_buffer_bytes: must be within 4096 .. 16777216");
  }
  if (c.handshake_timeout_ms() < 100) {
    return absl::InvalidArgumentError("handshake_timeout_ms: at least 100");
  }
  if (c.require_client_cert() && c.client_ca_file().empty()) {
    return absl::InvalidArgumentError("require_client_cert needs client_ca_file");
  }
  int defaults = 0;
  for (const auto& cert : c.certificates()) {
    if (cert.cert_chain_file().empty() || cert.private_key_file().empty()) {
      return absl::InvalidArgumentError(
          "certificates: cert_chain_file and private_key_file are both required");
    }
    defaults += cert.is_default() ? 1 : 0;
  }
  if (defaults > 1) return absl::InvalidArgumentError("certificates: more than one is_default");
  for (const auto& a : c.alpn()) {
    if (a.empty() || a.size() > 255) {
      return absl::InvalidArgumentError("alpn: protocol names must be 1..255 bytes");
    }
  }
  return absl::OkStatus();
}

}  // namespace ktls::agent
