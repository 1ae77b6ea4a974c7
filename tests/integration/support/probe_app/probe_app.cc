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
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

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
    case 0: return "0";
    case EAGAIN: return "EAGAIN";
    case ECONNRESET: return "ECONNRESET";
    case EKEYEXPIRED: return "EKEYEXPIRED";
    case EBADMSG: return "EBADMSG";
    case EMSGSIZE: return "EMSGSIZE";
    case EPROTO: return "EPROTO";
    case EIO: return "EIO";
    case EPIPE: return "EPIPE";
    case ETIMEDOUT: return "ETIMEDOUT";
    default: return "OTHER";
  }
}

char PatternByte(uint64_t i) { return static_cast<char>((i * 131 + 7) >> 3); }

using ktls::testing::Sha256;

std::map<std::string, std::string> ParseFlags(int argc, char** argv, int first) {
  std::map<std::string, std::string> flags;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) continue;
    const size_t eq = a.find('=');
    if (eq == std::string::npos) {
      flags[a.substr(2)] = "1";
    } else {
      flags[a.substr(2, eq - 2)] = a.substr(eq + 1);
    }
  }
  return flags;
}

std::string Flag(const std::map<std::string, std::string>& f, const std::string& k,
                 const std::string& fallback = "") {
  auto it = f.find(k);
  return it == f.end() ? fallback : it->second;
}

std::string ConnLine(const char* kind, const ktls::Connection& c) {
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
  std::string s = std::string("result=") + (n == 0 ? "eof" : "error") + " errno=" +
                  (n == 0 ? "0" : ErrnoName(err));
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

void ServeConnection(ktls::Connection conn) {
  const uint64_t id = conn.info().connection_id;
  const std::string tag = " id=" + std::to_string(id);
  Print(ConnLine("PROBE-CONN", conn));
  std::string in;
  uint64_t bytes_in = 0;
  uint32_t skipped = 0;
  std::vector<char> buf(64 * 1024);
  ktls_record_info info{};
  ssize_t n = 0;
  int err = 0;
  // Reads more into `in`; false at the end of the stream (n, err, info say how it ended).
  auto fill = [&]() -> bool {
    for (;;) {
      n = conn.Read(buf.data(), buf.size(), &info);
      err = errno;
      skipped += info.skipped_records;
      if (n > 0) {
        in.append(buf.data(), static_cast<size_t>(n));
        bytes_in += static_cast<uint64_t>(n);
        return true;
      }
      if (n < 0 && err == EINTR) continue;
      return false;
    }
  };
  bool closed_write = false;
  bool ended = false;
  while (!ended) {
    size_t nl;
    while ((nl = in.find('\n')) == std::string::npos) {
      if (!fill()) {
        ended = true;
        break;
      }
    }
    if (ended) break;
    std::string line = in.substr(0, nl);
    in.erase(0, nl + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    Print("PROBE-GOT" + tag + " line=" + line);
    std::string reply;
    if (line == "PING") {
      reply = "PONG\n";
    } else if (line == "INFO") {
      reply = std::string(conn.json()) + "\n";
    } else if (line.rfind("SEND ", 0) == 0) {
      const uint64_t count = std::strtoull(line.c_str() + 5, nullptr, 10);
      std::string chunk;
      for (uint64_t off = 0; off < count;) {
        const size_t len = static_cast<size_t>(std::min<uint64_t>(count - off, 1 << 16));
        chunk.resize(len);
        for (size_t i = 0; i < len; ++i) chunk[i] = PatternByte(off + i);
        if (!WriteAll(conn.fd(), chunk.data(), len)) break;
        off += len;
      }
      continue;
    } else if (line.rfind("SINK ", 0) == 0) {
      const uint64_t count = std::strtoull(line.c_str() + 5, nullptr, 10);
      Sha256 sha;
      uint64_t got = 0;
      while (got < count) {
        if (in.empty() && !fill()) break;
        const size_t take = static_cast<size_t>(std::min<uint64_t>(count - got, in.size()));
        sha.Update(in.data(), take);
        in.erase(0, take);
        got += take;
      }
      if (got < count) {
        ended = true;
        break;
      }
      reply = "SHA256 " + sha.FinalHex() + "\n";
    } else if (line == "CLOSE") {
      const int rc = ktls_shutdown(conn.fd(), SHUT_WR);
      closed_write = true;
      Print("PROBE-CLOSE" + tag + " rc=" + std::to_string(rc) +
            " errno=" + (rc == 0 ? "0" : ErrnoName(errno)));
      continue;
    } else {
      reply = "ECHO " + line + "\n";
    }
    if (!closed_write) WriteAll(conn.fd(), reply.data(), reply.size());
  }
  Print("PROBE-END" + tag + " " + EndFields(n, err, info) + " skipped=" + std::to_string(skipped) +
        " bytes_in=" + std::to_string(bytes_in) + ErrorField(n, info));
  // A clean end is answered with close_notify; after an error the connection is just closed.
  if (n == 0 && !closed_write) ktls_shutdown(conn.fd(), SHUT_WR);
}

int Serve(const std::map<std::string, std::string>& f) {
  ktls::Agent agent;
  const uint32_t credits = static_cast<uint32_t>(std::stoul(Flag(f, "credits", "16")));
  ktls::Status s = ktls::Agent::Connect(Flag(f, "agent_socket"), "probe", credits, &agent);
  if (!s) {
    Print("PROBE-FATAL error=" + s.ToString());
    return 1;
  }
  Print("PROBE-READY agent_version=" + agent.agent_version());
  for (;;) {
    ktls::Connection conn;
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

Transfer Run(ktls::Connection& conn, uint64_t send_bytes, uint64_t recv_bytes) {
  Transfer t;
  const int fd = conn.fd();
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  Sha256 sent_sha, recv_sha;
  std::string chunk(64 * 1024, '\0');
  size_t chunk_off = 0, chunk_len = 0;
  std::vector<char> buf(256 * 1024);
  bool write_closed = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (;;) {
    if (std::chrono::steady_clock::now() > deadline) {
      t.note = "timed out";
      t.end_n = -1;
      t.end_err = ETIMEDOUT;
      break;
    }
    // Both directions done: end our write side cleanly, then read to the end.
    if (!write_closed && t.sent == send_bytes && chunk_off == chunk_len && t.received >= recv_bytes) {
      if (ktls_shutdown(fd, SHUT_WR) == 0) {
        write_closed = true;
      } else if (errno != EAGAIN) {
        t.note = std::string("shutdown: ") + std::strerror(errno);
        t.end_n = -1;
        t.end_err = errno;
        break;
      }
    }
    pollfd p{fd, POLLIN, 0};
    if (!write_closed && (t.sent < send_bytes || chunk_off < chunk_len || t.received >= recv_bytes)) {
      p.events |= POLLOUT;
    }
    if (::poll(&p, 1, 1000) < 0 && errno != EINTR) break;
    if (p.revents & POLLIN) {
      bool got_data = false;
      for (;;) {
        ktls_record_info info{};
        const ssize_t n = conn.Read(buf.data(), buf.size(), &info);
        const int err = errno;
        t.skipped += info.skipped_records;
        if (n > 0) {
          recv_sha.Update(buf.data(), static_cast<size_t>(n));
          t.received += static_cast<uint64_t>(n);
          got_data = true;
          continue;
        }
        if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
          if (!got_data && info.skipped_records > 0) ++t.control_only_wakeups;
          break;
        }
        if (n < 0 && err == EINTR) continue;
        t.end_n = n;
        t.end_err = err;
        t.end_info = info;
        t.sent_sha = sent_sha.FinalHex();
        t.recv_sha = recv_sha.FinalHex();
        return t;
      }
    }
    if (!write_closed && (p.revents & POLLOUT)) {
      while (t.sent < send_bytes || chunk_off < chunk_len) {
        if (chunk_off == chunk_len) {
          chunk_len = static_cast<size_t>(std::min<uint64_t>(send_bytes - t.sent, chunk.size()));
          for (size_t i = 0; i < chunk_len; ++i) chunk[i] = PatternByte(t.sent + i);
          sent_sha.Update(chunk.data(), chunk_len);
          t.sent += chunk_len;
          chunk_off = 0;
        }
        const ssize_t w = ::send(fd, chunk.data() + chunk_off, chunk_len - chunk_off, MSG_NOSIGNAL);
        if (w < 0) {
          if (errno == EINTR) continue;
          if (errno != EAGAIN) t.note = std::string("send: ") + std::strerror(errno);
          break;
        }
        chunk_off += static_cast<size_t>(w);
      }
    }
    if (p.revents & (POLLERR | POLLNVAL)) {
      t.note = "poll error";
      break;
    }
  }
  t.sent_sha = sent_sha.FinalHex();
  t.recv_sha = recv_sha.FinalHex();
  return t;
}

int Dial(const std::map<std::string, std::string>& f) {
  ktls::Agent agent;
  ktls::Status s = ktls::Agent::Connect(Flag(f, "agent_socket"), "probe-dialer", 0, &agent);
  if (!s) {
    Print("PROBE-FATAL error=" + s.ToString());
    return 1;
  }
  ktls::DialOptions o;
  o.host = Flag(f, "host", "127.0.0.1");
  o.port = static_cast<uint16_t>(std::stoul(Flag(f, "port", "0")));
  o.sni = Flag(f, "sni");
  o.ca_file = Flag(f, "ca_file");
  o.expected_name = Flag(f, "expected_name");
  o.tls_version = Flag(f, "tls_version");
  o.insecure_skip_verify = Flag(f, "insecure") == "1";
  o.timeout_ms = static_cast<uint32_t>(std::stoul(Flag(f, "timeout_ms", "0")));
  const std::string alpn = Flag(f, "alpn");
  for (size_t start = 0; start < alpn.size();) {
    const size_t comma = std::min(alpn.find(',', start), alpn.size());
    if (comma > start) o.alpn.push_back(alpn.substr(start, comma - start));
    start = comma + 1;
  }
  const int count = std::stoi(Flag(f, "count", "1"));
  const uint64_t send_bytes = std::stoull(Flag(f, "send_bytes", "0"));
  const uint64_t recv_bytes = std::stoull(Flag(f, "recv_bytes", "0"));
  const uint64_t followup = std::stoull(Flag(f, "followup_bytes", "0"));
  int failures = 0;
  for (int i = 1; i <= count; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    ktls::Connection conn;
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
          " skipped=" + std::to_string(t.skipped) +
          " control_only_wakeups=" + std::to_string(t.control_only_wakeups) + " " +
          EndFields(t.end_n, t.end_err, t.end_info) +
          (t.note.empty() ? ErrorField(t.end_n, t.end_info) : " error=" + t.note));
  }
  return failures == 0 ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    std::fprintf(stderr, "usage: ktls-probe-app serve|dial --agent_socket=PATH ...\n");
    return 2;
  }
  const std::string mode = argv[1];
  const auto flags = ParseFlags(argc, argv, 2);
  if (Flag(flags, "agent_socket").empty()) {
    std::fprintf(stderr, "ktls-probe-app: --agent_socket is required\n");
    return 2;
  }
  if (mode == "serve") return Serve(flags);
  if (mode == "dial") return Dial(flags);
  std::fprintf(stderr, "ktls-probe-app: unknown mode %s\n", mode.c_str());
  return 2;
}
