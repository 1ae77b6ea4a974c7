// End-to-end data-plane tests: real agent + demo app + real TLS clients on loopback.
// On the host (no kTLS) connections are relayed; in the VM suite (KTLS_EXPECT_OFFLOAD=1) every
// connection must show kTLS TX and RX active as the KERNEL reports them on the app's fd.
#include <signal.h>

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/support/harness.h"

namespace ktls::testing {
namespace {

struct Suite {
  const char* name;
  int version;
  const char* cipher;  // OpenSSL name as the client configures it
  const char* iana;    // what the agent reports
};

const Suite kSuites[] = {
    {"Tls13Aes128Gcm", TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"},
    {"Tls13Aes256Gcm", TLS1_3_VERSION, "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"},
    {"Tls13ChaCha20", TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256",
     "TLS_CHACHA20_POLY1305_SHA256"},
    {"Tls12Aes128Gcm", TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256",
     "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
    {"Tls12Aes256Gcm", TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384",
     "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"},
    {"Tls12ChaCha20", TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305",
     "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"},
};

ClientOptions OptionsFor(const Suite& s) {
  ClientOptions o;
  o.tls_version = s.version;
  o.cipher = s.cipher;
  return o;
}

// The offload assertion every connection goes through. In the VM it FAILS unless the kernel
// holds the keys in both directions on the fd the app received.
void ExpectDataPath(const Stack& stack, const std::string& conninfo) {
  const std::string path = JsonString(conninfo, "data_path");
  if (ExpectOffload()) {
    EXPECT_EQ("ktls", path) << "kTLS expected but not active: " << conninfo;
    EXPECT_TRUE(JsonBool(conninfo, "kernel_tx"))
        << "kernel reports no TLS_TX on the app's fd: " << conninfo;
    EXPECT_TRUE(JsonBool(conninfo, "kernel_rx"))
        << "kernel reports no TLS_RX on the app's fd: " << conninfo;
  } else if (!stack.ktls_available()) {
    EXPECT_EQ("relay", path) << conninfo;
    EXPECT_FALSE(JsonString(conninfo, "fallback_reason").empty()) << conninfo;
    EXPECT_FALSE(JsonBool(conninfo, "kernel_tx")) << conninfo;
  }
}

// Sends `request` on `c` and reads one response: its status and body.
::testing::AssertionResult Roundtrip(TlsClient& c, const std::string& request, int* status,
                                     std::string* body) {
  if (!c.Write(request)) return ::testing::AssertionFailure() << "write: " << c.error();
  std::map<std::string, std::string> headers;
  if (!c.ReadResponse(status, &headers, body)) {
    return ::testing::AssertionFailure() << "response: " << c.error();
  }
  return ::testing::AssertionSuccess();
}

// The tests of one suite share one Stack: starting an agent costs seconds in the VM.
template <typename Base>
class StackPerSuite : public Base {
 protected:
  static void SetUpTestSuite() { stack_ = new Stack(); }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  static inline Stack* stack_ = nullptr;
};

class DataPlaneTest : public StackPerSuite<::testing::TestWithParam<Suite>> {};

TEST_P(DataPlaneTest, RequestPipelinedBehindFinishedIsServedOnTheHandedFd) {
  const Suite& s = GetParam();
  ASSERT_GT(stack_->port(), 0);
  // The request travels in the same TCP segment as the client's Finished (TLS 1.3) or right
  // after the handshake (TLS 1.2): the kTLS RX sequence must account for it (it is record 0).
  auto c = TlsClient::Connect(stack_->port(), OptionsFor(s),
                              "GET /conninfo HTTP/1.1\r\nHost: localhost\r\n\r\n");
  ASSERT_EQ("", c->error());
  int status = 0;
  std::map<std::string, std::string> h;
  std::string body;
  ASSERT_TRUE(c->ReadResponse(&status, &h, &body)) << c->error() << "\n" << stack_->AgentLog();
  EXPECT_EQ(200, status);
  EXPECT_EQ(s.iana, JsonString(body, "cipher")) << body;
  EXPECT_EQ(s.version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2", JsonString(body, "tls_version"));
  EXPECT_EQ("localhost", JsonString(body, "sni"));
  ExpectDataPath(*stack_, body);
  // A second request on the same connection (keep-alive) works too.
  ASSERT_TRUE(c->Write("GET /bytes/1000 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  ASSERT_TRUE(c->ReadResponse(&status, &h, &body)) << c->error();
  EXPECT_EQ(BytesPattern(1000), body);
}

TEST_P(DataPlaneTest, SixteenMiBUpAndDownWithHashCheck) {
  const Suite& s = GetParam();
  auto c = TlsClient::Connect(stack_->port(), OptionsFor(s));
  ASSERT_EQ("", c->error());
  std::string payload(16 << 20, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>((i * 131 + 7) >> 3);
  ASSERT_TRUE(c->Write("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: " +
                       std::to_string(payload.size()) + "\r\n\r\n" + payload))
      << c->error();
  int status = 0;
  std::map<std::string, std::string> h;
  std::string body;
  ASSERT_TRUE(c->ReadResponse(&status, &h, &body)) << c->error();
  EXPECT_EQ(200, status);
  EXPECT_EQ(payload.size(), body.size());
  EXPECT_EQ(Sha256Hex(payload), Sha256Hex(body));
  ASSERT_TRUE(c->Write("GET /conninfo HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  ASSERT_TRUE(c->ReadResponse(&status, &h, &body)) << c->error();
  ExpectDataPath(*stack_, body);
}

TEST_P(DataPlaneTest, ClientCloseNotifyBecomesEofAndAppCloseSendsCloseNotify) {
  auto c = TlsClient::Connect(stack_->port(), OptionsFor(GetParam()));
  ASSERT_EQ("", c->error());
  int status = 0;
  std::string body;
  ASSERT_TRUE(Roundtrip(*c, "GET /bytes/10 HTTP/1.1\r\nHost: localhost\r\n\r\n", &status, &body));
  // Client's close_notify -> EOF at the app -> the app closes -> close_notify back to us.
  c->ShutdownWrite();
  EXPECT_TRUE(c->ReadCloseNotify()) << c->error();
}

TEST_P(DataPlaneTest, ServerInitiatedCloseSendsCloseNotify) {
  auto c = TlsClient::Connect(stack_->port(), OptionsFor(GetParam()));
  ASSERT_EQ("", c->error());
  int status = 0;
  std::string body;
  ASSERT_TRUE(Roundtrip(*c,
                        "GET /bytes/10 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                        &status, &body));
  EXPECT_EQ(BytesPattern(10), body);
  EXPECT_TRUE(c->ReadCloseNotify()) << c->error();
}

INSTANTIATE_TEST_SUITE_P(AllSuites, DataPlaneTest, ::testing::ValuesIn(kSuites),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------------
class StackTest : public StackPerSuite<::testing::Test> {};

TEST_F(StackTest, TwoHundredConcurrentConnections) {
  constexpr int kConnections = 200;
  std::vector<std::unique_ptr<TlsClient>> clients;
  ClientOptions o;
  for (int i = 0; i < kConnections; ++i) {
    o.tls_version = i % 2 ? TLS1_2_VERSION : TLS1_3_VERSION;
    clients.push_back(TlsClient::Connect(stack_->port(), o));
    ASSERT_EQ("", clients.back()->error()) << "connection " << i;
  }
  // All 200 are open at once; each now gets its own response.
  for (int i = 0; i < kConnections; ++i) {
    ASSERT_TRUE(clients[i]->Write("GET /bytes/" + std::to_string(100 + i) +
                                  " HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  }
  int ktls = 0;
  for (int i = 0; i < kConnections; ++i) {
    int status = 0;
    std::map<std::string, std::string> h;
    std::string body;
    ASSERT_TRUE(clients[i]->ReadResponse(&status, &h, &body)) << i << ": " << clients[i]->error();
    EXPECT_EQ(BytesPattern(100 + i), body);
    ASSERT_TRUE(clients[i]->Write("GET /conninfo HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    ASSERT_TRUE(clients[i]->ReadResponse(&status, &h, &body));
    ktls += JsonString(body, "data_path") == "ktls";
  }
  if (ExpectOffload()) {
    EXPECT_EQ(kConnections, ktls);
  }
}

TEST_F(StackTest, BigDownloadMatchesPattern) {
  ClientOptions o;
  Exchange e = Get(stack_->port(), "/bytes/16777216", o);
  ASSERT_TRUE(e.ok) << e.error;
  EXPECT_EQ(Sha256Hex(BytesPattern(16 << 20)), Sha256Hex(e.body));
}

TEST_F(StackTest, OpensslSClientBothVersions) {
  for (const char* v : {"-tls1_2", "-tls1_3"}) {
    std::string out;
    std::string cmd =
        "printf 'GET /conninfo HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: "
        "close\\r\\n\\r\\n' | timeout 60 openssl s_client -connect 127.0.0.1:" +
        std::to_string(stack_->port()) + " -servername localhost " + v +
        " -ign_eof -quiet 2>/dev/null";
    int rc = RunCommand(cmd, &out);
    EXPECT_EQ(0, rc) << v << ": " << out;
    EXPECT_NE(std::string::npos, out.find("HTTP/1.1 200")) << v << ": " << out;
    size_t json = out.find('{');
    ASSERT_NE(std::string::npos, json) << out;
    ExpectDataPath(*stack_, out.substr(json));
  }
}

TEST_F(StackTest, CurlBothVersions) {
  for (const char* v : {"--tlsv1.2 --tls-max 1.2", "--tlsv1.3"}) {
    std::string out;
    std::string cmd = std::string("timeout 60 curl -sS -k --http1.1 ") + v +
                      " https://localhost:" + std::to_string(stack_->port()) + "/conninfo";
    int rc = RunCommand(cmd, &out);
    EXPECT_EQ(0, rc) << v << ": " << out;
    ExpectDataPath(*stack_, out);
  }
}

TEST(RobustnessTest, GarbageClientHelloIsRejectedAndOthersAreServed) {
  // A short handshake timeout so that a truncated ClientHello is dropped quickly.
  Stack stack(AgentOptions{{"--handshake_timeout_ms=1500"}});
  Stack* stack_ = &stack;
  const std::string garbage[] = {
      std::string(300, '\x42'),                                     // not TLS at all
      std::string("\x16\x03\x01\xff\xff\x01\x00\xff\xfb", 9),       // oversize ClientHello header
      std::string("\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", 10),  // truncated ClientHello
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n",                          // plaintext HTTP
  };
  for (const auto& g : garbage) {
    // The agent must answer (an alert) or close; it must not hang or crash.
    EXPECT_TRUE(SendRawAndAwaitClose(stack_->port(), g)) << "agent kept a garbage connection open";
  }
  Exchange e = Get(stack_->port(), "/healthz");
  EXPECT_TRUE(e.ok) << e.error;
  EXPECT_EQ(200, e.status);
}

// ---------------------------------------------------------------------------------------------
TEST(PolicyTest, OffloadOffRelaysAndSaysWhy) {
  Stack stack(AgentOptions{{"--offload=off"}});
  Exchange e = Get(stack.port(), "/conninfo");
  ASSERT_TRUE(e.ok) << e.error;
  EXPECT_EQ("relay", JsonString(e.body, "data_path"));
  EXPECT_EQ("policy: offload=off", JsonString(e.body, "fallback_reason"));
  EXPECT_FALSE(JsonBool(e.body, "kernel_tx"));
}

TEST(PolicyTest, OffloadRequiredRefusesToStartWithoutKtlsOrOffloadsEverything) {
  AgentOptions opts{{"--offload=required"}, 1, false};
  opts.expect_ready = false;
  Stack stack(opts);
  if (stack.port() == 0) {
    // No kTLS here: offload=required cannot be honoured, so the agent must refuse to start with
    // a clear reason instead of accepting connections it would have to drop.
    EXPECT_FALSE(ExpectOffload()) << "agent refused offload=required in the VM:\n"
                                  << stack.AgentLog();
    EXPECT_NE(std::string::npos, stack.AgentLog().find("offload=required")) << stack.AgentLog();
    return;
  }
  stack.StartApp();
  Exchange e = Get(stack.port(), "/conninfo");
  ASSERT_TRUE(e.ok) << e.error;
  ExpectDataPath(stack, e.body);
  EXPECT_EQ("ktls", JsonString(e.body, "data_path"));
}

TEST(BrokerTest, VanishedAppLosesNothingElse) {
  Stack stack;
  ASSERT_TRUE(Get(stack.port(), "/healthz").ok);
  // Kill the app hard; then start a new one: new connections are served by the new app.
  kill(stack.app()->pid(), SIGKILL);
  stack.app()->Terminate(1000);
  stack.StartApp();
  Exchange e = Get(stack.port(), "/conninfo");
  ASSERT_TRUE(e.ok) << e.error;
  ExpectDataPath(stack, e.body);
}

}  // namespace
}  // namespace ktls::testing
