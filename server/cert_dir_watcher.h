// Watched certificate directories (--cert_dir): Kubernetes Secret volumes, cert-manager, or any
// directory an operator or a tool writes to.
//
// Layout: every X.crt with an X.key next to it is one certificate named X; the Kubernetes TLS
// Secret keys tls.crt/tls.key give a certificate named after the directory (or after NAME when
// the flag says NAME=DIR). Other files (ca.crt, ..data, README) are ignored.
//
// Kubernetes updates a Secret volume atomically: it writes the new files into a fresh
// "..<timestamp>" directory, points a "..data_tmp" symlink at it and renames that over "..data";
// tls.crt and tls.key are symlinks through "..data". Whatever the writer, the watcher reads the
// files through their symlinks and compares their SHA-256 with what it last applied, so it sees
// the swap, plain rewrites, and editors' rename-into-place alike.
//
// Change detection is inotify on each directory (IN_CREATE, IN_MOVED_TO, IN_CLOSE_WRITE,
// IN_DELETE, IN_ATTRIB ...: the "..data" rename shows as IN_MOVED_TO), debounced by 100 ms so a
// writer's several steps become one scan, plus a periodic rescan (default every 10 s) that also
// covers directories that do not exist yet, filesystems without inotify, and a missed event.
// This is what kubelet-aware reloaders do (fsnotify + periodic resync).
//
// An update is handed to the callback, which validates and commits it through the same path as
// the API (CommitThrough: CertManager::Apply with a CertificateSource, source "cert_dir"); a
// rejected update (key and certificate from different versions, an expired certificate ...)
// keeps the previous certificate, is reported (log, RELOAD_FAILED event, metric) and retried
// when the files change again. A certificate whose
// files disappear is kept (never lose a certificate; delete it through the API).
#ifndef KTLS_SERVER_CERT_DIR_WATCHER_H_
#define KTLS_SERVER_CERT_DIR_WATCHER_H_

#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace ktls::control {

struct WatchedCertificate {
  std::string dir;
  std::string name;
  std::string cert_path;
  std::string key_path;
  std::string chain_pem;
  std::string key_pem;  // secret: the callback must wipe it (CertManager::Apply does)
};

class CertManager;

struct WatchedDirectoryStatus {
  std::string path;
  absl::Time last_scan;
  absl::Time last_change;
  std::string last_error;
  std::vector<std::string> certificates;
};

class CertDirWatcher {
 public:
  // Returns OK when the certificate was committed, else why not (it is retried when the files
  // change again).
  using Callback = std::function<absl::Status(WatchedCertificate&)>;

  struct Options {
    // "DIR" or "NAME=DIR"
    std::vector<std::string> dirs;
    absl::Duration poll_interval = absl::Seconds(10);
    absl::Duration debounce = absl::Milliseconds(100);
  };

  CertDirWatcher(Options options, Callback callback);
  ~CertDirWatcher();

  // Scans every directory once and applies what changed, on the caller's thread (start-up does
  // this before the data plane accepts connections).
  void ScanNow();
  // Starts the inotify + poll thread.
  absl::Status Start();
  void Stop();

  std::vector<WatchedDirectoryStatus> Status() const;
  uint64_t scans() const;

 private:
  struct Dir {
    std::string path;
    std::string name;  // for tls.crt/tls.key
    int watch = -1;
    WatchedDirectoryStatus status;
  };
  void ScanLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScanDir(Dir& dir) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddWatches() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run();

  const Options options_;
  Callback callback_;
  mutable absl::Mutex mu_;
  std::vector<Dir> dirs_ ABSL_GUARDED_BY(mu_);
  // SHA-256 of chain + key last handed to the callback (successfully or not), per cert path.
  std::map<std::string, std::string> seen_ ABSL_GUARDED_BY(mu_);
  uint64_t scans_ ABSL_GUARDED_BY(mu_) = 0;
  int inotify_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: Stop() wakes the thread
  std::thread thread_;
};

// The callback that commits each update through `certs` (CertManager::Apply, source
// "cert_dir") and reports a rejected one (RELOAD_FAILED event). `certs` must outlive the watcher.
CertDirWatcher::Callback CommitThrough(CertManager& certs);

}  // namespace ktls::control

#endif  // KTLS_SERVER_CERT_DIR_WATCHER_H_
