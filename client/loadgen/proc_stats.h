// What the kernel says about other processes and about kTLS, sampled by ktls-loadgen at the
// edges of its measurement window: CPU time of the server's process trees (--watch_pids) and
// /proc/net/tls_stat. Linux /proc only; both return empty results where /proc lacks them.
#ifndef KTLS_CLIENT_LOADGEN_PROC_STATS_H_
#define KTLS_CLIENT_LOADGEN_PROC_STATS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ktls::loadgen {

// utime + stime, in seconds, of the processes `roots` and all their descendants (all threads),
// alive at the time of the call.
double ProcessTreeCpuSeconds(const std::vector<int>& roots);

// /proc/net/tls_stat as name -> value (empty when the kernel has no kTLS).
std::map<std::string, int64_t> ReadTlsStat();

}  // namespace ktls::loadgen

#endif  // KTLS_CLIENT_LOADGEN_PROC_STATS_H_
