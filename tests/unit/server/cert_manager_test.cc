#include "server/cert_manager.h"

#include <cstdlib>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/ticket_key_manager.h"
#include "server/trust_manager.h"
#include "tests/unit/agent/test_certs.h"

namespace ktls::control {
namespace {

using testcerts::CertSpec;
using testcerts::MakeCa;
using testcerts::MakeCert;
using testcerts::TestCert;
using ::testing::HasSubstr;

TestCert Leaf(const TestCert& ca, const std::string& cn, std::vector<std::string> names,
              long not_after_s = 30 * 86400) {
  CertSpec spec;
  spec.common_name = cn;
  spec.dns_names = std::move(names);
  spec.not_after_offset_s = not_after_s;
  return MakeCert(spec, &ca);
}

agent::CertificateSource Req(const std::string& name, const TestCert& c) {
  agent::CertificateSource r;
  r.name = name;
  r.chain_pem = c.cert_pem;
  r.key_pem = c.key_pem;
  return r;
}

class CertManagerTest : public ::testing::Test {
 protected:
  CertManagerTest() : ca_(MakeCa("cert manager CA")) {
    char tmpl[] = "/tmp/ktls-cm-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  ~CertManagerTest() override { (void)std::system(("rm -rf '" + dir_ + "'").c_str()); }

  // A fresh "process": store with the development certificate, state dir loaded.
  void Boot(bool persist = true) {
    manager_.reset();
    store_ = std::make_unique<agent::CertStore>(*agent::CertificateSet::CreateDevelopment());
    state_.reset();
    if (persist) state_ = *StateStore::Open(dir_ + "/state");
    StateStore::Loaded loaded;
    if (state_) loaded = state_->Load();
    issues_.clear();
    manager_ =
        std::make_unique<CertManager>(*store_, state_.get(), metrics_, CertManager::Options{});
    manager_->Initialize(loaded, &issues_);
  }
  std::string Served(const std::string& sni) {
    const agent::CertificateEntry* e = store_->Current()->Select(sni);
    return e == nullptr ? "" : e->name;
  }

  TestCert ca_;
  std::string dir_;
  ControlMetrics metrics_;
  std::unique_ptr<agent::CertStore> store_;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<CertManager> manager_;
  std::vector<StateStore::Issue> issues_;
};

TEST_F(CertManagerTest, StageValidatesAndWipesTheKeyCommitSwapsAndDropsTheDevelopmentCert) {
  Boot();
  EXPECT_EQ("development", Served("localhost"));
  const TestCert api = Leaf(ca_, "api", {"api.test", "*.api.test"});
  agent::CertificateSource r = Req("api", api);
  absl::StatusOr<StagedCertificate> staged = manager_->Stage(r, ReloadSource::kApi);
  ASSERT_TRUE(staged.ok()) << staged.status();
  EXPECT_TRUE(r.key_pem.empty()) << "the request's key was not wiped";
  EXPECT_EQ("development", Served("api.test")) << "staged but already served";
  EXPECT_EQ("ECDSA P-256", DescribeCertificate(*staged->entry).key_type());
  EXPECT_THAT(staged->entry->server_names, ::testing::ElementsAre("api.test", "*.api.test"));
  EXPECT_EQ(0u, staged->base_generation);

  absl::StatusOr<CertificateChange> c = manager_->Commit("api", 1, ReloadSource::kApi);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(2u, c->generation);
  EXPECT_EQ("api", Served("api.test"));
  EXPECT_EQ("api", Served("x.api.test"));
  EXPECT_EQ("api", Served("localhost")) << "the development certificate should be gone";
  EXPECT_EQ(1u, store_->Current()->entries().size());
  EXPECT_TRUE(c->certificate.is_default);
  EXPECT_EQ(1u, metrics_.reloads[0][0].load());
}

TEST_F(CertManagerTest, RejectionsCarryTheirReasonAndLeaveEverythingAsItWas) {
  Boot();
  const TestCert good = Leaf(ca_, "good", {"good.test"});
  auto req = Req("good", good);
  ASSERT_TRUE(manager_->Apply(req, 0, ReloadSource::kApi).ok());
  const uint64_t generation = manager_->generation();

  const TestCert expired = Leaf(ca_, "old", {"old.test"}, -60);
  auto r1 = Req("old", expired);
  absl::StatusOr<StagedCertificate> s = manager_->Stage(r1, ReloadSource::kApi);
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, s.status().code());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("certificate expired at"));
  EXPECT_EQ(1u,
            metrics_.validation_failures[static_cast<size_t>(ValidationFailure::kExpired)].load());

  auto r2 = Req("mismatch", Leaf(ca_, "m", {"m.test"}));
  r2.key_pem = good.key_pem;
  s = manager_->Stage(r2, ReloadSource::kApi);
  EXPECT_EQ("certificate 'mismatch': private key does not match certificate", s.status().message());
  EXPECT_TRUE(r2.key_pem.empty()) << "a rejected request's key was not wiped";
  EXPECT_EQ(
      1u,
      metrics_.validation_failures[static_cast<size_t>(ValidationFailure::kKeyMismatch)].load());

  auto r3 = Req("apply-bad", expired);
  absl::StatusOr<CertificateChange> a = manager_->Apply(r3, 0, ReloadSource::kCertDir);
  EXPECT_FALSE(a.ok());
  EXPECT_EQ(1u, metrics_.reloads[static_cast<size_t>(ReloadSource::kCertDir)][1].load());

  EXPECT_EQ(generation, manager_->generation());
  EXPECT_EQ("good", Served("good.test"));
  EXPECT_EQ(0, manager_->List().staged.size());
}

TEST_F(CertManagerTest, OptimisticConcurrencyAndStaleStagedVersions) {
  Boot();
  const TestCert v1 = Leaf(ca_, "v1", {"svc.test"});
  const TestCert v2 = Leaf(ca_, "v2", {"svc.test"});
  const TestCert v3 = Leaf(ca_, "v3", {"svc.test"});
  auto r = Req("svc", v1);
  ASSERT_TRUE(manager_->Apply(r, 0, ReloadSource::kApi).ok());
  auto keep = Req("keep", Leaf(ca_, "keep", {"keep.test"}));
  ASSERT_TRUE(manager_->Apply(keep, 0, ReloadSource::kApi).ok());
  auto r2 = Req("svc", v2);
  ASSERT_TRUE(manager_->Stage(r2, ReloadSource::kApi).ok());
  // Someone else deletes svc in between: the staged v2 was based on the committed v1.
  ASSERT_TRUE(manager_->Delete("svc", true, 0).ok());
  auto c = manager_->Commit("svc", 0, ReloadSource::kApi);
  EXPECT_EQ(absl::StatusCode::kAborted, c.status().code());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("was deleted"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("stage it again"));
  // Apply supersedes whatever was staged under its name.
  auto r3 = Req("svc", v3);
  ASSERT_TRUE(manager_->Apply(r3, 0, ReloadSource::kApi).ok());
  EXPECT_EQ(0, manager_->List().staged.size());
  auto r4 = Req("svc", v2);
  EXPECT_EQ(absl::StatusCode::kAborted,
            manager_->Apply(r4, manager_->generation() - 1, ReloadSource::kApi).status().code());
  EXPECT_EQ(absl::StatusCode::kFailedPrecondition,
            manager_->Commit("nothing", 0, ReloadSource::kApi).status().code());
  EXPECT_EQ(absl::StatusCode::kNotFound, manager_->Abort("nothing").code());
}

TEST_F(CertManagerTest, UnchangedCertificatesKeepTheirObjectsAndCounters) {
  Boot(false);
  auto a = Req("a", Leaf(ca_, "a", {"a.test"}));
  ASSERT_TRUE(manager_->Apply(a, 0, ReloadSource::kApi).ok());
  const agent::CertificateEntry* before = store_->Current()->Select("a.test");
  before->handshakes->fetch_add(5);
  X509* leaf = before->leaf.get();
  auto b = Req("b", Leaf(ca_, "b", {"b.test"}));
  ASSERT_TRUE(manager_->Apply(b, 0, ReloadSource::kApi).ok());
  const agent::CertificateEntry* after = store_->Current()->Select("a.test");
  EXPECT_EQ(leaf, after->leaf.get()) << "an unchanged certificate was re-parsed";
  EXPECT_EQ(5u, after->handshakes->load());
  auto got = manager_->Get("a");
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->committed.has_value());
  EXPECT_EQ(5u, got->committed->entry->handshakes->load());
}

TEST_F(CertManagerTest, ACommitSharesEntriesAndCopiesNone) {
  Boot(false);
  auto a = Req("a", Leaf(ca_, "a", {"a.test"}));
  ASSERT_TRUE(manager_->Apply(a, 0, ReloadSource::kApi).ok());
  auto b = Req("b", Leaf(ca_, "b", {"b.test"}));
  absl::StatusOr<StagedCertificate> staged = manager_->Stage(b, ReloadSource::kApi);
  ASSERT_TRUE(staged.ok()) << staged.status();
  const agent::CertificateEntryPtr a_before = store_->Current()->shared_entries().front();
  ASSERT_TRUE(manager_->Commit("b", 0, ReloadSource::kApi).ok());
  // The served set holds the very entry that was staged, and the unchanged one as it was.
  EXPECT_EQ(staged->entry.get(), store_->Current()->Select("b.test"));
  EXPECT_EQ(a_before.get(), store_->Current()->Select("a.test"));
  // And the manager's view is the served set's entries, not copies of them.
  const CertificateListing listing = manager_->List();
  ASSERT_EQ(2u, listing.committed.size());
  EXPECT_EQ(a_before.get(), listing.committed[0].entry.get());
  EXPECT_EQ(staged->entry.get(), listing.committed[1].entry.get());
}

TEST_F(CertManagerTest, OneGenerationTheStoresAcrossChangesAndRestarts) {
  Boot();
  EXPECT_EQ(store_->generation(), manager_->generation());
  auto a = Req("a", Leaf(ca_, "a", {"a.test"}));
  absl::StatusOr<CertificateChange> applied = manager_->Apply(a, 0, ReloadSource::kApi);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(store_->generation(), applied->generation);
  EXPECT_EQ(store_->generation(), applied->certificate.generation);
  auto b = Req("b", Leaf(ca_, "b", {"b.test"}));
  ASSERT_TRUE(manager_->Apply(b, 0, ReloadSource::kApi).ok());
  absl::StatusOr<CertificateChange> made_default = manager_->SetDefault("b", 0);
  ASSERT_TRUE(made_default.ok());
  EXPECT_EQ(store_->generation(), made_default->generation);
  EXPECT_EQ(store_->generation(), manager_->List().generation);
  const uint64_t generation = store_->generation();
  EXPECT_EQ(4u, generation);

  // A new process continues from the persisted generation, in the store itself.
  Boot();
  EXPECT_EQ(generation, store_->generation());
  EXPECT_EQ(generation, manager_->generation());
  // An expected_generation names the store's generation.
  auto c = Req("c", Leaf(ca_, "c", {"c.test"}));
  absl::StatusOr<CertificateChange> next = manager_->Apply(c, generation, ReloadSource::kApi);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(generation + 1, store_->generation());
}

TEST_F(CertManagerTest, PersistedStateComesBackAfterARestart) {
  Boot();
  auto a = Req("a", Leaf(ca_, "a", {"a.test"}));
  auto b = Req("b", Leaf(ca_, "b", {"b.test"}));
  ASSERT_TRUE(manager_->Apply(a, 0, ReloadSource::kApi).ok());
  ASSERT_TRUE(manager_->Apply(b, 0, ReloadSource::kApi).ok());
  ASSERT_TRUE(manager_->SetDefault("b", 0).ok());
  const uint64_t generation = manager_->generation();

  Boot();
  EXPECT_TRUE(issues_.empty());
  EXPECT_EQ(generation, manager_->generation());
  EXPECT_EQ("a", Served("a.test"));
  EXPECT_EQ("b", Served("b.test"));
  EXPECT_EQ("b", Served("other.test")) << "default lost";
  EXPECT_EQ("state", manager_->Get("a")->committed->source);
  // A further commit continues the generation.
  auto c = Req("c", Leaf(ca_, "c", {"c.test"}));
  auto done = manager_->Apply(c, 0, ReloadSource::kApi);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(generation + 1, done->generation);

  // Delete persists too.
  auto refused = manager_->Delete("c", false, 0);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("bound to c.test"));
  ASSERT_TRUE(manager_->Delete("c", true, 0).ok());
  Boot();
  EXPECT_FALSE(manager_->Get("c").ok());
}

TEST_F(CertManagerTest, ARecordThatNoLongerParsesIsReportedAndSkipped) {
  Boot();
  auto a = Req("a", Leaf(ca_, "a", {"a.test"}));
  ASSERT_TRUE(manager_->Apply(a, 0, ReloadSource::kApi).ok());
  // A record with a valid envelope but a key from another certificate (written by hand).
  v1::state::CertificateRecord bad;
  bad.set_name("bad");
  const TestCert x = Leaf(ca_, "x", {"x.test"});
  bad.set_cert_chain_pem(x.cert_pem);
  bad.set_private_key_pem(Leaf(ca_, "y", {"y.test"}).key_pem);
  ASSERT_TRUE(state_->PutCertificate(bad).ok());
  Boot();
  ASSERT_EQ(1u, issues_.size());
  EXPECT_THAT(issues_[0].path, HasSubstr("certificates/bad.state"));
  EXPECT_THAT(issues_[0].error, HasSubstr("private key does not match"));
  EXPECT_EQ("a", Served("a.test"));
  EXPECT_EQ(1u, metrics_.state_files_skipped.load());
}

TEST_F(CertManagerTest, WatchersGetEveryChangeAndOverflowIsDetected) {
  Boot(false);
  CertificateEvent snapshot;
  auto q = manager_->Watch(&snapshot);
  EXPECT_EQ(CertificateEvent::Type::kSnapshot, snapshot.type);
  ASSERT_EQ(1u, snapshot.certificates.size());
  auto a = Req("a", Leaf(ca_, "a", {"a.test"}));
  ASSERT_TRUE(manager_->Apply(a, 0, ReloadSource::kApi).ok());
  manager_->ReportRejectedReload("a", ReloadSource::kCertDir, "bad update");
  CertificateEvent e;
  ASSERT_TRUE(q->Pop(absl::Milliseconds(100), &e));
  EXPECT_EQ(CertificateEvent::Type::kStaged, e.type);
  ASSERT_TRUE(q->Pop(absl::Milliseconds(100), &e));
  EXPECT_EQ(CertificateEvent::Type::kCommitted, e.type);
  EXPECT_EQ(manager_->generation(), e.generation);
  ASSERT_TRUE(q->Pop(absl::Milliseconds(100), &e));
  EXPECT_EQ(CertificateEvent::Type::kReloadFailed, e.type);
  EXPECT_EQ("bad update", e.message);
  EXPECT_FALSE(q->Pop(absl::Milliseconds(10), &e));
  for (size_t i = 0; i < CertificateEventQueue::kMaxQueued + 1; ++i) {
    manager_->ReportRejectedReload("a", ReloadSource::kCertDir, "again");
  }
  EXPECT_TRUE(q->overflowed());
  manager_->Unwatch(q);
}

// --- trust and ticket keys ------------------------------------------------------------------

class TrustAndTicketsTest : public CertManagerTest {
 protected:
  void SetUp() override {
    auto tls = agent::TlsContext::Create(agent::TlsOptions{}, agent::KernelProbeResult{});
    ASSERT_TRUE(tls.ok()) << tls.status();
    tls_ = *std::move(tls);
    state_ = *StateStore::Open(dir_ + "/state");
  }
  std::unique_ptr<agent::TlsContext> tls_;
};

TEST_F(TrustAndTicketsTest, TrustBundleTransactionsSwapTheContextsTrust) {
  TrustManager trust(*tls_, state_.get(), metrics_, "");
  EXPECT_EQ(nullptr, tls_->client_trust());
  v1::StageTrustBundleRequest req;
  req.set_ca_pem(ca_.cert_pem);
  req.set_require_client_cert(true);
  auto staged = trust.Stage(req);
  ASSERT_TRUE(staged.ok()) << staged.status();
  EXPECT_EQ(nullptr, tls_->client_trust()) << "staged but already applied";
  EXPECT_EQ(1, staged->bundle().cas_size());
  auto committed = trust.Commit(0);
  ASSERT_TRUE(committed.ok());
  ASSERT_NE(nullptr, tls_->client_trust());
  EXPECT_TRUE(tls_->client_trust()->require_client_cert);
  EXPECT_EQ(absl::StatusCode::kAborted, trust.Commit(99).status().code());

  v1::StageTrustBundleRequest bad;
  bad.set_ca_pem(ca_.cert_pem);
  bad.set_crl_pem("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n");
  auto r = trust.Apply(bad);
  EXPECT_EQ(absl::StatusCode::kInvalidArgument, r.status().code());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("crl_pem: CRL 1: cannot parse"));

  // Restored from the state directory by a new manager.
  auto tls2 = *agent::TlsContext::Create(agent::TlsOptions{}, agent::KernelProbeResult{});
  TrustManager again(*tls2, state_.get(), metrics_, "");
  StateStore::Loaded loaded = state_->Load();
  std::vector<StateStore::Issue> issues;
  again.Initialize(loaded, &issues);
  ASSERT_NE(nullptr, tls2->client_trust());
  EXPECT_EQ(tls_->client_trust()->digest, tls2->client_trust()->digest);
  EXPECT_TRUE(again.Delete(0).ok());
  EXPECT_EQ(nullptr, tls2->client_trust());
}

TEST_F(TrustAndTicketsTest, TicketKeysSetRotateKeepAndPersist) {
  TicketKeyManager tickets(*tls_, state_.get(), metrics_);
  const std::string random_name = tls_->ticket_keys()->keys()[0].NameHex();
  v1::RotateSessionTicketKeysRequest rotate;
  auto r = tickets.Rotate(rotate);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(2, r->keys_size());
  EXPECT_TRUE(r->keys(0).encrypts());
  EXPECT_EQ(random_name, r->keys(1).name());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(tickets.Rotate(rotate).ok());
  EXPECT_EQ(3u, tls_->ticket_keys()->keys().size()) << "keep defaults to 2 older keys";
  rotate.set_keep(0);
  ASSERT_TRUE(tickets.Rotate(rotate).ok());
  EXPECT_EQ(1u, tls_->ticket_keys()->keys().size());

  v1::SetSessionTicketKeysRequest set;
  set.add_keys(std::string(80, 'a'));
  set.add_keys(std::string(48, 'b'));
  auto s = tickets.Set(set);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(set.keys(0).empty()) << "the request's key bytes were not wiped";
  EXPECT_EQ("61616161616161616161616161616161", s->keys(0).name());  // the first 16 bytes
  EXPECT_EQ(128u, s->keys(1).aes_bits());
  v1::SetSessionTicketKeysRequest dup;
  dup.add_keys(std::string(80, 'a'));
  dup.add_keys(std::string(80, 'a'));
  EXPECT_THAT(std::string(tickets.Set(dup).status().message()), HasSubstr("have the same name"));

  auto tls2 = *agent::TlsContext::Create(agent::TlsOptions{}, agent::KernelProbeResult{});
  TicketKeyManager again(*tls2, state_.get(), metrics_);
  StateStore::Loaded loaded = state_->Load();
  std::vector<StateStore::Issue> issues;
  again.Initialize(loaded, &issues);
  ASSERT_EQ(2u, tls2->ticket_keys()->keys().size());
  EXPECT_EQ(tls_->ticket_keys()->keys()[0].name, tls2->ticket_keys()->keys()[0].name);
  EXPECT_EQ("state", again.Get().source());
}

}  // namespace
}  // namespace ktls::control
