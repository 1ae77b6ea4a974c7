#include "agent/tls_context.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "tests/unit/agent/test_certs.h"

namespace ktls::agent {
namespace {

using testcerts::CertSpec;
using testcerts::MakeCa;
using testcerts::MakeCert;
using testcerts::TestCert;
using ::testing::HasSubstr;

constexpr char kAes128[] = "TLS_AES_128_GCM_SHA256";
constexpr char kAes256[] = "TLS_AES_256_GCM_SHA384";
constexpr char kChaCha[] = "TLS_CHACHA20_POLY1305_SHA256";

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string CommonName(X509* cert) {
  if (cert == nullptr) return "<none>";
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof(buf));
  return buf;
}

std::string Reason(unsigned long err) {
  if (err == 0) return "no OpenSSL error";
  char buf[256];
  ERR_error_string_n(err, buf, sizeof(buf));
  return buf;
}

std::vector<uint8_t> AlpnWire(const std::vector<std::string>& protocols) {
  std::vector<uint8_t> wire;
  for (const std::string& p : protocols) {
    wire.push_back(static_cast<uint8_t>(p.size()));
    wire.insert(wire.end(), p.begin(), p.end());
  }
  return wire;
}

// The client's own view of CLIENT_TRAFFIC_SECRET_0 (hex), through its keylog callback.
void ClientKeylog(const SSL* ssl, const char* line) {
  auto* out = static_cast<std::string*>(SSL_get_app_data(ssl));
  constexpr char kLabel[] = "CLIENT_TRAFFIC_SECRET_0 ";
  if (out == nullptr || std::strncmp(line, kLabel, sizeof(kLabel) - 1) != 0) return;
  const char* secret = std::strrchr(line, ' ');
  *out = Lower(secret + 1);
}

KernelProbeResult ProbeSupporting(std::vector<std::pair<TlsVersion, KtlsCipher>> supported,
                                  bool rx = true) {
  KernelProbeResult probe;
  probe.ulp_available = true;
  for (TlsVersion v : {TlsVersion::kTls12, TlsVersion::kTls13}) {
    for (KtlsCipher c :
         {KtlsCipher::kAes128Gcm, KtlsCipher::kAes256Gcm, KtlsCipher::kChaCha20Poly1305}) {
      bool ok = false;
      for (const auto& [sv, sc] : supported) ok = ok || (sv == v && sc == c);
      for (Direction d : {Direction::kTx, Direction::kRx}) {
        ProbeCell cell;
        cell.version = v;
        cell.cipher = c;
        cell.direction = d;
        cell.ok = ok && (d == Direction::kTx || rx);
        if (!cell.ok) cell.reason = "not in this fake kernel";
        probe.cells.push_back(cell);
      }
    }
  }
  return probe;
}

struct ClientOptions {
  std::string sni;
  int version = 0;  // 0: TLS 1.2 and 1.3
  std::string tls13_suites;
  std::string tls12_ciphers;
  std::vector<std::string> alpn;
  const TestCert* client_cert = nullptr;
};

struct Side {
  bool done = false;
  bool failed = false;
  unsigned long error = 0;  // first OpenSSL error of the failing call
};

// One connection: a client SSL from the test and a server SSL from the TlsContext under test,
// joined by a memory BIO pair (or a socketpair), driven non-blocking from this thread.
class Connection {
 public:
  Connection(const TlsContext& context, const TestCert& trusted_ca, const ClientOptions& opts,
             std::shared_ptr<const CertificateSet> certificates) {
    state_.certificates = std::move(certificates);
    client_ctx_.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX* c = client_ctx_.get();
    X509_STORE_add_cert(SSL_CTX_get_cert_store(c), trusted_ca.cert.get());
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
    if (opts.version != 0) {
      SSL_CTX_set_min_proto_version(c, opts.version);
      SSL_CTX_set_max_proto_version(c, opts.version);
    }
    if (!opts.tls13_suites.empty()) SSL_CTX_set_ciphersuites(c, opts.tls13_suites.c_str());
    if (!opts.tls12_ciphers.empty()) SSL_CTX_set_cipher_list(c, opts.tls12_ciphers.c_str());
    SSL_CTX_set_keylog_callback(c, ClientKeylog);
    if (opts.client_cert != nullptr) {
      SSL_CTX_use_certificate(c, opts.client_cert->cert.get());
      SSL_CTX_use_PrivateKey(c, opts.client_cert->key.get());
    }
    client_.reset(SSL_new(c));
    SSL_set_app_data(client_.get(), &client_secret_hex_);
    SSL_set_connect_state(client_.get());
    if (!opts.sni.empty()) {
      SSL_set_tlsext_host_name(client_.get(), opts.sni.c_str());
      SSL_set1_host(client_.get(), opts.sni.c_str());  // the client checks the SAN
    }
    if (!opts.alpn.empty()) {
      std::vector<uint8_t> wire = AlpnWire(opts.alpn);
      SSL_set_alpn_protos(client_.get(), wire.data(), static_cast<unsigned>(wire.size()));
    }
    absl::StatusOr<SslPtr> server = context.NewServerSsl(&state_);
    EXPECT_TRUE(server.ok()) << server.status();
    if (server.ok()) server_ = *std::move(server);
  }

  ~Connection() {
    server_.reset();
    client_.reset();
    for (int fd : fds_) close(fd);
  }

  void UseBioPair() {
    BIO* client_bio = nullptr;
    BIO* server_bio = nullptr;
    ASSERT_EQ(BIO_new_bio_pair(&client_bio, 0, &server_bio, 0), 1);
    SSL_set_bio(client_.get(), client_bio, client_bio);  // each SSL takes its end
    SSL_set_bio(server_.get(), server_bio, server_bio);
  }

  void UseSocketPair() {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds_), 0);
    SSL_set_fd(client_.get(), fds_[0]);
    SSL_set_fd(server_.get(), fds_[1]);
  }

  static void Step(SSL* ssl, Side& side) {
    if (side.done || side.failed) return;
    ERR_clear_error();
    const int rc = SSL_do_handshake(ssl);
    if (rc == 1) {
      side.done = true;
      return;
    }
    const int err = SSL_get_error(ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return;
    side.failed = true;
    side.error = ERR_peek_error();
    ERR_clear_error();
  }

  void StepClient() { Step(client_.get(), client_side_); }
  void StepServer() { Step(server_.get(), server_side_); }

  // Drives both sides until each has finished or failed. After a failure the other side keeps
  // going so that it reads the alert.
  bool Handshake() {
    if (client_ == nullptr || server_ == nullptr) return false;
    if (SSL_get_rbio(client_.get()) == nullptr) UseBioPair();
    for (int i = 0; i < 100; ++i) {
      StepClient();
      StepServer();
      const bool client_final = client_side_.done || client_side_.failed;
      const bool server_final = server_side_.done || server_side_.failed;
      if (client_final && server_final) break;
      if ((client_side_.failed || server_side_.failed) && i > 10) break;
    }
    // TLS 1.3: the client finishes before the server has checked its Certificate/Finished; a
    // server-side rejection reaches the client on its first read.
    if (client_side_.done && server_side_.failed) {
      char byte;
      ERR_clear_error();
      if (SSL_read(client_.get(), &byte, 1) <= 0) {
        client_side_.failed = true;
        client_side_.error = ERR_peek_error();
      }
      ERR_clear_error();
    }
    return client_side_.done && server_side_.done && !client_side_.failed;
  }

  SSL* client() { return client_.get(); }
  SSL* server() { return server_.get(); }
  TlsConnectionState& state() { return state_; }
  const Side& client_side() const { return client_side_; }
  const Side& server_side() const { return server_side_; }
  const std::string& client_secret_hex() const { return client_secret_hex_; }
  int server_fd() const { return fds_[1]; }

  std::string PeerCommonName() { return CommonName(SSL_get0_peer_certificate(client_.get())); }
  std::string Alpn(SSL* ssl) {
    const unsigned char* p = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    return std::string(reinterpret_cast<const char*>(p), len);
  }
  std::string CipherName(SSL* ssl) { return SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)); }

 private:
  TlsConnectionState state_;
  SslCtxPtr client_ctx_;
  SslPtr client_;
  SslPtr server_;
  int fds_[2] = {-1, -1};
  Side client_side_;
  Side server_side_;
  std::string client_secret_hex_;
};

class TlsContextTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ca_ = new TestCert(MakeCa("Server CA"));
    client_ca_ = new TestCert(MakeCa("Client CA"));
    other_ca_ = new TestCert(MakeCa("Other CA"));
    api_ = new TestCert(Leaf("api", {"api.example.com"}, *ca_));
    wild_ = new TestCert(Leaf("wild", {"*.web.example.com"}, *ca_));
    fallback_ = new TestCert(Leaf("fallback", {"fallback.example.org"}, *ca_));
    CertSpec client;
    client.common_name = "client-1";
    client.client_auth = true;
    good_client_ = new TestCert(MakeCert(client, client_ca_));
    client.common_name = "intruder";
    bad_client_ = new TestCert(MakeCert(client, other_ca_));
    client_ca_file_ =
        new std::string(testcerts::WriteTempFile("client_ca.pem", client_ca_->cert_pem));
  }
  static void TearDownTestSuite() {
    for (TestCert* c :
         {ca_, client_ca_, other_ca_, api_, wild_, fallback_, good_client_, bad_client_}) {
      delete c;
    }
    unlink(client_ca_file_->c_str());
    delete client_ca_file_;
  }

  static TestCert Leaf(const std::string& cn, std::vector<std::string> dns, const TestCert& ca) {
    CertSpec spec;
    spec.common_name = cn;
    spec.dns_names = std::move(dns);
    return MakeCert(spec, &ca);
  }

  static CertificateSource Source(const std::string& name, const TestCert& c, bool is_default) {
    CertificateSource s;
    s.name = name;
    s.chain_pem = c.cert_pem;
    s.key_pem = c.key_pem;
    s.is_default = is_default;
    return s;
  }

  static std::shared_ptr<const CertificateSet> Certificates() {
    auto set = CertificateSet::Create({Source("api", *api_, false), Source("wild", *wild_, false),
                                       Source("fallback", *fallback_, true)});
    EXPECT_TRUE(set.ok()) << set.status();
    return set.ok() ? *set : nullptr;
  }

  static std::unique_ptr<TlsContext> MustCreate(const TlsOptions& options,
                                                const KernelProbeResult& probe = {}) {
    auto context = TlsContext::Create(options, probe);
    EXPECT_TRUE(context.ok()) << context.status();
    return context.ok() ? *std::move(context) : nullptr;
  }

  static TestCert* ca_;
  static TestCert* client_ca_;
  static TestCert* other_ca_;
  static TestCert* api_;
  static TestCert* wild_;
  static TestCert* fallback_;
  static TestCert* good_client_;
  static TestCert* bad_client_;
  static std::string* client_ca_file_;
};

TestCert* TlsContextTest::ca_ = nullptr;
TestCert* TlsContextTest::client_ca_ = nullptr;
TestCert* TlsContextTest::other_ca_ = nullptr;
TestCert* TlsContextTest::api_ = nullptr;
TestCert* TlsContextTest::wild_ = nullptr;
TestCert* TlsContextTest::fallback_ = nullptr;
TestCert* TlsContextTest::good_client_ = nullptr;
TestCert* TlsContextTest::bad_client_ = nullptr;
std::string* TlsContextTest::client_ca_file_ = nullptr;

// Runs a test body for TLS 1.2 and TLS 1.3.
class TlsVersionTest : public TlsContextTest, public ::testing::WithParamInterface<int> {
 protected:
  // Client options for the version under test.
  ClientOptions Opts(std::string sni = "") const {
    ClientOptions o;
    o.sni = std::move(sni);
    o.version = GetParam();
    return o;
  }
};
INSTANTIATE_TEST_SUITE_P(Versions, TlsVersionTest,
                         ::testing::Values(TLS1_2_VERSION, TLS1_3_VERSION),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == TLS1_2_VERSION ? "Tls12" : "Tls13";
                         });

// ---- Configuration ----

TEST_F(TlsContextTest, ContextSettings) {
  auto context = MustCreate({});
  ASSERT_NE(context, nullptr);
  SSL_CTX* ctx = context->ctx();
  EXPECT_EQ(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
  EXPECT_EQ(SSL_CTX_get_max_proto_version(ctx), TLS1_3_VERSION);
  const uint64_t options = SSL_CTX_get_options(ctx);
  EXPECT_TRUE(options & SSL_OP_ENABLE_KTLS);
  EXPECT_TRUE(options & SSL_OP_NO_RENEGOTIATION);
  EXPECT_TRUE(options & SSL_OP_CIPHER_SERVER_PREFERENCE);
  EXPECT_TRUE(options & SSL_OP_NO_COMPRESSION);
  EXPECT_EQ(SSL_CTX_get_read_ahead(ctx), 0);
  EXPECT_FALSE(SSL_CTX_get_mode(ctx) & SSL_MODE_RELEASE_BUFFERS);
  EXPECT_EQ(SSL_CTX_get_session_cache_mode(ctx), SSL_SESS_CACHE_SERVER);
  EXPECT_EQ(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_NONE);

  // The default suites, in order: TLS 1.3 first, then the TLS 1.2 AEAD ciphers.
  std::vector<std::string> names;
  STACK_OF(SSL_CIPHER)* ciphers = SSL_CTX_get_ciphers(ctx);
  for (int i = 0; i < sk_SSL_CIPHER_num(ciphers); ++i) {
    names.push_back(SSL_CIPHER_get_name(sk_SSL_CIPHER_value(ciphers, i)));
  }
  EXPECT_THAT(names,
              ::testing::ElementsAre(kAes128, kAes256, kChaCha, "ECDHE-ECDSA-AES128-GCM-SHA256",
                                     "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                                     "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
                                     "ECDHE-RSA-CHACHA20-POLY1305"));

  TlsOptions no_ktls;
  no_ktls.enable_ktls = false;
  no_ktls.min_version = TlsVersion::kTls13;
  auto plain = MustCreate(no_ktls);
  ASSERT_NE(plain, nullptr);
  EXPECT_FALSE(SSL_CTX_get_options(plain->ctx()) & SSL_OP_ENABLE_KTLS);
  EXPECT_EQ(SSL_CTX_get_min_proto_version(plain->ctx()), TLS1_3_VERSION);
  EXPECT_EQ(plain->options().min_version, TlsVersion::kTls13);
}

TEST_F(TlsContextTest, InvalidOptionsAreRejected) {
  TlsOptions bad12;
  bad12.tls12_ciphers = "NOT-A-CIPHER";
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET);  // stale: must not become this failure's reason
  auto a = TlsContext::Create(bad12, {});
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("invalid TLS 1.2 cipher list 'NOT-A-CIPHER'"));
  EXPECT_THAT(a.status().message(), HasSubstr("no cipher match"));

  TlsOptions bad13;
  bad13.tls13_ciphersuites = "TLS_NOPE";
  auto b = TlsContext::Create(bad13, {});
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("invalid TLS 1.3 cipher suites 'TLS_NOPE'"));

  TlsOptions require_without_ca;
  require_without_ca.require_client_cert = true;
  EXPECT_FALSE(TlsContext::Create(require_without_ca, {}).ok());

  TlsOptions missing_ca;
  missing_ca.client_ca_file = ::testing::TempDir() + "ktls_no_such_ca.pem";
  auto c = TlsContext::Create(missing_ca, {});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(),
              HasSubstr("cannot load client CA file " + missing_ca.client_ca_file));

  TlsOptions bad_alpn;
  bad_alpn.alpn = {"h2", ""};
  EXPECT_FALSE(TlsContext::Create(bad_alpn, {}).ok());
  EXPECT_EQ(ERR_peek_error(), 0u);  // failures leave no stale errors behind
}

TEST_F(TlsContextTest, StaleErrorsDoNotFailCreateOrNewServerSsl) {
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET);
  auto context = MustCreate({});
  ASSERT_NE(context, nullptr);
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET);
  TlsConnectionState state;
  auto ssl = context->NewServerSsl(&state);
  ASSERT_TRUE(ssl.ok()) << ssl.status();
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST_F(TlsContextTest, NewServerSslAttachesStateAndNoIo) {
  auto context = MustCreate({});
  ASSERT_NE(context, nullptr);
  TlsConnectionState state;
  auto ssl = context->NewServerSsl(&state);
  ASSERT_TRUE(ssl.ok()) << ssl.status();
  EXPECT_EQ(TlsContext::StateOf(ssl->get()), &state);
  EXPECT_EQ(SSL_get_rbio(ssl->get()), nullptr);
  EXPECT_EQ(SSL_get_wbio(ssl->get()), nullptr);
  EXPECT_EQ(SSL_is_server(ssl->get()), 1);
  EXPECT_EQ(TlsContext::StateOf(nullptr), nullptr);
  EXPECT_FALSE(context->NewServerSsl(nullptr).ok());

  SslPtr bare(SSL_new(context->ctx()));
  EXPECT_EQ(TlsContext::StateOf(bare.get()), nullptr);
}

TEST_F(TlsContextTest, WipeSecrets) {
  TlsConnectionState state;
  state.client_app_secret.fill(0xAB);
  state.client_app_secret_len = 48;
  state.WipeSecrets();
  EXPECT_EQ(state.client_app_secret_len, 0u);
  for (uint8_t b : state.client_app_secret) ASSERT_EQ(b, 0);
}

// ---- Certificate selection by SNI ----

TEST_P(TlsVersionTest, SniPicksTheCertificate) {
  auto context = MustCreate({});
  ASSERT_NE(context, nullptr);
  auto certs = Certificates();
  for (const auto& [sni, cn] :
       std::vector<std::pair<std::string, std::string>>{{"api.example.com", "api"},
                                                        {"API.Example.Com", "api"},
                                                        {"x.web.example.com", "wild"},
                                                        {"fallback.example.org", "fallback"}}) {
    ClientOptions opts;
    opts.sni = sni;
    opts.version = GetParam();
    Connection conn(*context, *ca_, opts, certs);
    ASSERT_TRUE(conn.Handshake()) << sni << ": client " << Reason(conn.client_side().error)
                                  << " server " << Reason(conn.server_side().error);
    EXPECT_EQ(SSL_version(conn.client()), GetParam());
    EXPECT_EQ(conn.PeerCommonName(), cn) << sni;
    EXPECT_EQ(SSL_get_verify_result(conn.client()), X509_V_OK) << sni;  // chain and SAN
    EXPECT_TRUE(conn.state().sni_matched) << sni;
  }
}

TEST_P(TlsVersionTest, UnknownSniGetsTheDefault) {
  auto context = MustCreate({});
  ASSERT_NE(context, nullptr);
  ClientOptions opts = Opts("unknown.example.net");
  Connection conn(*context, *ca_, opts, Certificates());
  SSL_set_verify(conn.client(), SSL_VERIFY_NONE, nullptr);  // the name does not match, by design
  ASSERT_TRUE(conn.Handshake()) << Reason(conn.server_side().error);
  EXPECT_EQ(conn.PeerCommonName(), "fallback");
  EXPECT_FALSE(conn.state().sni_matched);
}

TEST_P(TlsVersionTest, NoSniGetsTheDefaultWithoutCountingAMiss) {
  auto context = MustCreate({});
  ASSERT_NE(context, nullptr);
  ClientOptions opts = Opts();
  Connection conn(*context, *ca_, opts, Certificates());
  conn.state().sni_matched = false;  // must be set by the callback
  ASSERT_TRUE(conn.Handshake()) << Reason(conn.server_side().error);
  EXPECT_EQ(conn.PeerCommonName(), "fallback");
  EXPECT_TRUE(conn.state().sni_matched);
}

TEST_P(TlsVersionTest, EmptyCertificateSetFailsTheHandshake) {
  auto context = MustCreate({});
  ASSERT_NE(context, nullptr);
  auto empty = CertificateSet::Create({});
  ASSERT_TRUE(empty.ok());
  ClientOptions opts = Opts("api.example.com");
  Connection conn(*context, *ca_, opts, *empty);
  EXPECT_FALSE(conn.Handshake());
  EXPECT_TRUE(conn.server_side().failed);
  EXPECT_EQ(ERR_GET_REASON(conn.server_side().error), SSL_R_CERT_CB_ERROR)
      << Reason(conn.server_side().error);
}

TEST_P(TlsVersionTest, PinnedSetSurvivesAStoreSwap) {
  auto context = MustCreate({});
  ASSERT_NE(context, nullptr);
  CertStore store(Certificates());
  ClientOptions opts = Opts("api.example.com");
  Connection conn(*context, *ca_, opts, store.Current());  // pinned at accept
  auto only_fallback = CertificateSet::Create({Source("fallback", *fallback_, true)});
  ASSERT_TRUE(only_fallback.ok());
  store.Swap(*only_fallback);
  ASSERT_TRUE(conn.Handshake()) << Reason(conn.server_side().error);
  EXPECT_EQ(conn.PeerCommonName(), "api");
}

// ---- ALPN ----

TEST_P(TlsVersionTest, AlpnPicksServerPreference) {
  TlsOptions options;
  options.alpn = {"h2", "http/1.1"};
  auto context = MustCreate(options);
  ASSERT_NE(context, nullptr);
  ClientOptions opts = Opts("api.example.com");
  opts.alpn = {"http/1.1", "h2"};  // the client prefers http/1.1
  Connection conn(*context, *ca_, opts, Certificates());
  ASSERT_TRUE(conn.Handshake()) << Reason(conn.server_side().error);
  EXPECT_EQ(conn.Alpn(conn.server()), "h2");
  EXPECT_EQ(conn.Alpn(conn.client()), "h2");

  ClientOptions only_http1 = opts;
  only_http1.alpn = {"spdy/3", "http/1.1"};
  Connection conn2(*context, *ca_, only_http1, Certificates());
  ASSERT_TRUE(conn2.Handshake()) << Reason(conn2.server_side().error);
  EXPECT_EQ(conn2.Alpn(conn2.server()), "http/1.1");
}

TEST_P(TlsVersionTest, AlpnWithoutOverlapFailsTheHandshake) {
  TlsOptions options;
  options.alpn = {"h2"};
  auto context = MustCreate(options);
  ASSERT_NE(context, nullptr);
  ClientOptions opts = Opts("api.example.com");
  opts.alpn = {"http/1.1"};
  Connection conn(*context, *ca_, opts, Certificates());
  EXPECT_FALSE(conn.Handshake());
  EXPECT_TRUE(conn.server_side().failed);
  EXPECT_TRUE(conn.client_side().failed);
  EXPECT_EQ(ERR_GET_REASON(conn.client_side().error), SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL)
      << Reason(conn.client_side().error);
}

TEST_P(TlsVersionTest, ClientWithoutAlpnIsFine) {
  TlsOptions options;
  options.alpn = {"h2"};
  auto context = MustCreate(options);
  ASSERT_NE(context, nullptr);
  ClientOptions opts = Opts("api.example.com");
  Connection conn(*context, *ca_, opts, Certificates());
  ASSERT_TRUE(conn.Handshake()) << Reason(conn.server_side().error);
  EXPECT_EQ(conn.Alpn(conn.server()), "");
}

TEST_P(TlsVersionTest, NoAlpnConfiguredIgnoresTheClientsList) {
  auto context = MustCreate({});
  ASSERT_NE(context, nullptr);
  ClientOptions opts = Opts("api.example.com");
  opts.alpn = {"h2"};
  Connection conn(*context, *ca_, opts, Certificates());
  ASSERT_TRUE(conn.Handshake()) << Reason(conn.server_side().error);
  EXPECT_EQ(conn.Alpn(conn.server()), "");
}

TEST_P(TlsVersionTest, AlpnListOutlivesTheTlsContext) {
  TlsOptions options;
  options.alpn = {"h2", "http/1.1"};
  auto context = MustCreate(options);
  ASSERT_NE(context, nullptr);
  ClientOptions opts = Opts("api.example.com");
  opts.alpn = {"http/1.1", "h2"};
  Connection conn(*context, *ca_, opts, Certificates());
  context.reset();  // the SSL keeps the SSL_CTX, and the SSL_CTX keeps its ALPN list
  ASSERT_TRUE(conn.Handshake()) << Reason(conn.server_side().error);
  EXPECT_EQ(conn.Alpn(conn.server()), "h2");
}

// ---- Client certificates ----

TEST_P(TlsVersionTest, RequiredClientCertMissingFails) {
  TlsOptions options;
  options.client_ca_file = *client_ca_file_;
  options.require_client_cert = true;
  auto context = MustCreate(options);
  ASSERT_NE(context, nullptr);
  EXPECT_EQ(SSL_CTX_get_verify_mode(context->ctx()),
            SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
  ClientOptions opts = Opts("api.example.com");
  Connection conn(*context, *ca_, opts, Certificates());
  EXPECT_FALSE(conn.Handshake());
  EXPECT_TRUE(conn.server_side().failed);
  EXPECT_EQ(ERR_GET_REASON(conn.server_side().error), SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
      << Reason(conn.server_side().error);
  EXPECT_TRUE(conn.client_side().failed);
}

TEST_P(TlsVersionTest, ValidClientCertIsVerified) {
  TlsOptions options;
  options.client_ca_file = *client_ca_file_;
  options.require_client_cert = true;
  auto context = MustCreate(options);
  ASSERT_NE(context, nullptr);
  ClientOptions opts = Opts("api.example.com");
  opts.client_cert = good_client_;
  Connection conn(*context, *ca_, opts, Certificates());
  ASSERT_TRUE(conn.Handshake()) << Reason(conn.server_side().error);
  EXPECT_EQ(CommonName(SSL_get0_peer_certificate(conn.server())), "client-1");
  EXPECT_EQ(SSL_get_verify_result(conn.server()), X509_V_OK);

  // The CA list sent to clients names the configured CA.
  STACK_OF(X509_NAME)* names = SSL_CTX_get_client_CA_list(context->ctx());
  ASSERT_EQ(sk_X509_NAME_num(names), 1);
  EXPECT_EQ(
      X509_NAME_cmp(sk_X509_NAME_value(names, 0), X509_get_subject_name(client_ca_->cert.get())),
      0);
}

TEST_P(TlsVersionTest, ClientCertFromAnotherCaFails) {
  TlsOptions options;
  options.client_ca_file = *client_ca_file_;  // optional, but verified when presented
  auto context = MustCreate(options);
  ASSERT_NE(context, nullptr);
  EXPECT_EQ(SSL_CTX_get_verify_mode(context->ctx()), SSL_VERIFY_PEER);
  ClientOptions opts = Opts("api.example.com");
  opts.client_cert = bad_client_;
  Connection conn(*context, *ca_, opts, Certificates());
  EXPECT_FALSE(conn.Handshake());
  EXPECT_TRUE(conn.server_side().failed);
  EXPECT_EQ(ERR_GET_REASON(conn.server_side().error), SSL_R_CERTIFICATE_VERIFY_FAILED)
      << Reason(conn.server_side().error);

  // Optional: no certificate at all is fine.
  ClientOptions anonymous = opts;
  anonymous.client_cert = nullptr;
  Connection conn2(*context, *ca_, anonymous, Certificates());
  ASSERT_TRUE(conn2.Handshake()) << Reason(conn2.server_side().error);
  EXPECT_EQ(SSL_get0_peer_certificate(conn2.server()), nullptr);
}

// ---- Keylog: CLIENT_TRAFFIC_SECRET_0 ----

struct SuiteCase {
  const char* suite;
  size_t secret_len;  // the suite's hash length
  const char* test_name;
};

class KeylogTest : public TlsContextTest, public ::testing::WithParamInterface<SuiteCase> {};
INSTANTIATE_TEST_SUITE_P(Suites, KeylogTest,
                         ::testing::Values(SuiteCase{kAes128, 32, "Aes128Gcm"},
                                           SuiteCase{kAes256, 48, "Aes256Gcm"},
                                           SuiteCase{kChaCha, 32, "ChaCha20Poly1305"}),
                         [](const ::testing::TestParamInfo<SuiteCase>& info) {
                           return std::string(info.param.test_name);
                         });

TEST_P(KeylogTest, CapturesTheClientTrafficSecret) {
  auto context = MustCreate({});
  ASSERT_NE(context, nullptr);
  ClientOptions opts;
  opts.sni = "api.example.com";
  opts.version = TLS1_3_VERSION;
  opts.tls13_suites = GetParam().suite;
  Connection conn(*context, *ca_, opts, Certificates());
  ASSERT_TRUE(conn.Handshake()) << Reason(conn.server_side().error);
  EXPECT_EQ(conn.CipherName(conn.server()), GetParam().suite);
  const TlsConnectionState& state = conn.state();
  ASSERT_EQ(state.client_app_secret_len, GetParam().secret_len);
  std::string hex;
  for (size_t i = 0; i < state.client_app_secret_len; ++i) {
    char b[3];
    std::snprintf(b, sizeof(b), "%02x", state.client_app_secret[i]);
    hex += b;
  }
  ASSERT_EQ(conn.client_secret_hex().size(), 2 * GetParam().secret_len);
  EXPECT_EQ(hex, conn.client_secret_hex());
  for (size_t i = state.client_app_secret_len; i < state.client_app_secret.size(); ++i) {
    EXPECT_EQ(state.client_app_secret[i], 0) << i;
  }
  conn.state().WipeSecrets();
  EXPECT_EQ(conn.state().client_app_secret_len, 0u);
}

TEST_F(TlsContextTest, Tls12CapturesNoSecret) {
  auto context = MustCreate({});
  ASSERT_NE(context, nullptr);
  ClientOptions opts;
  opts.sni = "api.example.com";
  opts.version = TLS1_2_VERSION;
  Connection conn(*context, *ca_, opts, Certificates());
  ASSERT_TRUE(conn.Handshake()) << Reason(conn.server_side().error);
  EXPECT_EQ(conn.state().client_app_secret_len, 0u);
}

TEST_F(TlsContextTest, KeylogLineOfAnotherConnectionIsIgnored) {
  // The callback is the context's; it must only take lines carrying this SSL's client random.
  auto context = MustCreate({});
  ASSERT_NE(context, nullptr);
  TlsConnectionState state;
  auto ssl = context->NewServerSsl(&state);
  ASSERT_TRUE(ssl.ok());
  SSL_CTX_keylog_cb_func cb = SSL_CTX_get_keylog_callback(context->ctx());
  ASSERT_NE(cb, nullptr);
  const std::string random_hex(64, '0');  // a fresh SSL's client random is all zero
  const std::string secret_hex(64, 'a');
  cb(ssl->get(), ("CLIENT_TRAFFIC_SECRET_0 " + random_hex + " " + secret_hex).c_str());
  EXPECT_EQ(state.client_app_secret_len, 32u);  // control: a matching line is taken
  state.WipeSecrets();
  cb(ssl->get(), ("CLIENT_TRAFFIC_SECRET_0 " + std::string(64, '1') + " " + secret_hex).c_str());
  EXPECT_EQ(state.client_app_secret_len, 0u);
  cb(ssl->get(), ("SERVER_TRAFFIC_SECRET_0 " + random_hex + " " + secret_hex).c_str());
  EXPECT_EQ(state.client_app_secret_len, 0u);
  cb(ssl->get(), ("CLIENT_TRAFFIC_SECRET_0 " + random_hex + " " + std::string(130, 'a')).c_str());
  EXPECT_EQ(state.client_app_secret_len, 0u);  // longer than 64 bytes
  cb(ssl->get(), ("CLIENT_TRAFFIC_SECRET_0 " + random_hex + " zz" + std::string(62, 'a')).c_str());
  EXPECT_EQ(state.client_app_secret_len, 0u);  // not hex
  for (uint8_t b : state.client_app_secret) ASSERT_EQ(b, 0);
}

// ---- offload=required: suites restricted to the kernel probe ----

TEST_F(TlsContextTest, RestrictToProbeWithNothingSupportedFails) {
  KernelProbeResult probe;
  probe.ulp_available = false;
  probe.ulp_errno = ENOENT;
  probe.ulp_reason = "kernel tls module not loaded (TCP_ULP: ENOENT)";
  TlsOptions options;
  options.restrict_to_probe = true;
  auto context = TlsContext::Create(options, probe);
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(context.status().message(),
            "offload=required but the kernel supports no kTLS cipher: kernel tls module not "
            "loaded (TCP_ULP: ENOENT)");

  // TX alone is not enough: the agent needs both directions.
  auto tx_only = TlsContext::Create(
      options, ProbeSupporting({{TlsVersion::kTls13, KtlsCipher::kAes128Gcm}}, /*rx=*/false));
  ASSERT_FALSE(tx_only.ok());
  EXPECT_THAT(tx_only.status().message(),
              HasSubstr("offload=required but the kernel supports no kTLS cipher"));

  // Without restrict_to_probe the same probe is irrelevant.
  options.restrict_to_probe = false;
  EXPECT_TRUE(TlsContext::Create(options, probe).ok());
}

TEST_P(TlsVersionTest, RestrictToProbeNegotiatesOnlySupportedSuites) {
  const KernelProbeResult probe = ProbeSupporting(
      {{TlsVersion::kTls12, KtlsCipher::kAes128Gcm}, {TlsVersion::kTls13, KtlsCipher::kAes128Gcm}});
  TlsOptions options;
  options.restrict_to_probe = true;
  // Server preference puts AES-256 first: without the restriction it would win.
  options.tls13_ciphersuites = std::string(kAes256) + ":" + kChaCha + ":" + kAes128;
  options.tls12_ciphers =
      "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256";
  auto context = MustCreate(options, probe);
  ASSERT_NE(context, nullptr);

  ClientOptions opts = Opts("api.example.com");
  Connection conn(*context, *ca_, opts, Certificates());
  ASSERT_TRUE(conn.Handshake()) << Reason(conn.server_side().error);
  EXPECT_EQ(conn.CipherName(conn.server()),
            GetParam() == TLS1_3_VERSION ? kAes128 : "ECDHE-ECDSA-AES128-GCM-SHA256");

  // A client that cannot do AES-128-GCM gets no handshake.
  ClientOptions no_aes128 = opts;
  no_aes128.tls13_suites = std::string(kAes256) + ":" + kChaCha;
  no_aes128.tls12_ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305";
  Connection conn2(*context, *ca_, no_aes128, Certificates());
  EXPECT_FALSE(conn2.Handshake());
  EXPECT_TRUE(conn2.server_side().failed);

  // Control: the same options without the restriction negotiate AES-256 first.
  options.restrict_to_probe = false;
  auto unrestricted = MustCreate(options, probe);
  ASSERT_NE(unrestricted, nullptr);
  Connection conn3(*unrestricted, *ca_, opts, Certificates());
  ASSERT_TRUE(conn3.Handshake());
  EXPECT_NE(conn3.CipherName(conn3.server()), conn.CipherName(conn.server()));
}

TEST_F(TlsContextTest, RestrictToProbeDisablesAVersionWithNothingSupported) {
  TlsOptions options;
  options.restrict_to_probe = true;
  auto only13 =
      MustCreate(options, ProbeSupporting({{TlsVersion::kTls13, KtlsCipher::kChaCha20Poly1305}}));
  ASSERT_NE(only13, nullptr);
  EXPECT_EQ(SSL_CTX_get_min_proto_version(only13->ctx()), TLS1_3_VERSION);
  ClientOptions opts;
  opts.sni = "api.example.com";
  opts.version = TLS1_2_VERSION;
  Connection tls12(*only13, *ca_, opts, Certificates());
  EXPECT_FALSE(tls12.Handshake());
  opts.version = TLS1_3_VERSION;
  Connection tls13(*only13, *ca_, opts, Certificates());
  ASSERT_TRUE(tls13.Handshake());
  EXPECT_EQ(tls13.CipherName(tls13.server()), kChaCha);

  auto only12 =
      MustCreate(options, ProbeSupporting({{TlsVersion::kTls12, KtlsCipher::kAes256Gcm}}));
  ASSERT_NE(only12, nullptr);
  EXPECT_EQ(SSL_CTX_get_max_proto_version(only12->ctx()), TLS1_2_VERSION);
  opts.version = 0;
  Connection any(*only12, *ca_, opts, Certificates());
  ASSERT_TRUE(any.Handshake());
  EXPECT_EQ(SSL_version(any.server()), TLS1_2_VERSION);
  EXPECT_EQ(any.CipherName(any.server()), "ECDHE-ECDSA-AES256-GCM-SHA384");

  // TLS 1.3 only, but the kernel does only TLS 1.2: nothing left.
  options.min_version = TlsVersion::kTls13;
  auto none =
      TlsContext::Create(options, ProbeSupporting({{TlsVersion::kTls12, KtlsCipher::kAes256Gcm}}));
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(),
              HasSubstr("offload=required but the kernel supports no kTLS cipher"));
}

// ---- Read-ahead: data behind the client's Finished stays in the socket ----

// TLS 1.3 over a socketpair: the client writes application data right behind its Finished,
// before the server has read the Finished. With read-ahead off, SSL_accept consumes exactly the
// handshake records and the data stays in the kernel socket buffer, where kTLS RX would find it.
// `read_ahead` = 1 is the control showing the test detects the opposite.
void RunFinishedThenData(const TlsContext& context, const TestCert& ca,
                         std::shared_ptr<const CertificateSet> certs, bool force_read_ahead,
                         bool* data_left_in_socket) {
  ClientOptions opts;
  opts.sni = "api.example.com";
  opts.version = TLS1_3_VERSION;
  Connection conn(context, ca, opts, std::move(certs));
  conn.UseSocketPair();
  if (force_read_ahead) SSL_set_read_ahead(conn.server(), 1);
  for (int i = 0; i < 100 && !conn.client_side().done; ++i) {
    conn.StepClient();
    if (conn.client_side().done) break;  // the server has not read the Finished yet
    conn.StepServer();
  }
  ASSERT_TRUE(conn.client_side().done);
  ASSERT_FALSE(conn.server_side().done);
  const char kData[] = "GET / HTTP/1.1\r\n\r\n";
  ASSERT_EQ(SSL_write(conn.client(), kData, sizeof(kData) - 1),
            static_cast<int>(sizeof(kData) - 1));
  for (int i = 0; i < 100 && !conn.server_side().done; ++i) conn.StepServer();
  ASSERT_TRUE(conn.server_side().done) << Reason(conn.server_side().error);

  char peek[4096];
  const ssize_t queued = recv(conn.server_fd(), peek, sizeof(peek), MSG_PEEK | MSG_DONTWAIT);
  *data_left_in_socket = queued > 0 && SSL_has_pending(conn.server()) == 0;
  if (!force_read_ahead) {
    // One whole record: header 0x17 (application_data), TLS 1.2 legacy version.
    ASSERT_GE(queued, 5);
    EXPECT_EQ(static_cast<uint8_t>(peek[0]), 0x17);
    EXPECT_EQ(queued, 5 + ((static_cast<uint8_t>(peek[3]) << 8) | static_cast<uint8_t>(peek[4])));
  }
  // Either way the data is intact for whoever reads it next.
  char got[sizeof(kData)] = {};
  int n = -1;
  for (int i = 0; i < 10 && n <= 0; ++i) n = SSL_read(conn.server(), got, sizeof(got));
  EXPECT_EQ(std::string(got, n > 0 ? n : 0), std::string(kData));
}

TEST_F(TlsContextTest, DataBehindClientFinishedStaysInTheSocket) {
  TlsOptions options;
  options.enable_ktls = false;  // plain socket I/O; only the buffering is under test
  auto context = MustCreate(options);
  ASSERT_NE(context, nullptr);
  bool left = false;
  RunFinishedThenData(*context, *ca_, Certificates(), /*force_read_ahead=*/false, &left);
  EXPECT_TRUE(left);

  bool left_with_read_ahead = true;
  RunFinishedThenData(*context, *ca_, Certificates(), /*force_read_ahead=*/true,
                      &left_with_read_ahead);
  EXPECT_FALSE(left_with_read_ahead) << "control: read-ahead should have pulled the data in";
}

}  // namespace
}  // namespace ktls::agent
