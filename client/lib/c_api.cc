// The C API's handles (ktls/ktls_client.h) over AgentSubscription and HandedConnection.
//
// Everything here translates: absl::Status to a KTLS_* code plus a thread-local message, protobuf
// metadata to the plain ktls_conn_info struct (its strings point into the conn's own copy of the
// protobuf, which is never modified after the conn is built, so the pointers stay valid), and C
// options to a DialRequest. No exception crosses the boundary: the library is built with the
// default new-handler, so allocation failure terminates, as in the rest of the project.
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/json.h"
#include "client/lib/app.h"
#include "ktls/ktls_client.h"

struct ktls_agent {
  std::unique_ptr<ktls::client::AgentSubscription> sub;
  std::string agent_version;  // stable copy for ktls_agent_version()
};

struct ktls_conn {
  ktls::client::HandedConnection handed;
  ktls_conn_info info{};
  std::vector<const char*> dns_sans;
  std::vector<const char*> uri_sans;
  std::string json;
};

namespace ktls::client {
namespace {

thread_local std::string last_error;

int Code(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return KTLS_OK;
    case absl::StatusCode::kInvalidArgument:
      return KTLS_E_MALFORMED;
    case absl::StatusCode::kNotFound:
      return KTLS_E_NOT_FOUND;
    case absl::StatusCode::kUnavailable:
      return KTLS_E_UNAVAILABLE;
    case absl::StatusCode::kPermissionDenied:
      return KTLS_E_PERMISSION;
    case absl::StatusCode::kFailedPrecondition:
      return KTLS_E_PROTOCOL;
    case absl::StatusCode::kDeadlineExceeded:
      return KTLS_E_TIMEOUT;
    case absl::StatusCode::kAborted:
      return KTLS_E_DIAL;
    case absl::StatusCode::kResourceExhausted:
      return KTLS_E_RESOURCE;
    default:
      return KTLS_E_INTERNAL;
  }
}

int Fail(int code, std::string message) {
  last_error = std::move(message);
  return code;
}

// `argument_error`: what an kInvalidArgument status means at this call. Connecting reports a bad
// path that way (a caller bug), while receiving reports a refused message (the agent's).
int FromStatus(const absl::Status& s, int argument_error = KTLS_E_MALFORMED) {
  if (s.ok()) return KTLS_OK;
  const int code = s.code() == absl::StatusCode::kInvalidArgument ? argument_error : Code(s.code());
  return Fail(code, std::string(s.message()));
}

absl::Duration Timeout(int timeout_ms) {
  return timeout_ms > 0 ? absl::Milliseconds(timeout_ms) : kDefaultSubscribeTimeout;
}

const char* DataPathName(int32_t path) {
  switch (path) {
    case KTLS_DATA_PATH_KTLS:
      return "ktls";
    case KTLS_DATA_PATH_RELAY:
      return "relay";
    default:
      return "unspecified";
  }
}

void AddList(base::JsonWriter& w, const char* key, size_t n, const char* const* v) {
  w.Key(key).BeginArray();
  for (size_t x = 0; x < n; ++x) w.String(v[x]);
  w.EndArray();
}

std::string BuildJson(const ktls_conn_info& i) {
  base::JsonWriter w;
  w.BeginObject();
  w.Field("connection_id", uint64_t{i.connection_id});
  w.Field("listener", i.listener);
  w.Field("peer_address", i.peer_address);
  w.Field("peer_port", uint64_t{i.peer_port});
  w.Field("local_address", i.local_address);
  w.Field("local_port", uint64_t{i.local_port});
  w.Field("sni", i.sni);
  w.Field("alpn", i.alpn);
  w.Field("tls_version", i.tls_version);
  w.Field("tls_version_code", uint64_t{i.tls_version_code});
  w.Field("cipher", i.cipher);
  w.Field("data_path", static_cast<uint64_t>(i.data_path));
  w.Field("data_path_name", DataPathName(i.data_path));
  w.Field("ktls_tx", static_cast<uint64_t>(i.ktls_tx));
  w.Field("ktls_rx", static_cast<uint64_t>(i.ktls_rx));
  w.Field("fallback_reason", i.fallback_reason);
  w.Field("resumed", static_cast<bool>(i.resumed));
  w.Field("handshake_micros", uint64_t{i.handshake_micros});
  w.Field("peer_cert_presented", static_cast<bool>(i.peer_cert_presented));
  w.Field("peer_cert_verified", static_cast<bool>(i.peer_cert_verified));
  w.Field("peer_subject", i.peer_subject);
  w.Field("peer_issuer", i.peer_issuer);
  w.Field("peer_sha256_fingerprint", i.peer_sha256_fingerprint);
  AddList(w, "peer_dns_sans", i.peer_dns_san_count, i.peer_dns_sans);
  AddList(w, "peer_uri_sans", i.peer_uri_san_count, i.peer_uri_sans);
  w.Field("initial_data_bytes", uint64_t{i.initial_data_bytes});
  w.Field("outbound", static_cast<bool>(i.outbound));
  w.Field("dial_request_id", uint64_t{i.dial_request_id});
  w.EndObject();
  return w.Take();
}

ktls_conn* NewConn(HandedConnection handed) {
  auto* c = new ktls_conn;
  c->handed = std::move(handed);
  const v1::ConnectionInfo& p = c->handed.info;
  ktls_conn_info& i = c->info;
  i.connection_id = p.connection_id();
  i.listener = p.listener().c_str();
  i.peer_address = p.peer().address().c_str();
  i.peer_port = p.peer().port();
  i.local_address = p.local().address().c_str();
  i.local_port = p.local().port();
  i.sni = p.sni().c_str();
  i.alpn = p.alpn().c_str();
  i.tls_version = p.tls_version().c_str();
  i.tls_version_code = p.tls_version_code();
  i.cipher = p.cipher().c_str();
  i.data_path = p.data_path();
  i.ktls_tx = p.ktls_tx();
  i.ktls_rx = p.ktls_rx();
  i.fallback_reason = p.fallback_reason().c_str();
  i.resumed = p.resumed();
  i.handshake_micros = p.handshake_micros();
  const v1::PeerIdentity& id = p.peer_identity();
  i.peer_cert_presented = id.presented();
  i.peer_cert_verified = id.verified();
  i.peer_subject = id.subject().c_str();
  i.peer_issuer = id.issuer().c_str();
  i.peer_sha256_fingerprint = id.sha256_fingerprint().c_str();
  for (const std::string& s : id.dns_sans()) c->dns_sans.push_back(s.c_str());
  for (const std::string& s : id.uri_sans()) c->uri_sans.push_back(s.c_str());
  i.peer_dns_san_count = c->dns_sans.size();
  i.peer_dns_sans = c->dns_sans.data();
  i.peer_uri_san_count = c->uri_sans.size();
  i.peer_uri_sans = c->uri_sans.data();
  i.initial_data_bytes = c->handed.initial_data_bytes;
  i.outbound = p.outbound();
  i.dial_request_id = p.dial_request_id();
  c->json = BuildJson(i);
  return c;
}

int NullHandle(const char* what) {
  return Fail(KTLS_E_INVALID_ARGUMENT, absl::StrCat(what, " is NULL"));
}

}  // namespace
}  // namespace ktls::client

using ktls::client::FromStatus;
using ktls::client::NullHandle;

extern "C" {

int ktls_client_api_version(void) { return KTLS_CLIENT_API_VERSION; }

const char* ktls_status_name(int status) {
  switch (status) {
    case KTLS_OK:
      return "KTLS_OK";
    case KTLS_E_AGAIN:
      return "KTLS_E_AGAIN";
    case KTLS_E_INVALID_ARGUMENT:
      return "KTLS_E_INVALID_ARGUMENT";
    case KTLS_E_NOT_FOUND:
      return "KTLS_E_NOT_FOUND";
    case KTLS_E_UNAVAILABLE:
      return "KTLS_E_UNAVAILABLE";
    case KTLS_E_PERMISSION:
      return "KTLS_E_PERMISSION";
    case KTLS_E_PROTOCOL:
      return "KTLS_E_PROTOCOL";
    case KTLS_E_TIMEOUT:
      return "KTLS_E_TIMEOUT";
    case KTLS_E_MALFORMED:
      return "KTLS_E_MALFORMED";
    case KTLS_E_DIAL:
      return "KTLS_E_DIAL";
    case KTLS_E_RESOURCE:
      return "KTLS_E_RESOURCE";
    case KTLS_E_INTERNAL:
      return "KTLS_E_INTERNAL";
    default:
      return "KTLS_E_UNKNOWN";
  }
}

const char* ktls_last_error(void) { return ktls::client::last_error.c_str(); }

int ktls_agent_connect(const char* socket_path, const char* app_name, uint32_t initial_credits,
                       int timeout_ms, ktls_agent** out) {
  if (out == nullptr) return NullHandle("out");
  *out = nullptr;
  if (socket_path == nullptr) return NullHandle("socket_path");
  auto sub =
      ktls::client::AgentSubscription::Connect(socket_path, app_name != nullptr ? app_name : "",
                                               initial_credits, ktls::client::Timeout(timeout_ms));
  if (!sub.ok()) return FromStatus(sub.status(), KTLS_E_INVALID_ARGUMENT);
  auto* a = new ktls_agent;
  a->sub = std::move(*sub);
  a->agent_version = a->sub->subscribed().agent_version();
  *out = a;
  return KTLS_OK;
}

void ktls_agent_close(ktls_agent* agent) { delete agent; }

int ktls_agent_fd(const ktls_agent* agent) {
  if (agent == nullptr) return NullHandle("agent");
  return agent->sub->fd();
}

int ktls_agent_set_nonblocking(ktls_agent* agent, int non_blocking) {
  if (agent == nullptr) return NullHandle("agent");
  agent->sub->SetNonBlocking(non_blocking != 0);
  return KTLS_OK;
}

int ktls_agent_accept(ktls_agent* agent, ktls_conn** out) {
  if (out == nullptr) return NullHandle("out");
  *out = nullptr;
  if (agent == nullptr) return NullHandle("agent");
  auto got = agent->sub->Receive();
  if (!got.ok()) return FromStatus(got.status());
  if (!got->has_value()) return KTLS_E_AGAIN;  // not an error: last_error untouched
  *out = ktls::client::NewConn(std::move(**got));
  return KTLS_OK;
}

int ktls_agent_grant(ktls_agent* agent, uint32_t n) {
  if (agent == nullptr) return NullHandle("agent");
  return FromStatus(agent->sub->GrantCredits(n));
}

uint64_t ktls_agent_outstanding_credits(const ktls_agent* agent) {
  return agent != nullptr ? agent->sub->outstanding_credits() : 0;
}

int ktls_agent_connected(const ktls_agent* agent) {
  return agent != nullptr && agent->sub->connected() ? 1 : 0;
}

int ktls_agent_reconnect(ktls_agent* agent, int timeout_ms) {
  if (agent == nullptr) return NullHandle("agent");
  const int rc =
      FromStatus(agent->sub->Reconnect(ktls::client::Timeout(timeout_ms)), KTLS_E_INVALID_ARGUMENT);
  if (rc == KTLS_OK) agent->agent_version = agent->sub->subscribed().agent_version();
  return rc;
}

const char* ktls_agent_version(const ktls_agent* agent) {
  return agent != nullptr ? agent->agent_version.c_str() : "";
}

uint64_t ktls_agent_subscriber_id(const ktls_agent* agent) {
  return agent != nullptr ? agent->sub->subscribed().subscriber_id() : 0;
}

int ktls_agent_dial(ktls_agent* agent, const ktls_dial_options* options, ktls_conn** out) {
  if (out == nullptr) return NullHandle("out");
  *out = nullptr;
  if (agent == nullptr) return NullHandle("agent");
  if (options == nullptr) return NullHandle("options");
  // Fields are read only when the caller's struct is large enough to hold them, so a binary built
  // against an older (shorter) ktls_dial_options keeps working when fields are appended.
  const size_t size = options->struct_size;
  if (size < offsetof(ktls_dial_options, port) + sizeof(options->port)) {
    return ktls::client::Fail(
        KTLS_E_INVALID_ARGUMENT,
        "ktls_dial_options.struct_size is not set (use KTLS_DIAL_OPTIONS_INIT)");
  }
  auto has = [size](size_t offset, size_t field) { return offset + field <= size; };
#define KTLS_FIELD(f) has(offsetof(ktls_dial_options, f), sizeof(options->f))
  if (options->host == nullptr || options->host[0] == '\0' || options->port == 0) {
    return ktls::client::Fail(KTLS_E_INVALID_ARGUMENT, "dial needs a host and a port");
  }
  ktls::v1::DialRequest r;
  r.set_host(options->host);
  r.set_port(options->port);
  if (KTLS_FIELD(sni) && options->sni != nullptr) r.set_sni(options->sni);
  if (KTLS_FIELD(alpn) && options->alpn != nullptr && options->alpn[0] != '\0') {
    std::string_view list = options->alpn;
    while (!list.empty()) {
      const size_t comma = std::min(list.find(','), list.size());
      if (comma > 0) r.add_alpn(std::string(list.substr(0, comma)));
      list.remove_prefix(std::min(comma + 1, list.size()));
    }
  }
  if (KTLS_FIELD(ca_file) && options->ca_file != nullptr) r.set_ca_file(options->ca_file);
  if (KTLS_FIELD(expected_name) && options->expected_name != nullptr) {
    r.set_expected_name(options->expected_name);
  }
  if (KTLS_FIELD(insecure_skip_verify)) {
    r.set_insecure_skip_verify(options->insecure_skip_verify != 0);
  }
  if (KTLS_FIELD(timeout_ms)) r.set_timeout_ms(options->timeout_ms);
  if (KTLS_FIELD(tls_version) && options->tls_version != nullptr) {
    r.set_tls_version(options->tls_version);
  }
#undef KTLS_FIELD
  auto conn = agent->sub->Dial(std::move(r));
  if (!conn.ok()) return FromStatus(conn.status());
  *out = ktls::client::NewConn(std::move(*conn));
  return KTLS_OK;
}

const ktls_conn_info* ktls_conn_get_info(const ktls_conn* conn) {
  return conn != nullptr ? &conn->info : nullptr;
}

const char* ktls_conn_info_json(const ktls_conn* conn) {
  return conn != nullptr ? conn->json.c_str() : "{}";
}

int ktls_conn_fd(const ktls_conn* conn) { return conn != nullptr ? conn->handed.fd.get() : -1; }

int ktls_conn_release_fd(ktls_conn* conn) {
  return conn != nullptr ? conn->handed.fd.release() : -1;
}

size_t ktls_conn_pending(const ktls_conn* conn, const void** data) {
  if (conn == nullptr) {
    if (data != nullptr) *data = nullptr;
    return 0;
  }
  if (data != nullptr) *data = conn->handed.pending.data();
  return conn->handed.pending.size();
}

ssize_t ktls_conn_read(ktls_conn* conn, void* buf, size_t len, int flags,
                       ktls_record_info* info_out) {
  if (conn == nullptr) {
    errno = EBADF;
    return -1;
  }
  return conn->handed.Read(buf, len, flags, info_out);
}

ssize_t ktls_conn_readv(ktls_conn* conn, const struct iovec* iov, int iovcnt, int flags,
                        ktls_record_info* info_out) {
  if (conn == nullptr) {
    errno = EBADF;
    return -1;
  }
  return conn->handed.ReadV(iov, iovcnt, flags, info_out);
}

void ktls_conn_free(ktls_conn* conn) { delete conn; }

}  // extern "C"
