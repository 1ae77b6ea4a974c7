// ktls-loadgen's load engine: --threads event loops (epoll, edge-triggered, non-blocking sockets,
// OpenSSL with socket BIOs), each driving its share of --connections through the scenario.
//
// Timeline: [start, start + warmup) warm-up, then the measurement window, which ends at
// start + warmup + duration, or earlier once --requests measured requests have completed. A request
// counts when it completes inside the window (with --requests: when it claimed one of the N
// request tickets, which are handed out only inside the window). Errors are counted by kind, in the
// window or as warm-up errors; a failed connection is reconnected after a short back-off (10 ms,
// doubling to 1 s while failures repeat).
#ifndef KTLS_CLIENT_LOADGEN_ENGINE_H_
#define KTLS_CLIENT_LOADGEN_ENGINE_H_

#include "absl/status/statusor.h"
#include "client/loadgen/options.h"
#include "client/loadgen/report.h"

namespace ktls::loadgen {

// Runs the load described by `options` and returns what was measured. Fails only when the run
// cannot start (unresolvable target, bad TLS settings, unreadable static file); failures of
// individual connections and requests are counted in Results::errors.
// `progress`: print a progress line on stderr once a second.
absl::StatusOr<Results> RunLoad(const Options& options, bool progress);

}  // namespace ktls::loadgen

#endif  // KTLS_CLIENT_LOADGEN_ENGINE_H_
