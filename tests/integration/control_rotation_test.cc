// Certificate rotation through the control API while 200 clients handshake in a loop: no
// handshake fails, and every handshake that starts after the commit returned is served the new
// certificate. Prints the figures (connections, failures, time to take effect) and records them
// as test properties.
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/support/control.h"

namespace ktls::testing {
namespace {

using Clock = std::chrono::steady_clock;

struct Sample {
  Clock::time_point start;
  Clock::time_point end;
  std::string fingerprint;
  std::string error;
};

TEST(ControlRotationTest, RotateWhileTwoHundredClientsHandshakeInALoop) {
  constexpr int kClients = 200;
  const testcerts::TestCert ca = testcerts::MakeCa("rotation test CA");
  const testcerts::TestCert v1 = MakeLeaf(ca, "api v1", {"api.test"});
  const testcerts::TestCert v2 = MakeLeaf(ca, "api v2", {"api.test"});
  const std::string fp1 = FingerprintOfPem(v1.cert_pem);
  const std::string fp2 = FingerprintOfPem(v2.cert_pem);

  AgentOptions ao;
  ao.app_workers = 2;
  // Under the VM suite's emulated CPUs 200 concurrent handshakes queue for longer than the
  // default 10 s handshake timeout; the timeout is not what this test is about.
  ao.extra_flags = {"--handshake_timeout_ms=120000"};
  Stack stack(ao);
  ASSERT_GT(stack.port(), 0);
  Control control(ReadyInfo(stack)["control_socket"]);

  v1::StageCertificateRequest first;
  first.set_name("api");
  first.set_cert_chain_pem(v1.cert_pem);
  first.set_private_key_pem(v1.key_pem);
  first.set_set_default(true);
  v1::CommitResponse committed;
  grpc::Status s = control.certs->ApplyCertificate(Ctx().get(), first, &committed);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(fp1, ServedFingerprint(stack.port(), "api.test"));

  // The next version is staged (validated) before the load starts; the commit is the swap.
  v1::StageCertificateRequest next;
  next.set_name("api");
  next.set_cert_chain_pem(v2.cert_pem);
  next.set_private_key_pem(v2.key_pem);
  v1::StagedCertificate staged;
  s = control.certs->StageCertificate(Ctx().get(), next, &staged);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::Stats before;
  ASSERT_TRUE(control.telemetry->GetStats(Ctx().get(), {}, &before).ok());

  // Each client: connect, handshake, one request and its answer (so the agent has finished its
  // side of the handshake before the client closes), close; again. The phases are counted, not
  // timed, so that a slow machine (the VM suite runs under TCG) still gets a full round of
  // handshakes on each side of the commit.
  std::atomic<bool> stop{false};
  std::atomic<Clock::time_point> commit_done_at{Clock::time_point::max()};
  std::atomic<int> done_total{0}, started_after{0};
  std::mutex mu;
  std::vector<Sample> samples;
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&] {
      std::vector<Sample> mine;
      while (!stop.load()) {
        Sample x;
        x.start = Clock::now();
        if (x.start > commit_done_at.load()) ++started_after;
        HandshakeOptions o;
        o.sni = "api.test";
        HandshakeResult h = Handshake(stack.port(), o);
        x.end = Clock::now();
        x.fingerprint = h.fingerprint;
        if (!h.ok || h.response.find("\r\n\r\nok") == std::string::npos) {
          x.error = h.error.empty() ? "no answer from the app" : h.error;
        }
        if (h.session != nullptr) SSL_SESSION_free(h.session);
        mine.push_back(std::move(x));
        ++done_total;
      }
      std::lock_guard<std::mutex> lock(mu);
      samples.insert(samples.end(), mine.begin(), mine.end());
    });
  }
  const auto wait_until = [](const std::function<bool()>& done) {
    const auto cap = Clock::now() + std::chrono::seconds(90);
    while (!done() && Clock::now() < cap) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  };
  wait_until([&] { return done_total.load() >= kClients; });
  v1::CommitCertificateRequest commit;
  commit.set_name("api");
  commit.set_expected_generation(committed.generation());
  const Clock::time_point commit_start = Clock::now();
  s = control.certs->CommitCertificate(Ctx().get(), commit, &committed);
  const Clock::time_point commit_done = Clock::now();
  commit_done_at = commit_done;
  ASSERT_TRUE(s.ok()) << s.error_message();
  wait_until([&] { return started_after.load() >= kClients; });
  stop = true;
  for (auto& t : clients) t.join();

  size_t failures = 0, old_after_commit = 0, before_commit = 0, after_commit = 0;
  Clock::time_point first_new = Clock::time_point::max();
  std::string first_error;
  for (const Sample& x : samples) {
    if (!x.error.empty() || (x.fingerprint != fp1 && x.fingerprint != fp2)) {
      ++failures;
      if (first_error.empty()) first_error = x.error.empty() ? "unknown certificate" : x.error;
      continue;
    }
    if (x.fingerprint == fp2) first_new = std::min(first_new, x.end);
    if (x.start > commit_done) {
      ++after_commit;
      if (x.fingerprint != fp2) ++old_after_commit;
    } else if (x.end < commit_start) {
      ++before_commit;
    }
  }
  v1::Stats after;
  ASSERT_TRUE(control.telemetry->GetStats(Ctx().get(), {}, &after).ok());
  const uint64_t agent_failed =
      after.counters().at("handshakes_failed") - before.counters().at("handshakes_failed") +
      after.counters().at("handshake_timeouts") - before.counters().at("handshake_timeouts");
  const double commit_ms =
      std::chrono::duration<double, std::milli>(commit_done - commit_start).count();
  const double effect_ms =
      first_new == Clock::time_point::max()
          ? -1
          : std::chrono::duration<double, std::milli>(first_new - commit_start).count();
  std::printf(
      "rotation under load: %d concurrent clients, %zu handshakes (%zu before the commit, %zu "
      "started after it returned), %zu failed (agent: %llu), commit RPC %.1f ms, first new-cert "
      "handshake %.1f ms after the commit started, old certificate served to %zu handshakes "
      "started after the commit returned\n",
      kClients, samples.size(), before_commit, after_commit, failures,
      static_cast<unsigned long long>(agent_failed), commit_ms, effect_ms, old_after_commit);
  ::testing::Test::RecordProperty("handshakes", static_cast<int>(samples.size()));
  ::testing::Test::RecordProperty("failures", static_cast<int>(failures));
  ::testing::Test::RecordProperty("commit_ms", std::to_string(commit_ms));
  ::testing::Test::RecordProperty("effect_ms", std::to_string(effect_ms));

  EXPECT_EQ(0u, failures) << "first error: " << first_error;
  EXPECT_EQ(0u, agent_failed);
  EXPECT_GT(before_commit, 0u);
  EXPECT_GE(after_commit, static_cast<size_t>(kClients)) << "the load did not run after the commit";
  EXPECT_EQ(0u, old_after_commit) << "a handshake that started after the commit got the old cert";
  EXPECT_GE(effect_ms, 0);
  EXPECT_EQ(fp2, ServedFingerprint(stack.port(), "api.test"));
}

}  // namespace
}  // namespace ktls::testing
