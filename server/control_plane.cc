#include "server/control_plane.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "agent/log.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/support/server_interceptor.h"
#include "server/cert_dir_watcher.h"
#include "server/cert_manager.h"
#include "server/control_auth.h"
#include "server/control_metrics.h"
#include "server/metrics.h"
#include "server/secrets.h"
#include "server/services.h"
#include "server/state_store.h"
#include "server/ticket_key_manager.h"
#include "server/trust_manager.h"

namespace ktls::control {
namespace {

constexpr int kMaxReceiveBytes = 8 << 20;  // a trust bundle may carry 1 MiB CAs + 4 MiB CRLs

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

// Counts every finished call by method and status code (ktls_control_requests_total).
class CountingInterceptor final : public grpc::experimental::Interceptor {
 public:
  CountingInterceptor(grpc::experimental::ServerRpcInfo* info, ControlMetrics& metrics)
      : method_(info->method()), metrics_(metrics) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_.CountRequest(method_, CodeName(methods->GetSendStatus().error_code()));
    }
    methods->Proceed();
  }

 private:
  std::string method_;
  ControlMetrics& metrics_;
};

class CountingInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CountingInterceptorFactory(ControlMetrics& metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CountingInterceptor(info, metrics_);
  }

 private:
  ControlMetrics& metrics_;
};

std::string ReadTextFile(const std::string& path, absl::Status* status) {
  std::string out;
  *status = ReadSecretFile(path, 1 << 20, &out);
  return out;
}

// True when something accepts connections on the Unix socket `path`.
bool SocketIsLive(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  const bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return live;
}

// The Unix socket is bound in a private directory, given its mode (and group) there, then
// renamed into place: nobody can connect to it before it has its final permissions.
struct StagedSocket {
  std::string dir;     // the private directory; empty when there is no Unix socket
  std::string socket;  // dir + "/s", where gRPC binds

  void Remove() const {
    if (dir.empty()) return;
    ::unlink(socket.c_str());
    ::rmdir(dir.c_str());
  }
};

// Refuses a path that is not a socket or that another process serves, removes a stale socket,
// and creates the private directory next to `path`.
absl::Status StageUnixSocket(const std::string& path, StagedSocket* staged) {
  const std::filesystem::path target(path);
  std::error_code ec;
  std::filesystem::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  std::filesystem::create_directories(parent, ec);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("control socket ", path, " exists and is not a socket"));
    }
    if (SocketIsLive(path)) {
      return absl::FailedPreconditionError(
          absl::StrCat("control socket ", path, " is served by another process (another agent?)"));
    }
    ::unlink(path.c_str());  // stale, from a previous run
  }
  std::string tmpl = (parent / ".ktls-control.XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create a directory in ", parent.string(), ": ", strerror(errno)));
  }
  staged->dir = tmpl;
  staged->socket = staged->dir + "/s";
  if (staged->socket.size() >= sizeof(sockaddr_un::sun_path) ||
      path.size() >= sizeof(sockaddr_un::sun_path)) {
    ::rmdir(staged->dir.c_str());
    return absl::InvalidArgumentError(
        absl::StrCat("control socket path ", path, " is too long for a Unix socket"));
  }
  return absl::OkStatus();
}

// Gives the bound socket its group and mode, and renames it to the configured path.
absl::Status PublishUnixSocket(const ControlPlaneOptions& o, const StagedSocket& staged) {
  if (!o.control_socket_group.empty()) {
    // A group name, or a numeric gid (containers often have no /etc/group entry for it).
    gid_t gid = 0;
    bool found = false;
    if (group* g = ::getgrnam(o.control_socket_group.c_str())) {
      gid = g->gr_gid;
      found = true;
    } else if (uint32_t n = 0; absl::SimpleAtoi(o.control_socket_group, &n)) {
      gid = static_cast<gid_t>(n);
      found = true;
    }
    if (!found || ::chown(staged.socket.c_str(), static_cast<uid_t>(-1), gid) != 0) {
      const std::string why = !found ? " (no such group)" : absl::StrCat(": ", strerror(errno));
      staged.Remove();
      return absl::FailedPreconditionError(
          absl::StrCat("control_socket_group: cannot give the socket to group '",
                       o.control_socket_group, "'", why));
    }
  }
  if (::chmod(staged.socket.c_str(), o.control_socket_mode) != 0 ||
      ::rename(staged.socket.c_str(), o.control_socket.c_str()) != 0) {
    const int err = errno;
    staged.Remove();
    return absl::FailedPreconditionError(absl::StrCat("cannot put the control socket in place at ",
                                                      o.control_socket, ": ", strerror(err)));
  }
  ::rmdir(staged.dir.c_str());
  return absl::OkStatus();
}

// The TCP listener's mutual-TLS credentials, restricted to the allow-listed client identities.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TcpCredentials(
    const ControlPlaneOptions& o) {
  absl::Status s;
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = ReadTextFile(o.client_ca_file, &s);
  if (!s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("control_client_ca_file: ", s.message()));
  }
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  pair.cert_chain = ReadTextFile(o.tls_cert_file, &s);
  if (!s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("control_tls_cert_file: ", s.message()));
  }
  pair.private_key = ReadTextFile(o.tls_key_file, &s);
  if (!s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("control_tls_key_file: ", s.message()));
  }
  ssl.pem_key_cert_pairs.push_back(pair);
  WipeAndClear(pair.private_key);  // gRPC keeps its own copy for the listener's life
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::SslServerCredentials(ssl);
  WipeAndClear(ssl.pem_key_cert_pairs.front().private_key);
  creds->SetAuthMetadataProcessor(MakeAllowListProcessor(o.allowed_clients));
  return creds;
}

}  // namespace

absl::StatusOr<ControlPlaneOptions> ControlPlaneOptions::FromConfig(const v1::AgentConfig& c) {
  ControlPlaneOptions o;
  o.control_socket = c.has_control_socket() ? c.control_socket() : kDefaultControlSocket;
  o.control_socket_required = c.has_control_socket();
  o.control_socket_mode = c.control_socket_mode() == 0 ? 0600 : c.control_socket_mode();
  if (o.control_socket_mode > 0777 || (o.control_socket_mode & 0600) != 0600) {
    return absl::InvalidArgumentError(
        absl::StrCat("control_socket_mode: ", absl::StrFormat("%04o", o.control_socket_mode),
                     " must be a permission mode that keeps owner read/write (e.g. 0600, 0660)"));
  }
  if ((o.control_socket_mode & 0007) != 0) {
    return absl::InvalidArgumentError(
        "control_socket_mode: access for 'other' is not allowed; use a group "
        "(control_socket_group)");
  }
  o.control_socket_group = c.control_socket_group();
  o.tcp_address = c.control_tcp_address();
  o.tls_cert_file = c.control_tls_cert_file();
  o.tls_key_file = c.control_tls_key_file();
  o.client_ca_file = c.control_client_ca_file();
  absl::StatusOr<std::vector<AllowedIdentity>> allowed =
      ParseAllowList({c.control_allowed_clients().begin(), c.control_allowed_clients().end()});
  if (!allowed.ok()) return allowed.status();
  o.allowed_clients = *std::move(allowed);
  if (!o.tcp_address.empty() && (o.tls_cert_file.empty() || o.tls_key_file.empty() ||
                                 o.client_ca_file.empty() || o.allowed_clients.empty())) {
    return absl::InvalidArgumentError(
        "control_tcp_address needs control_tls_cert_file, control_tls_key_file, "
        "control_client_ca_file and control_allowed_clients: the TCP control API is mutual-TLS "
        "only, for allow-listed clients");
  }
  o.metrics_address = c.has_metrics_address() ? c.metrics_address() : kDefaultMetricsAddress;
  o.metrics_required = c.has_metrics_address();
  o.state_dir = c.state_dir();
  o.cert_dirs.assign(c.cert_dirs().begin(), c.cert_dirs().end());
  if (c.cert_dir_poll_interval_ms() != 0) {
    o.cert_dir_poll_interval = absl::Milliseconds(c.cert_dir_poll_interval_ms());
  }
  if (o.control_socket.empty() && o.tcp_address.empty()) {
    KTLS_LOG(kWarning, "control API disabled (no control_socket, no control_tcp_address)");
  }
  return o;
}

ControlPlane::ControlPlane(agent::Agent& agent, ControlPlaneOptions options)
    : agent_(agent), options_(std::move(options)), started_at_(absl::Now()) {}

ControlPlane::~ControlPlane() { Stop(); }

absl::StatusOr<std::unique_ptr<ControlPlane>> ControlPlane::Create(agent::Agent& agent,
                                                                   ControlPlaneOptions options) {
  std::unique_ptr<ControlPlane> cp(new ControlPlane(agent, std::move(options)));
  cp->metrics_ = std::make_unique<ControlMetrics>();
  if (absl::Status s = cp->LoadState(); !s.ok()) return s;
  cp->ScanCertDirs();
  if (absl::Status s = cp->BuildServer(); !s.ok()) return s;
  if (absl::Status s = cp->StartMetrics(); !s.ok()) return s;
  return cp;
}

absl::Status ControlPlane::LoadState() {
  const ControlPlaneOptions& o = options_;
  StateStore::Loaded loaded;
  std::vector<StateStore::Issue> issues;
  if (!o.state_dir.empty()) {
    absl::StatusOr<std::unique_ptr<StateStore>> store = StateStore::Open(o.state_dir);
    if (!store.ok()) return store.status();
    state_ = *std::move(store);
    loaded = state_->Load();
    issues = loaded.issues;
    metrics_->state_files_skipped.fetch_add(issues.size(), std::memory_order_relaxed);
  }
  certs_ = std::make_unique<CertManager>(agent_.certs(), state_.get(), *metrics_,
                                         CertManager::Options{});
  trust_ = std::make_unique<TrustManager>(agent_.tls(), state_.get(), *metrics_,
                                          agent_.config().client_ca_file());
  tickets_ = std::make_unique<TicketKeyManager>(agent_.tls(), state_.get(), *metrics_);
  certs_->Initialize(loaded, &issues);
  trust_->Initialize(loaded, &issues);
  tickets_->Initialize(loaded, &issues);
  const uint32_t loaded_files = static_cast<uint32_t>(loaded.files_loaded) -
                                static_cast<uint32_t>(issues.size() - loaded.issues.size());
  metrics_->state_files_loaded.store(loaded_files, std::memory_order_relaxed);
  state_issues_ = issues;
  if (!o.state_dir.empty()) {
    agent::LogLine(issues.empty() ? agent::LogLevel::kInfo : agent::LogLevel::kWarning,
                   absl::StrCat("state directory ", o.state_dir, ": ", loaded_files,
                                " files loaded, ", issues.size(), " skipped"));
  }
  return absl::OkStatus();
}

void ControlPlane::ScanCertDirs() {
  const ControlPlaneOptions& o = options_;
  if (o.cert_dirs.empty()) return;
  CertDirWatcher::Options wo;
  wo.dirs = o.cert_dirs;
  wo.poll_interval = o.cert_dir_poll_interval;
  watcher_ = std::make_unique<CertDirWatcher>(wo, CommitThrough(*certs_));
  watcher_->ScanNow();
}

ControlSources ControlPlane::CommonSources() const {
  ControlSources s;
  s.agent = &agent_;
  s.certs = certs_.get();
  s.trust = trust_.get();
  s.tickets = tickets_.get();
  s.started_at = started_at_;
  s.tls_stat_path = options_.tls_stat_path;
  return s;
}

absl::Status ControlPlane::StartMetrics() {
  const ControlPlaneOptions& o = options_;
  if (o.metrics_address.empty()) return absl::OkStatus();
  MetricsSources ms{CommonSources()};
  ms.control = metrics_.get();
  absl::StatusOr<std::unique_ptr<MetricsExporter>> exporter =
      MetricsExporter::Start(o.metrics_address, std::move(ms));
  if (exporter.ok()) {
    exporter_ = *std::move(exporter);
  } else if (o.metrics_required) {
    return exporter.status();
  } else {
    KTLS_LOG(kWarning, exporter.status().message(),
             "; running without /metrics (that is the default address: pass --metrics_address "
             "to choose one, or to make this an error)");
  }
  return absl::OkStatus();
}

void ControlPlane::CreateServices() {
  cert_service_ = std::make_unique<CertificateServiceImpl>(*certs_, streams_, stopping_);
  trust_service_ = std::make_unique<TrustServiceImpl>(*trust_);
  ticket_service_ = std::make_unique<SessionTicketServiceImpl>(*tickets_);
  TelemetrySources ts{CommonSources()};
  ts.watcher = watcher_.get();
  ts.state_dir = options_.state_dir;
  ts.state_files_loaded = static_cast<uint32_t>(metrics_->state_files_loaded.load());
  ts.state_issues = state_issues_;  // the telemetry service reports what loading found
  telemetry_service_ = std::make_unique<TelemetryServiceImpl>(ts, streams_, stopping_);
}

absl::Status ControlPlane::BuildServer() {
  const ControlPlaneOptions& o = options_;
  if (o.control_socket.empty() && o.tcp_address.empty()) return absl::OkStatus();

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // Reflection describes what the descriptor pool holds; the health service is gRPC's own
  // implementation, so its descriptor is linked in explicitly for grpcurl to see it.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  CreateServices();

  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  builder.RegisterService(cert_service_.get());
  builder.RegisterService(trust_service_.get());
  builder.RegisterService(ticket_service_.get());
  builder.RegisterService(telemetry_service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(std::make_unique<CountingInterceptorFactory>(*metrics_));
  builder.experimental().SetInterceptorCreators(std::move(creators));

  if (!o.control_socket.empty() && !o.control_socket_required && SocketIsLive(o.control_socket)) {
    KTLS_LOG(kWarning, "control socket ", o.control_socket,
             " is served by another process (another agent?); running without it (that is the "
             "default path: pass --control_socket to choose one, or to make this an error)");
    options_.control_socket.clear();
    if (o.tcp_address.empty()) return absl::OkStatus();
  }
  StagedSocket staged;
  if (!o.control_socket.empty()) {
    if (absl::Status s = StageUnixSocket(o.control_socket, &staged); !s.ok()) return s;
    builder.AddListeningPort("unix:" + staged.socket, grpc::InsecureServerCredentials());
  }
  int tcp_port = 0;
  if (!o.tcp_address.empty()) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = TcpCredentials(o);
    if (!creds.ok()) return creds.status();
    builder.AddListeningPort(o.tcp_address, *creds, &tcp_port);
  }
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) {
    staged.Remove();
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot start the control API on ",
        absl::StrJoin(std::vector<std::string>{o.control_socket, o.tcp_address}, " / "),
        " (address in use, or bad TLS files?)"));
  }
  if (!o.tcp_address.empty()) {
    if (tcp_port == 0)
      return absl::FailedPreconditionError(absl::StrCat("cannot bind ", o.tcp_address));
    tcp_address_ = absl::StrCat(o.tcp_address.substr(0, o.tcp_address.rfind(':')), ":", tcp_port);
  }
  if (!staged.dir.empty()) {
    if (absl::Status s = PublishUnixSocket(o, staged); !s.ok()) return s;
  }
  KTLS_LOG(kInfo, "control API on ",
           o.control_socket.empty()
               ? ""
               : absl::StrCat(o.control_socket, " (mode ",
                              absl::StrFormat("%04o", o.control_socket_mode), ")"),
           tcp_address_.empty()
               ? ""
               : absl::StrCat(o.control_socket.empty() ? "" : " and ", tcp_address_, " (mTLS, ",
                              o.allowed_clients.size(), " allowed clients)"));
  server_->GetHealthCheckService()->SetServingStatus(false);
  return absl::OkStatus();
}

absl::Status ControlPlane::Start() {
  if (watcher_ != nullptr) {
    if (absl::Status s = watcher_->Start(); !s.ok()) return s;
  }
  if (server_ != nullptr) {
    grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
    health->SetServingStatus(true);
    for (const char* service : {"ktls.v1.CertificateService", "ktls.v1.TrustService",
                                "ktls.v1.SessionTicketService", "ktls.v1.TelemetryService"}) {
      health->SetServingStatus(service, true);
    }
    health_thread_ = std::thread([this] { HealthLoop(); });
  }
  if (exporter_ != nullptr) KTLS_LOG(kInfo, "metrics on http://", exporter_->address(), "/metrics");
  return absl::OkStatus();
}

void ControlPlane::HealthLoop() {
  bool last = false;
  bool first = true;
  while (!stopping_.load()) {
    const bool serving = agent_.stats().apps_connected.load(std::memory_order_relaxed) > 0;
    if (first || serving != last) {
      server_->GetHealthCheckService()->SetServingStatus(kDataPlaneHealthService, serving);
      last = serving;
      first = false;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

void ControlPlane::Stop() {
  if (stopped_) return;
  stopped_ = true;
  stopping_.store(true);
  if (health_thread_.joinable()) health_thread_.join();
  if (server_ != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(false);
    // Streams notice `stopping_` within 200 ms; unary calls get up to 2 s to finish.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
    if (!options_.control_socket.empty()) ::unlink(options_.control_socket.c_str());
  }
  if (watcher_ != nullptr) watcher_->Stop();
  exporter_.reset();
}

std::string ControlPlane::metrics_address() const {
  return exporter_ != nullptr ? exporter_->address() : "";
}

}  // namespace ktls::control
