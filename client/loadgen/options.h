// Command line of ktls-loadgen (`--name=value`, bare `--json` / `--resume`). Pure: parsing and
// validation only, so the bounds are unit-tested.
#ifndef KTLS_CLIENT_LOADGEN_OPTIONS_H_
#define KTLS_CLIENT_LOADGEN_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ktls::loadgen {

// The scenarios of the .NET and PHP seeds. Request paths are ktls-demo-app's routes; the
// benchmark's nginx configuration serves the same paths (tests/bench/).
enum class Scenario {
  kGet,       // GET /bytes/SIZE, keep-alive
  kClose,     // GET /bytes/SIZE with Connection: close: a new connection (TLS handshake) each
  kPost,      // POST /echo with a SIZE-byte body, keep-alive; the echo must match
  kStatic,    // GET /static/NAME, keep-alive; length and SHA-256 checked
  kBulkDown,  // GET /bytes/SIZE with a large SIZE, keep-alive (throughput)
  kBulkUp,    // POST /discard with a SIZE-byte body, keep-alive; the answer is "SIZE\n"
};
const char* ScenarioName(Scenario s);

enum class Progress { kAuto, kOn, kOff };

inline constexpr int kMaxConnections = 10000;
inline constexpr int kMaxThreads = 64;
inline constexpr uint64_t kMaxGetBytes = uint64_t{1} << 30;  // demo app's /bytes/N limit
inline constexpr uint64_t kMaxPostBytes = 16 * 1024 * 1024;  // demo app's body limit
inline constexpr double kMaxDurationS = 3600;

struct Options {
  std::string host;  // from --target
  uint16_t port = 0;
  bool tls = true;                // https:// (default) or http://
  std::string sni = "localhost";  // --sni; empty: none
  std::string host_header = "localhost";
  Scenario scenario = Scenario::kGet;
  uint64_t size = 0;  // body bytes; default per scenario (see Usage)
  bool size_set = false;
  bool resume = false;        // kClose: resume the slot's previous session
  std::string static_name;    // kStatic: /static/NAME
  std::string static_file;    // kStatic: local copy, for the expected size + SHA-256
  std::string static_sha256;  //   or both of these
  uint64_t static_size = 0;
  bool static_size_set = false;
  int connections = 1;
  int threads = 1;
  double duration_s = 10;
  double warmup_s = 1;
  uint64_t requests = 0;            // measured requests bound; 0: duration only
  double timeout_s = 10;            // per request (for kClose: connect + handshake + request)
  std::string tls_version = "1.3";  // 1.2 | 1.3 | any
  std::string ciphers;              // TLS 1.3 suites or TLS 1.2 cipher list; default AES-128-GCM
  std::string groups = "X25519";
  std::string label;            // copied into the JSON
  std::vector<int> watch_pids;  // server processes whose CPU time (with descendants) is reported
  bool json = false;
  Progress progress = Progress::kAuto;
  bool help = false;
};

absl::StatusOr<Options> ParseOptions(int argc, const char* const* argv);
const char* Usage();

// The request line's path for the scenario.
std::string RequestPath(const Options& o);

}  // namespace ktls::loadgen

#endif  // KTLS_CLIENT_LOADGEN_OPTIONS_H_
