#include "agent/session_cache.h"

namespace ktls::agent {

void SessionCache::Put(const std::string& key, SSL_SESSION* session) {
  if (session == nullptr || !SSL_SESSION_is_resumable(session)) return;
  SSL_SESSION_up_ref(session);
  SslSessionPtr owned(session);
  absl::MutexLock lock(&mu_);
  auto it = map_.find(key);
  if (it == map_.end()) {
    if (map_.size() >= max_upstreams_ && !lru_.empty()) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(key);
    it = map_.emplace(key, Entry{{}, lru_.begin()}).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
  auto& q = it->second.sessions;
  q.push_back(std::move(owned));
  while (q.size() > per_upstream_) q.pop_front();
}

SslSessionPtr SessionCache::Take(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = map_.find(key);
  if (it == map_.end() || it->second.sessions.empty()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  auto& q = it->second.sessions;
  // Newest first: it has the longest remaining lifetime.
  SSL_SESSION* newest = q.back().get();
  if (SSL_SESSION_get_protocol_version(newest) >= TLS1_3_VERSION) {
    SslSessionPtr s = std::move(q.back());
    q.pop_back();
    return s;
  }
  SSL_SESSION_up_ref(newest);
  return SslSessionPtr(newest);
}

size_t SessionCache::upstreams() const {
  absl::MutexLock lock(&mu_);
  return map_.size();
}

}  // namespace ktls::agent
