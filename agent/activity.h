// What the control plane can show about individual connections, read while the data plane runs:
// the handshakes in progress right now, and the last N handoff outcomes.
//
// Written from worker threads (handshake start/end) and the broker thread (handoff outcomes);
// read from control-plane threads. The live-handshake table is sharded by connection id so
// workers rarely meet on a lock; each lock is held for one map insert/erase. The recent-handoff
// ring has one lock held for one move. Nothing here allocates per connection beyond the map node
// and the ring slot it replaces, and nothing here ever blocks the data path on a reader for
// longer than copying one shard.
#ifndef KTLS_AGENT_ACTIVITY_H_
#define KTLS_AGENT_ACTIVITY_H_

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ktls/v1/handoff.pb.h"

namespace ktls::agent {

struct LiveHandshake {
  uint64_t id = 0;
  std::string listener;
  sockaddr_storage peer{};
  absl::Time started;
  int worker = 0;
};

enum class HandoffOutcome {
  kSent,     // handed to an app
  kExpired,  // waited longer than handoff_wait_timeout_ms for an app; closed
  kDropped,  // the queue was full or the message could not be built; closed
};
const char* HandoffOutcomeName(HandoffOutcome o);

struct HandoffRecord {
  uint64_t sequence = 0;  // 1, 2, ... in the order recorded
  absl::Time at;
  HandoffOutcome outcome = HandoffOutcome::kSent;
  std::string app;          // the app that got it (kSent)
  absl::Duration waited;    // ready -> outcome
  v1::ConnectionInfo info;  // as sent to the app
};

class ActivityLog {
 public:
  static constexpr size_t kDefaultRecentHandoffs = 1024;
  explicit ActivityLog(size_t recent_capacity = kDefaultRecentHandoffs);

  void HandshakeStarted(const LiveHandshake& h);
  void HandshakeEnded(uint64_t id);
  // Handshakes in progress with id > after_id, oldest (lowest id) first, at most `limit`;
  // `total` (optional) gets how many are in progress.
  std::vector<LiveHandshake> LiveHandshakes(uint64_t after_id, size_t limit,
                                            size_t* total = nullptr) const;

  // Takes `r` (its sequence is assigned here).
  void RecordHandoff(HandoffRecord r);
  // The most recent handoffs with sequence < before (0: from the newest), newest first, at most
  // `limit`.
  std::vector<HandoffRecord> RecentHandoffs(uint64_t before, size_t limit) const;
  size_t recent_capacity() const { return capacity_; }

 private:
  static constexpr size_t kShards = 16;
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<uint64_t, LiveHandshake> live ABSL_GUARDED_BY(mu);
  };
  std::array<Shard, kShards> shards_;

  const size_t capacity_;
  mutable absl::Mutex ring_mu_;
  std::vector<HandoffRecord> ring_ ABSL_GUARDED_BY(ring_mu_);  // slot = (sequence - 1) % capacity
  uint64_t next_sequence_ ABSL_GUARDED_BY(ring_mu_) = 1;
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_ACTIVITY_H_
