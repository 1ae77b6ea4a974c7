#include "agent/activity.h"

#include <netinet/in.h>

#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "agent/histogram.h"

namespace ktls::agent {
namespace {

TEST(HistogramTest, BucketsAreCumulativeAndTheCountIsTheirTotal) {
  Histogram h({0.001, 0.01, 0.1});
  for (double v : {0.0005, 0.001, 0.005, 0.05, 0.5, 5.0}) h.Observe(v);
  Histogram::Snapshot s = h.Take();
  EXPECT_EQ((std::vector<uint64_t>{2, 3, 4}), s.cumulative);
  EXPECT_EQ(6u, s.count);
  EXPECT_NEAR(5.5565, s.sum, 1e-9);
}

TEST(HistogramTest, ConcurrentObservationsAreAllCounted) {
  Histogram h({1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) h.Observe(i % 2 == 0 ? 0.5 : 2);
    });
  }
  for (auto& t : threads) t.join();
  Histogram::Snapshot s = h.Take();
  EXPECT_EQ(40000u, s.count);
  EXPECT_EQ(20000u, s.cumulative[0]);
  EXPECT_DOUBLE_EQ(50000, s.sum);
}

LiveHandshake Live(uint64_t id) {
  LiveHandshake h;
  h.id = id;
  h.listener = "https";
  auto* in = reinterpret_cast<sockaddr_in*>(&h.peer);
  in->sin_family = AF_INET;
  h.started = absl::Now();
  return h;
}

TEST(ActivityLogTest, LiveHandshakesArePagedInIdOrder) {
  ActivityLog log;
  for (uint64_t id : {5, 1, 33, 17, 2}) log.HandshakeStarted(Live(id));
  log.HandshakeEnded(17);
  log.HandshakeEnded(999);  // unknown: ignored
  size_t total = 0;
  std::vector<LiveHandshake> page = log.LiveHandshakes(0, 2, &total);
  EXPECT_EQ(4u, total);
  ASSERT_EQ(2u, page.size());
  EXPECT_EQ(1u, page[0].id);
  EXPECT_EQ(2u, page[1].id);
  page = log.LiveHandshakes(2, 10);
  ASSERT_EQ(2u, page.size());
  EXPECT_EQ(5u, page[0].id);
  EXPECT_EQ(33u, page[1].id);
}

TEST(ActivityLogTest, RecentHandoffsKeepTheNewestAndPageBackwards) {
  ActivityLog log(3);
  for (int i = 1; i <= 5; ++i) {
    HandoffRecord r;
    r.outcome = i == 4 ? HandoffOutcome::kExpired : HandoffOutcome::kSent;
    r.info.set_connection_id(static_cast<uint64_t>(i * 10));
    log.RecordHandoff(std::move(r));
  }
  std::vector<HandoffRecord> newest = log.RecentHandoffs(0, 2);
  ASSERT_EQ(2u, newest.size());
  EXPECT_EQ(5u, newest[0].sequence);
  EXPECT_EQ(50u, newest[0].info.connection_id());
  EXPECT_EQ(4u, newest[1].sequence);
  EXPECT_STREQ("expired", HandoffOutcomeName(newest[1].outcome));
  std::vector<HandoffRecord> older = log.RecentHandoffs(newest[1].sequence, 10);
  ASSERT_EQ(1u, older.size()) << "only 3 are kept";
  EXPECT_EQ(3u, older[0].sequence);
  EXPECT_TRUE(log.RecentHandoffs(3, 10).empty());
}

}  // namespace
}  // namespace ktls::agent
