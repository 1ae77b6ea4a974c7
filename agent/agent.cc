#include "agent/agent.h"

#include <unistd.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/config.h"
#include "agent/listener.h"
#include "agent/log.h"

namespace ktls::agent {
namespace {

absl::StatusOr<HandoffBrokerOptions> BrokerOptionsFromConfig(const v1::AgentConfig& c) {
  HandoffBrokerOptions bo;
  bo.socket_path = c.handoff_socket();
  bo.wait_timeout = absl::Milliseconds(c.handoff_wait_timeout_ms());
  bo.max_pending = c.max_pending_handoffs();
  bo.agent_version = kAgentVersion;
  bo.socket_mode = c.handoff_socket_mode();
  if (!c.handoff_socket_group().empty()) {
    absl::StatusOr<gid_t> g = ResolveGroup(c.handoff_socket_group());
    if (!g.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("handoff_socket_group: ", g.status().message()));
    }
    bo.socket_group = *g;
  }
  bo.allowed_uids.assign(c.handoff_allowed_uids().begin(), c.handoff_allowed_uids().end());
  bo.allowed_gids.assign(c.handoff_allowed_gids().begin(), c.handoff_allowed_gids().end());
  bo.subscribe_timeout = absl::Milliseconds(c.app_subscribe_timeout_ms());
  bo.max_app_connections = c.max_app_connections();
  return bo;
}

OffloadPolicy PolicyOf(v1::OffloadPolicy p) {
  switch (p) {
    case v1::OFFLOAD_POLICY_REQUIRED:
      return OffloadPolicy::kRequired;
    case v1::OFFLOAD_POLICY_OFF:
      return OffloadPolicy::kOff;
    default:
      return OffloadPolicy::kPreferred;
  }
}

// The configured certificates, or the development one when none is configured.
absl::StatusOr<std::shared_ptr<const CertificateSet>> LoadCertificates(const v1::AgentConfig& c) {
  if (c.certificates().empty()) {
    auto dev = CertificateSet::CreateDevelopment();
    if (!dev.ok()) return dev.status();
    KTLS_LOG(kWarning,
             "no certificates configured: serving an in-memory self-signed development "
             "certificate for localhost (do not use in production)");
    return *dev;
  }
  std::vector<CertificateSource> sources;
  for (const auto& cc : c.certificates()) {
    auto src =
        LoadCertificateFiles(cc.cert_chain_file(), cc.private_key_file(),
                             {cc.server_names().begin(), cc.server_names().end()}, cc.is_default());
    if (!src.ok()) return src.status();
    sources.push_back(std::move(*src));
  }
  auto created = CertificateSet::Create(std::move(sources));
  if (!created.ok()) return created.status();
  return *created;
}

TlsOptions TlsOptionsOf(const v1::AgentConfig& c, OffloadPolicy policy) {
  TlsOptions opts;
  opts.min_version = c.min_tls_version() == "TLSv1.3" ? TlsVersion::kTls13 : TlsVersion::kTls12;
  opts.tls12_ciphers = c.tls12_ciphers();
  opts.tls13_ciphersuites = c.tls13_ciphersuites();
  opts.alpn.assign(c.alpn().begin(), c.alpn().end());
  opts.client_ca_file = c.client_ca_file();
  opts.require_client_cert = c.require_client_cert();
  opts.enable_ktls = policy != OffloadPolicy::kOff;
  opts.restrict_to_probe = policy == OffloadPolicy::kRequired;
  return opts;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(v1::AgentConfig config, SysCalls& sys) {
  ApplyDefaults(&config);
  if (absl::Status s = ValidateConfig(config); !s.ok()) return s;
  LogLevel level;
  if (!ParseLogLevel(config.log_level(), &level)) {
    return absl::InvalidArgumentError(
        absl::StrCat("log_level: unknown '", config.log_level(), "'"));
  }
  SetLogLevel(level);
  std::unique_ptr<Agent> a(new Agent(sys, std::move(config)));
  const v1::AgentConfig& c = a->config_;
  a->policy_ = PolicyOf(c.offload());
  a->ProbeAndLog();

  auto set = LoadCertificates(c);
  if (!set.ok()) return set.status();
  for (const auto& e : (*set)->entries()) {
    KTLS_LOG(kInfo, "certificate '", e.name, "': ", e.subject, " names=[",
             absl::StrJoin(e.server_names, ","), "]");
  }
  a->certs_ = std::make_unique<CertStore>(*set);

  auto tls = TlsContext::Create(TlsOptionsOf(c, a->policy_), a->probe_);
  if (!tls.ok()) return tls.status();
  a->tls_ = std::move(*tls);

  absl::StatusOr<HandoffBrokerOptions> bo = BrokerOptionsFromConfig(c);
  if (!bo.ok()) return bo.status();
  bo->activity = &a->activity_;
  auto broker = HandoffBroker::Create(sys, *std::move(bo), a->stats_);
  if (!broker.ok()) return broker.status();
  a->broker_ = std::move(*broker);

  const unsigned workers =
      c.workers() ? c.workers() : std::max(1u, std::thread::hardware_concurrency());
  if (absl::Status s = a->CreateWorkers(workers); !s.ok()) return s;
  if (absl::Status s = a->CreateDialer(); !s.ok()) return s;
  KTLS_LOG(kInfo, "listening on ", absl::StrJoin(a->listen_addresses_, ", "), " with ", workers,
           " workers; handoff socket ", c.handoff_socket(),
           "; offload=", OffloadPolicyName(a->policy_));
  return a;
}

void Agent::ProbeAndLog() {
  probe_ = ProbeKernel(sys_);
  KTLS_LOG(kInfo, "kernel kTLS probe:\n", probe_.FormatTable());
  if (!probe_.ulp_available && policy_ != OffloadPolicy::kOff) {
    KTLS_LOG(kWarning, "kTLS unavailable: ", probe_.ulp_reason,
             policy_ == OffloadPolicy::kPreferred
                 ? "; every connection will be relayed in userspace"
                 : "");
  }
}

absl::StatusOr<std::vector<Agent::ListenSockets>> Agent::OpenListeners(unsigned workers) {
  std::vector<ListenSockets> per_worker(workers);
  for (const auto& l : config_.listeners()) {
    auto addr = ParseListenAddress(l.name(), l.address(), l.port());
    if (!addr.ok()) return addr.status();
    for (unsigned w = 0; w < workers; ++w) {
      auto fd = OpenListenSocket(sys_, *addr, 1024);
      if (!fd.ok()) return fd.status();
      if (w == 0 && l.port() == 0) {
        uint16_t port = BoundPort(sys_, fd->get());
        auto fixed = ParseListenAddress(l.name(), l.address(), port);
        if (!fixed.ok()) return fixed.status();
        addr = fixed;
      }
      per_worker[w].emplace_back(l.name(), std::move(*fd));
    }
    listen_addresses_.push_back(addr->ToString());
  }
  return per_worker;
}

absl::Status Agent::CreateWorkers(unsigned workers) {
  auto per_worker = OpenListeners(workers);
  if (!per_worker.ok()) return per_worker.status();
  const v1::AgentConfig& c = config_;
  WorkerOptions wo;
  wo.handshake_timeout = absl::Milliseconds(c.handshake_timeout_ms());
  wo.max_handshakes = std::max<size_t>(1, (c.max_concurrent_handshakes() + workers - 1) / workers);
  wo.max_connections = std::max<size_t>(1, (c.max_connections() + workers - 1) / workers);
  wo.activity = &activity_;
  for (unsigned w = 0; w < workers; ++w) {
    wo.index = static_cast<int>(w);
    auto worker = Worker::Create(sys_, wo, std::move((*per_worker)[w]), *tls_, *certs_, stats_,
                                 *broker_, policy_, c.relay_buffer_bytes(), next_connection_id_);
    if (!worker.ok()) return worker.status();
    workers_.push_back(std::move(*worker));
  }
  return absl::OkStatus();
}

absl::Status Agent::CreateDialer() {
  DialerOptions dopts;
  dopts.policy = policy_;
  dopts.relay_buffer_bytes = config_.relay_buffer_bytes();
  auto dialer = Dialer::Create(
      sys_, dopts, stats_, next_connection_id_,
      [this](uint64_t subscriber, v1::DialResult result, UniqueFd fd) {
        broker_->DeliverDialResult(subscriber, std::move(result), std::move(fd));
      },
      RelayDeps{*tls_, *certs_, *broker_});
  if (!dialer.ok()) return dialer.status();
  dialer_ = std::move(*dialer);
  broker_->SetDialHandler([this](uint64_t subscriber, v1::DialRequest request) {
    dialer_->Dial(subscriber, std::move(request));
  });
  return absl::OkStatus();
}

Agent::~Agent() { Stop(); }

Histogram::Snapshot Agent::HandoffLatency() const {
  const HandoffBroker::LatencySnapshot l = broker_->Latency();
  Histogram::Snapshot h;
  h.upper_bounds = HandoffBroker::LatencyBuckets();
  h.cumulative = l.bucket_counts;
  h.cumulative.resize(h.upper_bounds.size(), l.count);
  h.count = l.count;
  h.sum = l.sum_seconds;
  return h;
}

void Agent::Start() {
  broker_->Start([this] {
    for (auto& w : workers_) w->Wake();
  });
  for (auto& w : workers_) w->Start();
  dialer_->Start();
}

void Agent::Stop() {
  if (dialer_) dialer_->Stop();
  for (auto& w : workers_) w->Stop();
  if (broker_) broker_->Stop();
}

}  // namespace ktls::agent
