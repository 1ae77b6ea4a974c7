// The state directory: what was committed (certificates, the default, the trust bundle, ticket
// keys) is served again after a restart; a corrupt file is reported and skipped while the others
// still load.
#include <sys/stat.h>

#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/integration/support/control.h"

namespace ktls::testing {
namespace {

int Mode(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 07777) : -1;
}

void Corrupt(const std::string& path) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(60);
  f.write("XXXXXXXX", 8);
}

// Commits certificate `name` through the control API; *generation gets the committed generation.
::testing::AssertionResult ApplyCertificate(Control& c, const std::string& name,
                                            const testcerts::TestCert& cert, bool set_default,
                                            uint64_t* generation) {
  v1::StageCertificateRequest r;
  r.set_name(name);
  r.set_cert_chain_pem(cert.cert_pem);
  r.set_private_key_pem(cert.key_pem);
  r.set_set_default(set_default);
  v1::CommitResponse resp;
  const grpc::Status s = c.certs->ApplyCertificate(Ctx().get(), r, &resp);
  if (!s.ok()) return ::testing::AssertionFailure() << name << ": " << s.error_message();
  *generation = resp.generation();
  return ::testing::AssertionSuccess();
}

TEST(ControlPersistenceTest, CommittedStateSurvivesARestartAndACorruptFileIsSkipped) {
  TempDir state;
  const std::string state_dir = state.path() + "/state";
  const testcerts::TestCert ca = testcerts::MakeCa("persistence CA");
  const testcerts::TestCert a = MakeLeaf(ca, "a", {"a.persist.test"});
  const testcerts::TestCert b = MakeLeaf(ca, "b", {"b.persist.test"});
  const testcerts::TestCert client_ca = testcerts::MakeCa("persisted client CA");
  AgentOptions options;
  options.extra_flags = {"--state_dir=" + state_dir};

  uint64_t generation = 0;
  SSL_SESSION* session = nullptr;
  {
    Stack first(options);
    Control c(ReadyInfo(first)["control_socket"]);
    ASSERT_TRUE(ApplyCertificate(c, "b", b, /*set_default=*/false, &generation));
    ASSERT_TRUE(ApplyCertificate(c, "a", a, /*set_default=*/true, &generation));
    v1::StageTrustBundleRequest t;
    t.set_ca_pem(client_ca.cert_pem);
    v1::TrustBundleResponse tr;
    ASSERT_TRUE(c.trust->ApplyTrustBundle(Ctx().get(), t, &tr).ok());
    v1::RotateSessionTicketKeysRequest rotate;
    v1::SessionTicketKeys keys;
    ASSERT_TRUE(c.tickets->RotateSessionTicketKeys(Ctx().get(), rotate, &keys).ok());
    HandshakeOptions o;
    o.sni = "a.persist.test";
    HandshakeResult h = Handshake(first.port(), o);
    ASSERT_TRUE(h.ok) << h.error;
    session = h.session;
    EXPECT_EQ(0700, Mode(state_dir));
    EXPECT_EQ(0700, Mode(state_dir + "/certificates"));
    EXPECT_EQ(0600, Mode(state_dir + "/certificates/a.state"));
    EXPECT_EQ(0600, Mode(state_dir + "/certificates/b.state"));
    EXPECT_EQ(0600, Mode(state_dir + "/trust_bundle.state"));
    EXPECT_EQ(0600, Mode(state_dir + "/session_ticket_keys.state"));
    EXPECT_EQ(0600, Mode(state_dir + "/meta.state"));
  }
  {
    Stack second(options);
    Control c(ReadyInfo(second)["control_socket"]);
    EXPECT_EQ(FingerprintOfPem(a.cert_pem), ServedFingerprint(second.port(), "a.persist.test"));
    EXPECT_EQ(FingerprintOfPem(b.cert_pem), ServedFingerprint(second.port(), "b.persist.test"));
    EXPECT_EQ(FingerprintOfPem(a.cert_pem), ServedFingerprint(second.port(), "unknown.test"))
        << "the default did not survive the restart";
    v1::ListCertificatesResponse list;
    ASSERT_TRUE(c.certs->ListCertificates(Ctx().get(), {}, &list).ok());
    EXPECT_EQ(generation, list.generation());
    EXPECT_EQ(2, list.certificates_size());
    v1::GetTrustBundleResponse trust;
    ASSERT_TRUE(c.trust->GetTrustBundle(Ctx().get(), {}, &trust).ok());
    ASSERT_TRUE(trust.has_bundle());
    EXPECT_EQ("state", trust.bundle().source());
    v1::SessionTicketKeys keys;
    ASSERT_TRUE(c.tickets->GetSessionTicketKeys(Ctx().get(), {}, &keys).ok());
    EXPECT_EQ("state", keys.source());
    HandshakeOptions o;
    o.sni = "a.persist.test";
    o.resume = session;
    HandshakeResult h = Handshake(second.port(), o);
    EXPECT_TRUE(h.ok) << h.error;
    EXPECT_TRUE(h.resumed) << "a ticket issued before the restart did not resume";
    if (h.session) SSL_SESSION_free(h.session);
    v1::AgentStatus status;
    ASSERT_TRUE(c.telemetry->GetStatus(Ctx().get(), {}, &status).ok());
    EXPECT_EQ(0, status.state_issues_size());
    EXPECT_EQ(5u, status.state_files_loaded());
  }
  SSL_SESSION_free(session);

  // Damage one certificate file and the ticket keys file; leave a stray file too.
  Corrupt(state_dir + "/certificates/b.state");
  std::ofstream(state_dir + "/session_ticket_keys.state", std::ios::trunc) << "garbage";
  std::ofstream(state_dir + "/certificates/README") << "not a state file";
  {
    Stack third(options);
    ASSERT_GT(third.port(), 0) << "a corrupt state file stopped the agent";
    Control c(ReadyInfo(third)["control_socket"]);
    EXPECT_EQ(FingerprintOfPem(a.cert_pem), ServedFingerprint(third.port(), "a.persist.test"));
    // b is gone (reported), so its name falls to the default.
    EXPECT_EQ(FingerprintOfPem(a.cert_pem), ServedFingerprint(third.port(), "b.persist.test"));
    v1::GetTrustBundleResponse trust;
    ASSERT_TRUE(c.trust->GetTrustBundle(Ctx().get(), {}, &trust).ok());
    EXPECT_TRUE(trust.has_bundle()) << "an unrelated corrupt file lost the trust bundle";
    v1::AgentStatus status;
    ASSERT_TRUE(c.telemetry->GetStatus(Ctx().get(), {}, &status).ok());
    std::map<std::string, std::string> issues;
    for (const auto& i : status.state_issues()) issues[i.path()] = i.error();
    EXPECT_EQ(3u, issues.size());
    EXPECT_NE(std::string::npos,
              issues[state_dir + "/certificates/b.state"].find("checksum mismatch"))
        << issues[state_dir + "/certificates/b.state"];
    EXPECT_FALSE(issues[state_dir + "/session_ticket_keys.state"].empty());
    EXPECT_EQ("not a .state file", issues[state_dir + "/certificates/README"]);
    EXPECT_NE(std::string::npos,
              third.AgentLog().find("state: skipping " + state_dir + "/certificates/b.state"));
    Metrics m;
    std::string error;
    ASSERT_TRUE(FetchMetrics(ReadyInfo(third)["metrics"], &m, &error)) << error;
    EXPECT_EQ(3, m.Get("ktls_state_files_skipped_total"));
    CommandResult r = Ktlsctl(ReadyInfo(third)["control_socket"], {"status"});
    EXPECT_EQ(0, r.exit_code) << r.err;
    EXPECT_NE(std::string::npos, r.out.find("checksum mismatch")) << r.out;
    // A new commit of b repairs it.
    uint64_t repaired = 0;
    ASSERT_TRUE(ApplyCertificate(c, "b", b, /*set_default=*/false, &repaired));
    EXPECT_GT(repaired, generation);
  }
}

}  // namespace
}  // namespace ktls::testing
