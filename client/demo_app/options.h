// Command-line options of ktls-demo-app, on the shared parser (base/options.h).
#ifndef KTLS_CLIENT_DEMO_APP_OPTIONS_H_
#define KTLS_CLIENT_DEMO_APP_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace ktls::demo {

struct Options {
  std::string agent_socket;  // --agent_socket (required)
  std::string app_name = "ktls-demo-app";
  int workers = 1;              // processes, one subscription each
  uint32_t credits = 64;        // initial credits per subscription
  std::string static_dir;       // --static_dir, empty: /static/ answers 404
  int idle_timeout_ms = 30000;  // close a connection idle this long
  bool debug = false;           // one line per connection on stderr
  bool help = false;
  // Without the agent (local_tls.h): accept connections on these and terminate TLS in process
  // (--tls_listen with --tls_cert/--tls_key) or speak plain HTTP (--plain_listen). Benchmarks.
  std::string tls_listen;
  std::string tls_cert;
  std::string tls_key;
  std::string plain_listen;
  // Not flags: the listening sockets main() opened for the above, or -1.
  int tls_listen_fd = -1;
  int plain_listen_fd = -1;
};

absl::StatusOr<Options> ParseOptions(int argc, char** argv);
const char* Usage();

}  // namespace ktls::demo

#endif  // KTLS_CLIENT_DEMO_APP_OPTIONS_H_
