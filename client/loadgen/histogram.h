// Latency histogram for ktls-loadgen: log-linear buckets (64 per power of two, so a reported
// percentile is within 1.6% of the true value), fixed memory, mergeable across threads.
#ifndef KTLS_CLIENT_LOADGEN_HISTOGRAM_H_
#define KTLS_CLIENT_LOADGEN_HISTOGRAM_H_

#include <cstdint>
#include <vector>

namespace ktls::loadgen {

class LatencyHistogram {
 public:
  LatencyHistogram();

  void Record(uint64_t nanos);
  void Merge(const LatencyHistogram& other);
  void Clear();

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0 : static_cast<double>(sum_) / count_; }
  // The value at quantile q (0 < q <= 1): the upper edge of the bucket holding the
  // ceil(q * count)-th smallest sample, clamped to [min, max]. 0 when empty.
  uint64_t Quantile(double q) const;

  // Bucket arithmetic, exposed for tests.
  static int BucketOf(uint64_t v);
  static uint64_t BucketUpper(int bucket);

 private:
  static constexpr int kSubBits = 6;
  static constexpr int kSub = 1 << kSubBits;

  std::vector<uint64_t> buckets_;
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

}  // namespace ktls::loadgen

#endif  // KTLS_CLIENT_LOADGEN_HISTOGRAM_H_
