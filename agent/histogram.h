// A fixed-bucket histogram that any thread may update without a lock (one relaxed atomic add per
// bucket hit, one for the sum), for latencies observed on the data path. The control plane reads
// it with Take() when it is scraped; a snapshot taken while others observe may be a few
// observations behind in one bucket, never inconsistent with itself (the count is the sum of the
// buckets it read).
#ifndef KTLS_AGENT_HISTOGRAM_H_
#define KTLS_AGENT_HISTOGRAM_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace ktls::agent {

class Histogram {
 public:
  // `upper_bounds` ascending; an implicit last bucket takes everything above them (+Inf).
  explicit Histogram(std::vector<double> upper_bounds)
      : bounds_(std::move(upper_bounds)),
        counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

  void Observe(double value) {
    size_t i = 0;
    while (i < bounds_.size() && value > bounds_[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(value, std::memory_order_relaxed);
  }

  struct Snapshot {
    std::vector<double> upper_bounds;  // without +Inf
    std::vector<uint64_t> cumulative;  // one per upper bound (observations <= bound)
    uint64_t count = 0;                // every observation (the +Inf bucket)
    double sum = 0;
  };
  Snapshot Take() const {
    Snapshot s;
    s.upper_bounds = bounds_;
    s.cumulative.reserve(bounds_.size());
    uint64_t running = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      running += counts_[i].load(std::memory_order_relaxed);
      if (i < bounds_.size()) s.cumulative.push_back(running);
    }
    s.count = running;
    s.sum = sum_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, not cumulative; last = +Inf
  std::atomic<double> sum_{0};
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_HISTOGRAM_H_
