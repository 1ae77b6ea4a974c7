#include "server/cert_dir_watcher.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "server/cert_manager.h"
#include "tests/unit/agent/test_certs.h"
#include "tests/unit/temp_dir.h"

namespace ktls::control {
namespace {

class CertDirWatcherTest : public ::testing::Test {
 protected:
  void Write(const std::string& rel, const std::string& contents) {
    std::ofstream(dir_ + "/" + rel, std::ios::trunc) << contents;
  }
  // The kubelet's atomic update: a fresh ..<ts> directory, ..data_tmp -> it, renamed over ..data.
  void Publish(const std::string& version, const std::string& crt, const std::string& key) {
    const std::string ts = "..ts_" + version;
    ASSERT_EQ(0, mkdir((dir_ + "/" + ts).c_str(), 0755));
    Write(ts + "/tls.crt", crt);
    Write(ts + "/tls.key", key);
    ASSERT_EQ(0, symlink(ts.c_str(), (dir_ + "/..data_tmp").c_str()));
    ASSERT_EQ(0, rename((dir_ + "/..data_tmp").c_str(), (dir_ + "/..data").c_str()));
    for (const char* f : {"tls.crt", "tls.key"}) {
      const std::string link = dir_ + "/" + f;
      if (access(link.c_str(), F_OK) != 0) {
        ASSERT_EQ(0, symlink((std::string("..data/") + f).c_str(), link.c_str()));
      }
    }
  }

  struct Seen {
    std::string name;
    std::string chain;
    std::string key;
  };
  CertDirWatcher::Callback Recorder(absl::Status result = absl::OkStatus()) {
    return [this, result](WatchedCertificate& c) {
      std::lock_guard<std::mutex> lock(mu_);
      seen_.push_back({c.name, c.chain_pem, c.key_pem});
      return result;
    };
  }
  std::vector<Seen> SeenNow() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }
  bool WaitFor(size_t n, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (SeenNow().size() >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  testing::ScopedTempDir tmp_{"ktls-watch-test"};
  const std::string dir_ = tmp_.path();
  std::mutex mu_;
  std::vector<Seen> seen_;
};

TEST_F(CertDirWatcherTest, NamesPairsAndIgnoresTheRest) {
  Write("api.crt", "API CERT");
  Write("api.key", "API KEY");
  Write("ca.crt", "CA ONLY");  // no key: ignored
  Write("notes.txt", "whatever");
  Write(".hidden.crt", "x");
  Write(".hidden.key", "y");
  Publish("1", "TLS CERT", "TLS KEY");
  CertDirWatcher::Options o;
  o.dirs = {dir_};
  CertDirWatcher w(o, Recorder());
  w.ScanNow();
  std::vector<Seen> seen = SeenNow();
  ASSERT_EQ(2u, seen.size());
  EXPECT_EQ("api", seen[0].name);
  EXPECT_EQ("API CERT", seen[0].chain);
  // tls.crt/tls.key (read through ..data) take the directory's name...
  const std::string base = dir_.substr(dir_.rfind('/') + 1);
  EXPECT_EQ(base, seen[1].name);
  EXPECT_EQ("TLS CERT", seen[1].chain);
  EXPECT_EQ("TLS KEY", seen[1].key);
  // Nothing changed: nothing handed again.
  w.ScanNow();
  EXPECT_EQ(2u, SeenNow().size());
  std::vector<WatchedDirectoryStatus> status = w.Status();
  ASSERT_EQ(1u, status.size());
  EXPECT_EQ((std::vector<std::string>{"api", base}), status[0].certificates);
  EXPECT_EQ(dir_, status[0].path);

  // ... or the one NAME=DIR gives.
  seen_.clear();
  o.dirs = {"shop=" + dir_};
  CertDirWatcher named(o, Recorder());
  named.ScanNow();
  ASSERT_EQ(2u, SeenNow().size());
  EXPECT_EQ("shop", SeenNow()[1].name);
}

TEST_F(CertDirWatcherTest, InotifyFollowsTheDataSymlinkSwap) {
  Publish("1", "CERT 1", "KEY 1");
  CertDirWatcher::Options o;
  o.dirs = {"shop=" + dir_};
  o.poll_interval = absl::Hours(1);  // only inotify can see the swap in time
  CertDirWatcher w(o, Recorder());
  w.ScanNow();
  ASSERT_EQ(1u, SeenNow().size());
  ASSERT_TRUE(w.Start().ok());
  const auto start = std::chrono::steady_clock::now();
  Publish("2", "CERT 2", "KEY 2");
  ASSERT_TRUE(WaitFor(2)) << "the ..data swap was not noticed";
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(ms, 2000);
  EXPECT_EQ("CERT 2", SeenNow()[1].chain);
  EXPECT_EQ("KEY 2", SeenNow()[1].key);
  // Removing the old version directory (as the kubelet does) changes nothing served.
  (void)std::system(("rm -rf '" + dir_ + "/..ts_1'").c_str());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(2u, SeenNow().size());
  w.Stop();
}

TEST_F(CertDirWatcherTest, PollingFindsChangesAndADirectoryThatAppearsLater) {
  const std::string later = dir_ + "/later";
  CertDirWatcher::Options o;
  o.dirs = {later};
  o.poll_interval = absl::Milliseconds(50);
  CertDirWatcher w(o, Recorder());
  w.ScanNow();
  EXPECT_TRUE(SeenNow().empty());
  EXPECT_FALSE(w.Status()[0].last_error.empty());
  ASSERT_TRUE(w.Start().ok());
  ASSERT_EQ(0, mkdir(later.c_str(), 0755));
  std::ofstream(later + "/x.key") << "K";
  std::ofstream(later + "/x.crt") << "C";
  ASSERT_TRUE(WaitFor(1));
  EXPECT_EQ("x", SeenNow()[0].name);
  EXPECT_TRUE(w.Status()[0].last_error.empty());
  w.Stop();
}

TEST_F(CertDirWatcherTest, ARejectedUpdateIsReportedAndRetriedOnlyWhenTheFilesChange) {
  Write("a.crt", "C1");
  Write("a.key", "K1");
  CertDirWatcher::Options o;
  o.dirs = {dir_};
  CertDirWatcher w(o, Recorder(absl::InvalidArgumentError("private key does not match")));
  w.ScanNow();
  ASSERT_EQ(1u, SeenNow().size());
  EXPECT_EQ("a: private key does not match", w.Status()[0].last_error);
  w.ScanNow();
  EXPECT_EQ(1u, SeenNow().size()) << "the same rejected files were handed again";
  Write("a.key", "K2");
  w.ScanNow();
  EXPECT_EQ(2u, SeenNow().size());
}

// The production callback: updates go through CertManager::Apply (source cert_dir), a rejected
// one is published as RELOAD_FAILED and the served certificate stays.
TEST_F(CertDirWatcherTest, CommitThroughAppliesToTheManagerAndReportsRejections) {
  const testcerts::TestCert ca = testcerts::MakeCa("watch CA");
  const testcerts::TestCert good = testcerts::MakeCert({"web", {"web.test"}}, &ca);
  const testcerts::TestCert other = testcerts::MakeCert({"other", {"web.test"}}, &ca);
  agent::CertStore store(*agent::CertificateSet::CreateDevelopment());
  ControlMetrics metrics;
  CertManager manager(store, nullptr, metrics, CertManager::Options{});
  StateStore::Loaded loaded;
  std::vector<StateStore::Issue> issues;
  manager.Initialize(loaded, &issues);
  CertificateEvent snapshot;
  std::shared_ptr<CertificateEventQueue> events = manager.Watch(&snapshot);

  Write("web.crt", good.cert_pem);
  Write("web.key", good.key_pem);
  CertDirWatcher::Options o;
  o.dirs = {dir_};
  CertDirWatcher w(o, CommitThrough(manager));
  w.ScanNow();
  EXPECT_TRUE(w.Status()[0].last_error.empty()) << w.Status()[0].last_error;
  ASSERT_NE(store.Current()->Select("web.test"), nullptr);
  EXPECT_EQ("web", store.Current()->Select("web.test")->name);
  EXPECT_EQ("cert_dir", manager.Sources()["web"]);
  const uint64_t generation = store.generation();

  Write("web.key", other.key_pem);  // a key from another certificate
  w.ScanNow();
  EXPECT_NE(w.Status()[0].last_error.find("does not match"), std::string::npos)
      << w.Status()[0].last_error;
  EXPECT_EQ(generation, store.generation()) << "a rejected update changed the served set";
  CertificateEvent e;
  bool reported = false;
  while (events->Pop(absl::Milliseconds(10), &e)) {
    reported = reported || e.type == CertificateEvent::Type::kReloadFailed;
  }
  EXPECT_TRUE(reported);
  manager.Unwatch(events);
}

}  // namespace
}  // namespace ktls::control
