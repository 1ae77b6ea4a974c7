#include "server/cert_dir_watcher.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/log.h"
#include "agent/openssl_ptr.h"
#include "base/file.h"
#include "server/cert_manager.h"
#include "server/secrets.h"
#include "server/state_store.h"

namespace ktls::control {
namespace {

constexpr size_t kMaxFileBytes = 1 << 20;
constexpr uint32_t kWatchMask = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE |
                                IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

std::string Basename(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string Digest(const std::string& a, const std::string& b) {
  agent::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), a.data(), a.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), "\0", 1) != 1 ||
      EVP_DigestUpdate(ctx.get(), b.data(), b.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) {
    return std::string();  // no digest: the files count as changed (applied again)
  }
  return std::string(reinterpret_cast<char*>(md), len);
}

// Reads through symlinks (the Secret layout is symlinks all the way).
absl::Status ReadFollowing(const std::string& path, bool secret, std::string* out) {
  base::ReadFileOptions options;
  options.max_bytes = kMaxFileBytes;
  options.secret = secret;
  absl::StatusOr<std::string> bytes = base::ReadFile(path, options);
  if (!bytes.ok()) return bytes.status();
  *out = *std::move(bytes);  // moves the buffer: no copy of a key is left behind
  return absl::OkStatus();
}

}  // namespace

CertDirWatcher::CertDirWatcher(Options options, Callback callback)
    : options_(std::move(options)), callback_(std::move(callback)) {
  absl::MutexLock lock(&mu_);
  for (const std::string& spec : options_.dirs) {
    Dir d;
    const size_t eq = spec.find('=');
    if (eq != std::string::npos && spec.find('/') > eq) {
      d.name = spec.substr(0, eq);
      d.path = spec.substr(eq + 1);
    } else {
      d.path = spec;
      d.name = Basename(spec);
    }
    d.status.path = d.path;
    dirs_.push_back(std::move(d));
  }
}

CertDirWatcher::~CertDirWatcher() { Stop(); }

void CertDirWatcher::ScanNow() {
  absl::MutexLock lock(&mu_);
  ScanLocked();
}

void CertDirWatcher::ScanLocked() {
  ++scans_;
  for (Dir& d : dirs_) ScanDir(d);
}

void CertDirWatcher::ScanDir(Dir& dir) {
  dir.status.last_scan = absl::Now();
  std::vector<std::string> stems;
  DIR* listing = ::opendir(dir.path.c_str());
  if (listing == nullptr) {
    const std::string error = absl::StrCat("cannot list ", dir.path, ": ", strerror(errno));
    if (dir.status.last_error != error) {
      KTLS_LOG(kWarning, "cert_dir: ", error, " (retrying every ",
               absl::FormatDuration(options_.poll_interval), ")");
    }
    dir.status.last_error = error;
    return;
  }
  while (dirent* e = ::readdir(listing)) {
    const std::string file = e->d_name;
    if (file.empty() || file[0] == '.' || !absl::EndsWith(file, ".crt")) continue;
    stems.push_back(file.substr(0, file.size() - 4));
  }
  ::closedir(listing);
  std::sort(stems.begin(), stems.end());
  std::vector<std::string> names;
  for (const std::string& stem : stems) {
    WatchedCertificate c;
    c.dir = dir.path;
    c.name = stem == "tls" ? dir.name : stem;
    c.cert_path = absl::StrCat(dir.path, "/", stem, ".crt");
    c.key_path = absl::StrCat(dir.path, "/", stem, ".key");
    if (::access(c.key_path.c_str(), F_OK) != 0) continue;  // ca.crt and friends
    names.push_back(c.name);
    ScopedWipe wipe_key(c.key_pem);
    absl::Status read = ReadFollowing(c.cert_path, false, &c.chain_pem);
    if (read.ok()) read = ReadFollowing(c.key_path, true, &c.key_pem);
    if (!read.ok()) {
      // Typically a swap in progress; the next event or poll sees the finished state.
      KTLS_LOG(kDebug, "cert_dir: ", read.message());
      continue;
    }
    std::string digest = Digest(c.chain_pem, c.key_pem);
    auto it = seen_.find(c.cert_path);
    if (!digest.empty() && it != seen_.end() && it->second == digest) continue;
    seen_[c.cert_path] = std::move(digest);
    absl::Status applied = callback_(c);
    if (applied.ok()) {
      dir.status.last_change = absl::Now();
      dir.status.last_error.clear();
      KTLS_LOG(kInfo, "cert_dir: certificate '", c.name, "' updated from ", c.cert_path);
    } else {
      dir.status.last_error = absl::StrCat(c.name, ": ", applied.message());
      KTLS_LOG(kWarning, "cert_dir: rejected the update of '", c.name, "' from ", c.cert_path, ": ",
               applied.message(), "; the previous certificate stays in service");
    }
  }
  dir.status.certificates = std::move(names);
  if (dir.status.last_error.rfind("cannot list", 0) == 0) dir.status.last_error.clear();
}

void CertDirWatcher::AddWatches() {
  if (inotify_fd_ < 0) return;
  for (Dir& d : dirs_) {
    if (d.watch >= 0) continue;
    d.watch = inotify_add_watch(inotify_fd_, d.path.c_str(), kWatchMask);
  }
}

absl::Status CertDirWatcher::Start() {
  inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) {
    KTLS_LOG(kWarning, "cert_dir: inotify unavailable (", strerror(errno), "); polling every ",
             absl::FormatDuration(options_.poll_interval));
  }
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  {
    absl::MutexLock lock(&mu_);
    AddWatches();
  }
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void CertDirWatcher::Stop() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)::write(wake_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
  inotify_fd_ = wake_fd_ = -1;
}

void CertDirWatcher::Run() {
  absl::Time next_poll = absl::Now() + options_.poll_interval;
  absl::Time pending_since = absl::InfiniteFuture();  // first unscanned event
  for (;;) {
    const absl::Time now = absl::Now();
    absl::Time wake = std::min(next_poll, pending_since + options_.debounce);
    const int timeout_ms =
        static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(wake - now)) + 1);
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
    const int n = ::poll(fds, inotify_fd_ >= 0 ? 2 : 1, timeout_ms);
    if (n < 0 && errno != EINTR) {
      KTLS_LOG(kError, "cert_dir: poll: ", strerror(errno));
      return;
    }
    if (fds[0].revents & POLLIN) return;  // Stop()
    if (inotify_fd_ >= 0 && (fds[1].revents & POLLIN)) {
      alignas(inotify_event) char buf[16 * 1024];
      bool lost_watch = false;
      for (;;) {
        const ssize_t r = ::read(inotify_fd_, buf, sizeof(buf));
        if (r <= 0) break;
        for (char* p = buf; p < buf + r;) {
          const auto* ev = reinterpret_cast<const inotify_event*>(p);
          if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) lost_watch = true;
          p += sizeof(inotify_event) + ev->len;
        }
      }
      if (lost_watch) {
        absl::MutexLock lock(&mu_);
        for (Dir& d : dirs_) {
          if (d.watch >= 0) inotify_rm_watch(inotify_fd_, d.watch);
          d.watch = -1;
        }
      }
      if (pending_since == absl::InfiniteFuture()) pending_since = absl::Now();
    }
    const absl::Time after = absl::Now();
    if (after >= next_poll || after >= pending_since + options_.debounce) {
      absl::MutexLock lock(&mu_);
      AddWatches();  // directories that appeared since, or were replaced
      ScanLocked();
      pending_since = absl::InfiniteFuture();
      if (after >= next_poll) next_poll = after + options_.poll_interval;
    }
  }
}

std::vector<WatchedDirectoryStatus> CertDirWatcher::Status() const {
  absl::MutexLock lock(&mu_);
  std::vector<WatchedDirectoryStatus> out;
  for (const Dir& d : dirs_) out.push_back(d.status);
  return out;
}

uint64_t CertDirWatcher::scans() const {
  absl::MutexLock lock(&mu_);
  return scans_;
}

CertDirWatcher::Callback CommitThrough(CertManager& certs) {
  return [&certs](WatchedCertificate& c) {
    agent::CertificateSource source;
    source.name = c.name;
    source.chain_pem = c.chain_pem;
    source.key_pem.swap(c.key_pem);  // Apply wipes it
    absl::StatusOr<CertificateChange> r = certs.Apply(source, 0, ReloadSource::kCertDir);
    if (!r.ok()) {
      certs.ReportRejectedReload(c.name, ReloadSource::kCertDir,
                                 absl::StrCat(c.cert_path, ": ", r.status().message()));
    }
    return r.status();
  };
}

}  // namespace ktls::control
