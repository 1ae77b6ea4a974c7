#include "agent/activity.h"

#include <algorithm>

namespace ktls::agent {

const char* HandoffOutcomeName(HandoffOutcome o) {
  switch (o) {
    case HandoffOutcome::kSent:
      return "sent";
    case HandoffOutcome::kExpired:
      return "expired";
    case HandoffOutcome::kDropped:
      return "dropped";
  }
  return "unknown";
}

ActivityLog::ActivityLog(size_t recent_capacity)
    : capacity_(std::max<size_t>(1, recent_capacity)) {}

void ActivityLog::HandshakeStarted(const LiveHandshake& h) {
  Shard& s = shards_[h.id % kShards];
  absl::MutexLock lock(&s.mu);
  s.live.insert_or_assign(h.id, h);
}

void ActivityLog::HandshakeEnded(uint64_t id) {
  Shard& s = shards_[id % kShards];
  absl::MutexLock lock(&s.mu);
  s.live.erase(id);
}

std::vector<LiveHandshake> ActivityLog::LiveHandshakes(uint64_t after_id, size_t limit,
                                                       size_t* total) const {
  std::vector<LiveHandshake> all;
  size_t count = 0;
  for (const Shard& s : shards_) {
    absl::MutexLock lock(&s.mu);
    count += s.live.size();
    for (const auto& [id, h] : s.live) {
      if (id > after_id) all.push_back(h);
    }
  }
  if (total != nullptr) *total = count;
  std::sort(all.begin(), all.end(),
            [](const LiveHandshake& a, const LiveHandshake& b) { return a.id < b.id; });
  if (all.size() > limit) all.resize(limit);
  return all;
}

void ActivityLog::RecordHandoff(HandoffRecord r) {
  absl::MutexLock lock(&ring_mu_);
  r.sequence = next_sequence_++;
  const size_t slot = (r.sequence - 1) % capacity_;
  if (ring_.size() <= slot) {
    ring_.push_back(std::move(r));
  } else {
    ring_[slot] = std::move(r);
  }
}

std::vector<HandoffRecord> ActivityLog::RecentHandoffs(uint64_t before, size_t limit) const {
  std::vector<HandoffRecord> out;
  absl::MutexLock lock(&ring_mu_);
  const uint64_t newest = next_sequence_ - 1;
  const uint64_t oldest = newest >= ring_.size() ? newest - ring_.size() + 1 : 1;
  uint64_t seq = (before == 0 || before > newest) ? newest : before - 1;
  for (; seq >= oldest && seq > 0 && out.size() < limit; --seq) {
    out.push_back(ring_[(seq - 1) % capacity_]);
  }
  return out;
}

}  // namespace ktls::agent
