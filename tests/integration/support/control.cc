#include "tests/integration/support/control.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "tests/integration/support/digest.h"
#include "tests/integration/support/process.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace ktls::testing {
namespace {

// SHA-256 of the certificate's DER, in hex (the control API's fingerprint).
std::string Fingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  X509_digest(cert, EVP_sha256(), md, &len);
  return HexEncode(md, len);
}

}  // namespace

std::map<std::string, std::string> ReadyInfo(const Stack& stack) {
  std::map<std::string, std::string> out;
  std::istringstream in(ReadWholeFile(stack.dir() + "/ready"));
  for (std::string line; std::getline(in, line);) {
    const size_t eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

Control::Control(const std::string& socket_path) {
  channel = grpc::CreateChannel("unix:" + socket_path, grpc::InsecureChannelCredentials());
  certs = v1::CertificateService::NewStub(channel);
  trust = v1::TrustService::NewStub(channel);
  tickets = v1::SessionTicketService::NewStub(channel);
  telemetry = v1::TelemetryService::NewStub(channel);
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return ctx;
}

std::string KtlsctlBin() {
  const char* v = std::getenv("KTLSCTL_BIN");
  return v != nullptr && *v != '\0' ? v : KTLSCTL_BIN;
}

CommandResult Ktlsctl(const std::string& socket, const std::vector<std::string>& args) {
  char tmpl[] = "/tmp/ktlsctl-out-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string out_path = dir + "/out";
  const std::string err_path = dir + "/err";
  std::vector<std::string> argv = {KtlsctlBin()};
  if (!socket.empty()) argv.push_back("--socket=" + socket);
  argv.insert(argv.end(), args.begin(), args.end());
  const int status =
      ChildProcess(std::move(argv), ChildStdio{-1, out_path, err_path}).WaitForExit();
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadWholeFile(out_path);
  r.err = ReadWholeFile(err_path);
  unlink(out_path.c_str());
  unlink(err_path.c_str());
  rmdir(dir.c_str());
  return r;
}

double Metrics::Get(const std::string& name, const std::string& labels) const {
  auto it = samples.find(labels.empty() ? name : name + "{" + labels + "}");
  return it == samples.end() ? -1 : it->second;
}

double Metrics::Sum(const std::string& name, const std::string& label_filter) const {
  double sum = 0;
  for (const auto& [key, value] : samples) {
    if (key != name && key.rfind(name + "{", 0) != 0) continue;
    if (!label_filter.empty() && key.find(label_filter) == std::string::npos) continue;
    sum += value;
  }
  return sum;
}

bool FetchMetrics(const std::string& host_port, Metrics* out, std::string* error) {
  const size_t colon = host_port.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::atoi(host_port.c_str() + colon + 1)));
  inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &a.sin_addr);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    *error = "connect " + host_port + ": " + strerror(errno);
    close(fd);
    return false;
  }
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string body;
  char buf[65536];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    body.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t end = body.find("\r\n\r\n");
  if (body.rfind("HTTP/1.", 0) != 0 || body.find(" 200 ") == std::string::npos ||
      end == std::string::npos) {
    *error = "bad response: " + body.substr(0, 200);
    return false;
  }
  std::istringstream in(body.substr(end + 4));
  out->samples.clear();
  out->types.clear();
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      out->types[name] = type;
      continue;
    }
    if (line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) {
      *error = "unparsable line: " + line;
      return false;
    }
    out->samples[line.substr(0, space)] = std::strtod(line.c_str() + space + 1, nullptr);
  }
  return true;
}

testcerts::TestCert MakeLeaf(const testcerts::TestCert& ca, const std::string& cn,
                             const std::vector<std::string>& names, long days) {
  testcerts::CertSpec spec;
  spec.common_name = cn;
  spec.dns_names = names;
  spec.not_after_offset_s = days * 86400;
  return testcerts::MakeCert(spec, &ca);
}

std::string FingerprintOfPem(const std::string& cert_pem) {
  BIO* bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (x == nullptr) return "";
  std::string out = Fingerprint(x);
  X509_free(x);
  return out;
}

std::string ServedFingerprint(int port, const std::string& sni, std::string* error,
                              int tls_version) {
  ClientOptions o;
  o.sni = sni;
  o.tls_version = tls_version;
  auto c = TlsClient::Connect(port, o);
  if (!c->error().empty()) {
    if (error != nullptr) *error = c->error();
    return "";
  }
  X509* peer = SSL_get1_peer_certificate(c->ssl());
  if (peer == nullptr) {
    if (error != nullptr) *error = "no peer certificate";
    return "";
  }
  std::string out = Fingerprint(peer);
  X509_free(peer);
  return out;
}

HandshakeResult Handshake(int port, const HandshakeOptions& o) {
  // OpenSSL writes to the socket with write(): a peer that already closed (a refused client
  // certificate in TLS 1.3 is reported after the client's handshake finished) must be an
  // EPIPE for this client, not a SIGPIPE for the whole test binary.
  static const bool sigpipe_ignored = [] {
    signal(SIGPIPE, SIG_IGN);
    return true;
  }();
  (void)sigpipe_ignored;
  HandshakeResult r;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, o.tls_version);
  SSL_CTX_set_max_proto_version(ctx, o.tls_version);
  // No client session cache: freeing a context flushes its cache, which marks every session
  // in it not resumable, including the one handed to the caller.
  if (o.client_cert != nullptr) {
    SSL_CTX_use_certificate(ctx, o.client_cert);
    SSL_CTX_use_PrivateKey(ctx, o.client_key);
  }
  SSL* ssl = SSL_new(ctx);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const auto error = [&](const std::string& what) {
    char buf[256] = {};
    const unsigned long e = ERR_get_error();
    if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    r.error = what + (e != 0 ? std::string(": ") + buf : std::string());
  };
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    r.error = std::string("connect: ") + strerror(errno);
  } else {
    SSL_set_fd(ssl, fd);
    if (!o.sni.empty()) SSL_set_tlsext_host_name(ssl, o.sni.c_str());
    if (o.resume != nullptr) SSL_set_session(ssl, o.resume);
    if (SSL_connect(ssl) != 1) {
      error("handshake");
    } else {
      r.resumed = SSL_session_reused(ssl) == 1;
      if (X509* peer = SSL_get1_peer_certificate(ssl)) {
        std::string pem;
        BIO* mem = BIO_new(BIO_s_mem());
        PEM_write_bio_X509(mem, peer);
        char* data = nullptr;
        const long len = BIO_get_mem_data(mem, &data);
        pem.assign(data, static_cast<size_t>(len));
        BIO_free(mem);
        X509_free(peer);
        r.fingerprint = FingerprintOfPem(pem);
      }
      r.ok = true;
      if (o.request) {
        const std::string req =
            "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        if (SSL_write(ssl, req.data(), static_cast<int>(req.size())) <= 0) {
          error("write");
          r.ok = false;
        } else {
          char buf[4096];
          for (;;) {
            const int n = SSL_read(ssl, buf, sizeof(buf));
            if (n <= 0) break;
            r.response.append(buf, static_cast<size_t>(n));
            if (r.response.find("\r\n\r\n") != std::string::npos &&
                r.response.find("\r\n\r\nok") != std::string::npos) {
              break;
            }
          }
          ERR_clear_error();
        }
      }
      r.session = SSL_get1_session(ssl);
      // A connection freed without close_notify marks its session not resumable.
      SSL_shutdown(ssl);
    }
  }
  SSL_free(ssl);
  close(fd);
  SSL_CTX_free(ctx);
  return r;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/ktls-ct-XXXXXX";
  path_ = mkdtemp(tmpl);
}

TempDir::~TempDir() {
  if (std::getenv("KTLS_KEEP_TEST_DIRS") != nullptr) return;
  std::string out;
  RunCommand("rm -rf '" + path_ + "'", &out);
}

std::string TempDir::Write(const std::string& name, const std::string& contents, int mode) const {
  const std::string path = path_ + "/" + name;
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  size_t off = 0;
  while (off < contents.size()) {
    const ssize_t n = write(fd, contents.data() + off, contents.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  close(fd);
  return path;
}

}  // namespace ktls::testing
