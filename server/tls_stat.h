// The kernel's kTLS counters (/proc/net/tls_stat, Linux >= 5.10): how many sockets have
// software or device TX/RX crypto installed now (TlsCurr*), how many were ever installed
// (TlsTxSw, TlsRxSw, TlsTxDevice, TlsRxDevice), decrypt errors, resyncs, ... The set of names
// depends on the kernel version; they are passed through as the kernel spells them.
// Read by the control plane only (capabilities RPC, /metrics), never on the data path.
#ifndef KTLS_SERVER_TLS_STAT_H_
#define KTLS_SERVER_TLS_STAT_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ktls::control {

inline constexpr char kTlsStatPath[] = "/proc/net/tls_stat";

// Parses "Name<spaces>value" lines; malformed lines are an error naming the line.
absl::StatusOr<std::map<std::string, uint64_t>> ParseTlsStat(absl::string_view text);

// Reads and parses the file. NOT_FOUND (with the meaning: no tls module loaded, or a kernel
// without CONFIG_TLS) when it does not exist.
absl::StatusOr<std::map<std::string, uint64_t>> ReadTlsStat(const std::string& path = kTlsStatPath);

// TlsCurr* entries are gauges (sockets with kTLS right now); the others count events.
inline bool TlsStatIsGauge(absl::string_view name) { return name.substr(0, 7) == "TlsCurr"; }

}  // namespace ktls::control

#endif  // KTLS_SERVER_TLS_STAT_H_
