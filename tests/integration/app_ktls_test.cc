// What an application sees through the client library at the edges of a TLS stream, with the
// real agent and real peers (openssl s_client, an in-process OpenSSL client). The app is
// ktls-probe-app (tests/integration/support/probe_app/), which prints what the library reported.
//
// In the VM suite (KTLS_EXPECT_OFFLOAD=1) the descriptors carry kTLS and every test asserts that
// the kernel holds the keys: these are the library's kTLS corner cases. On the host the same
// tests go through the agent's relay, and assert what docs/app-integration.md promises there.
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "ktls/ktls_client.h"
#include "tests/integration/support/app_harness.h"
#include "tests/integration/support/harness.h"

namespace ktls::testing {
namespace {

struct Version {
  const char* name;
  int code;
  const char* s_client_flag;
};
const Version kVersions[] = {{"Tls13", TLS1_3_VERSION, "-tls1_3"},
                             {"Tls12", TLS1_2_VERSION, "-tls1_2"}};

class AppKtlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    stack_ = new Stack(AgentOnly());
    probe_ = StartProbeApp(*stack_).release();
  }
  static void TearDownTestSuite() {
    delete probe_;
    probe_ = nullptr;
    delete stack_;
    stack_ = nullptr;
  }
  // The connection id the probe gave a client, from its INFO answer.
  static std::string IdFromInfo(const std::string& json) {
    return JsonString(json, "connection_id");
  }

  // openssl s_client against the agent, stdin driven by the test.
  static std::unique_ptr<PipedProcess> SClient(const Version& v, const std::string& name) {
    return std::make_unique<PipedProcess>(
        std::vector<std::string>{"openssl", "s_client", "-connect",
                                 "127.0.0.1:" + std::to_string(stack_->port()), "-servername",
                                 "localhost", v.s_client_flag, "-msg"},
        stack_->dir() + "/" + name + ".out", stack_->dir() + "/" + name + ".err");
  }

  // A MemTlsClient connection the probe app has answered INFO on, its data path checked.
  struct Opened {
    std::unique_ptr<MemTlsClient> c;
    std::string id;  // "" (with the failure recorded) when any step failed
  };
  Opened OpenConnection(int version) {
    Opened o;
    if (stack_->port() <= 0) {
      ADD_FAILURE() << "no agent";
      return o;
    }
    o.c = MemTlsClient::Connect(stack_->port(), version);
    std::string json;
    if (!o.c->error().empty() || !o.c->Write("INFO\n") || !o.c->ReadLine(&json)) {
      ADD_FAILURE() << o.c->error();
      return o;
    }
    const std::string id = IdFromInfo(json);
    if (id.empty()) {
      ADD_FAILURE() << "no connection id in " << json;
      return o;
    }
    ExpectConnOffloaded(id);
    o.id = id;
    return o;
  }

  // Asks INFO through an openssl s_client and checks the data path: the connection id, or ""
  // (with the failure recorded).
  std::string InfoThrough(PipedProcess& client) {
    std::string id;
    if (!client.WriteStdin("INFO\n") ||
        !WaitUntil([&] { return !(id = IdFromInfo(client.Out())).empty(); }, 30000)) {
      ADD_FAILURE() << "no INFO answer through s_client:\n" << client.Out() << client.Err();
      return "";
    }
    ExpectConnOffloaded(id);
    return id;
  }

  // Has the client of an opened connection do `act` (close_notify, a fatal alert) and returns
  // the probe app's END line for the connection: empty, with the failure recorded, when the
  // connection did not open, `act` failed or no END came.
  ProbeLine EndAfter(const Opened& o, bool (MemTlsClient::*act)()) {
    if (o.id.empty()) return {};
    if (!(o.c.get()->*act)()) {
      ADD_FAILURE() << o.c->error();
      return {};
    }
    ProbeLine end = WaitForProbeLine(*probe_, "END", "id", o.id, 30000);
    if (end.empty()) ADD_FAILURE() << "no END for " << o.id << ":\n" << probe_->Log();
    return end;
  }

  void ExpectConnOffloaded(const std::string& id) {
    ProbeLine conn = WaitForProbeLine(*probe_, "CONN", "id", id, 5000);
    ASSERT_FALSE(conn.empty()) << probe_->Log();
    ExpectProbeDataPath(*stack_, conn);
  }

  static inline Stack* stack_ = nullptr;
  static inline Process* probe_ = nullptr;
};

class AppKtlsVersionTest : public AppKtlsTest, public ::testing::WithParamInterface<Version> {};

TEST_P(AppKtlsVersionTest, ClientCloseNotifyIsEndOfStreamForTheApp) {
  const Opened o = OpenConnection(GetParam().code);
  ProbeLine end = EndAfter(o, &MemTlsClient::SendCloseNotify);
  ASSERT_FALSE(end.empty());
  EXPECT_EQ("eof", end["result"]) << Describe(end);
  EXPECT_EQ("0", end["errno"]) << Describe(end);
  // The app answers a clean end with its own close_notify (ktls_shutdown).
  EXPECT_TRUE(o.c->ReadCloseNotify()) << o.c->error();
}

TEST_P(AppKtlsVersionTest, AppShutdownSendsCloseNotifyThatOpensslSClientSees) {
  ASSERT_GT(stack_->port(), 0);
  auto client = SClient(GetParam(), std::string("s_client_close_") + GetParam().name);
  const std::string id = InfoThrough(*client);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(client->WriteStdin("CLOSE\n"));
  ProbeLine closed = WaitForProbeLine(*probe_, "CLOSE", "id", id, 30000);
  ASSERT_FALSE(closed.empty()) << probe_->Log();
  EXPECT_EQ("0", closed["rc"]) << Describe(closed);
  // s_client reads the close_notify record and ends the session by itself.
  ASSERT_NE(-1, client->Wait(30000)) << "s_client still running after the app's close_notify:\n"
                                     << client->Out();
  const std::string out = client->Out();
  bool seen = false;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("<<< ", 0) == 0 && line.find("Alert") != std::string::npos &&
        line.find("warning close_notify") != std::string::npos) {
      seen = true;
    }
  }
  EXPECT_TRUE(seen) << "no close_notify alert in s_client -msg output:\n" << out;
  // s_client answers with its own close_notify: a clean end at the app.
  ProbeLine end = WaitForProbeLine(*probe_, "END", "id", id, 30000);
  EXPECT_EQ("eof", end["result"]) << Describe(end) << probe_->Log();
}

TEST_P(AppKtlsVersionTest, PeerFatalAlertIsTheDocumentedError) {
  const Opened o = OpenConnection(GetParam().code);
  ProbeLine end = EndAfter(o, &MemTlsClient::SendFatalAlert);
  ASSERT_FALSE(end.empty());
  if (ExpectOffload() || stack_->ktls_available()) {
    // kTLS: the alert record reaches the app's socket; ktls_recv names it.
    EXPECT_EQ("error", end["result"]) << Describe(end);
    EXPECT_EQ("ECONNRESET", end["errno"]) << Describe(end);
    EXPECT_EQ("bad_record_mac", end["alert"]) << Describe(end);
    EXPECT_EQ("peer aborted the connection with a TLS alert", end["error"]) << Describe(end);
  } else {
    // Relay: the agent reads the alert and ends the socketpair; the app sees the end of the
    // stream without the alert (docs/app-integration.md, "Relay differences").
    EXPECT_EQ("eof", end["result"]) << Describe(end);
  }
}

INSTANTIATE_TEST_SUITE_P(Versions, AppKtlsVersionTest, ::testing::ValuesIn(kVersions),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_F(AppKtlsTest, PeerKeyUpdateFromOpensslSClientIsTheDocumentedErrorWithoutHanging) {
  ASSERT_GT(stack_->port(), 0);
  auto client = SClient(kVersions[0], "s_client_keyupdate");
  const std::string id = InfoThrough(*client);
  ASSERT_FALSE(id.empty());
  // "K" alone on a line (and in its own read: the INFO answer proves the previous line was
  // consumed) makes s_client send KeyUpdate(update_requested).
  ASSERT_TRUE(client->WriteStdin("K\n"));
  if (ExpectOffload() || stack_->ktls_available()) {
    ProbeLine end = WaitForProbeLine(*probe_, "END", "id", id, 30000);
    ASSERT_FALSE(end.empty()) << "no error at the app after KeyUpdate (hang?):\n"
                              << probe_->Log() << client->Err();
    EXPECT_EQ("error", end["result"]) << Describe(end);
    EXPECT_EQ("EKEYEXPIRED", end["errno"]) << Describe(end);
    const std::string expected = ktls_kernel_has_rx_rekey()
                                     ? "peer KeyUpdate: kTLS RX needs new keys, and the traffic "
                                       "secret stayed with the agent"
                                     : "peer KeyUpdate: kernel lacks TLS 1.3 rekey";
    EXPECT_EQ(expected, end["error"]) << Describe(end);
    EXPECT_NE(std::string::npos, client->Err().find("KEYUPDATE")) << client->Err();
    // The app closed the connection; s_client notices and exits.
    EXPECT_NE(-1, client->Wait(30000)) << "s_client still running:\n" << client->Out();
  } else {
    // Relay: the agent's OpenSSL performs the key update; the app's stream goes on.
    ASSERT_TRUE(
        WaitUntil([&] { return client->Err().find("KEYUPDATE") != std::string::npos; }, 30000))
        << client->Err();
    ASSERT_TRUE(client->WriteStdin("PING\n"));
    EXPECT_TRUE(WaitUntil([&] { return client->Out().find("PONG") != std::string::npos; }, 30000))
        << client->Out();
    EXPECT_TRUE(ProbeLines(probe_->Log(), "END").empty() ||
                WaitForProbeLine(*probe_, "END", "id", id, 0).empty())
        << probe_->Log();
    client->CloseStdin();  // s_client sends close_notify and exits
    ProbeLine end = WaitForProbeLine(*probe_, "END", "id", id, 30000);
    EXPECT_EQ("eof", end["result"]) << Describe(end) << probe_->Log();
  }
}

// The agent restarts: the app keeps the connections it holds (kTLS sockets do not depend on the
// agent at all; relayed ones end with it), hears about it once, resubscribes to the new agent
// with ktls_agent_reconnect, and is handed its connections.
TEST(AppRestartTest, AppResubscribesToARestartedAgentAndKeepsItsKtlsConnections) {
  Stack stack(AgentOnly());
  ASSERT_GT(stack.port(), 0);
  std::unique_ptr<Process> probe = StartProbeApp(stack);
  auto held = MemTlsClient::Connect(stack.port(), TLS1_3_VERSION);
  ASSERT_EQ("", held->error());
  ASSERT_TRUE(held->Write("INFO\n"));
  std::string json;
  ASSERT_TRUE(held->ReadLine(&json)) << held->error();
  const std::string held_id = JsonString(json, "connection_id");
  ProbeLine conn = WaitForProbeLine(*probe, "CONN", "id", held_id, 5000);
  ExpectProbeDataPath(stack, conn);
  const bool ktls = conn["data_path"] == "ktls";

  stack.agent().Terminate();
  ASSERT_FALSE(WaitForProbeLine(*probe, "AGENT-GONE", "", "", 30000).empty()) << probe->Log();
  std::string line;
  if (ktls) {
    // The socket is the app's: it works with no agent at all.
    ASSERT_TRUE(held->Write("PING\n"));
    ASSERT_TRUE(held->ReadLine(&line)) << held->error();
    EXPECT_EQ("PONG", line);
  }

  int port = 0;
  std::unique_ptr<Process> agent2 =
      StartAgent(stack.dir(), stack.handoff_socket(), "agent2", &port);
  ASSERT_GT(port, 0);
  ASSERT_FALSE(WaitForProbeLine(*probe, "RESUBSCRIBED", "", "", 30000).empty())
      << probe->Log() << agent2->Log();
  auto fresh = MemTlsClient::Connect(port, TLS1_3_VERSION);
  ASSERT_EQ("", fresh->error());
  ASSERT_TRUE(fresh->Write("PING\n"));
  ASSERT_TRUE(fresh->ReadLine(&line)) << fresh->error() << probe->Log();
  EXPECT_EQ("PONG", line);
  if (ktls) {
    ASSERT_TRUE(held->Write("PING\n"));
    ASSERT_TRUE(held->ReadLine(&line)) << held->error();
    EXPECT_EQ("PONG", line);
    ASSERT_TRUE(held->SendCloseNotify());
    EXPECT_EQ("eof", WaitForProbeLine(*probe, "END", "id", held_id, 30000)["result"]);
  } else {
    // The relay lived in the old agent: that connection ended with it.
    EXPECT_FALSE(WaitForProbeLine(*probe, "END", "id", held_id, 30000).empty()) << probe->Log();
  }
}

}  // namespace
}  // namespace ktls::testing
