// Outbound mode from the app's side: ktls-probe-app asks the real agent to dial an upstream
// (openssl s_server, or an in-process OpenSSL server that issues session tickets mid-stream)
// through ktls_agent_dial, then moves data on the descriptor it gets back with the library's
// non-blocking reads under poll().
//
// In the VM suite (KTLS_EXPECT_OFFLOAD=1) the dialed descriptors must carry kTLS in both
// directions as the kernel reports them; on the host they are relayed.
#include <sys/stat.h>

#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tests/integration/support/app_harness.h"
#include "tests/integration/support/harness.h"

namespace ktls::testing {
namespace {

constexpr uint64_t kSixteenMiB = 16u << 20;

struct Version {
  const char* name;
  const char* agent_name;  // DialRequest.tls_version
  const char* s_server_flag;
};
const Version kVersions[] = {{"Tls13", "TLSv1.3", "-tls1_3"}, {"Tls12", "TLSv1.2", "-tls1_2"}};

class AppOutboundTest : public ::testing::Test {
 protected:
  void SetUp() override {
    stack_ = std::make_unique<Stack>(AgentOnly());
    cert_ = MakeTestCert(stack_->dir());
  }

  // Runs ktls-probe-app dial with `flags` and waits for it to exit; returns its PROBE-DIAL lines.
  std::vector<ProbeLine> RunDials(const std::string& name, std::vector<std::string> flags,
                                  int timeout_ms = 240000) {
    std::vector<std::string> argv = {ProbeAppBin(),
                                     "dial",
                                     "--agent_socket=" + stack_->handoff_socket(),
                                     "--host=127.0.0.1",
                                     "--sni=localhost",
                                     "--ca_file=" + cert_.cert};
    argv.insert(argv.end(), flags.begin(), flags.end());
    Process p(argv, stack_->dir() + "/" + name + ".log");
    EXPECT_TRUE(WaitUntil([&] { return !p.Running(); }, timeout_ms))
        << "probe dialer still running; log:\n"
        << p.Log();
    log_ = p.Log();
    return ProbeLines(log_, "DIAL");
  }

  std::unique_ptr<Stack> stack_;
  TestCert cert_;
  std::string log_;
};

class AppOutboundVersionTest : public AppOutboundTest,
                               public ::testing::WithParamInterface<Version> {};

// 16 MiB each way through a dialed connection to openssl s_server, hashes checked at both ends;
// the second dial to the same upstream resumes the session the agent cached.
TEST_P(AppOutboundVersionTest, SixteenMiBBothWaysToSServerThenResumption) {
  const Version& v = GetParam();
  ASSERT_GT(stack_->port(), 0);
  const int port = FreeLoopbackPort();
  // -quiet: s_server writes exactly what it receives to stdout and sends what it reads from stdin
  // (no command letters); two connections, then it exits.
  PipedProcess server(
      {"openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port), "-cert", cert_.cert,
       "-key", cert_.key, "-naccept", "2", "-quiet", v.s_server_flag},
      stack_->dir() + "/s_server.out", stack_->dir() + "/s_server.err");
  ASSERT_TRUE(WaitUntil([&] { return ListeningOn(port); }, 30000)) << server.Err();
  // s_server reads its stdin only while a connection is up; the pipe holds the rest meanwhile.
  const std::string download = UpstreamPattern(kSixteenMiB);
  std::thread feeder([&] { server.WriteStdin(download); });

  std::vector<ProbeLine> dials =
      RunDials(std::string("dial_") + v.name,
               {"--port=" + std::to_string(port), std::string("--tls_version=") + v.agent_name,
                "--count=2", "--send_bytes=" + std::to_string(kSixteenMiB),
                "--recv_bytes=" + std::to_string(kSixteenMiB), "--followup_bytes=0"});
  server.CloseStdin();  // also unblocks the feeder if s_server went away early
  feeder.join();
  ASSERT_EQ(2u, dials.size()) << log_ << "\nagent log:\n" << stack_->AgentLog();

  ProbeLine& first = dials[0];
  ASSERT_EQ("1", first["ok"]) << Describe(first) << "\nagent log:\n" << stack_->AgentLog();
  EXPECT_EQ("1", first["outbound"]) << Describe(first);
  EXPECT_EQ(v.agent_name, first["tls_version"]) << Describe(first);
  ExpectProbeDataPath(*stack_, first);
  EXPECT_EQ(std::to_string(kSixteenMiB), first["recv"]) << Describe(first);
  EXPECT_EQ(Sha256Hex(download), first["recv_sha"]) << Describe(first);
  EXPECT_EQ(std::to_string(kSixteenMiB), first["sent"]) << Describe(first);
  EXPECT_EQ("eof", first["result"]) << Describe(first);
  // What s_server received, byte for byte.
  const std::string expected_up = Sha256Hex(ProbePattern(kSixteenMiB));
  EXPECT_TRUE(WaitUntil([&] { return server.Out().size() >= kSixteenMiB; }, 30000))
      << server.Out().size() << " bytes at s_server; " << server.Err();
  EXPECT_EQ(expected_up, Sha256Hex(server.Out())) << "upload corrupted";
  EXPECT_EQ(expected_up, first["sent_sha"]);

  ProbeLine& second = dials[1];
  ASSERT_EQ("1", second["ok"]) << Describe(second);
  EXPECT_EQ("1", second["resumed"])
      << "second dial did not resume: " << Describe(second) << "\nagent log:\n"
      << stack_->AgentLog();
  ExpectProbeDataPath(*stack_, second);
  EXPECT_EQ("eof", second["result"]) << Describe(second);
  EXPECT_NE(-1, server.Wait(30000)) << "s_server did not see both connections end";
}

INSTANTIATE_TEST_SUITE_P(Versions, AppOutboundVersionTest, ::testing::ValuesIn(kVersions),
                         [](const auto& info) { return std::string(info.param.name); });

// NewSessionTickets that arrive after the handoff, between data records: the library consumes
// them (a wake-up may carry only a ticket: the non-blocking read reports EAGAIN, never data).
TEST_F(AppOutboundTest, TicketsAfterTheHandoffAreSkippedBetweenDataRecords) {
  ASSERT_GT(stack_->port(), 0);
  constexpr uint64_t kDown = 4u << 20, kUp = 1u << 20, kEvery = 512u << 10;
  TicketingUpstream upstream(cert_, kDown, kEvery);
  ASSERT_GT(upstream.port(), 0);
  std::vector<ProbeLine> dials =
      RunDials("dial_tickets",
               {"--port=" + std::to_string(upstream.port()), "--tls_version=TLSv1.3",
                "--send_bytes=" + std::to_string(kUp), "--recv_bytes=" + std::to_string(kDown)});
  TicketingUpstream::Result r = upstream.Wait(60000);
  ASSERT_EQ(1u, dials.size()) << log_;
  ProbeLine& d = dials[0];
  ASSERT_EQ("1", d["ok"]) << Describe(d) << "\nagent log:\n" << stack_->AgentLog();
  ExpectProbeDataPath(*stack_, d);
  EXPECT_EQ("", r.error);
  EXPECT_TRUE(r.done);
  EXPECT_EQ(7, r.tickets_midstream);
  EXPECT_EQ(std::to_string(kDown), d["recv"]) << Describe(d);
  EXPECT_EQ(Sha256Hex(UpstreamPattern(kDown)), d["recv_sha"]) << Describe(d);
  EXPECT_EQ(kUp, r.received);
  EXPECT_EQ(Sha256Hex(ProbePattern(kUp)), r.received_sha);
  EXPECT_EQ("eof", d["result"]) << Describe(d);
  if (d["data_path"] == "ktls") {
    // Every ticket issued mid-stream went through the app's kTLS socket.
    EXPECT_GE(std::stoi(d["skipped"]), r.tickets_midstream) << Describe(d);
  } else {
    EXPECT_EQ("0", d["skipped"]) << "the relay consumes tickets itself: " << Describe(d);
  }
}

TEST_F(AppOutboundTest, VerificationFailureIsReportedWithTheReasonAndNoDescriptor) {
  ASSERT_GT(stack_->port(), 0);
  const int port = FreeLoopbackPort();
  PipedProcess server({"openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port),
                       "-cert", cert_.cert, "-key", cert_.key, "-naccept", "1", "-quiet"},
                      stack_->dir() + "/s_server.out", stack_->dir() + "/s_server.err");
  ASSERT_TRUE(WaitUntil([&] { return ListeningOn(port); }, 30000)) << server.Err();
  std::vector<ProbeLine> dials = RunDials(
      "dial_verify", {"--port=" + std::to_string(port), "--expected_name=not-localhost.example"});
  ASSERT_EQ(1u, dials.size()) << log_;
  EXPECT_EQ("0", dials[0]["ok"]) << Describe(dials[0]);
  EXPECT_EQ("KTLS_E_DIAL", dials[0]["code"]) << Describe(dials[0]);
  EXPECT_NE(std::string::npos, dials[0]["error"].find("dial 127.0.0.1:" + std::to_string(port)))
      << Describe(dials[0]);
  EXPECT_NE(std::string::npos, dials[0]["error"].find("verif")) << Describe(dials[0]);
}

}  // namespace
}  // namespace ktls::testing
