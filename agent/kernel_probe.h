// Start-up probe: which TLS versions x ciphers x directions this kernel accepts for kTLS.
//
// For every combination the probe makes a fresh loopback TCP pair, sets TCP_ULP "tls" and
// setsockopt(SOL_TLS, TLS_TX / TLS_RX) with a throw-away key. The result is logged once as a
// table, exported as metrics and through the capabilities RPC, and consulted by the offload policy
// (offload=required negotiates only suites that passed). Errno is translated into meaning here,
// where it happens: ENOENT on TCP_ULP means the `tls` module is not loaded.
#ifndef KTLS_AGENT_KERNEL_PROBE_H_
#define KTLS_AGENT_KERNEL_PROBE_H_

#include <string>
#include <vector>

#include "agent/ktls_crypto_info.h"
#include "agent/syscalls.h"

namespace ktls::agent {

struct ProbeCell {
  TlsVersion version;
  KtlsCipher cipher;
  Direction direction;
  bool ok = false;
  int err = 0;         // errno of the failing step
  std::string reason;  // human meaning of the failure, empty when ok
};

struct KernelProbeResult {
  bool ulp_available = false;  // TCP_ULP "tls" could be set
  int ulp_errno = 0;
  std::string ulp_reason;  // e.g. "kernel tls module not loaded (TCP_ULP: ENOENT)"
  std::vector<ProbeCell> cells;

  // True when both TX and RX passed for this version and cipher.
  bool Supports(TlsVersion version, KtlsCipher cipher) const;
  bool Supports(TlsVersion version, KtlsCipher cipher, Direction direction) const;
  bool AnySupported() const;
  // The table for the log, one row per version x cipher, e.g.
  //   TLSv1.3  AES-128-GCM        tx=ok  rx=ok
  std::string FormatTable() const;
};

// Runs the probe. Never fails: problems become cells with ok=false and a reason. Uses only the
// given SysCalls (tests inject ENOENT/ENOPROTOOPT/EMFILE ...).
KernelProbeResult ProbeKernel(SysCalls& sys);

// Meaning of an errno from a kTLS setsockopt step ("ulp", "tx" or "rx"), for logs, metrics and
// ConnectionInfo.fallback_reason. Examples:
//   ("ulp", ENOENT)      -> "kernel tls module not loaded (TCP_ULP: ENOENT)"
//   ("tx", ENOPROTOOPT)  -> "kernel has no kTLS (SOL_TLS TLS_TX: ENOPROTOOPT)"
//   ("rx", EINVAL)       -> "kernel rejected the cipher or version (SOL_TLS TLS_RX: EINVAL)"
std::string DescribeKtlsErrno(std::string_view step, int err);

}  // namespace ktls::agent

#endif  // KTLS_AGENT_KERNEL_PROBE_H_
