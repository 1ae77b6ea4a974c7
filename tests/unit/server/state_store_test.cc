#include "server/state_store.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/temp_dir.h"

namespace ktls::control {
namespace {

class StateStoreTest : public ::testing::Test {
 protected:
  static int Mode(const std::string& path) {
    struct stat st {};
    return stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 07777) : -1;
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static std::vector<std::string> List(const std::string& dir) {
    std::vector<std::string> out;
    if (DIR* d = opendir(dir.c_str())) {
      while (dirent* e = readdir(d)) {
        if (std::string(e->d_name) != "." && std::string(e->d_name) != "..")
          out.push_back(e->d_name);
      }
      closedir(d);
    }
    return out;
  }
  static v1::state::CertificateRecord Cert(const std::string& name) {
    v1::state::CertificateRecord r;
    r.set_name(name);
    r.set_cert_chain_pem("-----BEGIN CERTIFICATE-----\n" + name + "\n");
    r.set_private_key_pem("secret key of " + name);
    r.add_server_names(name + ".test");
    r.set_generation(7);
    return r;
  }

  testing::ScopedTempDir tmp_{"ktls-state-test"};
  const std::string root_ = tmp_.path();
  const std::string dir_ = root_ + "/state";
};

TEST_F(StateStoreTest, WriteFileAtomicallyReplacesWith0600AndLeavesNoTemporaryFile) {
  const std::string path = root_ + "/file";
  ASSERT_TRUE(WriteFileAtomically(path, "one").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "two, longer").ok());
  EXPECT_EQ("two, longer", Read(path));
  EXPECT_EQ(0600, Mode(path));
  EXPECT_EQ(std::vector<std::string>{"file"}, List(root_));
  ASSERT_TRUE(WriteFileAtomically(root_ + "/public", "x", 0644).ok());
  EXPECT_EQ(0644, Mode(root_ + "/public"));
}

TEST_F(StateStoreTest, AFailedWriteKeepsTheOldFileAndCleansUp) {
  const std::string path = root_ + "/target";
  ASSERT_EQ(0, mkdir(path.c_str(), 0700));  // rename of a file over a directory fails
  ASSERT_EQ(0, mkdir((path + "/occupied").c_str(), 0700));
  absl::Status s = WriteFileAtomically(path, "data");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string::npos, s.message().find("rename")) << s.message();
  EXPECT_EQ(std::vector<std::string>{"target"}, List(root_)) << "the temporary file was left";
  EXPECT_FALSE(WriteFileAtomically(root_ + "/missing/dir/file", "x").ok());
}

TEST_F(StateStoreTest, DirectoriesArePrivateAndRecordsRoundTrip) {
  auto store = StateStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(0700, Mode(dir_));
  EXPECT_EQ(0700, Mode(dir_ + "/certificates"));
  ASSERT_TRUE((*store)->PutCertificate(Cert("b")).ok());
  ASSERT_TRUE((*store)->PutCertificate(Cert("a")).ok());
  v1::state::TrustBundleRecord trust;
  trust.set_ca_pem("ca");
  trust.set_generation(3);
  ASSERT_TRUE((*store)->PutTrustBundle(trust).ok());
  v1::state::SessionTicketKeysRecord keys;
  keys.add_keys(std::string(80, 'k'));
  ASSERT_TRUE((*store)->PutTicketKeys(keys).ok());
  v1::state::StateMeta meta;
  meta.set_certificate_generation(9);
  meta.set_default_certificate("a");
  ASSERT_TRUE((*store)->PutMeta(meta).ok());
  EXPECT_EQ(0600, Mode(dir_ + "/certificates/a.state"));
  EXPECT_EQ(0600, Mode(dir_ + "/session_ticket_keys.state"));

  StateStore::Loaded loaded = (*store)->Load();
  EXPECT_TRUE(loaded.issues.empty());
  EXPECT_EQ(5, loaded.files_loaded);
  ASSERT_EQ(2u, loaded.certificates.size());
  EXPECT_EQ("a", loaded.certificates[0].name());  // sorted by name
  EXPECT_EQ("secret key of a", loaded.certificates[0].private_key_pem());
  EXPECT_EQ(7u, loaded.certificates[1].generation());
  ASSERT_TRUE(loaded.trust.has_value());
  EXPECT_EQ("ca", loaded.trust->ca_pem());
  ASSERT_TRUE(loaded.ticket_keys.has_value());
  EXPECT_EQ(std::string(80, 'k'), loaded.ticket_keys->keys(0));
  EXPECT_EQ("a", loaded.meta.default_certificate());

  ASSERT_TRUE((*store)->RemoveCertificate("b").ok());
  ASSERT_TRUE((*store)->RemoveCertificate("never-existed").ok());
  ASSERT_TRUE((*store)->RemoveTrustBundle().ok());
  StateStore::Loaded after = (*store)->Load();
  EXPECT_EQ(1u, after.certificates.size());
  EXPECT_FALSE(after.trust.has_value());
}

TEST_F(StateStoreTest, ACorruptFileIsReportedAndSkippedAndTheOthersLoad) {
  auto store = StateStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  for (const char* n : {"good", "flipped", "truncated", "renamed"}) {
    ASSERT_TRUE((*store)->PutCertificate(Cert(n)).ok());
  }
  // One flipped byte inside the payload: the checksum catches it.
  {
    std::string bytes = Read(dir_ + "/certificates/flipped.state");
    bytes[bytes.size() / 2] ^= 0x20;
    std::ofstream(dir_ + "/certificates/flipped.state", std::ios::binary) << bytes;
  }
  // Cut in half: does not parse, or the checksum fails.
  {
    const std::string bytes = Read(dir_ + "/certificates/truncated.state");
    std::ofstream(dir_ + "/certificates/truncated.state", std::ios::binary)
        << bytes.substr(0, bytes.size() / 2);
  }
  // A valid file under another certificate's name.
  ASSERT_EQ(0, rename((dir_ + "/certificates/renamed.state").c_str(),
                      (dir_ + "/certificates/other.state").c_str()));
  std::ofstream(dir_ + "/certificates/empty.state");
  std::ofstream(dir_ + "/meta.state") << "junk";
  // A crash between write and rename leaves a temporary file: removed, not loaded.
  std::ofstream(dir_ + "/certificates/.good.state.tmp-abc123") << "partial";

  StateStore::Loaded loaded = (*store)->Load();
  ASSERT_EQ(1u, loaded.certificates.size());
  EXPECT_EQ("good", loaded.certificates[0].name());
  std::map<std::string, std::string> issues;
  for (const auto& i : loaded.issues) issues[i.path.substr(dir_.size() + 1)] = i.error;
  EXPECT_EQ(5u, issues.size());
  EXPECT_EQ("checksum mismatch (truncated or corrupted)", issues["certificates/flipped.state"]);
  EXPECT_FALSE(issues["certificates/truncated.state"].empty());
  EXPECT_EQ("holds certificate 'renamed', not the one its file name says",
            issues["certificates/other.state"]);
  EXPECT_EQ("empty file", issues["certificates/empty.state"]);
  EXPECT_FALSE(issues["meta.state"].empty());
  EXPECT_EQ(0u, loaded.meta.certificate_generation());
  EXPECT_EQ(-1, Mode(dir_ + "/certificates/.good.state.tmp-abc123"));
}

TEST_F(StateStoreTest, AFileOfAnotherKindIsRejected) {
  auto store = StateStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  v1::state::StateMeta meta;
  meta.set_default_certificate("x");
  ASSERT_TRUE((*store)->PutMeta(meta).ok());
  ASSERT_EQ(0, rename((dir_ + "/meta.state").c_str(), (dir_ + "/trust_bundle.state").c_str()));
  StateStore::Loaded loaded = (*store)->Load();
  ASSERT_EQ(1u, loaded.issues.size());
  EXPECT_EQ("holds a 'meta' record, expected 'trust_bundle'", loaded.issues[0].error);
  EXPECT_FALSE(loaded.trust.has_value());
}

TEST_F(StateStoreTest, OpenRefusesAFileWhereTheDirectoryShouldBe) {
  std::ofstream(dir_) << "x";
  auto store = StateStore::Open(dir_);
  EXPECT_FALSE(store.ok());
  EXPECT_NE(std::string::npos, store.status().message().find("is not a directory"));
}

TEST_F(StateStoreTest, ReadSecretFileRefusesOversizeAndNonRegularFiles) {
  std::string out;
  const std::string path = root_ + "/big";
  std::ofstream(path) << std::string(2000, 'x');
  EXPECT_FALSE(ReadSecretFile(path, 1000, &out).ok());
  EXPECT_TRUE(ReadSecretFile(path, 2000, &out).ok());
  EXPECT_EQ(2000u, out.size());
  EXPECT_FALSE(ReadSecretFile(root_, 1000, &out).ok());
  EXPECT_EQ(absl::StatusCode::kNotFound, ReadSecretFile(root_ + "/nope", 10, &out).code());
}

}  // namespace
}  // namespace ktls::control
