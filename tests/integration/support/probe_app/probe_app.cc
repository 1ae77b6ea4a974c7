// ktls-probe-app: a test-only application on the client library's C API (through the header-only
// C++ wrapper, linked against libktls_client.so), for the app-side integration tests
// (tests/integration/app_*_test.cc). It prints what the library reported, one line per event, so
// a test can assert on the exact errno, alert name and message an application would see.
//
//   ktls-probe-app serve --agent_socket=PATH [--credits=N]
//     Takes inbound connections (one thread each) and runs a line protocol on each:
//       PING            -> "PONG"
//       INFO            -> the metadata as one JSON line
//       SEND n          -> n bytes of the pattern (byte i = (i * 131 + 7) >> 3)
//       SINK n          -> reads n raw bytes, answers "SHA256 <hex>"
//       CLOSE           -> ktls_shutdown(SHUT_WR) (close_notify), then reads to the end
//       anything else   -> "ECHO <line>"
//     Prints PROBE-CONN when a connection is taken, PROBE-GOT per command line, PROBE-CLOSE after
//     CLOSE, and PROBE-END when the read side ends (EOF or an error, with errno, alert, message).
//
//   ktls-probe-app dial --agent_socket=PATH --host=H --port=P [--sni= --alpn=a,b --ca_file=
//       --expected_name= --tls_version= --insecure --timeout_ms=] [--count=N] [--send_bytes=N]
//       [--recv_bytes=N] [--followup_bytes=0]
//     Dials N times in a row. Each connection runs non-blocking under poll(): sends send_bytes of
//     the pattern while reading until recv_bytes arrived, then close_notify, then reads to the end.
//     Connections after the first use followup_bytes for both. One PROBE-DIAL line each.
//
// Lines are "PROBE-<KIND> key=value ... error=<free text to the end of the line>".
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/options.h"
#include "ktls/ktls_client.hpp"
#include "tests/integration/support/digest.h"

namespace {

std::mutex out_mu;

void Print(const std::string& line) {
  std::lock_guard<std::mutex> lock(out_mu);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

const char* ErrnoName(int err) {
  switch (err) {
    case 0:
      return "0";
    case EAGAIN:
      return "EAGAIN";
    case ECONNRESET:
      return "ECONNRESET";
    case EKEYEXPIRED:
      return "EKEYEXPIRED";
    case EBADMSG:
      return "EBADMSG";
    case EMSGSIZE:
      return "EMSGSIZE";
    case EPROTO:
      return "EPROTO";
    case EIO:
      return "EIO";
    case EPIPE:
      return "EPIPE";
    case ETIMEDOUT:
      return "ETIMEDOUT";
    default:
      return "OTHER";
  }
}

char PatternByte(uint64_t i) { return static_cast<char>((i * 131 + 7) >> 3); }

using ktls::testing::Sha256;

// The command line of both modes (see the top of the file), on the shared parser.
struct ProbeOptions {
  std::string agent_socket;
  uint32_t credits = 16;  // serve
  // dial
  std::string host = "127.0.0.1";
  int port = 0;
  std::string sni;
  std::string alpn;
  std::string ca_file;
  std::string expected_name;
  std::string tls_version;
  bool insecure = false;
  uint32_t timeout_ms = 0;
  int count = 1;
  uint64_t send_bytes = 0;
  uint64_t recv_bytes = 0;
  uint64_t followup_bytes = 0;
};

void DeclareOptions(ktls::base::OptionParser& p, ProbeOptions& o) {
  p.Add("agent_socket", &o.agent_socket, "the agent's handoff socket (required)");
  p.Group("serve");
  p.Add("credits", &o.credits, "initial credits");
  p.Group("dial");
  p.Add("host", &o.host, "upstream host");
  p.Add("port", &o.port, "upstream port").Range(0, 65535);
  p.Add("sni", &o.sni, "server name to send");
  p.Add("alpn", &o.alpn, "comma-separated ALPN protocols");
  p.Add("ca_file", &o.ca_file, "CA bundle to verify the upstream");
  p.Add("expected_name", &o.expected_name, "name the upstream certificate must carry");
  p.Add("tls_version", &o.tls_version, "TLS version");
  p.Add("insecure", &o.insecure, "skip verifying the upstream");
  p.Add("timeout_ms", &o.timeout_ms, "dial timeout (0: the library's default)");
  p.Add("count", &o.count, "dials in a row").Range(0, 1 << 20);
  p.Add("send_bytes", &o.send_bytes, "bytes of the pattern to send on the first connection");
  p.Add("recv_bytes", &o.recv_bytes, "bytes to read on the first connection");
  p.Add("followup_bytes", &o.followup_bytes, "both, on the following connections");
}

std::string ConnLine(const char* kind, const ktls::app::Connection& c) {
  const ktls_conn_info& i = c.info();
  bool tx = false, rx = false;
  ktls_fd_offload_state(c.fd(), &tx, &rx);
  return std::string(kind) + " id=" + std::to_string(i.connection_id) +
         " data_path=" + (i.data_path == KTLS_DATA_PATH_KTLS ? "ktls" : "relay") +
         " tls_version=" + i.tls_version + " cipher=" + i.cipher +
         " resumed=" + (i.resumed ? "1" : "0") + " outbound=" + (i.outbound ? "1" : "0") +
         " kernel_tx=" + (tx ? "1" : "0") + " kernel_rx=" + (rx ? "1" : "0") +
         " pending=" + std::to_string(i.initial_data_bytes);
}

std::string EndFields(ssize_t n, int err, const ktls_record_info& info) {
  std::string s = std::string("result=") + (n == 0 ? "eof" : "error") +
                  " errno=" + (n == 0 ? "0" : ErrnoName(err));
  s += std::string(" alert=") + (info.alert_name != nullptr ? info.alert_name : "-");
  return s;
}

std::string ErrorField(ssize_t n, const ktls_record_info& info) {
  return std::string(" error=") + (n != 0 && info.error != nullptr ? info.error : "-");
}

// ---- serve ----------------------------------------------------------------------------------

bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// One inbound connection running the line protocol (see the top of the file).
class LineSession {
 public:
  explicit LineSession(ktls::app::Connection conn)
      : conn_(std::move(conn)), tag_(" id=" + std::to_string(conn_.info().connection_id)) {}

  void Run() {
    Print(ConnLine("PROBE-CONN", conn_));
    std::string line;
    while (NextLine(&line)) {
      Print("PROBE-GOT" + tag_ + " line=" + line);
      if (!Answer(line)) break;
    }
    Print("PROBE-END" + tag_ + " " + EndFields(n_, err_, info_) +
          " skipped=" + std::to_string(skipped_) + " bytes_in=" + std::to_string(bytes_in_) +
          ErrorField(n_, info_));
    // A clean end is answered with close_notify; after an error the connection is just closed.
    if (n_ == 0 && !closed_write_) ktls_shutdown(conn_.fd(), SHUT_WR);
  }

 private:
  // Reads more into in_; false at the end of the stream (n_, err_, info_ say how it ended).
  bool Fill() {
    for (;;) {
      n_ = conn_.Read(buf_.data(), buf_.size(), &info_);
      err_ = errno;
      skipped_ += info_.skipped_records;
      if (n_ > 0) {
        in_.append(buf_.data(), static_cast<size_t>(n_));
        bytes_in_ += static_cast<uint64_t>(n_);
        return true;
      }
      if (n_ < 0 && err_ == EINTR) continue;
      return false;
    }
  }

  // The next line without its "\r\n"; false at the end of the stream.
  bool NextLine(std::string* line) {
    size_t nl;
    while ((nl = in_.find('\n')) == std::string::npos) {
      if (!Fill()) return false;
    }
    *line = in_.substr(0, nl);
    in_.erase(0, nl + 1);
    if (!line->empty() && line->back() == '\r') line->pop_back();
    return true;
  }

  void SendPattern(uint64_t count) {
    std::string chunk;
    for (uint64_t off = 0; off < count;) {
      const size_t len = static_cast<size_t>(std::min<uint64_t>(count - off, 1 << 16));
      chunk.resize(len);
      for (size_t i = 0; i < len; ++i) chunk[i] = PatternByte(off + i);
      if (!WriteAll(conn_.fd(), chunk.data(), len)) break;
      off += len;
    }
  }

  // Reads `count` raw bytes into a digest; false when the stream ended first.
  bool Sink(uint64_t count, std::string* hex) {
    Sha256 sha;
    uint64_t got = 0;
    while (got < count) {
      if (in_.empty() && !Fill()) break;
      const size_t take = static_cast<size_t>(std::min<uint64_t>(count - got, in_.size()));
      sha.Update(in_.data(), take);
      in_.erase(0, take);
      got += take;
    }
    *hex = sha.FinalHex();
    return got == count;
  }

  // Runs one command; false when the stream ended in the middle of it.
  bool Answer(const std::string& line) {
    std::string reply;
    if (line == "PING") {
      reply = "PONG\n";
    } else if (line == "INFO") {
      reply = std::string(conn_.json()) + "\n";
    } else if (line.rfind("SEND ", 0) == 0) {
      SendPattern(std::strtoull(line.c_str() + 5, nullptr, 10));
      return true;
    } else if (line.rfind("SINK ", 0) == 0) {
      std::string hex;
      if (!Sink(std::strtoull(line.c_str() + 5, nullptr, 10), &hex)) return false;
      reply = "SHA256 " + hex + "\n";
    } else if (line == "CLOSE") {
      const int rc = ktls_shutdown(conn_.fd(), SHUT_WR);
      closed_write_ = true;
      Print("PROBE-CLOSE" + tag_ + " rc=" + std::to_string(rc) +
            " errno=" + (rc == 0 ? "0" : ErrnoName(errno)));
      return true;
    } else {
      reply = "ECHO " + line + "\n";
    }
    if (!closed_write_) WriteAll(conn_.fd(), reply.data(), reply.size());
    return true;
  }

  ktls::app::Connection conn_;
  const std::string tag_;
  std::string in_;
  uint64_t bytes_in_ = 0;
  uint32_t skipped_ = 0;
  std::vector<char> buf_ = std::vector<char>(64 * 1024);
  ktls_record_info info_{};
  ssize_t n_ = 0;
  int err_ = 0;
  bool closed_write_ = false;
};

void ServeConnection(ktls::app::Connection conn) { LineSession(std::move(conn)).Run(); }

int Serve(const ProbeOptions& f) {
  ktls::app::Agent agent;
  const uint32_t credits = f.credits;
  ktls::app::Status s = ktls::app::Agent::Connect(f.agent_socket, "probe", credits, &agent);
  if (!s) {
    Print("PROBE-FATAL error=" + s.ToString());
    return 1;
  }
  Print("PROBE-READY agent_version=" + agent.agent_version());
  for (;;) {
    ktls::app::Connection conn;
    s = agent.Accept(&conn);
    if (s.code == KTLS_E_UNAVAILABLE) {
      Print("PROBE-AGENT-GONE error=" + s.message);
      while (!agent.Reconnect(1000)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      Print("PROBE-RESUBSCRIBED");
      continue;
    }
    if (!s) {
      Print("PROBE-REFUSED error=" + s.ToString());
      continue;
    }
    agent.Grant(1);
    std::thread(ServeConnection, std::move(conn)).detach();
  }
}

// ---- dial -------------------------------------------------------------------------------------

struct Transfer {
  uint64_t sent = 0;
  uint64_t received = 0;
  uint32_t skipped = 0;
  // Wake-ups whose readiness came from control records only: the read consumed them and
  // reported EAGAIN, never data.
  uint32_t control_only_wakeups = 0;
  std::string sent_sha;
  std::string recv_sha;
  ssize_t end_n = 0;
  int end_err = 0;
  ktls_record_info end_info{};
  std::string note;
};

// One dialed connection: sends send_bytes of the pattern while reading until recv_bytes arrived,
// then close_notify, then reads to the end; non-blocking under poll().
class TransferLoop {
 public:
  TransferLoop(ktls::app::Connection& conn, uint64_t send_bytes, uint64_t recv_bytes)
      : conn_(conn), fd_(conn.fd()), send_bytes_(send_bytes), recv_bytes_(recv_bytes) {}

  Transfer Run() {
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    for (;;) {
      if (std::chrono::steady_clock::now() > deadline) {
        t_.note = "timed out";
        t_.end_n = -1;
        t_.end_err = ETIMEDOUT;
        break;
      }
      if (!CloseWriteWhenDone()) break;
      pollfd p{fd_, POLLIN, 0};
      if (!write_closed_ &&
          (t_.sent < send_bytes_ || chunk_off_ < chunk_len_ || t_.received >= recv_bytes_)) {
        p.events |= POLLOUT;
      }
      if (::poll(&p, 1, 1000) < 0 && errno != EINTR) break;
      if ((p.revents & POLLIN) && ReadAvailable()) break;
      if (!write_closed_ && (p.revents & POLLOUT)) WriteAvailable();
      if (p.revents & (POLLERR | POLLNVAL)) {
        t_.note = "poll error";
        break;
      }
    }
    t_.sent_sha = sent_sha_.FinalHex();
    t_.recv_sha = recv_sha_.FinalHex();
    return t_;
  }

 private:
  // Both directions done: end our write side cleanly (then read to the end). False on an error.
  bool CloseWriteWhenDone() {
    if (write_closed_ || t_.sent != send_bytes_ || chunk_off_ != chunk_len_ ||
        t_.received < recv_bytes_) {
      return true;
    }
    if (ktls_shutdown(fd_, SHUT_WR) == 0) {
      write_closed_ = true;
    } else if (errno != EAGAIN) {
      t_.note = std::string("shutdown: ") + std::strerror(errno);
      t_.end_n = -1;
      t_.end_err = errno;
      return false;
    }
    return true;
  }

  // Reads until EAGAIN; true when the stream ended (end_n, end_err, end_info say how).
  bool ReadAvailable() {
    bool got_data = false;
    for (;;) {
      ktls_record_info info{};
      const ssize_t n = conn_.Read(buf_.data(), buf_.size(), &info);
      const int err = errno;
      t_.skipped += info.skipped_records;
      if (n > 0) {
        recv_sha_.Update(buf_.data(), static_cast<size_t>(n));
        t_.received += static_cast<uint64_t>(n);
        got_data = true;
        continue;
      }
      if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
        if (!got_data && info.skipped_records > 0) ++t_.control_only_wakeups;
        return false;
      }
      if (n < 0 && err == EINTR) continue;
      t_.end_n = n;
      t_.end_err = err;
      t_.end_info = info;
      return true;
    }
  }

  // Sends pattern bytes until EAGAIN or all of send_bytes went out.
  void WriteAvailable() {
    while (t_.sent < send_bytes_ || chunk_off_ < chunk_len_) {
      if (chunk_off_ == chunk_len_) {
        chunk_len_ = static_cast<size_t>(std::min<uint64_t>(send_bytes_ - t_.sent, chunk_.size()));
        for (size_t i = 0; i < chunk_len_; ++i) chunk_[i] = PatternByte(t_.sent + i);
        sent_sha_.Update(chunk_.data(), chunk_len_);
        t_.sent += chunk_len_;
        chunk_off_ = 0;
      }
      const ssize_t w =
          ::send(fd_, chunk_.data() + chunk_off_, chunk_len_ - chunk_off_, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) t_.note = std::string("send: ") + std::strerror(errno);
        return;
      }
      chunk_off_ += static_cast<size_t>(w);
    }
  }

  ktls::app::Connection& conn_;
  const int fd_;
  const uint64_t send_bytes_;
  const uint64_t recv_bytes_;
  Transfer t_;
  Sha256 sent_sha_;
  Sha256 recv_sha_;
  std::string chunk_ = std::string(64 * 1024, '\0');
  size_t chunk_off_ = 0;
  size_t chunk_len_ = 0;
  std::vector<char> buf_ = std::vector<char>(256 * 1024);
  bool write_closed_ = false;
};

Transfer Run(ktls::app::Connection& conn, uint64_t send_bytes, uint64_t recv_bytes) {
  return TransferLoop(conn, send_bytes, recv_bytes).Run();
}

int Dial(const ProbeOptions& f) {
  ktls::app::Agent agent;
  ktls::app::Status s = ktls::app::Agent::Connect(f.agent_socket, "probe-dialer", 0, &agent);
  if (!s) {
    Print("PROBE-FATAL error=" + s.ToString());
    return 1;
  }
  ktls::app::DialOptions o;
  o.host = f.host;
  o.port = static_cast<uint16_t>(f.port);
  o.sni = f.sni;
  o.ca_file = f.ca_file;
  o.expected_name = f.expected_name;
  o.tls_version = f.tls_version;
  o.insecure_skip_verify = f.insecure;
  o.timeout_ms = f.timeout_ms;
  const std::string& alpn = f.alpn;
  for (size_t start = 0; start < alpn.size();) {
    const size_t comma = std::min(alpn.find(',', start), alpn.size());
    if (comma > start) o.alpn.push_back(alpn.substr(start, comma - start));
    start = comma + 1;
  }
  const int count = f.count;
  const uint64_t send_bytes = f.send_bytes;
  const uint64_t recv_bytes = f.recv_bytes;
  const uint64_t followup = f.followup_bytes;
  int failures = 0;
  for (int i = 1; i <= count; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    ktls::app::Connection conn;
    s = agent.Dial(o, &conn);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    char ms_text[32];
    std::snprintf(ms_text, sizeof(ms_text), "%.2f", ms);
    if (!s) {
      ++failures;
      Print("PROBE-DIAL n=" + std::to_string(i) + " ok=0 ms=" + ms_text + " code=" + s.name() +
            " error=" + s.message);
      continue;
    }
    const std::string head = ConnLine("PROBE-DIAL", conn);
    Transfer t = Run(conn, i == 1 ? send_bytes : followup, i == 1 ? recv_bytes : followup);
    Print(head + " n=" + std::to_string(i) + " ok=1 ms=" + ms_text +
          " sent=" + std::to_string(t.sent) + " sent_sha=" + t.sent_sha +
          " recv=" + std::to_string(t.received) + " recv_sha=" + t.recv_sha +
          " skipped=" + std::to_string(t.skipped) + " control_only_wakeups=" +
          std::to_string(t.control_only_wakeups) + " " + EndFields(t.end_n, t.end_err, t.end_info) +
          (t.note.empty() ? ErrorField(t.end_n, t.end_info) : " error=" + t.note));
  }
  return failures == 0 ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  ProbeOptions options;
  ktls::base::OptionParser parser("ktls-probe-app",
                                  "usage: ktls-probe-app serve|dial --agent_socket=PATH ...\n");
  DeclareOptions(parser, options);
  parser.AllowPositional();
  if (absl::Status s = parser.Parse(argc, argv); !s.ok()) {
    std::fprintf(stderr, "ktls-probe-app: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (parser.help_requested()) {
    std::fputs(parser.Help().c_str(), stdout);
    return 0;
  }
  if (parser.positional().size() != 1) {
    std::fprintf(stderr, "usage: ktls-probe-app serve|dial --agent_socket=PATH ...\n");
    return 2;
  }
  const std::string& mode = parser.positional()[0];
  if (options.agent_socket.empty()) {
    std::fprintf(stderr, "ktls-probe-app: --agent_socket is required\n");
    return 2;
  }
  if (mode == "serve") return Serve(options);
  if (mode == "dial") return Dial(options);
  std::fprintf(stderr, "ktls-probe-app: unknown mode %s\n", mode.c_str());
  return 2;
}
