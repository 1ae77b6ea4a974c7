// Bounded client-side TLS session cache for outbound dials, keyed per upstream
// (host:port + SNI + ALPN + trust, see ClientTlsParams::SessionCacheKey in
// agent/tls_client_context.h), so repeated dials to the same upstream resume.
//
// TLS 1.3 tickets are taken (single use, RFC 8446 C.4 recommends against ticket reuse); TLS 1.2
// sessions stay until replaced. Least recently used upstreams are evicted beyond the bound.
// Thread-safe.
#ifndef KTLS_AGENT_SESSION_CACHE_H_
#define KTLS_AGENT_SESSION_CACHE_H_

#include <openssl/ssl.h>

#include <cstddef>
#include <deque>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "absl/synchronization/mutex.h"
#include "agent/openssl_ptr.h"

namespace ktls::agent {

using SslSessionPtr = std::unique_ptr<SSL_SESSION, OpenSslDeleter<SSL_SESSION_free>>;

class SessionCache {
 public:
  SessionCache(size_t max_upstreams, size_t per_upstream)
      : max_upstreams_(max_upstreams), per_upstream_(per_upstream) {}

  // Stores a session for `key` (takes its own reference). Sessions that cannot be resumed are
  // ignored.
  void Put(const std::string& key, SSL_SESSION* session);
  // A session to offer for `key`, or nullptr.
  SslSessionPtr Take(const std::string& key);
  size_t upstreams() const;

 private:
  struct Entry {
    std::deque<SslSessionPtr> sessions;
    std::list<std::string>::iterator lru;
  };
  mutable absl::Mutex mu_;
  std::unordered_map<std::string, Entry> map_ ABSL_GUARDED_BY(mu_);
  std::list<std::string> lru_ ABSL_GUARDED_BY(mu_);  // most recent first
  const size_t max_upstreams_;
  const size_t per_upstream_;
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_SESSION_CACHE_H_
