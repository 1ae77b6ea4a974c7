// ktls-loadgen: HTTP/1.1-over-TLS load generator and conformance driver for ktls-sidecar's
// benchmarks (tests/bench/) and for anyone measuring a TLS endpoint. See Usage() in options.cc.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "client/loadgen/engine.h"
#include "client/loadgen/options.h"
#include "client/loadgen/report.h"

int main(int argc, char** argv) {
  using namespace ktls::loadgen;
  absl::StatusOr<Options> options = ParseOptions(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "ktls-loadgen: %s\n\n%s", std::string(options.status().message()).c_str(),
                 Usage());
    return 2;
  }
  if (options->help) {
    std::fputs(Usage(), stdout);
    return 0;
  }
  ::signal(SIGPIPE, SIG_IGN);
  const bool progress = options->progress == Progress::kOn ||
                        (options->progress == Progress::kAuto && ::isatty(STDERR_FILENO));
  absl::StatusOr<Results> results = RunLoad(*options, progress);
  if (!results.ok()) {
    std::fprintf(stderr, "ktls-loadgen: %s\n", std::string(results.status().message()).c_str());
    return 2;
  }
  const std::string out =
      options->json ? FormatJson(*options, *results) : FormatText(*options, *results);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  return results->total_errors() == 0 && results->warmup_errors == 0 ? 0 : 1;
}
