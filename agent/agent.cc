#include "agent/agent.h"

#include <unistd.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/config.h"
#include "agent/listener.h"
#include "agent/log.h"

namespace ktls {
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
    if (!g.ok()) return absl::InvalidArgumentError(absl::StrCat("handoff_socket_group: ", g.status().message()));
    bo.socket_group = *g;
  }
  bo.allowed_uids.assign(c.handoff_allowed_uids().begin(), c.handoff_allowed_uids().end());
  bo.allowed_gids.assign(c.handoff_allowed_gids().begin(), c.handoff_allowed_gids().end());
  bo.subscribe_timeout = absl::Milliseconds(c.app_subscribe_timeout_ms());
  bo.max_app_connections = c.max_app_connections();
  return bo;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(v1::AgentConfig config, SysCalls& sys) {
  ApplyDefaults(&config);
  if (absl::Status s = ValidateConfig(config); !s.ok()) return s;
  LogLevel level;
  if (!ParseLogLevel(config.log_level(), &level)) {
    return absl::InvalidArgumentError(absl::StrCat("log_level: unknown '", config.log_level(), "'"));
  }
  SetLogLevel(level);
  std::unique_ptr<Agent> a(new Agent(sys, std::move(config)));
  const v1::AgentConfig& c = a->config_;
  switch (c.offload()) {
    case v1::OFFLOAD_POLICY_REQUIRED: a->policy_ = OffloadPolicy::kRequired; break;
    case v1::OFFLOAD_POLICY_OFF: a->policy_ = OffloadPolicy::kOff; break;
    default: a->policy_ = OffloadPolicy::kPreferred; break;
  }

  // 1. Kernel probe, logged once.
  a->probe_ = ProbeKernel(sys);
  KTLS_LOG(kInfo, "kernel kTLS probe:\n", a->probe_.FormatTable());
  if (!a->probe_.ulp_available && a->policy_ != OffloadPolicy::kOff) {
    KTLS_LOG(kWarning, "kTLS unavailable: ", a->probe_.ulp_reason,
             a->policy_ == OffloadPolicy::kPreferred
                 ? "; every connection will be relayed in userspace"
                 : "");
  }

  // 2. Certificates.
  std::shared_ptr<const CertificateSet> set;
  if (c.certificates().empty()) {
    auto dev = CertificateSet::CreateDevelopment();
    if (!dev.ok()) return dev.status();
    set = *dev;
    KTLS_LOG(kWarning,
             "no certificates configured: serving an in-memory self-signed development "
             "certificate for localhost (do not use in production)");
  } else {
    std::vector<CertificateSource> sources;
    for (const auto& cc : c.certificates()) {
      auto src = LoadCertificateFiles(cc.cert_chain_file(), cc.private_key_file(),
                                      {cc.server_names().begin(), cc.server_names().end()},
                                      cc.is_default());
      if (!src.ok()) return src.status();
      sources.push_back(std::move(*src));
    }
    auto created = CertificateSet::Create(std::move(sources));
    if (!created.ok()) return created.status();
    set = *created;
  }
  for (const auto& e : set->entries()) {
    KTLS_LOG(kInfo, "certificate '", e.name, "': ", e.subject, " names=[",
             absl::StrJoin(e.server_names, ","), "]");
  }
  a->certs_ = std::make_unique<CertStore>(set);

  // 3. TLS context.
  TlsOptions opts;
  opts.min_version = c.min_tls_version() == "TLSv1.3" ? TlsVersion::kTls13 : TlsVersion::kTls12;
  opts.tls12_ciphers = c.tls12_ciphers();
  opts.tls13_ciphersuites = c.tls13_ciphersuites();
  opts.alpn.assign(c.alpn().begin(), c.alpn().end());
  opts.client_ca_file = c.client_ca_file();
  opts.require_client_cert = c.require_client_cert();
  opts.enable_ktls = a->policy_ != OffloadPolicy::kOff;
  opts.restrict_to_probe = a->policy_ == OffloadPolicy::kRequired;
  auto tls = TlsContext::Create(opts, a->probe_);
  if (!tls.ok()) return tls.status();
  a->tls_ = std::move(*tls);

  // 4. Handoff broker.
  absl::StatusOr<HandoffBrokerOptions> bo = BrokerOptionsFromConfig(c);
  if (!bo.ok()) return bo.status();
  bo->activity = &a->activity_;
  auto broker = HandoffBroker::Create(sys, *std::move(bo), a->stats_);
  if (!broker.ok()) return broker.status();
  a->broker_ = std::move(*broker);

  // 5. Listeners: one SO_REUSEPORT socket per listener per worker. A port-0 listener is bound
  // once, and the other workers join the port the kernel picked.
  unsigned workers = c.workers() ? c.workers() : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::vector<std::pair<std::string, UniqueFd>>> per_worker(workers);
  for (const auto& l : c.listeners()) {
    auto addr = ParseListenAddress(l.name(), l.address(), l.port());
    if (!addr.ok()) return addr.status();
    for (unsigned w = 0; w < workers; ++w) {
      auto fd = OpenListenSocket(sys, *addr, 1024);
      if (!fd.ok()) return fd.status();
      if (w == 0 && l.port() == 0) {
        uint16_t port = BoundPort(sys, fd->get());
        auto fixed = ParseListenAddress(l.name(), l.address(), port);
        if (!fixed.ok()) return fixed.status();
        addr = fixed;
      }
      per_worker[w].emplace_back(l.name(), std::move(*fd));
    }
    a->listen_addresses_.push_back(addr->ToString());
  }
  WorkerOptions wo;
  wo.handshake_timeout = absl::Milliseconds(c.handshake_timeout_ms());
  wo.max_handshakes = std::max<size_t>(1, (c.max_concurrent_handshakes() + workers - 1) / workers);
  wo.max_connections = std::max<size_t>(1, (c.max_connections() + workers - 1) / workers);
  wo.activity = &a->activity_;
  for (unsigned w = 0; w < workers; ++w) {
    wo.index = static_cast<int>(w);
    auto worker = Worker::Create(sys, wo, std::move(per_worker[w]), *a->tls_, *a->certs_,
                                 a->stats_, *a->broker_, a->policy_, c.relay_buffer_bytes(),
                                 a->next_connection_id_);
    if (!worker.ok()) return worker.status();
    a->workers_.push_back(std::move(*worker));
  }
  // 6. Outbound dials (apps' DialRequests), on their own thread.
  DialerOptions dopts;
  dopts.policy = a->policy_;
  dopts.relay_buffer_bytes = c.relay_buffer_bytes();
  Agent* raw = a.get();
  auto dialer = Dialer::Create(
      sys, dopts, a->stats_, a->next_connection_id_,
      [raw](uint64_t subscriber, v1::DialResult result, UniqueFd fd) {
        raw->broker_->DeliverDialResult(subscriber, std::move(result), std::move(fd));
      },
      RelayDeps{*a->tls_, *a->certs_, *a->broker_});
  if (!dialer.ok()) return dialer.status();
  a->dialer_ = std::move(*dialer);
  a->broker_->SetDialHandler([raw](uint64_t subscriber, v1::DialRequest request) {
    raw->dialer_->Dial(subscriber, std::move(request));
  });

  KTLS_LOG(kInfo, "listening on ", absl::StrJoin(a->listen_addresses_, ", "), " with ", workers,
           " workers; handoff socket ", c.handoff_socket(), "; offload=",
           OffloadPolicyName(a->policy_));
  return a;
}

Agent::~Agent() { Stop(); }

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

}  // namespace ktls
