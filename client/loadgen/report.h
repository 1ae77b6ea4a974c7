// What one ktls-loadgen run measured, and its two renderings: text for people, JSON (schema
// "ktls-loadgen/1") for the benchmark harness. The JSON's keys are stable: tests pin them.
#ifndef KTLS_CLIENT_LOADGEN_REPORT_H_
#define KTLS_CLIENT_LOADGEN_REPORT_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "client/loadgen/errors.h"
#include "client/loadgen/histogram.h"
#include "client/loadgen/options.h"

namespace ktls::loadgen {

inline constexpr char kJsonSchema[] = "ktls-loadgen/1";

struct Results {
  double measured_s = 0;        // length of the measurement window
  uint64_t requests = 0;        // verified responses completed in the window
  uint64_t body_bytes_in = 0;   // response body bytes received in the window
  uint64_t body_bytes_out = 0;  // request body bytes sent in the window
  LatencyHistogram latency;     // ns, one sample per measured request
  uint64_t handshakes = 0;      // TLS handshakes completed in the window (TCP connects if plain)
  uint64_t resumed = 0;         // of which resumed a session
  std::array<uint64_t, kErrorKinds> errors{};  // in the window
  uint64_t warmup_errors = 0;                  // before the window (all kinds)
  std::string first_error;                     // the first error's message, for a person to read
  double cpu_user_s = 0;                       // loadgen's own CPU time in the window (all threads)
  double cpu_system_s = 0;
  std::string tls_version;  // as negotiated on the first handshake
  std::string cipher;
  double watched_cpu_s = 0;                 // --watch_pids' CPU time in the window
  std::map<std::string, int64_t> tls_stat;  // /proc/net/tls_stat changes over the window

  uint64_t total_errors() const {
    uint64_t n = 0;
    for (uint64_t e : errors) n += e;
    return n;
  }
};

std::string FormatJson(const Options& o, const Results& r);
std::string FormatText(const Options& o, const Results& r);

}  // namespace ktls::loadgen

#endif  // KTLS_CLIENT_LOADGEN_REPORT_H_
