// The C API (ktls/ktls_client.h) against the fake agent: status codes and messages, the metadata
// struct and its JSON, pending bytes, dial options, reconnect; plus the layout of the structs
// that cross the ABI (a change that moves a field must fail here, not in a user's binary).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <future>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ktls/ktls_client.h"
#include "ktls/ktls_client.hpp"
#include "ktls/wire.h"
#include "tests/unit/client/fake_agent.h"

namespace ktls::client {
namespace {

using testing::DialResultMessage;
using testing::FakeAgent;
using testing::HandoffMessage;
using ::testing::HasSubstr;
using testing::Readable;
using testing::StreamPair;

// The ABI: these offsets are what compiled applications use.
static_assert(sizeof(ktls_record_info) == 64);
static_assert(offsetof(ktls_record_info, alert_name) == 8);
static_assert(offsetof(ktls_record_info, error) == 16);
static_assert(offsetof(ktls_record_info, skipped_records) == 24);
static_assert(offsetof(ktls_dial_options, host) == 8);
static_assert(offsetof(ktls_dial_options, port) == 16);
static_assert(offsetof(ktls_dial_options, tls_version) == 64);
static_assert(sizeof(ktls_dial_options) == 72);
static_assert(offsetof(ktls_conn_info, connection_id) == 0);
static_assert(offsetof(ktls_conn_info, data_path) == 88);
static_assert(offsetof(ktls_conn_info, dial_request_id) == 208);
static_assert(sizeof(ktls_conn_info) == 216);

ktls_agent* ConnectC(FakeAgent& agent, uint32_t credits = 4) {
  auto pending = std::async(std::launch::async, [&] {
    ktls_agent* a = nullptr;
    EXPECT_EQ(KTLS_OK, ktls_agent_connect(agent.path().c_str(), "c-app", credits, 2000, &a))
        << ktls_last_error();
    return a;
  });
  v1::Subscribe s = agent.AcceptAndReadSubscribe();
  EXPECT_EQ("c-app", s.app_name());
  EXPECT_EQ(credits, s.initial_credits());
  agent.SendSubscribed();
  return pending.get();
}

TEST(CApiTest, VersionAndStatusNames) {
  EXPECT_EQ(KTLS_CLIENT_API_VERSION, ktls_client_api_version());
  EXPECT_STREQ("KTLS_OK", ktls_status_name(KTLS_OK));
  EXPECT_STREQ("KTLS_E_DIAL", ktls_status_name(KTLS_E_DIAL));
  EXPECT_STREQ("KTLS_E_UNKNOWN", ktls_status_name(-99));
}

TEST(CApiTest, ConnectErrorsHaveCodesAndMessages) {
  ktls_agent* a = reinterpret_cast<ktls_agent*>(0x1);
  EXPECT_EQ(KTLS_E_NOT_FOUND, ktls_agent_connect("/nonexistent/h.sock", "x", 1, 100, &a));
  EXPECT_EQ(nullptr, a);
  EXPECT_THAT(ktls_last_error(), HasSubstr("no agent socket at /nonexistent/h.sock"));
  EXPECT_EQ(KTLS_E_INVALID_ARGUMENT, ktls_agent_connect("", "x", 1, 100, &a));
  EXPECT_EQ(KTLS_E_INVALID_ARGUMENT, ktls_agent_connect(nullptr, "x", 1, 100, &a));
  EXPECT_EQ(KTLS_E_INVALID_ARGUMENT, ktls_agent_connect("/tmp/x", "x", 1, 100, nullptr));
  EXPECT_EQ(KTLS_E_INVALID_ARGUMENT, ktls_agent_accept(nullptr, nullptr));
  EXPECT_STREQ("out is NULL", ktls_last_error());
  // The message is per thread.
  std::thread([] { EXPECT_STREQ("", ktls_last_error()); }).join();
  ktls_agent_close(nullptr);  // no-op
  ktls_conn_free(nullptr);
}

TEST(CApiTest, AcceptGivesDescriptorMetadataAndPendingBytes) {
  FakeAgent agent;
  ktls_agent* a = ConnectC(agent);
  ASSERT_NE(nullptr, a);
  EXPECT_STREQ("fake-1.0", ktls_agent_version(a));
  EXPECT_EQ(7u, ktls_agent_subscriber_id(a));
  EXPECT_EQ(1, ktls_agent_connected(a));
  StreamPair p;
  v1::AgentToApp m = HandoffMessage(41, "GET /");
  v1::ConnectionInfo* c = m.mutable_handoff()->mutable_connection();
  c->mutable_peer()->set_address("192.0.2.1");
  c->mutable_peer()->set_port(50000);
  c->set_listener("public");
  c->mutable_peer_identity()->set_presented(true);
  c->mutable_peer_identity()->add_uri_sans("spiffe://example.org/client");
  c->mutable_peer_identity()->set_subject("CN=client \"quoted\"");
  agent.Send(m, {p.fd[0]});
  ASSERT_TRUE(Readable(ktls_agent_fd(a), 1000));

  ktls_conn* conn = nullptr;
  ASSERT_EQ(KTLS_OK, ktls_agent_accept(a, &conn)) << ktls_last_error();
  const ktls_conn_info* i = ktls_conn_get_info(conn);
  EXPECT_EQ(41u, i->connection_id);
  EXPECT_STREQ("public", i->listener);
  EXPECT_STREQ("192.0.2.1", i->peer_address);
  EXPECT_EQ(50000u, i->peer_port);
  EXPECT_STREQ("", i->local_address);  // absent strings are "", never NULL
  EXPECT_STREQ("example.test", i->sni);
  EXPECT_STREQ("TLSv1.3", i->tls_version);
  EXPECT_EQ(KTLS_DATA_PATH_RELAY, i->data_path);
  EXPECT_EQ(KTLS_OFFLOAD_INACTIVE, i->ktls_tx);
  EXPECT_THAT(i->fallback_reason, HasSubstr("ENOENT"));
  EXPECT_TRUE(i->peer_cert_presented);
  ASSERT_EQ(1u, i->peer_uri_san_count);
  EXPECT_STREQ("spiffe://example.org/client", i->peer_uri_sans[0]);
  EXPECT_EQ(0u, i->peer_dns_san_count);
  EXPECT_EQ(5u, i->initial_data_bytes);
  EXPECT_FALSE(i->outbound);
  EXPECT_EQ(3u, ktls_agent_outstanding_credits(a));

  const std::string json = ktls_conn_info_json(conn);
  EXPECT_THAT(json, HasSubstr("\"connection_id\":41"));
  EXPECT_THAT(json, HasSubstr("\"data_path_name\":\"relay\""));
  EXPECT_THAT(json, HasSubstr("\"peer_subject\":\"CN=client \\\"quoted\\\"\""));
  EXPECT_THAT(json, HasSubstr("\"peer_uri_sans\":[\"spiffe://example.org/client\"]"));

  const void* data = nullptr;
  ASSERT_EQ(5u, ktls_conn_pending(conn, &data));
  EXPECT_EQ("GET /", std::string(static_cast<const char*>(data), 5));
  ASSERT_EQ(4, write(p.fd[1], " x\r\n", 4));
  char buf[16];
  ktls_record_info info;
  EXPECT_EQ(5, ktls_conn_read(conn, buf, sizeof(buf), 0, &info));
  EXPECT_EQ(0u, ktls_conn_pending(conn, nullptr));
  EXPECT_EQ(4, ktls_conn_read(conn, buf, sizeof(buf), 0, &info));
  EXPECT_FALSE(info.tls_rx);

  // Released descriptors stay open after ktls_conn_free.
  const int fd = ktls_conn_release_fd(conn);
  EXPECT_EQ(-1, ktls_conn_fd(conn));
  ktls_conn_free(conn);
  EXPECT_NE(-1, fcntl(fd, F_GETFD));
  close(fd);
  ktls_agent_close(a);
}

TEST(CApiTest, NonBlockingAcceptIsAgainAndMalformedMessagesAreSkippable) {
  FakeAgent agent;
  ktls_agent* a = ConnectC(agent);
  ASSERT_NE(nullptr, a);
  ASSERT_EQ(KTLS_OK, ktls_agent_set_nonblocking(a, 1));
  ktls_conn* conn = nullptr;
  EXPECT_EQ(KTLS_E_AGAIN, ktls_agent_accept(a, &conn));
  EXPECT_EQ(nullptr, conn);
  agent.Send(HandoffMessage(1, ""));  // no descriptor
  ASSERT_TRUE(Readable(ktls_agent_fd(a), 1000));
  EXPECT_EQ(KTLS_E_MALFORMED, ktls_agent_accept(a, &conn));
  EXPECT_THAT(ktls_last_error(), HasSubstr("0 file descriptors"));
  StreamPair p;
  agent.Send(HandoffMessage(2, ""), {p.fd[0]});
  ASSERT_TRUE(Readable(ktls_agent_fd(a), 1000));
  ASSERT_EQ(KTLS_OK, ktls_agent_accept(a, &conn));
  EXPECT_EQ(2u, ktls_conn_get_info(conn)->connection_id);
  ktls_conn_free(conn);
  // Grants reach the agent.
  ASSERT_EQ(KTLS_OK, ktls_agent_grant(a, 3));
  v1::AppToAgent g = agent.ReadFromApp();
  EXPECT_EQ(3u, g.grant().credits());
  ktls_agent_close(a);
}

TEST(CApiTest, DialTranslatesOptionsAndResults) {
  FakeAgent agent;
  ktls_agent* a = ConnectC(agent, 0);
  ASSERT_NE(nullptr, a);
  StreamPair up;
  std::thread t([&] {
    v1::AppToAgent m = agent.ReadFromApp();
    ASSERT_TRUE(m.has_dial());
    const v1::DialRequest& d = m.dial();
    EXPECT_EQ("127.0.0.1", d.host());
    EXPECT_EQ(4433u, d.port());
    EXPECT_EQ("upstream.test", d.sni());
    ASSERT_EQ(2, d.alpn_size());
    EXPECT_EQ("h2", d.alpn(0));
    EXPECT_EQ("http/1.1", d.alpn(1));
    EXPECT_EQ("TLSv1.2", d.tls_version());
    EXPECT_EQ(1500u, d.timeout_ms());
    EXPECT_TRUE(d.ca_file().empty());
    agent.Send(DialResultMessage(d.request_id(), true, "", 12), {up.fd[0]});
    m = agent.ReadFromApp();
    agent.Send(DialResultMessage(m.dial().request_id(), false,
                                 "certificate verify failed: hostname mismatch"));
  });
  ktls_dial_options o = KTLS_DIAL_OPTIONS_INIT;
  o.host = "127.0.0.1";
  o.port = 4433;
  o.sni = "upstream.test";
  o.alpn = "h2,,http/1.1";
  o.tls_version = "TLSv1.2";
  o.timeout_ms = 1500;
  ktls_conn* conn = nullptr;
  ASSERT_EQ(KTLS_OK, ktls_agent_dial(a, &o, &conn)) << ktls_last_error();
  const ktls_conn_info* i = ktls_conn_get_info(conn);
  EXPECT_TRUE(i->outbound);
  EXPECT_TRUE(i->resumed);
  EXPECT_EQ(KTLS_DATA_PATH_KTLS, i->data_path);
  ASSERT_EQ(2u, i->peer_dns_san_count);
  EXPECT_STREQ("*.upstream.test", i->peer_dns_sans[1]);
  ktls_conn_free(conn);
  EXPECT_EQ(KTLS_E_DIAL, ktls_agent_dial(a, &o, &conn));
  EXPECT_EQ(nullptr, conn);
  EXPECT_STREQ("dial 127.0.0.1:4433: certificate verify failed: hostname mismatch",
               ktls_last_error());
  t.join();

  ktls_dial_options unset{};
  unset.host = "h";
  unset.port = 1;
  EXPECT_EQ(KTLS_E_INVALID_ARGUMENT, ktls_agent_dial(a, &unset, &conn));
  EXPECT_THAT(ktls_last_error(), HasSubstr("struct_size"));
  ktls_dial_options no_host = KTLS_DIAL_OPTIONS_INIT;
  EXPECT_EQ(KTLS_E_INVALID_ARGUMENT, ktls_agent_dial(a, &no_host, &conn));
  ktls_agent_close(a);
}

TEST(CApiTest, DialOptionsFromAnOlderShorterStructAreReadSafely) {
  FakeAgent agent;
  ktls_agent* a = ConnectC(agent, 0);
  ASSERT_NE(nullptr, a);
  std::thread t([&] {
    v1::AppToAgent m = agent.ReadFromApp();
    EXPECT_EQ("only.host", m.dial().host());
    EXPECT_TRUE(m.dial().sni().empty());  // beyond struct_size: not read
    agent.Send(DialResultMessage(m.dial().request_id(), false, "refused"));
  });
  ktls_dial_options o = KTLS_DIAL_OPTIONS_INIT;
  o.struct_size = offsetof(ktls_dial_options, sni);  // an "old" struct that ended at port
  o.host = "only.host";
  o.port = 443;
  o.sni = "garbage-that-must-not-be-read";
  ktls_conn* conn = nullptr;
  EXPECT_EQ(KTLS_E_DIAL, ktls_agent_dial(a, &o, &conn));
  t.join();
  ktls_agent_close(a);
}

TEST(CApiTest, AgentRestartAndReconnect) {
  FakeAgent agent;
  ktls_agent* a = ConnectC(agent, 2);
  ASSERT_NE(nullptr, a);
  const int fd = ktls_agent_fd(a);
  agent.Hangup();
  agent.StopListening();
  ASSERT_TRUE(Readable(fd, 1000));
  ktls_conn* conn = nullptr;
  EXPECT_EQ(KTLS_E_UNAVAILABLE, ktls_agent_accept(a, &conn));
  EXPECT_EQ(0, ktls_agent_connected(a));
  EXPECT_FALSE(Readable(fd));
  EXPECT_EQ(KTLS_E_NOT_FOUND, ktls_agent_reconnect(a, 100));
  agent.Relisten();
  std::thread t([&] {
    v1::Subscribe s = agent.AcceptAndReadSubscribe();
    EXPECT_EQ(2u, s.initial_credits());
    agent.SendSubscribed();
  });
  EXPECT_EQ(KTLS_OK, ktls_agent_reconnect(a, 2000)) << ktls_last_error();
  t.join();
  EXPECT_EQ(1, ktls_agent_connected(a));
  EXPECT_EQ(fd, ktls_agent_fd(a));
  ktls_agent_close(a);
}

TEST(CApiTest, CppWrapperRoundTrip) {
  FakeAgent agent;
  ::ktls::app::Agent a;
  auto pending = std::async(std::launch::async, [&] {
    return ::ktls::app::Agent::Connect(agent.path(), "cpp-app", 1, &a, 2000);
  });
  agent.AcceptAndReadSubscribe();
  agent.SendSubscribed();
  ASSERT_TRUE(pending.get().ok());
  StreamPair p;
  agent.Send(HandoffMessage(9, "hi"), {p.fd[0]});
  ::ktls::app::Connection c;
  ::ktls::app::Status s = a.Accept(&c);
  ASSERT_TRUE(s) << s.ToString();
  EXPECT_EQ("hi", c.pending());
  EXPECT_FALSE(c.ktls());
  EXPECT_EQ(9u, c.info().connection_id);
  char buf[8];
  EXPECT_EQ(2, c.Read(buf, sizeof(buf)));
  EXPECT_EQ(5, c.WriteAll("hello"));
  EXPECT_EQ(0, c.ShutdownWrite());
  EXPECT_EQ(5, read(p.fd[1], buf, sizeof(buf)));
  EXPECT_EQ(0, read(p.fd[1], buf, sizeof(buf)));  // EOF after the half-close
  agent.Hangup();
  s = a.Accept(&c);
  EXPECT_EQ(KTLS_E_UNAVAILABLE, s.code);
  EXPECT_EQ("KTLS_E_UNAVAILABLE: agent closed the handoff socket", s.ToString());
}

}  // namespace
}  // namespace ktls::client
