// Loading and validating the agent's configuration (proto/ktls/v1/config.proto).
#ifndef KTLS_AGENT_CONFIG_H_
#define KTLS_AGENT_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "ktls/v1/config.pb.h"

namespace ktls::agent {

// The embedded default configuration (what runs with no --config): one listener on
// 127.0.0.1:8443, the handoff socket /run/ktls/handoff.sock, offload=preferred, an in-memory
// development certificate.
const char* DefaultConfigText();
v1::AgentConfig DefaultConfig();

// Parses a protobuf text-format file. Errors name the file and the line.
absl::StatusOr<v1::AgentConfig> LoadConfigFile(const std::string& path);
absl::StatusOr<v1::AgentConfig> ParseConfigText(const std::string& text, const std::string& origin);

// Fills zero-valued fields with their documented defaults.
void ApplyDefaults(v1::AgentConfig* config);
// Checks ranges and consistency; messages name the field.
absl::Status ValidateConfig(const v1::AgentConfig& config);

}  // namespace ktls::agent

#endif  // KTLS_AGENT_CONFIG_H_
