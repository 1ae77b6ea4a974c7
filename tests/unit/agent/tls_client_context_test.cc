// The dialer's client TLS configuration (agent/tls_client_context.cc): one context per CA file,
// clear errors for what cannot be configured, and — in handshakes against an in-process server
// on a loopback TCP connection — SNI, ALPN, host and IP verification, the captured server
// secret, and sessions that go into the cache and resume.
#include "agent/tls_client_context.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/unit/agent/loopback_listener.h"
#include "tests/unit/agent/test_certs.h"

namespace ktls::agent::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Picks the client's first ALPN protocol.
int SelectFirstAlpn(SSL* /*ssl*/, const unsigned char** out, unsigned char* outlen,
                    const unsigned char* in, unsigned int inlen, void* /*arg*/) {
  if (inlen == 0) return SSL_TLSEXT_ERR_NOACK;
  *outlen = in[0];
  *out = in + 1;
  return SSL_TLSEXT_ERR_OK;
}

// What a handshake ended with, seen from both ends.
struct Outcome {
  bool client_done = false;
  bool server_done = false;
  long verify_result = X509_V_OK;
  std::string server_sni;  // what the server received
  std::string alpn;        // what was negotiated
  bool reused = false;
};

// One non-blocking step; false when this side failed.
bool Step(SSL* ssl, bool* done) {
  if (*done) return true;
  ERR_clear_error();
  const int rc = SSL_do_handshake(ssl);
  if (rc == 1) {
    *done = true;
    return true;
  }
  const int err = SSL_get_error(ssl, rc);
  return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE;
}

class ClientTlsContextsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = testcerts::MakeCa("client context test CA");
    leaf_ = testcerts::MakeServerCert("upstream.test", ca_);
    ca_file_ = testcerts::WriteTempFile("client-context-ca.pem", ca_.cert_pem);
    ASSERT_TRUE(listener_.ok());
    server_ctx_.reset(SSL_CTX_new(TLS_server_method()));
    SSL_CTX_use_certificate(server_ctx_.get(), leaf_.cert.get());
    SSL_CTX_use_PrivateKey(server_ctx_.get(), leaf_.key.get());
    SSL_CTX_set_alpn_select_cb(server_ctx_.get(), SelectFirstAlpn, nullptr);
  }

  ClientTlsParams Params(const std::string& host = "upstream.test") {
    ClientTlsParams p;
    p.host = host;
    p.port = static_cast<uint32_t>(listener_.port());
    p.ca_file = ca_file_;
    p.ApplyDefaults();
    return p;
  }

  // Runs the handshake of `client` against a server SSL from server_ctx_ over a loopback TCP
  // connection, then (TLS 1.3) reads on the client for a while so that tickets are processed.
  Outcome Handshake(SSL* client) {
    const int cfd = listener_.Connect();
    const int sfd = listener_.Accept();
    EXPECT_GE(cfd, 0);
    EXPECT_GE(sfd, 0);
    SslPtr server(SSL_new(server_ctx_.get()));
    SSL_set_fd(server.get(), sfd);
    SSL_set_accept_state(server.get());
    SSL_set_fd(client, cfd);
    SSL_set_connect_state(client);
    Outcome o;
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (!(o.client_done && o.server_done) && absl::Now() < deadline) {
      if (!Step(client, &o.client_done) || !Step(server.get(), &o.server_done)) break;
      pollfd p[2] = {{cfd, POLLIN, 0}, {sfd, POLLIN, 0}};
      poll(p, 2, 10);
    }
    o.verify_result = SSL_get_verify_result(client);
    if (const char* name = SSL_get_servername(server.get(), TLSEXT_NAMETYPE_host_name)) {
      o.server_sni = name;
    }
    const unsigned char* alpn = nullptr;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(client, &alpn, &alpn_len);
    o.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
    o.reused = SSL_session_reused(client) == 1;
    if (o.client_done) {
      ReadTickets(client, cfd);
      // As the agent releases a handed-off connection: shut down without a close_notify. An SSL
      // freed without shutdown marks its session non-resumable (see docs/design.md).
      SSL_set_shutdown(client, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    }
    // The sockets are ours (SSL_set_fd does not close them).
    close(cfd);
    close(sfd);
    return o;
  }

  // A session for `p` from contexts_, handshaken against the server.
  Outcome Dial(const ClientTlsParams& p, ClientTlsState* state) {
    absl::StatusOr<SslPtr> ssl = contexts_.NewSession(p, state);
    if (!ssl.ok()) {
      ADD_FAILURE() << ssl.status();
      return Outcome{};
    }
    return Handshake(ssl->get());
  }

  // Lets the client process what the server sent after its Finished (TLS 1.3 tickets).
  static void ReadTickets(SSL* client, int fd) {
    char buf[256];
    for (int i = 0; i < 20; ++i) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 10) <= 0) continue;
      ERR_clear_error();
      if (SSL_read(client, buf, sizeof(buf)) <= 0 &&
          SSL_get_error(client, -1) != SSL_ERROR_WANT_READ) {
        return;
      }
    }
  }

  testcerts::TestCert ca_;
  testcerts::TestCert leaf_;
  std::string ca_file_;
  LoopbackListener listener_;
  SslCtxPtr server_ctx_;
  SessionCache sessions_{16, 4};
  ClientTlsContexts contexts_{sessions_, /*enable_ktls=*/false};
};

TEST_F(ClientTlsContextsTest, OneContextPerCaFileIsCreatedOnceAndReused) {
  absl::StatusOr<SSL_CTX*> first = contexts_.ContextFor(ca_file_);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<SSL_CTX*> again = contexts_.ContextFor(ca_file_);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*first, *again);
  EXPECT_EQ(1u, contexts_.contexts());

  const testcerts::TestCert other = testcerts::MakeCa("other CA");
  absl::StatusOr<SSL_CTX*> second =
      contexts_.ContextFor(testcerts::WriteTempFile("other-ca.pem", other.cert_pem));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(*first, *second);
  EXPECT_EQ(2u, contexts_.contexts());

  // Sessions for the same CA file share its context.
  ClientTlsState a, b;
  absl::StatusOr<SslPtr> ssl_a = contexts_.NewSession(Params(), &a);
  absl::StatusOr<SslPtr> ssl_b = contexts_.NewSession(Params(), &b);
  ASSERT_TRUE(ssl_a.ok() && ssl_b.ok());
  EXPECT_EQ(*first, SSL_get_SSL_CTX(ssl_a->get()));
  EXPECT_EQ(*first, SSL_get_SSL_CTX(ssl_b->get()));
  EXPECT_EQ(2u, contexts_.contexts());
}

TEST_F(ClientTlsContextsTest, UnloadableCaFileIsAClearErrorAndIsNotCached) {
  const std::string missing = "/nonexistent/ktls-client-ca.pem";
  absl::StatusOr<SSL_CTX*> ctx = contexts_.ContextFor(missing);
  ASSERT_FALSE(ctx.ok());
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, ctx.status().code());
  EXPECT_THAT(std::string(ctx.status().message()),
              StartsWith("cannot load CA bundle " + missing + ": "));

  ClientTlsParams p = Params();
  p.ca_file = testcerts::WriteTempFile("not-pem.pem", "this is no certificate\n");
  ClientTlsState state;
  absl::StatusOr<SslPtr> ssl = contexts_.NewSession(p, &state);
  ASSERT_FALSE(ssl.ok());
  EXPECT_THAT(std::string(ssl.status().message()),
              StartsWith("cannot load CA bundle " + p.ca_file + ": "));
  EXPECT_EQ(0u, contexts_.contexts());
}

TEST_F(ClientTlsContextsTest, BadVersionAndAlpnAreRejected) {
  ClientTlsState state;
  ClientTlsParams p = Params();
  p.tls_version = "TLSv1.1";
  absl::StatusOr<SslPtr> ssl = contexts_.NewSession(p, &state);
  ASSERT_FALSE(ssl.ok());
  EXPECT_EQ("tls_version 'TLSv1.1' is not TLSv1.2 or TLSv1.3", ssl.status().message());

  p = Params();
  p.alpn = {"h2", ""};
  ssl = contexts_.NewSession(p, &state);
  ASSERT_FALSE(ssl.ok());
  EXPECT_EQ("alpn: protocol names must be 1..255 bytes", ssl.status().message());
}

TEST(ClientTlsParamsTest, DefaultsFollowTheHostAndTheKeyCoversWhatIsVerified) {
  ClientTlsParams named;
  named.host = "api.example";
  named.port = 443;
  named.ApplyDefaults();
  EXPECT_EQ("api.example", named.sni);
  EXPECT_EQ("api.example", named.expected_name);

  ClientTlsParams ip;
  ip.host = "::1";
  ip.port = 443;
  ip.ApplyDefaults();
  EXPECT_EQ("", ip.sni);  // RFC 6066: no IP literals in SNI
  EXPECT_EQ("::1", ip.expected_name);

  ClientTlsParams explicit_names = named;
  explicit_names.sni = "front.example";
  explicit_names.expected_name = "back.example";
  explicit_names.ApplyDefaults();
  EXPECT_EQ("front.example", explicit_names.sni);
  EXPECT_EQ("back.example", explicit_names.expected_name);

  ClientTlsParams other_trust = named;
  other_trust.ca_file = "/etc/other.pem";
  ClientTlsParams unverified = named;
  unverified.insecure_skip_verify = true;
  // host:port|sni|alpn|ca_file|expected_name|tls_version|insecure_skip_verify
  EXPECT_EQ("api.example:443|api.example|||api.example||0", named.SessionCacheKey());
  EXPECT_NE(named.SessionCacheKey(), other_trust.SessionCacheKey());
  EXPECT_NE(named.SessionCacheKey(), unverified.SessionCacheKey());
  EXPECT_NE(named.SessionCacheKey(), explicit_names.SessionCacheKey());
}

TEST_F(ClientTlsContextsTest, VerifiedHandshakeSendsSniAndAlpnCapturesTheSecretAndResumes) {
  ClientTlsParams p = Params();
  p.alpn = {"h2", "http/1.1"};
  p.tls_version = "TLSv1.3";
  ClientTlsState state;
  Outcome o = Dial(p, &state);
  ASSERT_TRUE(o.client_done && o.server_done) << "verify result " << o.verify_result;
  EXPECT_EQ(X509_V_OK, o.verify_result);
  EXPECT_EQ("upstream.test", o.server_sni);
  EXPECT_EQ("h2", o.alpn);
  EXPECT_FALSE(o.reused);
  // SERVER_TRAFFIC_SECRET_0: the hash length of the suite (32 or 48 bytes).
  EXPECT_TRUE(state.server_app_secret_len == 32 || state.server_app_secret_len == 48)
      << state.server_app_secret_len;
  EXPECT_TRUE(state.got_ticket);
  EXPECT_EQ(1u, sessions_.upstreams());
  state.WipeSecret();
  EXPECT_EQ(0u, state.server_app_secret_len);
  const std::array<uint8_t, 64> zeros{};
  EXPECT_EQ(zeros, state.server_app_secret);

  // The next dial to the same upstream offers the cached ticket and resumes.
  ClientTlsState next_state;
  Outcome resumed = Dial(p, &next_state);
  ASSERT_TRUE(resumed.client_done && resumed.server_done);
  EXPECT_TRUE(resumed.reused);
}

TEST_F(ClientTlsContextsTest, DetachedSslNoLongerReachesItsState) {
  ClientTlsState state;
  absl::StatusOr<SslPtr> ssl = contexts_.NewSession(Params(), &state);
  ASSERT_TRUE(ssl.ok()) << ssl.status();
  ClientTlsContexts::Detach(ssl->get());
  Outcome o = Handshake(ssl->get());
  ASSERT_TRUE(o.client_done);
  EXPECT_EQ(0u, state.server_app_secret_len);
  EXPECT_FALSE(state.got_ticket);
  EXPECT_EQ(0u, sessions_.upstreams());
}

TEST_F(ClientTlsContextsTest, WrongExpectedNameFailsHostVerification) {
  ClientTlsParams p = Params();
  p.expected_name = "other.test";
  ClientTlsState state;
  Outcome o = Dial(p, &state);
  EXPECT_FALSE(o.client_done);
  EXPECT_EQ(X509_V_ERR_HOSTNAME_MISMATCH, o.verify_result);
  EXPECT_EQ("upstream.test", o.server_sni);  // SNI and the checked name are separate
}

TEST_F(ClientTlsContextsTest, IpLiteralSendsNoSniAndIsVerifiedAsAnAddress) {
  ClientTlsParams p = Params("127.0.0.1");
  ClientTlsState state;
  Outcome o = Dial(p, &state);
  EXPECT_FALSE(o.client_done);
  EXPECT_EQ("", o.server_sni);
  // The leaf names only upstream.test: an address check, not a DNS-name check, failed.
  EXPECT_EQ(X509_V_ERR_IP_ADDRESS_MISMATCH, o.verify_result);
}

TEST_F(ClientTlsContextsTest, UntrustedServerFailsUnlessVerificationIsSkipped) {
  const testcerts::TestCert other = testcerts::MakeCa("someone else");
  ClientTlsParams p = Params();
  p.ca_file = testcerts::WriteTempFile("someone-else.pem", other.cert_pem);
  ClientTlsState state;
  Outcome o = Dial(p, &state);
  EXPECT_FALSE(o.client_done);
  EXPECT_EQ(X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, o.verify_result);

  p.insecure_skip_verify = true;
  ClientTlsState skip_state;
  o = Dial(p, &skip_state);
  EXPECT_TRUE(o.client_done && o.server_done);
}

}  // namespace
}  // namespace ktls::agent::testing
