// The gRPC services of proto/ktls/v1/control.proto: thin adapters from requests to the managers
// (cert_manager.h, trust_manager.h, ticket_key_manager.h) and the data plane's telemetry, with
// absl::Status mapped one to one onto gRPC status codes (their numbering is the same). This is
// the certificate API's edge: requests become a CertificateSource here and the manager's domain
// results become v1 messages here; the manager itself never sees a v1 message.
//
// The RPCs that carry secrets (StageCertificate, ApplyCertificate, SetSessionTicketKeys,
// RotateSessionTicketKeys) are served raw: the handler receives the serialized request,
// parses it itself and then overwrites the received bytes (gRPC's receive slices, shared with
// the transport's read buffer) and the parsed message's secret fields with zeros, so no copy
// of a private key or ticket key outlives the call in this process. The others use the plain
// synchronous API.
#ifndef KTLS_SERVER_SERVICES_H_
#define KTLS_SERVER_SERVICES_H_

#include <atomic>
#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/agent.h"
#include "grpcpp/grpcpp.h"
#include "ktls/v1/control.grpc.pb.h"
#include "server/cert_dir_watcher.h"
#include "server/cert_manager.h"
#include "server/control_metrics.h"
#include "server/control_sources.h"
#include "server/ticket_key_manager.h"
#include "server/trust_manager.h"

namespace ktls::control {

grpc::Status ToGrpc(const absl::Status& s);

// Streams (certificate watches, stats watches) are capped: each holds a server thread.
inline constexpr int kMaxStreams = 16;

class CertificateServiceImpl final
    : public v1::CertificateService::WithRawCallbackMethod_StageCertificate<
          v1::CertificateService::WithRawCallbackMethod_ApplyCertificate<
              v1::CertificateService::Service>> {
 public:
  CertificateServiceImpl(CertManager& certs, std::atomic<int>& streams,
                         const std::atomic<bool>& stopping)
      : certs_(certs), streams_(streams), stopping_(stopping) {}

  grpc::ServerUnaryReactor* StageCertificate(grpc::CallbackServerContext* context,
                                             const grpc::ByteBuffer* request,
                                             grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ApplyCertificate(grpc::CallbackServerContext* context,
                                             const grpc::ByteBuffer* request,
                                             grpc::ByteBuffer* response) override;
  grpc::Status CommitCertificate(grpc::ServerContext*, const v1::CommitCertificateRequest*,
                                 v1::CommitResponse*) override;
  grpc::Status AbortCertificate(grpc::ServerContext*, const v1::AbortCertificateRequest*,
                                v1::AbortResponse*) override;
  grpc::Status ListCertificates(grpc::ServerContext*, const v1::ListCertificatesRequest*,
                                v1::ListCertificatesResponse*) override;
  grpc::Status GetCertificate(grpc::ServerContext*, const v1::GetCertificateRequest*,
                              v1::GetCertificateResponse*) override;
  grpc::Status DeleteCertificate(grpc::ServerContext*, const v1::DeleteCertificateRequest*,
                                 v1::CommitResponse*) override;
  grpc::Status SetDefaultCertificate(grpc::ServerContext*, const v1::SetDefaultCertificateRequest*,
                                     v1::CommitResponse*) override;
  grpc::Status WatchCertificates(grpc::ServerContext*, const v1::WatchCertificatesRequest*,
                                 grpc::ServerWriter<v1::CertificateEvent>*) override;

 private:
  CertManager& certs_;
  std::atomic<int>& streams_;
  const std::atomic<bool>& stopping_;
};

class TrustServiceImpl final : public v1::TrustService::Service {
 public:
  explicit TrustServiceImpl(TrustManager& trust) : trust_(trust) {}
  grpc::Status StageTrustBundle(grpc::ServerContext*, const v1::StageTrustBundleRequest*,
                                v1::StagedTrustBundle*) override;
  grpc::Status CommitTrustBundle(grpc::ServerContext*, const v1::CommitTrustBundleRequest*,
                                 v1::TrustBundleResponse*) override;
  grpc::Status AbortTrustBundle(grpc::ServerContext*, const v1::AbortTrustBundleRequest*,
                                v1::AbortResponse*) override;
  grpc::Status ApplyTrustBundle(grpc::ServerContext*, const v1::StageTrustBundleRequest*,
                                v1::TrustBundleResponse*) override;
  grpc::Status GetTrustBundle(grpc::ServerContext*, const v1::GetTrustBundleRequest*,
                              v1::GetTrustBundleResponse*) override;
  grpc::Status DeleteTrustBundle(grpc::ServerContext*, const v1::DeleteTrustBundleRequest*,
                                 v1::TrustBundleResponse*) override;

 private:
  TrustManager& trust_;
};

class SessionTicketServiceImpl final
    : public v1::SessionTicketService::WithRawCallbackMethod_SetSessionTicketKeys<
          v1::SessionTicketService::WithRawCallbackMethod_RotateSessionTicketKeys<
              v1::SessionTicketService::Service>> {
 public:
  explicit SessionTicketServiceImpl(TicketKeyManager& tickets) : tickets_(tickets) {}
  grpc::ServerUnaryReactor* SetSessionTicketKeys(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RotateSessionTicketKeys(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* response) override;
  grpc::Status GetSessionTicketKeys(grpc::ServerContext*, const v1::GetSessionTicketKeysRequest*,
                                    v1::SessionTicketKeys*) override;

 private:
  TicketKeyManager& tickets_;
};

struct TelemetrySources : ControlSources {
  const CertDirWatcher* watcher = nullptr;  // optional
  std::string state_dir;
  std::vector<StateStore::Issue> state_issues;
  uint32_t state_files_loaded = 0;
};

class TelemetryServiceImpl final : public v1::TelemetryService::Service {
 public:
  TelemetryServiceImpl(TelemetrySources sources, std::atomic<int>& streams,
                       const std::atomic<bool>& stopping)
      : s_(std::move(sources)), streams_(streams), stopping_(stopping) {}

  grpc::Status GetStats(grpc::ServerContext*, const v1::GetStatsRequest*, v1::Stats*) override;
  grpc::Status WatchStats(grpc::ServerContext*, const v1::WatchStatsRequest*,
                          grpc::ServerWriter<v1::Stats>*) override;
  grpc::Status ListHandshakes(grpc::ServerContext*, const v1::ListHandshakesRequest*,
                              v1::ListHandshakesResponse*) override;
  grpc::Status ListHandoffs(grpc::ServerContext*, const v1::ListHandoffsRequest*,
                            v1::ListHandoffsResponse*) override;
  grpc::Status GetCapabilities(grpc::ServerContext*, const v1::GetCapabilitiesRequest*,
                               v1::Capabilities*) override;
  grpc::Status GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                         v1::AgentStatus*) override;

  // The stats snapshot (also used by the tests).
  static v1::Stats Snapshot(agent::Agent& agent, uint64_t certificate_generation,
                            absl::Time started_at);

 private:
  TelemetrySources s_;
  std::atomic<int>& streams_;
  const std::atomic<bool>& stopping_;
};

}  // namespace ktls::control

#endif  // KTLS_SERVER_SERVICES_H_
