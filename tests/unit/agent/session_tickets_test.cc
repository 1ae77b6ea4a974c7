// Session-ticket keys and client trust swapped on a live TlsContext, with real handshakes over a
// memory BIO pair.
#include "agent/session_tickets.h"

#include <openssl/err.h>

#include <gtest/gtest.h>

#include "agent/client_trust.h"
#include "agent/tls_context.h"
#include "tests/unit/agent/test_certs.h"

namespace ktls::agent {
namespace {

using testcerts::TestCert;

struct Outcome {
  bool ok = false;
  bool resumed = false;
  SSL_SESSION* session = nullptr;  // caller frees
};

// One handshake between a client and `context`, with optional client certificate and session.
Outcome Handshake(const TlsContext& context, std::shared_ptr<const CertificateSet> certs,
                  int version, SSL_SESSION* resume = nullptr, const TestCert* client = nullptr) {
  Outcome out;
  TlsConnectionState state;
  state.certificates = std::move(certs);
  SslPtr server = *context.NewServerSsl(&state);
  SslCtxPtr cctx(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_min_proto_version(cctx.get(), version);
  SSL_CTX_set_max_proto_version(cctx.get(), version);
  if (client != nullptr) {
    SSL_CTX_use_certificate(cctx.get(), client->cert.get());
    SSL_CTX_use_PrivateKey(cctx.get(), client->key.get());
  }
  SslPtr c(SSL_new(cctx.get()));
  SSL_set_tlsext_host_name(c.get(), "localhost");
  if (resume != nullptr) SSL_set_session(c.get(), resume);
  BIO* cb = nullptr;
  BIO* sb = nullptr;
  BIO_new_bio_pair(&cb, 1 << 16, &sb, 1 << 16);
  SSL_set_bio(c.get(), cb, cb);  // the SSLs own the BIOs
  SSL_set_bio(server.get(), sb, sb);
  SSL_set_connect_state(c.get());
  bool c_done = false, s_done = false;
  for (int i = 0; i < 100 && !(c_done && s_done); ++i) {
    if (!c_done) {
      const int rc = SSL_do_handshake(c.get());
      if (rc == 1) c_done = true;
      else if (SSL_get_error(c.get(), rc) != SSL_ERROR_WANT_READ) break;
    }
    if (!s_done) {
      const int rc = SSL_do_handshake(server.get());
      if (rc == 1) s_done = true;
      else if (SSL_get_error(server.get(), rc) != SSL_ERROR_WANT_READ) break;
    }
  }
  ERR_clear_error();
  if (!(c_done && s_done)) return out;
  // TLS 1.3 tickets follow the handshake: let the client read them.
  char buf[1];
  SSL_read(c.get(), buf, 0);
  ERR_clear_error();
  out.ok = true;
  out.resumed = SSL_session_reused(c.get()) == 1;
  out.session = SSL_get1_session(c.get());
  SSL_set_shutdown(c.get(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  return out;
}

class SessionTicketsTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    a_ = *TlsContext::Create(TlsOptions{}, KernelProbeResult{});
    b_ = *TlsContext::Create(TlsOptions{}, KernelProbeResult{});
    certs_ = *CertificateSet::CreateDevelopment();
  }
  std::unique_ptr<TlsContext> a_, b_;
  std::shared_ptr<const CertificateSet> certs_;
};

TEST(SessionTicketKeysTest, FormatsAndLimits) {
  auto keys = SessionTicketKeys::FromBytes({std::string(80, 'x'), std::string(48, 'y')});
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(32u, (*keys)->keys()[0].key_len);
  EXPECT_EQ(16u, (*keys)->keys()[1].key_len);
  EXPECT_EQ("78787878787878787878787878787878", (*keys)->keys()[0].NameHex());
  std::vector<std::string> bytes = (*keys)->Serialize();
  EXPECT_EQ(std::string(80, 'x'), bytes[0]);
  EXPECT_EQ(std::string(48, 'y'), bytes[1]);
  EXPECT_FALSE(SessionTicketKeys::FromBytes({std::string(79, 'x')}).ok());
  EXPECT_FALSE(SessionTicketKeys::FromBytes({}).ok());
  std::vector<std::string_view> many(kMaxSessionTicketKeys + 1, std::string_view("x"));
  EXPECT_FALSE(SessionTicketKeys::FromBytes(many).ok());
  EXPECT_NE(SessionTicketKeys::RandomKey()->name, SessionTicketKeys::RandomKey()->name);
}

TEST_P(SessionTicketsTest, ContextsWithTheSameKeysResumeEachOthersSessions) {
  Outcome first = Handshake(*a_, certs_, GetParam());
  ASSERT_TRUE(first.ok);
  Outcome other = Handshake(*b_, certs_, GetParam(), first.session);
  EXPECT_TRUE(other.ok);
  EXPECT_FALSE(other.resumed) << "different random keys must not resume";
  SSL_SESSION_free(other.session);
  SSL_SESSION_free(first.session);

  auto shared = *SessionTicketKeys::FromBytes({std::string(80, 's')});
  a_->SetTicketKeys(shared);
  b_->SetTicketKeys(shared);
  first = Handshake(*a_, certs_, GetParam());
  other = Handshake(*b_, certs_, GetParam(), first.session);
  EXPECT_TRUE(other.resumed);
  SSL_SESSION_free(other.session);

  // Rotated on b, the old key kept for decryption: still resumes (and is renewed).
  auto rotated = *SessionTicketKeys::FromBytes({std::string(80, 'n'), std::string(80, 's')});
  b_->SetTicketKeys(rotated);
  other = Handshake(*b_, certs_, GetParam(), first.session);
  EXPECT_TRUE(other.resumed);
  SSL_SESSION_free(other.session);
  // Dropped: a full handshake.
  b_->SetTicketKeys(*SessionTicketKeys::FromBytes({std::string(80, 'n')}));
  other = Handshake(*b_, certs_, GetParam(), first.session);
  EXPECT_TRUE(other.ok);
  EXPECT_FALSE(other.resumed);
  SSL_SESSION_free(other.session);
  SSL_SESSION_free(first.session);
}

TEST_P(SessionTicketsTest, ClientTrustSwapAppliesToNewHandshakesAndEndsOldSessions) {
  const TestCert ca = testcerts::MakeCa("swap CA");
  testcerts::CertSpec spec{"client", {}};
  spec.client_auth = true;
  const TestCert client = testcerts::MakeCert(spec, &ca);
  auto bundle = TrustBundle::Create(ca.cert_pem, "", true);
  ASSERT_TRUE(bundle.ok()) << bundle.status();

  Outcome before = Handshake(*a_, certs_, GetParam());
  ASSERT_TRUE(before.ok);
  a_->SetClientTrust(*bundle);
  Outcome anonymous = Handshake(*a_, certs_, GetParam());
  EXPECT_FALSE(anonymous.ok) << "require_client_cert did not refuse";
  Outcome with_cert = Handshake(*a_, certs_, GetParam(), nullptr, &client);
  EXPECT_TRUE(with_cert.ok);
  // A session from before the trust changed is not resumed (its id context differs).
  Outcome resumed = Handshake(*a_, certs_, GetParam(), before.session, &client);
  EXPECT_TRUE(resumed.ok);
  EXPECT_FALSE(resumed.resumed);
  a_->SetClientTrust(nullptr);
  Outcome back = Handshake(*a_, certs_, GetParam());
  EXPECT_TRUE(back.ok) << "removing the bundle did not restore the context's own trust";
  for (Outcome* o : {&before, &anonymous, &with_cert, &resumed, &back}) {
    if (o->session) SSL_SESSION_free(o->session);
  }
}

INSTANTIATE_TEST_SUITE_P(Versions, SessionTicketsTest,
                         ::testing::Values(TLS1_2_VERSION, TLS1_3_VERSION), [](const auto& info) {
                           return info.param == TLS1_3_VERSION ? "Tls13" : "Tls12";
                         });

}  // namespace
}  // namespace ktls::agent
