// The userspace fallback: relays plaintext between the app's end of a socketpair and the TLS
// connection, for connections where kTLS could not be installed (or the policy says so). The
// app's code path is the same as with kTLS: it reads and writes plaintext on a stream socket.
//
// Bounded: one buffer of `buffer_bytes` per direction; a full buffer stops reading its source
// (epoll interest off) until the sink drains it. Half-close both ways: the peer's close_notify
// becomes EOF (shutdown(SHUT_WR)) on the app's socket once buffered data is delivered; the
// app's EOF becomes close_notify (SSL_shutdown) once its buffered data is written. A TCP EOF
// without close_notify is delivered as EOF too, and counted as a relay error (truncation).
#ifndef KTLS_AGENT_RELAY_H_
#define KTLS_AGENT_RELAY_H_

#include <memory>
#include <string>
#include <vector>

#include "agent/connection.h"
#include "agent/openssl_ptr.h"
#include "agent/tls_context.h"
#include "agent/unique_fd.h"

namespace ktls::agent {

// A fixed-capacity byte FIFO.
// The memory is allocated when first written to and never zero-filled: a relayed
// connection-per-request workload made the agent spend ~6% of its CPU zeroing (and faulting in)
// two fresh buffers per connection (perf, docs/BENCHMARKS.md), most of which it never used.
class RelayBuffer {
 public:
  explicit RelayBuffer(size_t capacity) : capacity_(capacity) {}
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  size_t space() const { return capacity_ - end_ + begin_; }
  // Contiguous free space at the tail (compacting first if needed).
  char* tail(size_t* len);
  void Produced(size_t n) { end_ += n; }
  const char* head() const { return data_.get() + begin_; }
  void Consumed(size_t n);
  bool allocated() const { return data_ != nullptr; }

 private:
  std::unique_ptr<char[]> data_;
  size_t capacity_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

class RelaySession final : public EventHandler {
 public:
  RelaySession(DataPlaneContext& ctx, uint64_t id, UniqueFd tls_fd, SslPtr ssl,
               std::unique_ptr<TlsConnectionState> tls_state, UniqueFd app_fd);
  ~RelaySession() override;

  absl::Status Start();
  void OnEvents(uint32_t events) override;  // events on the TLS socket

 private:
  class AppSide;
  void Pump();
  // The steps of one Pump() pass, in order (as Envoy splits doRead/doWrite). Each returns true
  // when it moved bytes or state; on an error it calls Close() (closed_ is then set).
  bool ReadFromPeer();    // SSL_read into to_app_, until full, drained or the peer's EOF
  bool WriteToApp();      // to_app_ to the app's socket
  bool ForwardPeerEof();  // peer EOF and to_app_ delivered: shutdown(SHUT_WR) the app's socket
  bool ReadFromApp();     // the app's socket into to_peer_, until full, drained or its EOF
  bool WriteToPeer();     // SSL_write to_peer_
  bool ForwardAppEof();   // app EOF and to_peer_ written: close_notify (SSL_shutdown)
  void UpdateInterest();
  void Close(bool error, absl::string_view why);
  void DetachApp();

  DataPlaneContext& ctx_;
  uint64_t id_;
  UniqueFd tls_fd_;
  SslPtr ssl_;
  std::unique_ptr<TlsConnectionState> tls_state_;
  UniqueFd app_fd_;
  std::unique_ptr<AppSide> app_side_;
  RelayBuffer to_app_;
  RelayBuffer to_peer_;
  bool peer_eof_ = false;     // close_notify (or TCP EOF) from the TLS peer
  bool app_shut_wr_ = false;  // we shut down the app socket's write side
  bool app_eof_ = false;      // the app shut down its write side
  bool close_notify_sent_ = false;
  bool ssl_read_wants_write_ = false;
  bool ssl_write_wants_write_ = false;
  bool app_write_blocked_ = false;
  bool closed_ = false;
  bool tls_registered_ = true;
  bool app_registered_ = true;
  uint32_t tls_armed_ = 0;
  uint32_t app_armed_ = 0;
};

}  // namespace ktls::agent

#endif  // KTLS_AGENT_RELAY_H_
