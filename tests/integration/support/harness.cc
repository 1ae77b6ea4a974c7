#include "tests/integration/support/harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/integration/support/digest.h"

namespace ktls::testing {
namespace {

std::string DemoAppBin() { return EnvOr("KTLS_DEMO_APP_BIN", KTLS_DEMO_APP_BIN); }

}  // namespace

bool ExpectOffload() { return EnvOr("KTLS_EXPECT_OFFLOAD", "0") == "1"; }

std::string AgentBin() { return EnvOr("KTLS_AGENT_BIN", KTLS_AGENT_BIN); }

std::vector<std::string> AgentArgv(const std::string& handoff_socket, const std::string& ready_file,
                                   const std::string& control_socket) {
  return {AgentBin(), "--listen=127.0.0.1:0", "--handoff_socket=" + handoff_socket,
          "--ready_file=" + ready_file, "--workers=2", "--log_level=info",
          // Per-test control socket and no fixed metrics port, so that several agents (tests, a
          // developer's own) coexist.
          "--control_socket=" + control_socket, "--metrics_address=127.0.0.1:0"};
}

int ReadyFilePort(const std::string& ready) {
  const size_t p = ready.find("listen=127.0.0.1:");
  return p == std::string::npos ? 0 : atoi(ready.c_str() + p + 17);
}

int ConnectLoopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    const int saved = errno;  // for the caller's message
    close(fd);
    errno = saved;
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  timeval tv{60, 0};  // no test may hang forever on a silent peer
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return fd;
}

std::string OpenSslErrors(const char* what) {
  std::string out = what;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    out += std::string(": ") + buf;
  }
  return out;
}

bool SslWriteAll(SSL* ssl, const std::string& data, size_t chunk,
                 const std::function<bool()>& flush, std::string* error) {
  size_t off = 0;
  while (off < data.size()) {
    const int n =
        SSL_write(ssl, data.data() + off, static_cast<int>(std::min(data.size() - off, chunk)));
    if (n > 0) {
      off += static_cast<size_t>(n);
      if (!flush()) return false;
      continue;
    }
    const int err = SSL_get_error(ssl, n);
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
      if (!flush()) return false;
      continue;
    }
    *error = OpenSslErrors("SSL_write");
    return false;
  }
  return flush();
}

void FreeBioPairClient(SSL* ssl, BIO* net, SSL_CTX* ctx, int fd) {
  if (ssl) SSL_free(ssl);
  if (net) BIO_free(net);
  if (ctx) SSL_CTX_free(ctx);
  if (fd >= 0) close(fd);
}

// ---------------------------------------------------------------------------------------------
Process::Process(std::vector<std::string> argv, const std::string& log_path)
    : log_path_(log_path), child_(std::move(argv), ChildStdio{-1, log_path, log_path}) {}

// ---------------------------------------------------------------------------------------------
Stack::Stack(AgentOptions options) {
  char tmpl[] = "/tmp/ktls-it-XXXXXX";
  dir_ = mkdtemp(tmpl);
  handoff_socket_ = dir_ + "/handoff.sock";
  std::vector<std::string> argv =
      AgentArgv(handoff_socket_, dir_ + "/ready", dir_ + "/control.sock");
  for (auto& f : options.extra_flags) argv.push_back(f);
  agent_ = std::make_unique<Process>(argv, dir_ + "/agent.log");
  std::string ready;
  for (int i = 0; i < 1500 && ready.empty(); ++i) {  // TCG guests are slow: up to 30 s
    if (!agent_->Running()) break;
    ready = ReadWholeFile(dir_ + "/ready");
    if (ready.empty()) SleepMs(20);
  }
  if (ready.empty()) {
    if (options.expect_ready)
      ADD_FAILURE() << "agent did not become ready; log:\n" << agent_->Log();
    return;
  }
  port_ = ReadyFilePort(ready);
  ktls_available_ = ready.find("ktls_available=1") != std::string::npos;
  if (options.start_app) StartApp(options.app_workers);
}

void Stack::StartApp(int workers) {
  std::vector<std::string> argv = {DemoAppBin(), "--agent_socket=" + handoff_socket_,
                                   "--workers=" + std::to_string(workers), "--app_name=it"};
  auto proc = std::make_unique<Process>(
      argv, dir_ + "/app" + std::to_string(extra_apps_.size() + (app_ ? 1 : 0)) + ".log");
  // The agent accepts only while an app has credit: a served /healthz means the app is in.
  bool up = false;
  for (int i = 0; i < 300 && !up; ++i) {
    Exchange e = Get(port_, "/healthz");
    up = e.ok && e.status == 200;
    if (!up) SleepMs(50);
  }
  if (!up)
    ADD_FAILURE() << "demo app not serving; app log:\n"
                  << proc->Log() << "\nagent log:\n"
                  << agent_->Log();
  if (!app_) app_ = std::move(proc);
  else extra_apps_.push_back(std::move(proc));
}

Stack::~Stack() {
  extra_apps_.clear();
  app_.reset();
  if (agent_) agent_->Terminate();
  std::string cmd = "rm -rf '" + dir_ + "'";
  if (::getenv("KTLS_KEEP_TEST_DIRS") == nullptr) (void)system(cmd.c_str());
}

// ---------------------------------------------------------------------------------------------
std::unique_ptr<TlsClient> TlsClient::Connect(int port, const ClientOptions& o,
                                              const std::string& first_request) {
  std::unique_ptr<TlsClient> c(new TlsClient());
  c->fd_ = ConnectLoopback(port);
  if (c->fd_ < 0) {
    c->error_ = "connect failed";
    return c;
  }
  c->ctx_ = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(c->ctx_, o.tls_version);
  SSL_CTX_set_max_proto_version(c->ctx_, o.tls_version);
  if (!o.cipher.empty()) {
    if (o.tls_version == TLS1_3_VERSION) SSL_CTX_set_ciphersuites(c->ctx_, o.cipher.c_str());
    else SSL_CTX_set_cipher_list(c->ctx_, o.cipher.c_str());
  }
  c->ssl_ = SSL_new(c->ctx_);
  if (!o.sni.empty()) SSL_set_tlsext_host_name(c->ssl_, o.sni.c_str());
  if (!o.alpn.empty()) {
    std::string wire;
    for (auto& p : o.alpn) {
      wire.push_back(static_cast<char>(p.size()));
      wire += p;
    }
    SSL_set_alpn_protos(c->ssl_, reinterpret_cast<const unsigned char*>(wire.data()), wire.size());
  }
  BIO* internal = nullptr;
  BIO_new_bio_pair(&internal, 1 << 17, &c->net_, 1 << 17);
  SSL_set_bio(c->ssl_, internal, internal);  // the SSL owns `internal`
  SSL_set_connect_state(c->ssl_);
  for (;;) {
    int rc = SSL_do_handshake(c->ssl_);
    if (rc == 1) break;
    int err = SSL_get_error(c->ssl_, rc);
    if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
      char buf[256];
      ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
      c->error_ = std::string("handshake: ") + buf;
      ERR_clear_error();
      return c;
    }
    if (!c->Pump(err == SSL_ERROR_WANT_READ)) {
      if (c->error_.empty()) c->error_ = "handshake: connection closed";
      return c;
    }
  }
  // The Finished is still in the BIO pair: queue the request behind it and flush both at once.
  if (!first_request.empty()) {
    if (SSL_write(c->ssl_, first_request.data(), static_cast<int>(first_request.size())) <= 0) {
      c->error_ = "write behind Finished failed";
      return c;
    }
  }
  if (!c->Pump(false)) c->error_ = "flush failed";
  return c;
}

TlsClient::~TlsClient() { FreeBioPairClient(ssl_, net_, ctx_, fd_); }

bool TlsClient::Pump(bool want_read) {
  // Flush everything OpenSSL produced in one write() where possible.
  std::string out;
  char buf[1 << 16];
  for (;;) {
    int n = BIO_read(net_, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, n);
  }
  size_t off = 0;
  while (off < out.size()) {
    ssize_t w = send(fd_, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      error_ = std::string("send: ") + strerror(errno);
      return false;
    }
    off += w;
  }
  if (!want_read) return true;
  size_t room = BIO_ctrl_get_write_guarantee(net_);
  if (room == 0) return true;
  ssize_t r = recv(fd_, buf, std::min(room, sizeof(buf)), 0);
  if (r < 0 && errno == EINTR) return true;
  if (r <= 0) {
    if (r < 0) error_ = std::string("recv: ") + strerror(errno);
    return false;
  }
  BIO_write(net_, buf, static_cast<int>(r));
  return true;
}

bool TlsClient::Write(const std::string& data) {
  const auto flush = [this] { return Pump(false); };
  return SslWriteAll(ssl_, data, 1 << 16, flush, &error_);
}

bool TlsClient::ReadResponse(int* status, std::map<std::string, std::string>* headers,
                             std::string* body) {
  auto fill = [this]() -> bool {
    char buf[1 << 16];
    for (;;) {
      int n = SSL_read(ssl_, buf, sizeof(buf));
      if (n > 0) {
        rbuf_.append(buf, n);
        return true;
      }
      int err = SSL_get_error(ssl_, n);
      if (err == SSL_ERROR_WANT_READ) {
        if (!Pump(true)) return false;
        continue;
      }
      if (err == SSL_ERROR_WANT_WRITE) {
        if (!Pump(false)) return false;
        continue;
      }
      error_ = err == SSL_ERROR_ZERO_RETURN ? "close_notify before response" : "SSL_read failed";
      return false;
    }
  };
  size_t hdr_end;
  while ((hdr_end = rbuf_.find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) return false;
  }
  std::string head = rbuf_.substr(0, hdr_end);
  rbuf_.erase(0, hdr_end + 4);
  std::istringstream hs(head);
  std::string line;
  std::getline(hs, line);
  *status = line.size() > 12 ? atoi(line.c_str() + 9) : 0;
  size_t content_length = 0;
  while (std::getline(hs, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string k = line.substr(0, colon);
    for (auto& ch : k) ch = static_cast<char>(tolower(ch));
    std::string v = line.substr(colon + 1);
    while (!v.empty() && v[0] == ' ') v.erase(0, 1);
    (*headers)[k] = v;
    if (k == "content-length") content_length = strtoull(v.c_str(), nullptr, 10);
  }
  while (rbuf_.size() < content_length) {
    if (!fill()) return false;
  }
  *body = rbuf_.substr(0, content_length);
  rbuf_.erase(0, content_length);
  return true;
}

void TlsClient::ShutdownWrite() {
  SSL_shutdown(ssl_);
  Pump(false);
  shutdown(fd_, SHUT_WR);
}

bool TlsClient::ReadCloseNotify() {
  char buf[4096];
  for (;;) {
    int n = SSL_read(ssl_, buf, sizeof(buf));
    if (n > 0) continue;  // drain
    int err = SSL_get_error(ssl_, n);
    if (err == SSL_ERROR_ZERO_RETURN) return true;
    if (err == SSL_ERROR_WANT_READ) {
      if (!Pump(true)) {
        error_ = "TCP EOF without close_notify";
        return false;
      }
      continue;
    }
    error_ = "error instead of close_notify";
    return false;
  }
}

Exchange Get(int port, const std::string& path, const ClientOptions& options) {
  Exchange e;
  auto c = TlsClient::Connect(port, options);
  if (!c->error().empty()) {
    e.error = c->error();
    return e;
  }
  if (!c->Write("GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n")) {
    e.error = c->error();
    return e;
  }
  std::map<std::string, std::string> h;
  e.ok = c->ReadResponse(&e.status, &h, &e.body);
  if (!e.ok) e.error = c->error();
  return e;
}

std::string JsonString(const std::string& json, const std::string& key) {
  std::string pat = "\"" + key + "\"";
  size_t p = json.find(pat);
  if (p == std::string::npos) return "";
  p = json.find(':', p + pat.size());
  if (p == std::string::npos) return "";
  p = json.find_first_not_of(" \t\n", p + 1);
  if (p == std::string::npos) return "";
  if (json[p] == '"') {
    size_t end = json.find('"', p + 1);
    return json.substr(p + 1, end - p - 1);
  }
  size_t end = json.find_first_of(",}\n", p);
  return json.substr(p, end - p);
}

bool JsonBool(const std::string& json, const std::string& key) {
  return JsonString(json, key) == "true";
}

bool SendRawAndAwaitClose(int port, const std::string& bytes) {
  int fd = ConnectLoopback(port);
  if (fd < 0) return false;
  timeval tv{15, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  char buf[4096];
  bool closed = false;
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n > 0) continue;  // an alert, then the close
    closed = n == 0 || (n < 0 && errno == ECONNRESET);
    break;
  }
  close(fd);
  return closed;
}

int RunCommand(const std::string& command, std::string* out) {
  out->clear();
  FILE* f = popen(command.c_str(), "r");
  if (!f) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out->append(buf, n);
  int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string Sha256Hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return HexEncode(md, len);
}

std::string BytesPattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + i % 26);
  return s;
}

}  // namespace ktls::testing
