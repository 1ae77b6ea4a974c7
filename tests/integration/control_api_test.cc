// The control API against the real agent: every validation error with its code and message
// (and its counter), nothing else lost when an input is rejected; optimistic concurrency;
// deletion rules; the watch stream; client-certificate trust swapped at run time; session-ticket
// keys shared by two agents; telemetry (handshakes in progress, recent handoffs, capabilities).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "grpcpp/generic/generic_stub.h"

#include "tests/integration/support/control.h"

namespace ktls::testing {
namespace {

using testcerts::CertSpec;
using testcerts::MakeCa;
using testcerts::MakeCert;
using testcerts::TestCert;

v1::StageCertificateRequest Request(const std::string& name, const TestCert& c,
                                    std::vector<std::string> names = {}) {
  v1::StageCertificateRequest r;
  r.set_name(name);
  r.set_cert_chain_pem(c.cert_pem);
  r.set_private_key_pem(c.key_pem);
  for (auto& n : names) r.add_server_names(n);
  return r;
}

class ControlApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ca_ = new TestCert(MakeCa("control api test CA"));
    stack_ = new Stack();
    control_ = new Control(ReadyInfo(*stack_)["control_socket"]);
  }
  static void TearDownTestSuite() {
    delete control_;
    delete stack_;
    delete ca_;
  }
  static TestCert* ca_;
  static Stack* stack_;
  static Control* control_;
};
TestCert* ControlApiTest::ca_ = nullptr;
Stack* ControlApiTest::stack_ = nullptr;
Control* ControlApiTest::control_ = nullptr;

struct BadInput {
  const char* what;
  v1::StageCertificateRequest request;
  grpc::StatusCode code;
  std::string message;  // substring
  std::string reason;   // ktls_control_validation_failures_total{reason=...}
};

TEST_F(ControlApiTest, EveryValidationErrorHasItsCodeMessageAndCounterAndLosesNothing) {
  const TestCert good = MakeLeaf(*ca_, "good", {"good.test"});
  v1::CommitResponse committed;
  ASSERT_TRUE(
      control_->certs->ApplyCertificate(Ctx().get(), Request("good", good), &committed).ok());
  // A staged change that must survive the bad inputs below.
  const TestCert pending = MakeLeaf(*ca_, "pending", {"pending.test"});
  v1::StagedCertificate staged;
  ASSERT_TRUE(
      control_->certs->StageCertificate(Ctx().get(), Request("pending", pending), &staged).ok());

  const TestCert other = MakeLeaf(*ca_, "other", {"other.test"});
  CertSpec expired_spec;
  expired_spec.common_name = "expired";
  expired_spec.dns_names = {"expired.test"};
  expired_spec.not_before_offset_s = -10 * 86400;
  expired_spec.not_after_offset_s = -86400;
  CertSpec future_spec = expired_spec;
  future_spec.common_name = "future";
  future_spec.not_before_offset_s = 86400;
  future_spec.not_after_offset_s = 10 * 86400;
  CertSpec client_spec;
  client_spec.common_name = "client only";
  client_spec.dns_names = {"client.test"};
  client_spec.client_auth = true;
  const TestCert expired = MakeCert(expired_spec, ca_);
  const TestCert future = MakeCert(future_spec, ca_);
  const TestCert client_only = MakeCert(client_spec, ca_);

  std::vector<BadInput> cases;
  auto add = [&](const char* what, v1::StageCertificateRequest r, grpc::StatusCode code,
                 std::string message, std::string reason) {
    cases.push_back({what, std::move(r), code, std::move(message), std::move(reason)});
  };
  const auto INVALID = grpc::StatusCode::INVALID_ARGUMENT;
  add("name with a slash", Request("../etc", other), INVALID,
      "name: '../etc' must start with a letter or digit", "invalid_name");
  add("name with a space", Request("a b", other), INVALID,
      "may contain only letters, digits, '.', '_' and '-'", "invalid_name");
  add("empty name", Request("", other), INVALID, "name: required", "invalid_name");
  // Request(name, other) with its chain or its key replaced.
  auto with_chain = [&](const char* name, std::string pem) {
    auto r = Request(name, other);
    r.set_cert_chain_pem(std::move(pem));
    return r;
  };
  auto with_key = [&](const char* name, std::string pem) {
    auto r = Request(name, other);
    r.set_private_key_pem(std::move(pem));
    return r;
  };
  add("oversize chain", with_chain("big", std::string(600 * 1024, 'A')), INVALID,
      "cert_chain_pem: 614400 bytes exceeds the limit of 524288", "too_large");
  add("oversize key", with_key("bigkey", std::string(70 * 1024, 'A')), INVALID,
      "private_key_pem: 71680 bytes exceeds the limit of 65536", "too_large");
  {
    auto r = Request("names", other);
    for (int i = 0; i < 101; ++i) r.add_server_names("n" + std::to_string(i) + ".test");
    add("too many names", r, INVALID, "server_names: 101 names exceeds the limit of 100",
        "too_large");
  }
  add("chain not PEM", with_chain("notpem", "hello"), INVALID,
      "cert_chain_pem: not a PEM certificate", "bad_certificate_pem");
  add("broken PEM body",
      with_chain("badpem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
      INVALID, "cannot parse certificate 1 of the chain", "bad_certificate_pem");
  add("key not PEM", with_key("keynotpem", "secret"), INVALID,
      "private_key_pem: not a PEM private key", "bad_private_key");
  add("encrypted key", with_key("encrypted", testcerts::KeyToEncryptedPem(other.key.get(), "pass")),
      INVALID, "private_key_pem: the key is encrypted", "encrypted_private_key");
  add("key of another certificate", with_key("mismatch", good.key_pem), INVALID,
      "certificate 'mismatch': private key does not match certificate", "key_mismatch");
  add("malformed server name", Request("badname", other, {"bad name!.test"}), INVALID,
      "invalid server name", "invalid_server_name");
  add("wildcard in the middle", Request("midwild", other, {"a.*.test"}), INVALID,
      "a wildcard is allowed only as the whole leftmost label", "invalid_server_name");
  add("name the SAN does not cover", Request("uncovered", other, {"nope.test"}), INVALID,
      "server name 'nope.test' is not covered by the certificate's subjectAltName (DNS: "
      "other.test)",
      "name_not_covered");
  add("expired", Request("expired", expired), INVALID, "certificate expired at ", "expired");
  add("not yet valid", Request("future", future), INVALID, "certificate is not valid until ",
      "not_yet_valid");
  add("client-only EKU", Request("clientonly", client_only), INVALID,
      "extendedKeyUsage does not include serverAuth", "not_server_auth");
  add("name served by another certificate", Request("dup", MakeLeaf(*ca_, "dup", {"good.test"})),
      grpc::StatusCode::FAILED_PRECONDITION,
      "server name 'good.test' is already served by certificate 'good'", "name_conflict");

  Metrics m0;
  std::string error;
  ASSERT_TRUE(FetchMetrics(ReadyInfo(*stack_)["metrics"], &m0, &error)) << error;
  std::map<std::string, int> expected_counts;
  for (BadInput& c : cases) {
    for (bool apply : {false, true}) {
      v1::StageCertificateRequest r = c.request;
      grpc::Status s;
      if (apply) {
        v1::CommitResponse resp;
        s = control_->certs->ApplyCertificate(Ctx().get(), r, &resp);
      } else {
        v1::StagedCertificate resp;
        s = control_->certs->StageCertificate(Ctx().get(), r, &resp);
      }
      EXPECT_EQ(c.code, s.error_code()) << c.what << ": " << s.error_message();
      EXPECT_NE(std::string::npos, s.error_message().find(c.message))
          << c.what << ": got '" << s.error_message() << "'";
      // Nothing of the key comes back (its base64 body, from the second line on).
      if (r.private_key_pem().size() > 100) {
        EXPECT_EQ(std::string::npos, s.error_message().find(r.private_key_pem().substr(40, 40)))
            << c.what;
      }
      ++expected_counts[c.reason];
    }
  }
  Metrics m1;
  ASSERT_TRUE(FetchMetrics(ReadyInfo(*stack_)["metrics"], &m1, &error)) << error;
  for (const auto& [reason, n] : expected_counts) {
    const std::string labels = "reason=\"" + reason + "\"";
    EXPECT_EQ(n, m1.Get("ktls_control_validation_failures_total", labels) -
                     m0.Get("ktls_control_validation_failures_total", labels))
        << reason;
  }

  // State and transaction errors.
  v1::CommitResponse resp;
  v1::CommitCertificateRequest commit;
  commit.set_name("nothing");
  grpc::Status s = control_->certs->CommitCertificate(Ctx().get(), commit, &resp);
  EXPECT_EQ(grpc::StatusCode::FAILED_PRECONDITION, s.error_code());
  EXPECT_EQ("nothing is staged under 'nothing'; stage it first", s.error_message());
  commit.set_name("pending");
  commit.set_expected_generation(committed.generation() + 100);
  s = control_->certs->CommitCertificate(Ctx().get(), commit, &resp);
  EXPECT_EQ(grpc::StatusCode::ABORTED, s.error_code());
  EXPECT_NE(std::string::npos,
            s.error_message().find("expected " + std::to_string(committed.generation() + 100)))
      << s.error_message();
  v1::AbortCertificateRequest abort;
  abort.set_name("never-staged");
  v1::AbortResponse aborted;
  s = control_->certs->AbortCertificate(Ctx().get(), abort, &aborted);
  EXPECT_EQ(grpc::StatusCode::NOT_FOUND, s.error_code());
  v1::DeleteCertificateRequest del;
  del.set_name("ghost");
  s = control_->certs->DeleteCertificate(Ctx().get(), del, &resp);
  EXPECT_EQ(grpc::StatusCode::NOT_FOUND, s.error_code());
  EXPECT_EQ("no certificate named 'ghost'", s.error_message());
  // An oversize message is refused by gRPC itself.
  {
    auto r = Request("huge", other);
    r.set_cert_chain_pem(std::string(9 << 20, 'A'));
    v1::StagedCertificate out;
    s = control_->certs->StageCertificate(Ctx().get(), r, &out);
    EXPECT_EQ(grpc::StatusCode::RESOURCE_EXHAUSTED, s.error_code()) << s.error_message();
  }

  // Nothing else was lost: "good" still served, "pending" still staged and committable.
  EXPECT_EQ(FingerprintOfPem(good.cert_pem), ServedFingerprint(stack_->port(), "good.test"));
  v1::ListCertificatesResponse list;
  ASSERT_TRUE(control_->certs->ListCertificates(Ctx().get(), {}, &list).ok());
  ASSERT_EQ(1, list.staged_size());
  EXPECT_EQ("pending", list.staged(0).certificate().name());
  EXPECT_EQ(committed.generation(), list.generation());
  commit.set_expected_generation(list.generation());
  ASSERT_TRUE(control_->certs->CommitCertificate(Ctx().get(), commit, &resp).ok());
  EXPECT_EQ(FingerprintOfPem(pending.cert_pem), ServedFingerprint(stack_->port(), "pending.test"));
}

TEST_F(ControlApiTest, DeleteAndDefaultRules) {
  const TestCert a = MakeLeaf(*ca_, "a", {"a.rules.test"});
  const TestCert b = MakeLeaf(*ca_, "b", {"b.rules.test", "*.wild.test"});
  const TestCert c = MakeLeaf(*ca_, "c", {"x.wild.test"});
  v1::CommitResponse r;
  auto req = Request("rules-a", a);
  req.set_set_default(true);
  ASSERT_TRUE(control_->certs->ApplyCertificate(Ctx().get(), req, &r).ok());
  ASSERT_TRUE(control_->certs->ApplyCertificate(Ctx().get(), Request("rules-b", b), &r).ok());
  ASSERT_TRUE(control_->certs->ApplyCertificate(Ctx().get(), Request("rules-c", c), &r).ok());

  v1::DeleteCertificateRequest del;
  del.set_name("rules-a");
  grpc::Status s = control_->certs->DeleteCertificate(Ctx().get(), del, &r);
  EXPECT_EQ(grpc::StatusCode::FAILED_PRECONDITION, s.error_code());
  EXPECT_NE(std::string::npos, s.error_message().find("'rules-a' is the default certificate"))
      << s.error_message();
  del.set_name("rules-b");
  s = control_->certs->DeleteCertificate(Ctx().get(), del, &r);
  EXPECT_EQ(grpc::StatusCode::FAILED_PRECONDITION, s.error_code());
  EXPECT_NE(std::string::npos,
            s.error_message().find("'rules-b' is bound to b.rules.test, *.wild.test, which no "
                                   "other certificate serves"))
      << s.error_message();
  // x.wild.test is also served by rules-b's wildcard: deleting rules-c orphans nothing.
  del.set_name("rules-c");
  s = control_->certs->DeleteCertificate(Ctx().get(), del, &r);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(FingerprintOfPem(b.cert_pem), ServedFingerprint(stack_->port(), "x.wild.test"));

  v1::SetDefaultCertificateRequest def;
  def.set_name("rules-b");
  ASSERT_TRUE(control_->certs->SetDefaultCertificate(Ctx().get(), def, &r).ok());
  EXPECT_EQ(FingerprintOfPem(b.cert_pem), ServedFingerprint(stack_->port(), "unknown.test"));
  // rules-a is no longer the default, but a.rules.test would be orphaned: force.
  del.set_name("rules-a");
  del.set_expected_generation(r.generation());
  s = control_->certs->DeleteCertificate(Ctx().get(), del, &r);
  EXPECT_EQ(grpc::StatusCode::FAILED_PRECONDITION, s.error_code()) << s.error_message();
  del.set_force(true);
  ASSERT_TRUE(control_->certs->DeleteCertificate(Ctx().get(), del, &r).ok());
  EXPECT_EQ(FingerprintOfPem(b.cert_pem), ServedFingerprint(stack_->port(), "a.rules.test"));
  del.set_name("rules-b");
  del.set_force(true);
  del.set_expected_generation(r.generation() - 1);  // stale
  s = control_->certs->DeleteCertificate(Ctx().get(), del, &r);
  EXPECT_EQ(grpc::StatusCode::ABORTED, s.error_code());
}

TEST_F(ControlApiTest, WatchSendsASnapshotThenEvents) {
  grpc::ClientContext ctx;
  auto reader = control_->certs->WatchCertificates(&ctx, {});
  v1::CertificateEvent e;
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(v1::CertificateEvent::SNAPSHOT, e.type());
  EXPECT_GT(e.certificates_size(), 0);
  const TestCert w = MakeLeaf(*ca_, "watched", {"watched.test"});
  v1::CommitResponse r;
  ASSERT_TRUE(control_->certs->ApplyCertificate(Ctx().get(), Request("watched", w), &r).ok());
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(v1::CertificateEvent::STAGED, e.type());
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(v1::CertificateEvent::COMMITTED, e.type());
  EXPECT_EQ("watched", e.name());
  EXPECT_EQ(r.generation(), e.generation());
  ASSERT_EQ(1, e.certificates_size());
  EXPECT_EQ(FingerprintOfPem(w.cert_pem), e.certificates(0).sha256_fingerprint());
  ctx.TryCancel();
  reader->Finish();
}

TEST_F(ControlApiTest, ClientTrustIsSwappedForNewHandshakes) {
  const TestCert client_ca = MakeCa("client CA one");
  const TestCert other_ca = MakeCa("client CA two");
  CertSpec spec;
  spec.common_name = "client one";
  spec.client_auth = true;
  const TestCert client = MakeCert(spec, &client_ca);

  v1::StageTrustBundleRequest bad;
  bad.set_ca_pem("not a certificate");
  v1::TrustBundleResponse tr;
  grpc::Status s = control_->trust->ApplyTrustBundle(Ctx().get(), bad, &tr);
  EXPECT_EQ(grpc::StatusCode::INVALID_ARGUMENT, s.error_code());
  EXPECT_NE(std::string::npos, s.error_message().find("ca_pem: no CA certificate"))
      << s.error_message();

  v1::StageTrustBundleRequest req;
  req.set_ca_pem(other_ca.cert_pem);
  req.set_require_client_cert(true);
  ASSERT_TRUE(control_->trust->ApplyTrustBundle(Ctx().get(), req, &tr).ok());
  HandshakeOptions o;
  o.client_cert = client.cert.get();
  o.client_key = client.key.get();
  HandshakeResult h = Handshake(stack_->port(), o);
  EXPECT_FALSE(h.ok && h.response.find("ok") != std::string::npos)
      << "a client certificate from an untrusted CA was accepted";
  if (h.session) SSL_SESSION_free(h.session);

  req.set_ca_pem(client_ca.cert_pem);
  req.set_expected_generation(tr.generation());
  ASSERT_TRUE(control_->trust->ApplyTrustBundle(Ctx().get(), req, &tr).ok());
  h = Handshake(stack_->port(), o);
  EXPECT_TRUE(h.ok) << h.error;
  EXPECT_NE(std::string::npos, h.response.find("ok")) << h.response;
  if (h.session) SSL_SESSION_free(h.session);
  HandshakeOptions anonymous;
  h = Handshake(stack_->port(), anonymous);
  EXPECT_FALSE(h.ok && h.response.find("ok") != std::string::npos)
      << "require_client_cert did not refuse a client without a certificate";
  if (h.session) SSL_SESSION_free(h.session);

  v1::DeleteTrustBundleRequest del;
  ASSERT_TRUE(control_->trust->DeleteTrustBundle(Ctx().get(), del, &tr).ok());
  h = Handshake(stack_->port(), anonymous);
  EXPECT_TRUE(h.ok) << h.error;
  if (h.session) SSL_SESSION_free(h.session);
}

TEST_F(ControlApiTest, SharedTicketKeysLetAnotherAgentResume) {
  Stack second;
  Control other(ReadyInfo(second)["control_socket"]);
  std::string key(80, '\0');
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<char>(i * 7 + 3);
  v1::SetSessionTicketKeysRequest set;
  set.add_keys(key);
  v1::SessionTicketKeys keys;
  ASSERT_TRUE(control_->tickets->SetSessionTicketKeys(Ctx().get(), set, &keys).ok());
  ASSERT_TRUE(other.tickets->SetSessionTicketKeys(Ctx().get(), set, &keys).ok());
  ASSERT_EQ(1, keys.keys_size());
  EXPECT_EQ(32u, keys.keys(0).name().size());
  EXPECT_EQ("03", keys.keys(0).name().substr(0, 2));  // the name is the first 16 bytes, in hex

  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    SCOPED_TRACE(version == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2");
    HandshakeOptions o;
    o.tls_version = version;
    HandshakeResult first = Handshake(stack_->port(), o);
    ASSERT_TRUE(first.ok) << first.error;
    ASSERT_NE(nullptr, first.session);
    o.resume = first.session;
    HandshakeResult again = Handshake(second.port(), o);
    EXPECT_TRUE(again.ok) << again.error;
    EXPECT_TRUE(again.resumed) << "the second agent did not resume the first one's session";
    if (again.session) SSL_SESSION_free(again.session);
    SSL_SESSION_free(first.session);
  }

  // After a rotation that keeps no old key, the old tickets no longer resume.
  HandshakeOptions o;
  HandshakeResult first = Handshake(stack_->port(), o);
  ASSERT_NE(nullptr, first.session);
  v1::RotateSessionTicketKeysRequest rotate;
  rotate.set_keep(0);
  ASSERT_TRUE(other.tickets->RotateSessionTicketKeys(Ctx().get(), rotate, &keys).ok());
  EXPECT_EQ(1, keys.keys_size());
  o.resume = first.session;
  HandshakeResult again = Handshake(second.port(), o);
  EXPECT_TRUE(again.ok) << again.error;
  EXPECT_FALSE(again.resumed);
  if (again.session) SSL_SESSION_free(again.session);
  SSL_SESSION_free(first.session);

  v1::SetSessionTicketKeysRequest bad;
  bad.add_keys("short");
  grpc::Status s = other.tickets->SetSessionTicketKeys(Ctx().get(), bad, &keys);
  EXPECT_EQ(grpc::StatusCode::INVALID_ARGUMENT, s.error_code());
  EXPECT_NE(std::string::npos,
            s.error_message().find("session ticket key 1 is 5 bytes; expected 80"))
      << s.error_message();
}

TEST_F(ControlApiTest, TelemetryListsHandshakesHandoffsAndCapabilities) {
  // A client that connects and says nothing keeps its handshake in progress.
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(stack_->port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(0, connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)));
  v1::ListHandshakesResponse hs;
  for (int i = 0; i < 100; ++i) {
    hs.Clear();
    ASSERT_TRUE(control_->telemetry->ListHandshakes(Ctx().get(), {}, &hs).ok());
    if (hs.total() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GT(hs.total(), 0u);
  EXPECT_EQ("127.0.0.1", hs.handshakes(0).peer().address());
  close(fd);

  ASSERT_TRUE(Get(stack_->port(), "/healthz").ok);
  v1::ListHandoffsRequest req;
  req.set_page_size(1);
  v1::ListHandoffsResponse ho;
  ASSERT_TRUE(control_->telemetry->ListHandoffs(Ctx().get(), req, &ho).ok());
  ASSERT_EQ(1, ho.handoffs_size());
  EXPECT_EQ("sent", ho.handoffs(0).outcome());
  EXPECT_EQ("it", ho.handoffs(0).app());
  EXPECT_FALSE(ho.next_page_token().empty());
  EXPECT_TRUE(ho.handoffs(0).connection().initial_data().empty());
  req.set_page_token(ho.next_page_token());
  v1::ListHandoffsResponse page2;
  ASSERT_TRUE(control_->telemetry->ListHandoffs(Ctx().get(), req, &page2).ok());
  ASSERT_EQ(1, page2.handoffs_size());
  EXPECT_LT(page2.handoffs(0).sequence(), ho.handoffs(0).sequence());
  req.set_page_size(5000);
  EXPECT_EQ(grpc::StatusCode::INVALID_ARGUMENT,
            control_->telemetry->ListHandoffs(Ctx().get(), req, &page2).error_code());

  v1::Capabilities caps;
  ASSERT_TRUE(control_->telemetry->GetCapabilities(Ctx().get(), {}, &caps).ok());
  EXPECT_EQ(6, caps.probe_size());
  EXPECT_TRUE(caps.openssl_ktls());
  EXPECT_FALSE(caps.kernel_release().empty());
  EXPECT_EQ("preferred", caps.offload_policy());
  if (ExpectOffload()) {
    EXPECT_TRUE(caps.kernel_tls_available());
    EXPECT_TRUE(caps.tls_stat_available()) << caps.tls_stat_error();
  } else if (!stack_->ktls_available()) {
    EXPECT_FALSE(caps.kernel_tls_reason().empty());
  }

  v1::WatchStatsRequest w;
  w.set_interval_ms(10);
  grpc::ClientContext ctx;
  auto reader = control_->telemetry->WatchStats(&ctx, w);
  v1::Stats st;
  EXPECT_FALSE(reader->Read(&st));
  EXPECT_EQ(grpc::StatusCode::INVALID_ARGUMENT, reader->Finish().error_code());
}

// What grpcurl does first: list the services over reflection, then ask for the file that
// defines the health service. Requests are hand-encoded (the reflection .proto is not shipped):
// ServerReflectionRequest.list_services is field 7, file_containing_symbol field 4.
std::string Reflect(grpc::GenericStub& stub, const std::string& request) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  void* tag = nullptr;
  bool ok = false;
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  cq.Next(&tag, &ok);
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  cq.Next(&tag, &ok);
  std::string response;
  if (ok) {
    std::vector<grpc::Slice> slices;
    (void)in.Dump(&slices);
    for (auto& s : slices) response.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  call->WritesDone(reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(5)) {
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return response;
}

TEST_F(ControlApiTest, ReflectionDescribesTheServicesForGrpcurl) {
  grpc::GenericStub stub(control_->channel);
  const std::string services = Reflect(stub, std::string("\x3a\x00", 2));
  for (const char* name : {"ktls.v1.CertificateService", "ktls.v1.TrustService",
                           "ktls.v1.SessionTicketService", "ktls.v1.TelemetryService",
                           "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}) {
    EXPECT_NE(std::string::npos, services.find(name)) << name;
  }
  const std::string symbol = "grpc.health.v1.Health";
  const std::string file =
      Reflect(stub, std::string("\x22") + static_cast<char>(symbol.size()) + symbol);
  EXPECT_NE(std::string::npos, file.find("grpc/health/v1/health.proto"));
  const std::string control = "ktls.v1.CertificateService";
  const std::string file2 =
      Reflect(stub, std::string("\x22") + static_cast<char>(control.size()) + control);
  EXPECT_NE(std::string::npos, file2.find("ktls/v1/control.proto"));
}

}  // namespace
}  // namespace ktls::testing
