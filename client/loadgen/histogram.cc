#include "client/loadgen/histogram.h"

#include <algorithm>
#include <cmath>

namespace ktls::loadgen {

LatencyHistogram::LatencyHistogram() : buckets_(kSub + (64 - kSubBits) * kSub, 0) {}

int LatencyHistogram::BucketOf(uint64_t v) {
  if (v < kSub) return static_cast<int>(v);
  const int e = 63 - __builtin_clzll(v);  // >= kSubBits
  const int shift = e - kSubBits;
  const int sub = static_cast<int>(v >> shift) - kSub;  // 0 .. kSub-1
  return kSub + (e - kSubBits) * kSub + sub;
}

uint64_t LatencyHistogram::BucketUpper(int bucket) {
  if (bucket < kSub) return static_cast<uint64_t>(bucket);
  const int e = (bucket - kSub) / kSub + kSubBits;
  const int sub = (bucket - kSub) % kSub;
  const int shift = e - kSubBits;
  const uint64_t lower = static_cast<uint64_t>(kSub + sub) << shift;
  return lower + ((uint64_t{1} << shift) - 1);
}

void LatencyHistogram::Record(uint64_t nanos) {
  ++buckets_[BucketOf(nanos)];
  ++count_;
  sum_ += nanos;
  min_ = std::min(min_, nanos);
  max_ = std::max(max_, nanos);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

void LatencyHistogram::Clear() {
  std::fill(buckets_.begin(), buckets_.end(), 0);
  count_ = 0;
  sum_ = 0;
  min_ = UINT64_MAX;
  max_ = 0;
}

uint64_t LatencyHistogram::Quantile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * count_)));
  uint64_t seen = 0;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::clamp(BucketUpper(static_cast<int>(i)), min_, max_);
  }
  return max_;
}

}  // namespace ktls::loadgen
