#include "local_tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "client/lib/openssl_errors.h"

namespace ktls::demo {
namespace {

constexpr size_t kMaxRecord = 16 * 1024;
constexpr unsigned char kSessionIdContext[] = "ktls-demo-app";

// Process-wide, created before fork, never freed (lives as long as the workers).
SSL_CTX* g_ctx = nullptr;

absl::StatusOr<SSL_CTX*> NewServerContext(const Options& o) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) {
    return absl::InternalError(absl::StrCat("SSL_CTX_new: ", client::DrainOpenSslErrors()));
  }
  auto fail = [&](const std::string& what) {
    std::string why = client::DrainOpenSslErrors();
    SSL_CTX_free(ctx);
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", why));
  };
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx, o.tls_cert.c_str()) != 1) {
    return fail(absl::StrCat("--tls_cert=", o.tls_cert));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, o.tls_key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return fail(absl::StrCat("--tls_key=", o.tls_key));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) return fail("--tls_key does not match --tls_cert");
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_session_id_context(ctx, kSessionIdContext, sizeof(kSessionIdContext) - 1);
  return ctx;
}

// HOST:PORT or [V6]:PORT; port 0 lets the kernel pick.
absl::StatusOr<int> Listen(const std::string& hostport, std::string* bound) {
  const size_t colon = hostport.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat("\"", hostport, "\": expected HOST:PORT"));
  }
  std::string host = hostport.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::string port = hostport.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("\"", hostport, "\": ", gai_strerror(rc)));
  }
  const int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ::freeaddrinfo(res);
    return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  }
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 4096) != 0) {
    const int err = errno;
    ::freeaddrinfo(res);
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("listen on ", hostport, ": ", std::strerror(err)));
  }
  ::freeaddrinfo(res);
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  char addr[INET6_ADDRSTRLEN] = "?";
  int p = 0;
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
    p = ntohs(in->sin_port);
    *bound = absl::StrCat(addr, ":", p);
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
    p = ntohs(in6->sin6_port);
    *bound = absl::StrCat("[", addr, "]:", p);
  }
  return fd;
}

}  // namespace

absl::StatusOr<LocalListeners> OpenLocalListeners(const Options& o) {
  LocalListeners l;
  if (!o.tls_listen.empty()) {
    absl::StatusOr<SSL_CTX*> ctx = NewServerContext(o);
    if (!ctx.ok()) return ctx.status();
    g_ctx = *ctx;
    absl::StatusOr<int> fd = Listen(o.tls_listen, &l.tls_address);
    if (!fd.ok()) return fd.status();
    l.tls_fd = *fd;
  }
  if (!o.plain_listen.empty()) {
    absl::StatusOr<int> fd = Listen(o.plain_listen, &l.plain_address);
    if (!fd.ok()) return fd.status();
    l.plain_fd = *fd;
  }
  return l;
}

std::unique_ptr<LocalTlsSession> LocalTlsSession::Create(int fd) {
  if (g_ctx == nullptr) {
    errno = EINVAL;
    return nullptr;
  }
  SSL* ssl = SSL_new(g_ctx);
  if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    ERR_clear_error();
    errno = ENOMEM;
    return nullptr;
  }
  SSL_set_accept_state(ssl);
  return std::unique_ptr<LocalTlsSession>(new LocalTlsSession(ssl, fd));
}

LocalTlsSession::~LocalTlsSession() { SSL_free(ssl_); }

// Turns an SSL_read/SSL_write result into the syscall convention.
ssize_t LocalTlsSession::Result(int rc, bool reading) {
  if (rc > 0) return rc;
  const int saved_errno = errno;
  const int err = SSL_get_error(ssl_, rc);
  const bool queued = ERR_peek_error() != 0;
  ERR_clear_error();
  switch (err) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_ZERO_RETURN:
      return 0;
    case SSL_ERROR_SYSCALL:
      if (!queued && (saved_errno == 0 || rc == 0)) {
        if (reading) return 0;  // EOF without close_notify
        errno = EPIPE;
        return -1;
      }
      errno = queued ? EPROTO : saved_errno;
      return -1;
    default:
      errno = EPROTO;
      return -1;
  }
}

ssize_t LocalTlsSession::Read(void* buf, size_t len) {
  ERR_clear_error();
  errno = 0;
  const int n = SSL_read(ssl_, buf, static_cast<int>(std::min<size_t>(len, INT32_MAX)));
  return Result(n, true);
}

ssize_t LocalTlsSession::Write(const void* buf, size_t len) {
  ERR_clear_error();
  errno = 0;
  const int n = SSL_write(ssl_, buf, static_cast<int>(std::min<size_t>(len, INT32_MAX)));
  return Result(n, false);
}

ssize_t LocalTlsSession::Writev(const iovec* iov, int count) {
  if (count <= 0) return 0;
  if (count == 1 || iov[0].iov_len >= kMaxRecord) return Write(iov[0].iov_base, iov[0].iov_len);
  // Retries after EAGAIN see the same leading bytes (the caller's queue only grows at the back),
  // so the gathered buffer never shrinks between attempts, as SSL_write requires.
  gather_.clear();
  for (int i = 0; i < count && gather_.size() < kMaxRecord; ++i) {
    const size_t take = std::min(iov[i].iov_len, kMaxRecord - gather_.size());
    gather_.append(static_cast<const char*>(iov[i].iov_base), take);
  }
  return Write(gather_.data(), gather_.size());
}

int LocalTlsSession::CloseNotify() {
  ERR_clear_error();
  const int rc = SSL_shutdown(ssl_);
  if (rc >= 0) {
    ::shutdown(fd_, SHUT_WR);
    return 0;
  }
  const int err = SSL_get_error(ssl_, rc);
  ERR_clear_error();
  if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
    errno = EAGAIN;
    return -1;
  }
  ::shutdown(fd_, SHUT_WR);  // e.g. the handshake never finished: just end the stream
  errno = EPIPE;
  return -1;
}

}  // namespace ktls::demo
