#include "server/services.h"

#include <openssl/crypto.h>
#include <sys/utsname.h>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/listener.h"
#include "server/cert_validation.h"
#include "server/secrets.h"
#include "server/tls_stat.h"

namespace ktls::control {
namespace {

constexpr uint32_t kDefaultPageSize = 100;
constexpr uint32_t kMaxPageSize = 1000;
// The largest request a raw (secret-carrying) method accepts: the server's own message limit
// (control_plane.cc) normally answers first; the fields' own limits are far below both.
constexpr size_t kMaxSecretRequestBytes = 8 << 20;

// Copies the received bytes into `message`, then overwrites every byte gRPC received for this
// request (and the contiguous copy) with zeros. The slices are reference-counted views of
// gRPC's receive buffers; wiping them through the view is what clears the transport's copy.
grpc::Status ParseAndWipe(const grpc::ByteBuffer* request, google::protobuf::Message* message) {
  std::vector<grpc::Slice> slices;
  if (!request->Dump(&slices).ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "cannot read the request");
  }
  size_t total = 0;
  for (const grpc::Slice& s : slices) total += s.size();
  absl::Cleanup wipe_slices = [&slices] {
    for (grpc::Slice& s : slices) {
      // const_cast: the bytes belong to this call's receive buffer; nothing reads them after the
      // message is parsed.
      OPENSSL_cleanse(const_cast<uint8_t*>(s.begin()), s.size());
    }
  };
  if (total > kMaxSecretRequestBytes) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("request of ", total, " bytes exceeds the limit of ", kMaxSecretRequestBytes));
  }
  std::string flat;
  flat.reserve(total);
  ScopedWipe wipe_flat(flat);
  for (const grpc::Slice& s : slices) {
    flat.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (!message->ParseFromString(flat)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "request does not parse");
  }
  return grpc::Status::OK;
}

grpc::Status Serialize(const google::protobuf::Message& message, grpc::ByteBuffer* out) {
  std::string bytes;
  if (!message.SerializeToString(&bytes)) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "cannot serialize the response");
  }
  grpc::Slice slice(bytes);
  *out = grpc::ByteBuffer(&slice, 1);
  return grpc::Status::OK;
}

// Runs `work` on a parsed (then wiped) request and finishes the call with its result.
template <typename Request, typename Work>
grpc::ServerUnaryReactor* RunRaw(grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw,
                                 grpc::ByteBuffer* response, Work work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Request request;
  grpc::Status status = ParseAndWipe(raw, &request);
  if (status.ok()) {
    auto result = work(request);  // wipes the request's secret fields
    if (!result.ok()) {
      status = ToGrpc(result.status());
    } else {
      status = Serialize(*result, response);
    }
  }
  reactor->Finish(status);
  return reactor;
}

bool ParseToken(const std::string& token, uint64_t* value) {
  if (token.empty()) {
    *value = 0;
    return true;
  }
  return absl::SimpleAtoi(token, value);
}

void FillHistogram(const agent::Histogram::Snapshot& s, v1::Histogram* out) {
  out->set_count(s.count);
  out->set_sum(s.sum);
  for (size_t i = 0; i < s.upper_bounds.size(); ++i) {
    auto* b = out->add_buckets();
    b->set_upper_bound(s.upper_bounds[i]);
    b->set_cumulative_count(s.cumulative[i]);
  }
}

void SetDuration(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t ns = absl::ToInt64Nanoseconds(d);
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

}  // namespace

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

namespace {

// --- Certificates: v1 messages <-> the manager's domain types ----------------------------------

// The request as the certificate to stage. The key's bytes move (no copy) and the request's
// field is wiped; the manager wipes the source's key_pem.
agent::CertificateSource TakeStageRequest(v1::StageCertificateRequest& r) {
  agent::CertificateSource source;
  source.name = r.name();
  source.chain_pem = r.cert_chain_pem();
  source.key_pem.swap(*r.mutable_private_key_pem());
  WipeAndClear(*r.mutable_private_key_pem());
  source.server_names.assign(r.server_names().begin(), r.server_names().end());
  source.is_default = r.set_default();
  return source;
}

v1::Certificate ToProto(const CommittedCertificate& c) {
  v1::Certificate d = DescribeCertificate(*c.entry);
  d.set_is_default(c.is_default);
  d.set_generation(c.generation);
  d.set_source(c.source);
  SetTimestamp(c.committed_at, d.mutable_committed_at());
  return d;
}

v1::StagedCertificate ToProto(const StagedCertificate& s) {
  v1::StagedCertificate d;
  v1::Certificate* c = d.mutable_certificate();
  *c = DescribeCertificate(*s.entry);
  c->set_source(s.source);
  c->set_is_default(s.set_default);
  for (const std::string& w : s.warnings) d.add_warnings(w);
  d.set_base_generation(s.base_generation);
  SetTimestamp(s.staged_at, d.mutable_staged_at());
  return d;
}

v1::CommitResponse ToProto(const CertificateChange& change) {
  v1::CommitResponse r;
  r.set_generation(change.generation);
  *r.mutable_certificate() = ToProto(change.certificate);
  for (const std::string& w : change.warnings) r.add_warnings(w);
  return r;
}

v1::CertificateEvent::Type ToProto(CertificateEvent::Type type) {
  switch (type) {
    case CertificateEvent::Type::kSnapshot:
      return v1::CertificateEvent::SNAPSHOT;
    case CertificateEvent::Type::kCommitted:
      return v1::CertificateEvent::COMMITTED;
    case CertificateEvent::Type::kDeleted:
      return v1::CertificateEvent::DELETED;
    case CertificateEvent::Type::kDefaultChanged:
      return v1::CertificateEvent::DEFAULT_CHANGED;
    case CertificateEvent::Type::kStaged:
      return v1::CertificateEvent::STAGED;
    case CertificateEvent::Type::kAborted:
      return v1::CertificateEvent::ABORTED;
    case CertificateEvent::Type::kReloadFailed:
      return v1::CertificateEvent::RELOAD_FAILED;
  }
  return v1::CertificateEvent::TYPE_UNSPECIFIED;
}

v1::CertificateEvent ToProto(const CertificateEvent& e) {
  v1::CertificateEvent out;
  out.set_type(ToProto(e.type));
  out.set_generation(e.generation);
  SetTimestamp(e.time, out.mutable_time());
  out.set_name(e.name);
  for (const CommittedCertificate& c : e.certificates) *out.add_certificates() = ToProto(c);
  if (e.staged.has_value()) *out.add_certificates() = ToProto(*e.staged).certificate();
  out.set_source(e.source);
  out.set_message(e.message);
  return out;
}

// A manager result as the RPC's response.
template <typename Response, typename Result>
grpc::Status Reply(const absl::StatusOr<Result>& result, Response* response) {
  if (!result.ok()) return ToGrpc(result.status());
  *response = ToProto(*result);
  return grpc::Status::OK;
}

}  // namespace

// --- CertificateService -----------------------------------------------------------------------
grpc::ServerUnaryReactor* CertificateServiceImpl::StageCertificate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return RunRaw<v1::StageCertificateRequest>(
      context, request, response,
      [this](v1::StageCertificateRequest& r) -> absl::StatusOr<v1::StagedCertificate> {
        agent::CertificateSource source = TakeStageRequest(r);
        absl::StatusOr<StagedCertificate> staged = certs_.Stage(source, ReloadSource::kApi);
        if (!staged.ok()) return staged.status();
        return ToProto(*staged);
      });
}

grpc::ServerUnaryReactor* CertificateServiceImpl::ApplyCertificate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return RunRaw<v1::StageCertificateRequest>(
      context, request, response,
      [this](v1::StageCertificateRequest& r) -> absl::StatusOr<v1::CommitResponse> {
        agent::CertificateSource source = TakeStageRequest(r);
        absl::StatusOr<CertificateChange> change =
            certs_.Apply(source, r.expected_generation(), ReloadSource::kApi);
        if (!change.ok()) return change.status();
        return ToProto(*change);
      });
}

grpc::Status CertificateServiceImpl::CommitCertificate(grpc::ServerContext*,
                                                       const v1::CommitCertificateRequest* request,
                                                       v1::CommitResponse* response) {
  return Reply(certs_.Commit(request->name(), request->expected_generation(), ReloadSource::kApi),
               response);
}

grpc::Status CertificateServiceImpl::AbortCertificate(grpc::ServerContext*,
                                                      const v1::AbortCertificateRequest* request,
                                                      v1::AbortResponse*) {
  return ToGrpc(certs_.Abort(request->name()));
}

grpc::Status CertificateServiceImpl::ListCertificates(grpc::ServerContext*,
                                                      const v1::ListCertificatesRequest*,
                                                      v1::ListCertificatesResponse* response) {
  const CertificateListing listing = certs_.List();
  response->set_generation(listing.generation);
  response->set_default_certificate(listing.default_name);
  for (const CommittedCertificate& c : listing.committed) {
    *response->add_certificates() = ToProto(c);
  }
  for (const StagedCertificate& s : listing.staged) *response->add_staged() = ToProto(s);
  return grpc::Status::OK;
}

grpc::Status CertificateServiceImpl::GetCertificate(grpc::ServerContext*,
                                                    const v1::GetCertificateRequest* request,
                                                    v1::GetCertificateResponse* response) {
  absl::StatusOr<CertificateLookup> r = certs_.Get(request->name());
  if (!r.ok()) return ToGrpc(r.status());
  if (r->committed.has_value()) *response->mutable_certificate() = ToProto(*r->committed);
  if (r->staged.has_value()) *response->mutable_staged() = ToProto(*r->staged);
  return grpc::Status::OK;
}

grpc::Status CertificateServiceImpl::DeleteCertificate(grpc::ServerContext*,
                                                       const v1::DeleteCertificateRequest* request,
                                                       v1::CommitResponse* response) {
  return Reply(certs_.Delete(request->name(), request->force(), request->expected_generation()),
               response);
}

grpc::Status CertificateServiceImpl::SetDefaultCertificate(
    grpc::ServerContext*, const v1::SetDefaultCertificateRequest* request,
    v1::CommitResponse* response) {
  return Reply(certs_.SetDefault(request->name(), request->expected_generation()), response);
}

grpc::Status CertificateServiceImpl::WatchCertificates(
    grpc::ServerContext* context, const v1::WatchCertificatesRequest*,
    grpc::ServerWriter<v1::CertificateEvent>* writer) {
  if (streams_.fetch_add(1) >= kMaxStreams) {
    streams_.fetch_sub(1);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("at most ", kMaxStreams, " watch streams at a time"));
  }
  absl::Cleanup release = [this] { streams_.fetch_sub(1); };
  CertificateEvent snapshot;
  std::shared_ptr<CertificateEventQueue> queue = certs_.Watch(&snapshot);
  absl::Cleanup unwatch = [this, &queue] { certs_.Unwatch(queue); };
  if (!writer->Write(ToProto(snapshot))) return grpc::Status::OK;
  while (!context->IsCancelled() && !stopping_.load()) {
    CertificateEvent event;
    if (queue->Pop(absl::Milliseconds(200), &event)) {
      if (!writer->Write(ToProto(event))) return grpc::Status::OK;
    } else if (queue->overflowed()) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "the watcher fell behind by more than 256 events; watch again");
    }
  }
  return grpc::Status::OK;
}

// --- TrustService -----------------------------------------------------------------------------
grpc::Status TrustServiceImpl::StageTrustBundle(grpc::ServerContext*,
                                                const v1::StageTrustBundleRequest* request,
                                                v1::StagedTrustBundle* response) {
  absl::StatusOr<v1::StagedTrustBundle> r = trust_.Stage(*request);
  if (!r.ok()) return ToGrpc(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status TrustServiceImpl::CommitTrustBundle(grpc::ServerContext*,
                                                 const v1::CommitTrustBundleRequest* request,
                                                 v1::TrustBundleResponse* response) {
  absl::StatusOr<v1::TrustBundleResponse> r = trust_.Commit(request->expected_generation());
  if (!r.ok()) return ToGrpc(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status TrustServiceImpl::AbortTrustBundle(grpc::ServerContext*,
                                                const v1::AbortTrustBundleRequest*,
                                                v1::AbortResponse*) {
  return ToGrpc(trust_.Abort());
}

grpc::Status TrustServiceImpl::ApplyTrustBundle(grpc::ServerContext*,
                                                const v1::StageTrustBundleRequest* request,
                                                v1::TrustBundleResponse* response) {
  absl::StatusOr<v1::TrustBundleResponse> r = trust_.Apply(*request);
  if (!r.ok()) return ToGrpc(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status TrustServiceImpl::GetTrustBundle(grpc::ServerContext*,
                                              const v1::GetTrustBundleRequest*,
                                              v1::GetTrustBundleResponse* response) {
  *response = trust_.Get();
  return grpc::Status::OK;
}

grpc::Status TrustServiceImpl::DeleteTrustBundle(grpc::ServerContext*,
                                                 const v1::DeleteTrustBundleRequest* request,
                                                 v1::TrustBundleResponse* response) {
  absl::StatusOr<v1::TrustBundleResponse> r = trust_.Delete(request->expected_generation());
  if (!r.ok()) return ToGrpc(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

// --- SessionTicketService ---------------------------------------------------------------------
grpc::ServerUnaryReactor* SessionTicketServiceImpl::SetSessionTicketKeys(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return RunRaw<v1::SetSessionTicketKeysRequest>(
      context, request, response,
      [this](v1::SetSessionTicketKeysRequest& r) { return tickets_.Set(r); });
}

grpc::ServerUnaryReactor* SessionTicketServiceImpl::RotateSessionTicketKeys(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return RunRaw<v1::RotateSessionTicketKeysRequest>(
      context, request, response,
      [this](v1::RotateSessionTicketKeysRequest& r) { return tickets_.Rotate(r); });
}

grpc::Status SessionTicketServiceImpl::GetSessionTicketKeys(grpc::ServerContext*,
                                                            const v1::GetSessionTicketKeysRequest*,
                                                            v1::SessionTicketKeys* response) {
  *response = tickets_.Get();
  return grpc::Status::OK;
}

// --- TelemetryService -------------------------------------------------------------------------
namespace {

// A per-enum counter array as the stats RPC's map from label value to count.
template <typename Enum>
void FillByLabel(const agent::CounterArray<Enum>& counts, absl::string_view (*label)(Enum),
                 google::protobuf::Map<std::string, uint64_t>* out) {
  for (size_t i = 0; i < counts.size(); ++i) {
    (*out)[std::string(label(static_cast<Enum>(i)))] = counts[i].load(std::memory_order_relaxed);
  }
}

// The paging fields of the List* requests: page_size (0: the default) and page_token (a cursor
// from the previous page; empty: the first page).
grpc::Status ParsePage(uint32_t page_size, const std::string& page_token, uint32_t* size,
                       uint64_t* cursor) {
  *size = page_size == 0 ? kDefaultPageSize : page_size;
  if (*size > kMaxPageSize) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("page_size: at most ", kMaxPageSize));
  }
  if (!ParseToken(page_token, cursor)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "page_token: not a token from a previous page");
  }
  return grpc::Status::OK;
}

}  // namespace

v1::Stats TelemetryServiceImpl::Snapshot(agent::Agent& agent, uint64_t certificate_generation,
                                         absl::Time started_at) {
  v1::Stats out;
  const absl::Time now = absl::Now();
  SetTimestamp(now, out.mutable_time());
  SetDuration(now - started_at, out.mutable_uptime());
  agent::AgentStats& st = agent.stats();
  auto& counters = *out.mutable_counters();
#define KTLS_COUNTER(field, ...) counters[#field] = st.field.load(std::memory_order_relaxed);
  KTLS_AGENT_COUNTERS(KTLS_COUNTER)
#undef KTLS_COUNTER
  auto& gauges = *out.mutable_gauges();
#define KTLS_GAUGE(field, ...) gauges[#field] = st.field.load(std::memory_order_relaxed);
  KTLS_AGENT_GAUGES(KTLS_GAUGE)
#undef KTLS_GAUGE
  FillByLabel(st.fallbacks, &agent::FallbackReasonLabel, out.mutable_fallbacks());
  FillByLabel(st.handshake_failures, &agent::HandshakeFailureReasonLabel,
              out.mutable_handshake_failures());
  for (size_t i = 0; i < st.connections_by_suite.size(); ++i) {
    const uint64_t n = st.connections_by_suite[i].load(std::memory_order_relaxed);
    if (n == 0) continue;
    const agent::TlsSuiteLabels l = agent::TlsSuiteLabel(static_cast<agent::TlsSuite>(i));
    auto* s = out.add_suites();
    s->set_version(std::string(l.version));
    s->set_cipher(std::string(l.cipher));
    s->set_count(n);
  }
  FillHistogram(st.handshake_duration.Take(), out.mutable_handshake_duration_seconds());
  FillHistogram(st.ktls_install_duration.Take(), out.mutable_ktls_install_duration_seconds());
  FillHistogram(agent.HandoffLatency(), out.mutable_handoff_latency_seconds());
  out.set_certificate_generation(certificate_generation);
  return out;
}

grpc::Status TelemetryServiceImpl::GetStats(grpc::ServerContext*, const v1::GetStatsRequest*,
                                            v1::Stats* response) {
  *response = Snapshot(*s_.agent, s_.certs->generation(), s_.started_at);
  return grpc::Status::OK;
}

grpc::Status TelemetryServiceImpl::WatchStats(grpc::ServerContext* context,
                                              const v1::WatchStatsRequest* request,
                                              grpc::ServerWriter<v1::Stats>* writer) {
  const uint32_t ms = request->interval_ms() == 0 ? 1000 : request->interval_ms();
  if (ms < 100 || ms > 3600000) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("interval_ms: ", ms, " is outside 100 .. 3600000"));
  }
  if (streams_.fetch_add(1) >= kMaxStreams) {
    streams_.fetch_sub(1);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("at most ", kMaxStreams, " watch streams at a time"));
  }
  absl::Cleanup release = [this] { streams_.fetch_sub(1); };
  absl::Time next = absl::Now();
  while (!context->IsCancelled() && !stopping_.load()) {
    if (absl::Now() >= next) {
      if (!writer->Write(Snapshot(*s_.agent, s_.certs->generation(), s_.started_at))) break;
      next += absl::Milliseconds(ms);
    }
    absl::SleepFor(
        std::min(absl::Milliseconds(100), std::max(absl::ZeroDuration(), next - absl::Now())));
  }
  return grpc::Status::OK;
}

grpc::Status TelemetryServiceImpl::ListHandshakes(grpc::ServerContext*,
                                                  const v1::ListHandshakesRequest* request,
                                                  v1::ListHandshakesResponse* response) {
  uint32_t size = 0;
  uint64_t after = 0;
  if (grpc::Status s = ParsePage(request->page_size(), request->page_token(), &size, &after);
      !s.ok()) {
    return s;
  }
  size_t total = 0;
  const std::vector<agent::LiveHandshake> live =
      s_.agent->activity().LiveHandshakes(after, size + 1, &total);
  const absl::Time now = absl::Now();
  for (size_t i = 0; i < live.size() && i < size; ++i) {
    const agent::LiveHandshake& h = live[i];
    auto* out = response->add_handshakes();
    out->set_connection_id(h.id);
    out->set_listener(h.listener);
    std::string address;
    uint32_t port = 0;
    agent::FormatSockaddr(reinterpret_cast<const sockaddr*>(&h.peer), &address, &port);
    out->mutable_peer()->set_address(address);
    out->mutable_peer()->set_port(port);
    SetTimestamp(h.started, out->mutable_started_at());
    SetDuration(now - h.started, out->mutable_age());
    out->set_worker(h.worker);
  }
  if (live.size() > size) response->set_next_page_token(absl::StrCat(live[size - 1].id));
  response->set_total(static_cast<uint32_t>(total));
  return grpc::Status::OK;
}

grpc::Status TelemetryServiceImpl::ListHandoffs(grpc::ServerContext*,
                                                const v1::ListHandoffsRequest* request,
                                                v1::ListHandoffsResponse* response) {
  uint32_t size = 0;
  uint64_t before = 0;
  if (grpc::Status s = ParsePage(request->page_size(), request->page_token(), &size, &before);
      !s.ok()) {
    return s;
  }
  const std::vector<agent::HandoffRecord> records =
      s_.agent->activity().RecentHandoffs(before, size + 1);
  for (size_t i = 0; i < records.size() && i < size; ++i) {
    const agent::HandoffRecord& r = records[i];
    auto* out = response->add_handoffs();
    out->set_sequence(r.sequence);
    SetTimestamp(r.at, out->mutable_time());
    out->set_outcome(agent::HandoffOutcomeName(r.outcome));
    out->set_app(r.app);
    SetDuration(r.waited, out->mutable_waited());
    *out->mutable_connection() = r.info;
  }
  if (records.size() > size)
    response->set_next_page_token(absl::StrCat(records[size - 1].sequence));
  response->set_capacity(static_cast<uint32_t>(s_.agent->activity().recent_capacity()));
  return grpc::Status::OK;
}

grpc::Status TelemetryServiceImpl::GetCapabilities(grpc::ServerContext*,
                                                   const v1::GetCapabilitiesRequest*,
                                                   v1::Capabilities* out) {
  agent::Agent& a = *s_.agent;
  out->set_agent_version(agent::kAgentVersion);
  out->set_openssl_version(OpenSSL_version(OPENSSL_VERSION));
#ifdef OPENSSL_NO_KTLS
  out->set_openssl_ktls(false);
#else
  out->set_openssl_ktls(true);
#endif
  utsname u{};
  if (uname(&u) == 0) out->set_kernel_release(u.release);
  out->set_offload_policy(std::string(agent::OffloadPolicyName(a.policy())));
  const agent::KernelProbeResult& probe = a.probe();
  out->set_kernel_tls_available(probe.ulp_available);
  out->set_kernel_tls_reason(probe.ulp_reason);
  for (const agent::ProbeCell& c : probe.cells) {
    if (c.direction != agent::Direction::kTx) continue;
    auto* p = out->add_probe();
    p->set_version(std::string(agent::TlsVersionName(c.version)));
    p->set_cipher(std::string(agent::KtlsCipherName(c.cipher)));
    p->set_tx(c.ok);
    p->set_tx_reason(c.reason);
    for (const agent::ProbeCell& rx : probe.cells) {
      if (rx.direction == agent::Direction::kRx && rx.version == c.version &&
          rx.cipher == c.cipher) {
        p->set_rx(rx.ok);
        p->set_rx_reason(rx.reason);
      }
    }
  }
  absl::StatusOr<std::map<std::string, uint64_t>> stat = ReadTlsStat(s_.tls_stat_path);
  out->set_tls_stat_available(stat.ok());
  if (stat.ok()) {
    for (const auto& [k, v] : *stat) (*out->mutable_tls_stat())[k] = v;
  } else {
    out->set_tls_stat_error(std::string(stat.status().message()));
  }
  for (const std::string& l : a.listen_addresses()) out->add_listen_addresses(l);
  out->set_handoff_socket(a.config().handoff_socket());
  out->set_workers(a.config().workers());
  return grpc::Status::OK;
}

grpc::Status TelemetryServiceImpl::GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                                             v1::AgentStatus* out) {
  out->set_agent_version(agent::kAgentVersion);
  SetTimestamp(s_.started_at, out->mutable_started_at());
  SetDuration(absl::Now() - s_.started_at, out->mutable_uptime());
  out->set_state_dir(s_.state_dir);
  for (const StateStore::Issue& i : s_.state_issues) {
    auto* issue = out->add_state_issues();
    issue->set_path(i.path);
    issue->set_error(i.error);
  }
  out->set_state_files_loaded(s_.state_files_loaded);
  if (s_.watcher != nullptr) {
    for (const WatchedDirectoryStatus& d : s_.watcher->Status()) {
      auto* w = out->add_watched_directories();
      w->set_path(d.path);
      if (d.last_scan != absl::Time()) SetTimestamp(d.last_scan, w->mutable_last_scan());
      if (d.last_change != absl::Time()) SetTimestamp(d.last_change, w->mutable_last_change());
      w->set_last_error(d.last_error);
      for (const std::string& c : d.certificates) w->add_certificates(c);
    }
  }
  out->set_certificate_generation(s_.certs->generation());
  out->set_trust_generation(s_.trust->generation());
  out->set_ticket_key_generation(s_.tickets->generation());
  out->set_apps_connected(s_.agent->stats().apps_connected.load(std::memory_order_relaxed));
  return grpc::Status::OK;
}

}  // namespace ktls::control
