// The watched certificate directory (--cert_dir) laid out as Kubernetes mounts a TLS Secret:
// tls.crt and tls.key are symlinks through "..data", which the kubelet swaps atomically to a new
// "..<timestamp>" directory. The agent follows the swap without a restart; an update whose key
// does not match its certificate keeps the previous certificate in service and is reported.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tests/integration/support/control.h"

namespace ktls::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Publishes a version the way the kubelet's AtomicWriter does.
void PublishSecret(const TempDir& dir, const std::string& version, const std::string& crt,
                   const std::string& key) {
  const std::string ts = "..2026_11_22_" + version;
  ASSERT_EQ(0, mkdir((dir.path() + "/" + ts).c_str(), 0755));
  dir.Write(ts + "/tls.crt", crt, 0644);
  dir.Write(ts + "/tls.key", key, 0600);
  const std::string tmp = dir.path() + "/..data_tmp";
  ASSERT_EQ(0, symlink(ts.c_str(), tmp.c_str()));
  ASSERT_EQ(0, rename(tmp.c_str(), (dir.path() + "/..data").c_str()));
  for (const char* f : {"tls.crt", "tls.key"}) {
    const std::string link = dir.path() + "/" + f;
    if (access(link.c_str(), F_OK) != 0) {
      ASSERT_EQ(0, symlink((std::string("..data/") + f).c_str(), link.c_str()));
    }
  }
}

// Polls until `sni` is served `want` (true) or `timeout` passes.
bool WaitServed(int port, const std::string& sni, const std::string& want, double* ms,
                std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
  const auto start = Clock::now();
  while (Clock::now() - start < timeout) {
    if (ServedFingerprint(port, sni) == want) {
      *ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST(ControlCertDirTest, FollowsTheSymlinkSwapAndKeepsThePreviousOnABadUpdate) {
  const testcerts::TestCert ca = testcerts::MakeCa("cert-manager test CA");
  const testcerts::TestCert v1 = MakeLeaf(ca, "shop v1", {"shop.test"});
  const testcerts::TestCert v2 = MakeLeaf(ca, "shop v2", {"shop.test"});
  const testcerts::TestCert v3 = MakeLeaf(ca, "shop v3", {"shop.test"});
  const testcerts::TestCert v4 = MakeLeaf(ca, "shop v4", {"shop.test"});
  TempDir secret;
  PublishSecret(secret, "v1", v1.cert_pem, v1.key_pem);
  secret.Write("ca.crt", ca.cert_pem, 0644);  // cert-manager adds it; not a certificate to serve

  AgentOptions options;
  // A long poll interval: within this test only inotify can notice the swaps.
  options.extra_flags = {"--cert_dir=shop=" + secret.path(), "--cert_dir_poll_ms=600000"};
  Stack stack(options);
  ASSERT_GT(stack.port(), 0);
  Control control(ReadyInfo(stack)["control_socket"]);
  // Loaded before the first connection was accepted.
  EXPECT_EQ(FingerprintOfPem(v1.cert_pem), ServedFingerprint(stack.port(), "shop.test"));
  v1::GetCertificateRequest get;
  get.set_name("shop");
  v1::GetCertificateResponse got;
  ASSERT_TRUE(control.certs->GetCertificate(Ctx().get(), get, &got).ok());
  EXPECT_EQ("cert_dir", got.certificate().source());
  EXPECT_TRUE(got.certificate().is_default());

  PublishSecret(secret, "v2", v2.cert_pem, v2.key_pem);
  double ms = 0;
  ASSERT_TRUE(WaitServed(stack.port(), "shop.test", FingerprintOfPem(v2.cert_pem), &ms))
      << stack.AgentLog();
  std::printf("cert_dir: the ..data swap was served %.0f ms after it\n", ms);
  RecordProperty("swap_to_served_ms", std::to_string(ms));

  // A broken update (v3's certificate with v1's key): rejected, v2 stays, reported.
  Metrics m0;
  std::string error;
  ASSERT_TRUE(FetchMetrics(ReadyInfo(stack)["metrics"], &m0, &error)) << error;
  PublishSecret(secret, "v3", v3.cert_pem, v1.key_pem);
  v1::AgentStatus status;
  bool reported = false;
  for (int i = 0; i < 500 && !reported; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    status.Clear();
    ASSERT_TRUE(control.telemetry->GetStatus(Ctx().get(), {}, &status).ok());
    reported = status.watched_directories_size() == 1 &&
               !status.watched_directories(0).last_error().empty();
  }
  ASSERT_TRUE(reported) << stack.AgentLog();
  EXPECT_NE(std::string::npos,
            status.watched_directories(0).last_error().find("private key does not match"))
      << status.watched_directories(0).last_error();
  EXPECT_EQ(FingerprintOfPem(v2.cert_pem), ServedFingerprint(stack.port(), "shop.test"));
  Metrics m1;
  ASSERT_TRUE(FetchMetrics(ReadyInfo(stack)["metrics"], &m1, &error)) << error;
  const std::string rejected = "source=\"cert_dir\",result=\"rejected\"";
  EXPECT_EQ(1, m1.Get("ktls_certificate_reloads_total", rejected) -
                   m0.Get("ktls_certificate_reloads_total", rejected));
  EXPECT_NE(std::string::npos, stack.AgentLog().find("the previous certificate stays in service"));

  // The next good version is picked up again.
  PublishSecret(secret, "v4", v4.cert_pem, v4.key_pem);
  ASSERT_TRUE(WaitServed(stack.port(), "shop.test", FingerprintOfPem(v4.cert_pem), &ms))
      << stack.AgentLog();
}

TEST(ControlCertDirTest, PlainFilesByNameAndPolling) {
  const testcerts::TestCert ca = testcerts::MakeCa("files CA");
  const testcerts::TestCert api1 = MakeLeaf(ca, "api 1", {"api.files.test"});
  const testcerts::TestCert api2 = MakeLeaf(ca, "api 2", {"api.files.test"});
  const testcerts::TestCert www = MakeLeaf(ca, "www", {"www.files.test"});
  TempDir dir;
  dir.Write("api.crt", api1.cert_pem, 0644);
  dir.Write("api.key", api1.key_pem);
  dir.Write("www.crt", www.cert_pem, 0644);
  dir.Write("www.key", www.key_pem);
  AgentOptions options;
  options.extra_flags = {"--cert_dir=" + dir.path(), "--cert_dir_poll_ms=200"};
  Stack stack(options);
  ASSERT_GT(stack.port(), 0);
  EXPECT_EQ(FingerprintOfPem(api1.cert_pem), ServedFingerprint(stack.port(), "api.files.test"));
  EXPECT_EQ(FingerprintOfPem(www.cert_pem), ServedFingerprint(stack.port(), "www.files.test"));
  // An editor-style replacement: write new files beside, rename over.
  dir.Write(".api.key.new", api2.key_pem);
  dir.Write(".api.crt.new", api2.cert_pem, 0644);
  ASSERT_EQ(0, rename((dir.path() + "/.api.key.new").c_str(), (dir.path() + "/api.key").c_str()));
  ASSERT_EQ(0, rename((dir.path() + "/.api.crt.new").c_str(), (dir.path() + "/api.crt").c_str()));
  double ms = 0;
  EXPECT_TRUE(WaitServed(stack.port(), "api.files.test", FingerprintOfPem(api2.cert_pem), &ms))
      << stack.AgentLog();
}

}  // namespace
}  // namespace ktls::testing
