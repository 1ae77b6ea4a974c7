// The start-up kTLS probe. Shape of one run:
//
//   for each (version, cipher):            one loopback TCP pair (fresh sockets)
//     tx cell: accepted end  -> TCP_ULP "tls", then SOL_TLS TLS_TX with a zero key
//     rx cell: connecting end -> TCP_ULP "tls", then SOL_TLS TLS_RX with a zero key
//
// Each cell gets its own socket, so a failed TX cannot influence RX (the ULP and each
// direction's crypto can be set only once per socket). The very first TCP_ULP attempt decides
// `ulp_available`: when it fails (ENOENT: module not loaded) every cell fails with that reason
// and no more sockets are made, so a host without kTLS pays for one socket pair only.
// Every descriptor is owned by a UniqueFd closing through the same SysCalls.
#include "agent/kernel_probe.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/time.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/unique_fd.h"

#ifndef SOL_TLS
#define SOL_TLS 282  // include/linux/socket.h; glibc's headers may lack it
#endif

namespace ktls::agent {
namespace {

// Debian's Abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0),
// which StrCat takes but std::string_view does not convert to.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr std::array<TlsVersion, 2> kVersions = {TlsVersion::kTls12, TlsVersion::kTls13};
constexpr std::array<KtlsCipher, 3> kCiphers = {KtlsCipher::kAes128Gcm, KtlsCipher::kAes256Gcm,
                                                KtlsCipher::kChaCha20Poly1305};
// Linux's internal ENOTSUPP leaks to user space from some kTLS paths (e.g. older kernels on
// a socket that is not ESTABLISHED); glibc has no name for it.
constexpr int kLinuxEnotsupp = 524;
// Bounds the loopback connect(): Linux applies SO_SNDTIMEO to a blocking connect.
constexpr time_t kConnectTimeoutSec = 2;

// "ENOENT", or "errno 524" when glibc has no name.
std::string ErrnoName(int err) {
  if (err == kLinuxEnotsupp) return "ENOTSUPP";
  const char* name = strerrorname_np(err);
  return name != nullptr ? std::string(name) : absl::StrCat("errno ", err);
}

// What the user would see in an strace, for messages.
std::string StepLabel(std::string_view step) {
  if (step == "ulp") return "TCP_ULP";
  if (step == "tx") return "SOL_TLS TLS_TX";
  if (step == "rx") return "SOL_TLS TLS_RX";
  return std::string(step);
}

struct SetupFailure {
  int err;
  std::string reason;
};

SetupFailure FailSetup(std::string_view step, int err) {
  std::string hint;
  if (err == EMFILE || err == ENFILE) hint = "out of file descriptors, ";
  if (err == ENOBUFS || err == ENOMEM) hint = "out of kernel memory, ";
  return {err, absl::StrCat("could not create a loopback TCP pair to probe kTLS (", hint, Sv(step),
                            ": ", ErrnoName(err), ")")};
}

struct LoopbackPair {
  UniqueFd client;  // the connect()ing end
  UniqueFd server;  // the accept()ed end
};

// A connected TCP pair on 127.0.0.1. Both ends are ESTABLISHED when this returns, which
// TCP_ULP "tls" requires. The listener is closed on return.
std::optional<SetupFailure> MakeLoopbackPair(SysCalls& sys, LoopbackPair& out) {
  SysResult r = sys.Socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (!r.ok()) return FailSetup("socket", r.err);
  UniqueFd listener(sys, static_cast<int>(r.rc));
  // Blocking accept bounded by SO_RCVTIMEO: connect() can return before the kernel has queued
  // the connection on the listener (seen under qemu TCG), so a non-blocking accept would race.
  const timeval accept_timeout{.tv_sec = kConnectTimeoutSec, .tv_usec = 0};
  sys.SetSockOpt(listener.get(), SOL_SOCKET, SO_RCVTIMEO, &accept_timeout, sizeof(accept_timeout));

  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  r = sys.Bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  if (!r.ok()) return FailSetup("bind 127.0.0.1:0", r.err);
  r = sys.Listen(listener.get(), 1);
  if (!r.ok()) return FailSetup("listen", r.err);
  socklen_t addr_len = sizeof(addr);
  r = sys.GetSockName(listener.get(), reinterpret_cast<sockaddr*>(&addr), &addr_len);
  if (!r.ok()) return FailSetup("getsockname", r.err);

  r = sys.Socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (!r.ok()) return FailSetup("socket", r.err);
  UniqueFd client(sys, static_cast<int>(r.rc));
  // Loopback connects complete inside connect(); the timeout only guards against a host whose
  // firewall drops loopback SYNs. Failure to set it is harmless, so it is not checked.
  const timeval timeout{.tv_sec = kConnectTimeoutSec, .tv_usec = 0};
  sys.SetSockOpt(client.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  r = sys.Connect(client.get(), reinterpret_cast<const sockaddr*>(&addr), addr_len);
  if (!r.ok()) return FailSetup("connect to 127.0.0.1", r.err);

  // Waits at most kConnectTimeoutSec (SO_RCVTIMEO) instead of hanging start-up.
  r = sys.Accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
  if (!r.ok()) return FailSetup("accept4", r.err);
  out.server = UniqueFd(sys, static_cast<int>(r.rc));
  out.client = std::move(client);
  return std::nullopt;
}

ProbeCell MakeCell(TlsVersion v, KtlsCipher c, Direction d) {
  ProbeCell cell;
  cell.version = v;
  cell.cipher = c;
  cell.direction = d;
  return cell;
}

void Fail(ProbeCell& cell, int err, std::string reason) {
  cell.ok = false;
  cell.err = err;
  cell.reason = std::move(reason);
}

// Installs a throw-away key for the cell's direction on `fd`, after the ULP is set.
void ProbeCrypto(SysCalls& sys, int fd, ProbeCell& cell) {
  static constexpr std::array<uint8_t, 32> kZeroKey{};
  static constexpr std::array<uint8_t, 12> kZeroIv{};
  absl::StatusOr<CryptoInfo> info = CryptoInfo::FromKeyAndIv(
      cell.direction, cell.version, cell.cipher,
      absl::MakeConstSpan(kZeroKey).first(cell.cipher == KtlsCipher::kAes128Gcm ? 16 : 32), kZeroIv,
      /*record_seq=*/0);
  if (!info.ok()) {  // a bug in this file, not a kernel property; still never fatal
    Fail(cell, EINVAL, std::string(info.status().message()));
    return;
  }
  const SysResult r = sys.SetSockOpt(fd, SOL_TLS, info->sockopt_name(), info->data(), info->size());
  if (!r.ok()) {
    Fail(cell, r.err, DescribeKtlsErrno(DirectionName(cell.direction), r.err));
    return;
  }
  cell.ok = true;
  cell.err = 0;
  cell.reason.clear();
}

std::string CellStatus(const KernelProbeResult& result, TlsVersion v, KtlsCipher c, Direction d) {
  for (const ProbeCell& cell : result.cells) {
    if (cell.version == v && cell.cipher == c && cell.direction == d) {
      return cell.ok ? "ok" : ErrnoName(cell.err);
    }
  }
  return "-";
}

}  // namespace

std::string DescribeKtlsErrno(std::string_view step, int err) {
  const std::string where = absl::StrCat("(", StepLabel(step), ": ", ErrnoName(err), ")");
  const bool ulp = step == "ulp";
  const bool crypto = step == "tx" || step == "rx";
  std::string_view meaning;
  switch (err) {
    case 0:
      meaning = "no error";
      break;
    case ENOENT:
      // TCP_ULP: no ULP named "tls" registered (module absent or not autoloaded, which needs
      // CAP_NET_ADMIN). TLS_TX/RX: the kernel crypto API could not find the AEAD (e.g. gcm(aes)
      // or rfc7539(chacha20,poly1305) modules missing).
      meaning = ulp      ? "kernel tls module not loaded"
                : crypto ? "kernel crypto algorithm for this cipher not available"
                         : "not found";
      break;
    case ENOPROTOOPT:
      meaning = "kernel has no kTLS";
      break;
    case EEXIST:
      meaning = ulp ? "a ULP is already set on this socket" : "already exists";
      break;
    case EINVAL:
      meaning = crypto ? "kernel rejected the cipher or version"
                : ulp  ? "kernel rejected the TCP_ULP request"
                       : "invalid argument";
      break;
    case ENOTCONN:
      meaning = "socket is not a connected TCP socket (kTLS needs ESTABLISHED)";
      break;
    case EBUSY:
      meaning = crypto ? "kTLS keys are already installed for this direction" : "socket is busy";
      break;
    case ENOMEM:
    case ENOBUFS:
      meaning = "kernel out of memory";
      break;
    case EPERM:
    case EACCES:
      meaning = ulp ? "not permitted to enable kTLS (autoloading the tls module needs "
                      "CAP_NET_ADMIN/CAP_SYS_MODULE; run modprobe tls on the host) or blocked "
                      "by a seccomp/LSM policy"
                    : "not permitted by the kernel or a seccomp/LSM policy";
      break;
    case EOPNOTSUPP:
    case kLinuxEnotsupp:
      meaning = "kernel does not support kTLS on this socket or with these parameters";
      break;
    case EFAULT:
      meaning = "bad argument buffer (bug in the caller)";
      break;
    default:
      meaning = "kTLS setup failed";
      break;
  }
  return absl::StrCat(Sv(meaning), " ", where);
}

bool KernelProbeResult::Supports(TlsVersion version, KtlsCipher cipher) const {
  return Supports(version, cipher, Direction::kTx) && Supports(version, cipher, Direction::kRx);
}

bool KernelProbeResult::Supports(TlsVersion version, KtlsCipher cipher, Direction direction) const {
  for (const ProbeCell& cell : cells) {
    if (cell.version == version && cell.cipher == cipher && cell.direction == direction) {
      return cell.ok;
    }
  }
  return false;
}

// Any single (version, cipher, direction): a TX-only kernel can still offload sending.
bool KernelProbeResult::AnySupported() const {
  for (const ProbeCell& cell : cells) {
    if (cell.ok) return true;
  }
  return false;
}

std::string KernelProbeResult::FormatTable() const {
  std::string out = absl::StrCat(
      "kTLS kernel probe: TCP_ULP \"tls\" ",
      ulp_available ? std::string("available") : absl::StrCat("unavailable: ", ulp_reason), "\n");
  absl::StrAppendFormat(&out, "  %-8s %-18s %-14s %s\n", "version", "cipher", "tx", "rx");
  for (TlsVersion v : kVersions) {
    for (KtlsCipher c : kCiphers) {
      absl::StrAppendFormat(&out, "  %-8s %-18s %-14s %s\n", TlsVersionName(v), KtlsCipherName(c),
                            absl::StrCat("tx=", CellStatus(*this, v, c, Direction::kTx)),
                            absl::StrCat("rx=", CellStatus(*this, v, c, Direction::kRx)));
    }
  }
  // Each distinct failure reason once (the ULP reason is already on the first line).
  std::set<std::string> reasons;
  for (const ProbeCell& cell : cells) {
    if (!cell.ok && cell.reason != ulp_reason && reasons.insert(cell.reason).second) {
      absl::StrAppend(&out, "  failure: ", cell.reason, "\n");
    }
  }
  return out;
}

KernelProbeResult ProbeKernel(SysCalls& sys) {
  KernelProbeResult result;
  bool ulp_probed = false;
  std::optional<SetupFailure> last_setup_failure;

  for (TlsVersion version : kVersions) {
    for (KtlsCipher cipher : kCiphers) {
      ProbeCell tx = MakeCell(version, cipher, Direction::kTx);
      ProbeCell rx = MakeCell(version, cipher, Direction::kRx);

      if (ulp_probed && !result.ulp_available) {
        // The first TCP_ULP attempt failed: no socket can get kTLS, don't make more.
        Fail(tx, result.ulp_errno, result.ulp_reason);
        Fail(rx, result.ulp_errno, result.ulp_reason);
      } else {
        LoopbackPair pair;
        if (std::optional<SetupFailure> f = MakeLoopbackPair(sys, pair)) {
          Fail(tx, f->err, f->reason);
          Fail(rx, f->err, f->reason);
          last_setup_failure = std::move(f);
        } else {
          for (auto [cell, fd] :
               {std::pair{&tx, pair.server.get()}, std::pair{&rx, pair.client.get()}}) {
            if (ulp_probed && !result.ulp_available) {
              Fail(*cell, result.ulp_errno, result.ulp_reason);
              continue;
            }
            // Irreversible: once set, this socket is a kTLS socket for good.
            const SysResult r = sys.SetSockOpt(fd, IPPROTO_TCP, TCP_ULP, "tls", 3);
            if (!ulp_probed) {
              ulp_probed = true;
              result.ulp_available = r.ok();
              if (!r.ok()) {
                result.ulp_errno = r.err;
                result.ulp_reason = DescribeKtlsErrno("ulp", r.err);
              }
            }
            if (!r.ok()) {
              Fail(*cell, r.err, DescribeKtlsErrno("ulp", r.err));
              continue;
            }
            ProbeCrypto(sys, fd, *cell);
          }
        }
      }
      result.cells.push_back(std::move(tx));
      result.cells.push_back(std::move(rx));
    }
  }

  if (!ulp_probed) {
    // Never got as far as TCP_ULP: say why instead of pretending the kernel lacks kTLS.
    result.ulp_available = false;
    result.ulp_errno = last_setup_failure ? last_setup_failure->err : 0;
    result.ulp_reason = absl::StrCat(
        "not probed: ", last_setup_failure ? last_setup_failure->reason : "no socket pair");
  }
  return result;
}

}  // namespace ktls::agent
