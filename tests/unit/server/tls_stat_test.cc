#include "server/tls_stat.h"

#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>

namespace ktls::control {
namespace {

// As Linux 6.1 prints it.
constexpr char kSample[] =
    "TlsCurrTxSw                     \t2\n"
    "TlsCurrRxSw                     \t2\n"
    "TlsCurrTxDevice                 \t0\n"
    "TlsCurrRxDevice                 \t0\n"
    "TlsTxSw                         \t118\n"
    "TlsRxSw                         \t117\n"
    "TlsTxDevice                     \t0\n"
    "TlsRxDevice                     \t0\n"
    "TlsDecryptError                 \t1\n"
    "TlsRxDeviceResync               \t0\n";

TEST(TlsStatTest, ParsesTheKernelsFormat) {
  auto stat = ParseTlsStat(kSample);
  ASSERT_TRUE(stat.ok()) << stat.status();
  EXPECT_EQ(10u, stat->size());
  EXPECT_EQ(118u, stat->at("TlsTxSw"));
  EXPECT_EQ(2u, stat->at("TlsCurrRxSw"));
  EXPECT_EQ(1u, stat->at("TlsDecryptError"));
  EXPECT_TRUE(TlsStatIsGauge("TlsCurrTxSw"));
  EXPECT_FALSE(TlsStatIsGauge("TlsTxSw"));
  EXPECT_TRUE(ParseTlsStat("").ok());
}

TEST(TlsStatTest, RejectsMalformedLinesByNumber) {
  auto stat = ParseTlsStat("TlsTxSw 1\nTlsRxSw x\n");
  ASSERT_FALSE(stat.ok());
  EXPECT_EQ("tls_stat line 2 is not 'Name value'", stat.status().message());
  EXPECT_FALSE(ParseTlsStat("a b c\n").ok());
}

TEST(TlsStatTest, AMissingFileSaysWhy) {
  auto stat = ReadTlsStat("/nonexistent/tls_stat");
  ASSERT_FALSE(stat.ok());
  EXPECT_EQ(absl::StatusCode::kNotFound, stat.status().code());
  EXPECT_NE(std::string::npos, stat.status().message().find("the tls module is not loaded"));
  const std::string path = ::testing::TempDir() + "/tls_stat_test";
  std::ofstream(path) << kSample;
  auto read = ReadTlsStat(path);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(117u, read->at("TlsRxSw"));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace ktls::control
