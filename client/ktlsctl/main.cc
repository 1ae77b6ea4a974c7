// ktlsctl: the command-line client of ktls-agent's control API (proto/ktls/v1/control.proto),
// in the style of kubectl. Depends on the generated protos only.
//
// Exit codes (scripts and Kubernetes exec probes rely on them):
//   0  success (health: SERVING)
//   1  the agent refused the request (invalid input, not found, precondition, conflict ...)
//   2  usage error (unknown command or flag, missing argument, unreadable input file)
//   3  the agent is unreachable (no socket, permission denied, not running, timeout)
//   4  health: the agent answers but is NOT_SERVING
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "client/ktlsctl/args.h"
#include "client/ktlsctl/format.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "ktls/v1/control.grpc.pb.h"

namespace ktlsctl {
namespace {

namespace v1 = ::ktls::v1;

constexpr int kOk = 0;
constexpr int kRefused = 1;
constexpr int kUsage = 2;
constexpr int kUnreachable = 3;
constexpr int kNotServing = 4;

constexpr char kDefaultSocket[] = "/run/ktls/control.sock";
constexpr char kVersion[] = "0.1.0";

constexpr char kUsageText[] = R"(ktlsctl: control ktls-agent over its gRPC API.

Usage: ktlsctl [global flags] COMMAND [ARGS] [flags]

Certificates (stage -> commit, or apply = both; new handshakes only, live connections untouched):
  cert list                                   committed and staged certificates
  cert get NAME                               one certificate in detail
  cert stage NAME --cert=CHAIN.pem --key=KEY.pem [--names=a.example.com,*.example.com] [--default]
  cert commit NAME [--expected-generation=N]
  cert abort NAME
  cert apply NAME --cert=CHAIN.pem --key=KEY.pem [--names=...] [--default] [--expected-generation=N]
  cert delete NAME [--force] [--expected-generation=N]
  cert default NAME [--expected-generation=N]
  cert watch                                  a snapshot, then every change (Ctrl-C to stop)
Client-certificate trust (CA certificates + CRLs), same model:
  trust get
  trust stage --ca=CA.pem [--crl=CRL.pem] [--require-client-cert]
  trust commit [--expected-generation=N] | trust abort
  trust apply --ca=CA.pem [--crl=CRL.pem] [--require-client-cert] [--expected-generation=N]
  trust delete [--expected-generation=N]      back to the configuration's client_ca_file
Session-ticket keys (shared by replicas that should resume each other's sessions):
  tickets get
  tickets rotate [--key-file=KEY] [--keep=N]  new first key (generated, or 80/48 bytes from KEY)
  tickets set --key-file=KEY[,KEY...]         replace all keys; the first encrypts
Telemetry:
  stats [--watch [--interval=1s] [--count=N]] [--all]
                                              counters, gauges, fallbacks, failures, histograms
  conns [--handoffs] [--limit=N]              handshakes in progress; --handoffs: recent handoffs
  caps                                        kernel kTLS probe, OpenSSL, policy, /proc/net/tls_stat
  status                                      uptime, state directory (skipped files), watched dirs
  health [--service=NAME]                     grpc.health.v1 check; exit 0 SERVING, 4 NOT_SERVING
  version

Global flags:
  -s, --socket=PATH      control socket (default /run/ktls/control.sock, or $KTLSCTL_SOCKET)
  --server=HOST:PORT     the TCP control API instead (mutual TLS): --tls-cert, --tls-key, --tls-ca,
                         [--tls-server-name]
  -o, --output=FORMAT    table (default) or json
  --timeout=SECONDS      per request (default 10)

Exit codes: 0 ok, 1 refused by the agent, 2 usage, 3 agent unreachable, 4 not serving.
)";

// Wipes a buffer that held a private key or ticket key before it is freed.
void Wipe(std::string& s) {
  s.resize(s.capacity());
  explicit_bzero(s.data(), s.size());
  s.clear();
}

struct Options {
  ParsedArgs args;
  bool json = false;
  std::string socket;
  std::string server;
  int timeout_s = 10;
  std::shared_ptr<grpc::Channel> channel;
  std::string target;  // for messages
};

int Usage(const std::string& message) {
  std::cerr << "ktlsctl: " << message << "\n(see 'ktlsctl --help')\n";
  return kUsage;
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    default:
      return "UNKNOWN";
  }
}

// Why a Unix socket cannot be reached, in an operator's words.
std::string DiagnoseSocket(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == EACCES) {
      return "permission denied on a directory of " + path;
    }
    return "no control socket at " + path +
           " (is ktls-agent running, with --control_socket=" + path + "?)";
  }
  if (!S_ISSOCK(st.st_mode)) return path + " is not a socket";
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  ::close(fd);
  if (rc == 0) return "";
  if (err == EACCES || err == EPERM) {
    return "permission denied on " + path +
           " (the control socket is for the agent's user; run ktlsctl as that user, or start the "
           "agent with --control_socket_mode=0660 --control_socket_group=GROUP)";
  }
  if (err == ECONNREFUSED)
    return "nothing listens on " + path + " (stale socket: is ktls-agent running?)";
  return "cannot connect to " + path + ": " + strerror(err);
}

int Fail(const Options& o, const grpc::Status& s) {
  const grpc::StatusCode code = s.error_code();
  if (code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED) {
    std::string why;
    if (o.server.empty()) why = DiagnoseSocket(o.socket);
    if (why.empty()) {
      why = code == grpc::StatusCode::DEADLINE_EXCEEDED
                ? "no answer from " + o.target + " within " + std::to_string(o.timeout_s) + "s"
                : "cannot reach " + o.target + ": " + s.error_message();
    }
    std::cerr << "error: " << why << "\n";
    return kUnreachable;
  }
  std::cerr << "error: " << s.error_message() << " (" << CodeName(code) << ")\n";
  return kRefused;
}

std::unique_ptr<grpc::ClientContext> Ctx(const Options& o, bool stream = false) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!stream) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(o.timeout_s));
  }
  return ctx;
}

bool ReadFile(const std::string& path, std::string* out, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot read " + path + ": " + strerror(errno);
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  if (out->size() > (4u << 20)) {
    Wipe(*out);
    *error = path + " is larger than 4 MiB";
    return false;
  }
  return true;
}

void PrintWarnings(const google::protobuf::RepeatedPtrField<std::string>& warnings) {
  for (const std::string& w : warnings) std::cerr << "warning: " << w << "\n";
}

// --- certificates -----------------------------------------------------------------------------
void PrintCertificate(const v1::Certificate& c) {
  Table t({"FIELD", "VALUE"});
  t.Add({"name", c.name()});
  t.Add({"default", YesNo(c.is_default())});
  t.Add({"server names", Join(c.server_names())});
  t.Add({"subject", c.subject()});
  t.Add({"issuer", c.issuer()});
  t.Add({"DNS names", Join(c.dns_names())});
  if (c.ip_addresses_size() > 0) t.Add({"IP addresses", Join(c.ip_addresses())});
  t.Add({"not before", Time(c.not_before())});
  t.Add({"not after", Time(c.not_after()) + " (" + Relative(c.not_after()) + ")"});
  t.Add({"key", c.key_type()});
  t.Add({"serial", c.serial()});
  t.Add({"sha256", c.sha256_fingerprint()});
  t.Add({"chain", c.chain_subjects_size() == 0 ? "-" : Join(c.chain_subjects(), " | ")});
  t.Add({"generation", c.generation() == 0 ? "- (staged)" : std::to_string(c.generation())});
  t.Add({"source", c.source()});
  if (c.has_committed_at()) t.Add({"committed", Time(c.committed_at())});
  t.Add({"handshakes", std::to_string(c.handshakes())});
  t.Print(std::cout);
}

bool FillStage(const Options& o, v1::StageCertificateRequest* r, std::string* error) {
  const std::string cert = o.args.Get("cert");
  const std::string key = o.args.Get("key");
  if (cert.empty() || key.empty()) {
    *error = "--cert=CHAIN.pem and --key=KEY.pem are required";
    return false;
  }
  r->set_name(o.args.positional[2]);
  if (!ReadFile(cert, r->mutable_cert_chain_pem(), error)) return false;
  if (!ReadFile(key, r->mutable_private_key_pem(), error)) return false;
  std::string names = o.args.Get("names");
  std::stringstream ss(names);
  for (std::string n; std::getline(ss, n, ',');) {
    if (!n.empty()) r->add_server_names(n);
  }
  r->set_set_default(o.args.Has("default"));
  return true;
}

uint64_t ExpectedGeneration(const Options& o) {
  return std::strtoull(o.args.Get("expected-generation", "0").c_str(), nullptr, 10);
}

using CertStub = v1::CertificateService::Stub;

int CertList(const Options& o, CertStub& stub) {
  v1::ListCertificatesResponse r;
  grpc::Status s = stub.ListCertificates(Ctx(o).get(), {}, &r);
  if (!s.ok()) return Fail(o, s);
  if (o.json) {
    std::cout << ToJson(r);
    return kOk;
  }
  Table t({"NAME", "DEFAULT", "SERVER NAMES", "NOT AFTER", "KEY", "HANDSHAKES", "GEN", "SOURCE"});
  for (const v1::Certificate& c : r.certificates()) {
    t.Add({c.name(), c.is_default() ? "*" : "", Join(c.server_names()),
           Time(c.not_after()) + " (" + Relative(c.not_after()) + ")", c.key_type(),
           std::to_string(c.handshakes()), std::to_string(c.generation()), c.source()});
  }
  t.Print(std::cout);
  if (r.staged_size() > 0) {
    std::cout << "\nstaged (not served until committed):\n";
    Table st({"NAME", "SUBJECT", "SERVER NAMES", "NOT AFTER", "WARNINGS"});
    for (const v1::StagedCertificate& s : r.staged()) {
      st.Add({s.certificate().name(), s.certificate().subject(),
              Join(s.certificate().server_names()), Time(s.certificate().not_after()),
              std::to_string(s.warnings_size())});
    }
    st.Print(std::cout);
  }
  std::cout << "\ngeneration " << r.generation() << "\n";
  return kOk;
}

int CertGet(const Options& o, CertStub& stub, const std::string& name) {
  v1::GetCertificateRequest req;
  req.set_name(name);
  v1::GetCertificateResponse r;
  grpc::Status s = stub.GetCertificate(Ctx(o).get(), req, &r);
  if (!s.ok()) return Fail(o, s);
  if (o.json) {
    std::cout << ToJson(r);
    return kOk;
  }
  if (r.has_certificate()) PrintCertificate(r.certificate());
  if (r.has_staged()) {
    std::cout << (r.has_certificate() ? "\n" : "") << "staged version:\n";
    PrintCertificate(r.staged().certificate());
    PrintWarnings(r.staged().warnings());
  }
  return kOk;
}

// `cert stage` and `cert apply` (stage + commit in one call): both upload the PEM files.
int CertStageOrApply(const Options& o, CertStub& stub, const std::string& verb) {
  v1::StageCertificateRequest req;
  std::string error;
  const bool filled = FillStage(o, &req, &error);
  struct WipeOnExit {
    v1::StageCertificateRequest& r;
    ~WipeOnExit() { Wipe(*r.mutable_private_key_pem()); }
  } wipe{req};
  if (!filled) return Usage("cert " + verb + ": " + error);
  if (verb == "stage") {
    v1::StagedCertificate r;
    grpc::Status s = stub.StageCertificate(Ctx(o).get(), req, &r);
    if (!s.ok()) return Fail(o, s);
    if (o.json) {
      std::cout << ToJson(r);
    } else {
      std::cout << "certificate \"" << req.name() << "\" staged: " << r.certificate().subject()
                << ", names " << Join(r.certificate().server_names()) << ", expires "
                << Time(r.certificate().not_after()) << "\n"
                << "commit it with: ktlsctl cert commit " << req.name() << "\n";
    }
    PrintWarnings(r.warnings());
    return kOk;
  }
  req.set_expected_generation(ExpectedGeneration(o));
  v1::CommitResponse r;
  grpc::Status s = stub.ApplyCertificate(Ctx(o).get(), req, &r);
  if (!s.ok()) return Fail(o, s);
  if (o.json) {
    std::cout << ToJson(r);
  } else {
    std::cout << "certificate \"" << req.name() << "\" committed (generation " << r.generation()
              << "): new handshakes use it\n";
  }
  PrintWarnings(r.warnings());
  return kOk;
}

int CertAbort(const Options& o, CertStub& stub, const std::string& name) {
  v1::AbortCertificateRequest req;
  req.set_name(name);
  v1::AbortResponse ar;
  grpc::Status s = stub.AbortCertificate(Ctx(o).get(), req, &ar);
  if (!s.ok()) return Fail(o, s);
  if (o.json) {
    std::cout << ToJson(ar);
  } else {
    std::cout << "staged certificate \"" << name << "\" discarded\n";
  }
  return kOk;
}

int CertWatch(const Options& o, CertStub& stub) {
  auto ctx = Ctx(o, true);
  auto reader = stub.WatchCertificates(ctx.get(), {});
  v1::CertificateEvent e;
  while (reader->Read(&e)) {
    if (o.json) {
      std::cout << ToJson(e) << std::flush;
      continue;
    }
    std::cout << Time(e.time()) << "  " << v1::CertificateEvent::Type_Name(e.type())
              << "  generation=" << e.generation();
    if (!e.name().empty()) std::cout << "  name=" << e.name();
    if (!e.source().empty()) std::cout << "  source=" << e.source();
    for (const v1::Certificate& c : e.certificates()) {
      std::cout << "\n    " << c.name() << "  " << Join(c.server_names()) << "  until "
                << Time(c.not_after()) << "  " << c.sha256_fingerprint().substr(0, 16);
    }
    if (!e.message().empty()) std::cout << "\n    " << e.message();
    std::cout << std::endl;
  }
  grpc::Status st = reader->Finish();
  return st.ok() ? kOk : Fail(o, st);
}

// `cert commit`, `cert delete`, `cert default`: one name in, a new generation out.
int CertChange(const Options& o, CertStub& stub, const std::string& verb, const std::string& name) {
  v1::CommitResponse r;
  grpc::Status s;
  std::string done;
  if (verb == "commit") {
    v1::CommitCertificateRequest req;
    req.set_name(name);
    req.set_expected_generation(ExpectedGeneration(o));
    s = stub.CommitCertificate(Ctx(o).get(), req, &r);
    done = "committed";
  } else if (verb == "delete") {
    v1::DeleteCertificateRequest req;
    req.set_name(name);
    req.set_force(o.args.Has("force"));
    req.set_expected_generation(ExpectedGeneration(o));
    s = stub.DeleteCertificate(Ctx(o).get(), req, &r);
    done = "deleted";
  } else {
    v1::SetDefaultCertificateRequest req;
    req.set_name(name);
    req.set_expected_generation(ExpectedGeneration(o));
    s = stub.SetDefaultCertificate(Ctx(o).get(), req, &r);
    done = "is the default";
  }
  if (!s.ok()) return Fail(o, s);
  if (o.json) {
    std::cout << ToJson(r);
  } else {
    std::cout << "certificate \"" << name << "\" " << done << " (generation " << r.generation()
              << ")\n";
  }
  PrintWarnings(r.warnings());
  return kOk;
}

int CertCommand(Options& o) {
  const auto& p = o.args.positional;
  const std::string verb = p.size() > 1 ? p[1] : "";
  auto stub = v1::CertificateService::NewStub(o.channel);
  const bool needs_name = verb != "list" && verb != "watch";
  if (needs_name && p.size() < 3) return Usage("cert " + verb + ": NAME is required");
  if (verb == "list") return CertList(o, *stub);
  if (verb == "get") return CertGet(o, *stub, p[2]);
  if (verb == "stage" || verb == "apply") return CertStageOrApply(o, *stub, verb);
  if (verb == "abort") return CertAbort(o, *stub, p[2]);
  if (verb == "watch") return CertWatch(o, *stub);
  if (verb == "commit" || verb == "delete" || verb == "default") {
    return CertChange(o, *stub, verb, p[2]);
  }
  return Usage("cert: unknown verb '" + verb +
               "' (list, get, stage, commit, abort, apply, "
               "delete, default, watch)");
}

// --- trust ------------------------------------------------------------------------------------
void PrintTrust(const v1::TrustBundle& b) {
  std::cout << "generation " << b.generation() << ", source " << b.source()
            << ", require client certificate: " << YesNo(b.require_client_cert()) << ", sha256 "
            << b.sha256() << "\n";
  Table cas({"CA SUBJECT", "NOT AFTER", "SHA256"});
  for (const auto& c : b.cas()) cas.Add({c.subject(), Time(c.not_after()), c.sha256_fingerprint()});
  cas.Print(std::cout);
  if (b.crls_size() > 0) {
    Table crls({"CRL ISSUER", "LAST UPDATE", "NEXT UPDATE", "REVOKED"});
    for (const auto& c : b.crls()) {
      crls.Add(
          {c.issuer(), Time(c.last_update()), Time(c.next_update()), std::to_string(c.revoked())});
    }
    crls.Print(std::cout);
  }
}

using TrustStub = v1::TrustService::Stub;

int TrustGet(const Options& o, TrustStub& stub) {
  v1::GetTrustBundleResponse r;
  grpc::Status s = stub.GetTrustBundle(Ctx(o).get(), {}, &r);
  if (!s.ok()) return Fail(o, s);
  if (o.json) {
    std::cout << ToJson(r);
    return kOk;
  }
  if (r.has_bundle()) {
    PrintTrust(r.bundle());
  } else {
    std::cout << "no trust bundle committed through the API; configured client_ca_file: "
              << (r.configured_client_ca_file().empty()
                      ? "(none: client certificates are not requested)"
                      : r.configured_client_ca_file())
              << "\n";
  }
  if (r.has_staged()) {
    std::cout << "\nstaged:\n";
    PrintTrust(r.staged().bundle());
    PrintWarnings(r.staged().warnings());
  }
  return kOk;
}

// `trust stage` and `trust apply` (stage + commit in one call): both upload the PEM files.
int TrustStageOrApply(const Options& o, TrustStub& stub, const std::string& verb) {
  v1::StageTrustBundleRequest req;
  std::string error;
  if (o.args.Get("ca").empty()) return Usage("trust " + verb + ": --ca=CA.pem is required");
  if (!ReadFile(o.args.Get("ca"), req.mutable_ca_pem(), &error)) return Usage(error);
  if (!o.args.Get("crl").empty() && !ReadFile(o.args.Get("crl"), req.mutable_crl_pem(), &error)) {
    return Usage(error);
  }
  req.set_require_client_cert(o.args.Has("require-client-cert"));
  if (verb == "stage") {
    v1::StagedTrustBundle r;
    grpc::Status s = stub.StageTrustBundle(Ctx(o).get(), req, &r);
    if (!s.ok()) return Fail(o, s);
    if (o.json) {
      std::cout << ToJson(r);
    } else {
      std::cout << "trust bundle staged: " << r.bundle().cas_size() << " CAs, "
                << r.bundle().crls_size() << " CRLs\ncommit it with: ktlsctl trust commit\n";
    }
    PrintWarnings(r.warnings());
    return kOk;
  }
  req.set_expected_generation(ExpectedGeneration(o));
  v1::TrustBundleResponse r;
  grpc::Status s = stub.ApplyTrustBundle(Ctx(o).get(), req, &r);
  if (!s.ok()) return Fail(o, s);
  if (o.json) {
    std::cout << ToJson(r);
  } else {
    std::cout << "trust bundle committed (generation " << r.generation() << ")\n";
  }
  PrintWarnings(r.warnings());
  return kOk;
}

// `trust commit`, `trust delete`: a new generation out.
int TrustChange(const Options& o, TrustStub& stub, const std::string& verb) {
  v1::TrustBundleResponse r;
  grpc::Status s;
  std::string done;
  if (verb == "commit") {
    v1::CommitTrustBundleRequest req;
    req.set_expected_generation(ExpectedGeneration(o));
    s = stub.CommitTrustBundle(Ctx(o).get(), req, &r);
    done = "committed";
  } else {
    v1::DeleteTrustBundleRequest req;
    req.set_expected_generation(ExpectedGeneration(o));
    s = stub.DeleteTrustBundle(Ctx(o).get(), req, &r);
    done = "deleted";
  }
  if (!s.ok()) return Fail(o, s);
  if (o.json) {
    std::cout << ToJson(r);
  } else {
    std::cout << "trust bundle " << done << " (generation " << r.generation() << ")\n";
  }
  PrintWarnings(r.warnings());
  return kOk;
}

int TrustCommand(Options& o) {
  const auto& p = o.args.positional;
  const std::string verb = p.size() > 1 ? p[1] : "";
  auto stub = v1::TrustService::NewStub(o.channel);
  if (verb == "get") return TrustGet(o, *stub);
  if (verb == "stage" || verb == "apply") return TrustStageOrApply(o, *stub, verb);
  if (verb == "abort") {
    v1::AbortResponse r;
    grpc::Status s = stub->AbortTrustBundle(Ctx(o).get(), {}, &r);
    if (!s.ok()) return Fail(o, s);
    std::cout << (o.json ? ToJson(r) : "staged trust bundle discarded\n");
    return kOk;
  }
  if (verb == "commit" || verb == "delete") return TrustChange(o, *stub, verb);
  return Usage("trust: unknown verb '" + verb + "' (get, stage, commit, abort, apply, delete)");
}

// --- tickets ----------------------------------------------------------------------------------
int PrintTickets(const Options& o, const v1::SessionTicketKeys& k) {
  if (o.json) {
    std::cout << ToJson(k);
    return kOk;
  }
  Table t({"KEY NAME", "ENCRYPTS", "AES BITS"});
  for (const auto& key : k.keys()) {
    t.Add({key.name(), key.encrypts() ? "yes" : "decrypt only", std::to_string(key.aes_bits())});
  }
  t.Print(std::cout);
  std::cout << "\ngeneration " << k.generation() << ", source " << k.source() << ", updated "
            << Time(k.updated_at()) << "\n";
  return kOk;
}

int TicketsCommand(Options& o) {
  const auto& p = o.args.positional;
  const std::string verb = p.size() > 1 ? p[1] : "";
  auto stub = v1::SessionTicketService::NewStub(o.channel);
  v1::SessionTicketKeys r;
  grpc::Status s;
  if (verb == "get") {
    s = stub->GetSessionTicketKeys(Ctx(o).get(), {}, &r);
  } else if (verb == "rotate") {
    v1::RotateSessionTicketKeysRequest req;
    struct WipeOnExit {
      v1::RotateSessionTicketKeysRequest& r;
      ~WipeOnExit() { Wipe(*r.mutable_new_key()); }
    } wipe{req};
    std::string error;
    if (const std::string f = o.args.Get("key-file");
        !f.empty() && !ReadFile(f, req.mutable_new_key(), &error)) {
      return Usage(error);
    }
    if (o.args.Has("keep")) {
      req.set_keep(static_cast<uint32_t>(std::strtoul(o.args.Get("keep").c_str(), nullptr, 10)));
    }
    s = stub->RotateSessionTicketKeys(Ctx(o).get(), req, &r);
  } else if (verb == "set") {
    v1::SetSessionTicketKeysRequest req;
    struct WipeOnExit {
      v1::SetSessionTicketKeysRequest& r;
      ~WipeOnExit() {
        for (std::string& k : *r.mutable_keys()) Wipe(k);
      }
    } wipe{req};
    const std::string files = o.args.Get("key-file");
    if (files.empty()) return Usage("tickets set: --key-file=KEY[,KEY...] is required");
    std::stringstream ss(files);
    for (std::string f; std::getline(ss, f, ',');) {
      std::string error;
      if (!ReadFile(f, req.add_keys(), &error)) return Usage(error);
    }
    s = stub->SetSessionTicketKeys(Ctx(o).get(), req, &r);
  } else {
    return Usage("tickets: unknown verb '" + verb + "' (get, rotate, set)");
  }
  if (!s.ok()) return Fail(o, s);
  return PrintTickets(o, r);
}

// --- telemetry --------------------------------------------------------------------------------
// The upper bound of the bucket holding quantile q (what histogram_quantile would interpolate).
std::string Quantile(const v1::Histogram& h, double q) {
  if (h.count() == 0) return "-";
  const double rank = q * static_cast<double>(h.count());
  for (const auto& b : h.buckets()) {
    if (static_cast<double>(b.cumulative_count()) >= rank) {
      std::ostringstream o;
      o << "<=" << b.upper_bound() * 1000 << "ms";
      return o.str();
    }
  }
  return ">" + std::to_string(h.buckets().empty() ? 0 : h.buckets().rbegin()->upper_bound()) + "s";
}

void PrintStats(const v1::Stats& st, bool all) {
  std::cout << "time " << Time(st.time()) << ", uptime " << Duration(st.uptime())
            << ", certificate generation " << st.certificate_generation() << "\n\n";
  Table c({"NAME", "VALUE"});
  std::map<std::string, uint64_t> counters(st.counters().begin(), st.counters().end());
  for (const auto& [k, v] : counters) {
    if (v != 0 || all) c.Add({k, std::to_string(v)});
  }
  std::map<std::string, int64_t> gauges(st.gauges().begin(), st.gauges().end());
  for (const auto& [k, v] : gauges) c.Add({k + " (now)", std::to_string(v)});
  c.Print(std::cout);
  Table r({"RELAYED BECAUSE", "CONNECTIONS"});
  for (const auto& [k, v] :
       std::map<std::string, uint64_t>(st.fallbacks().begin(), st.fallbacks().end())) {
    if (v != 0 || all) r.Add({k, std::to_string(v)});
  }
  if (!r.empty()) {
    std::cout << "\n";
    r.Print(std::cout);
  }
  Table f({"HANDSHAKE FAILED BECAUSE", "COUNT"});
  for (const auto& [k, v] : std::map<std::string, uint64_t>(st.handshake_failures().begin(),
                                                            st.handshake_failures().end())) {
    if (v != 0 || all) f.Add({k, std::to_string(v)});
  }
  if (!f.empty()) {
    std::cout << "\n";
    f.Print(std::cout);
  }
  if (st.suites_size() > 0) {
    std::cout << "\n";
    Table s({"VERSION", "CIPHER", "HANDSHAKES"});
    for (const auto& x : st.suites()) s.Add({x.version(), x.cipher(), std::to_string(x.count())});
    s.Print(std::cout);
  }
  std::cout << "\n";
  Table h({"HISTOGRAM", "COUNT", "MEAN", "P50", "P99"});
  for (const auto& [name, hist] :
       {std::pair<std::string, const v1::Histogram*>{"handshake duration",
                                                     &st.handshake_duration_seconds()},
        {"handoff latency", &st.handoff_latency_seconds()},
        {"kTLS install (kernel)", &st.ktls_install_duration_seconds()}}) {
    std::ostringstream mean;
    if (hist->count() > 0) {
      mean << std::setprecision(3) << hist->sum() / static_cast<double>(hist->count()) * 1000
           << "ms";
    } else {
      mean << "-";
    }
    h.Add({name, std::to_string(hist->count()), mean.str(), Quantile(*hist, 0.5),
           Quantile(*hist, 0.99)});
  }
  h.Print(std::cout);
}

int StatsCommand(Options& o) {
  auto stub = v1::TelemetryService::NewStub(o.channel);
  const bool all = o.args.Has("all");
  if (!o.args.Has("watch")) {
    v1::Stats st;
    grpc::Status s = stub->GetStats(Ctx(o).get(), {}, &st);
    if (!s.ok()) return Fail(o, s);
    if (o.json) {
      std::cout << ToJson(st);
    } else {
      PrintStats(st, all);
    }
    return kOk;
  }
  std::string interval = o.args.Get("interval", "1s");
  double seconds = std::strtod(interval.c_str(), nullptr);
  if (interval.size() > 2 && interval.substr(interval.size() - 2) == "ms") seconds /= 1000;
  if (seconds <= 0) return Usage("stats: --interval must be positive, e.g. 1s or 500ms");
  v1::WatchStatsRequest req;
  req.set_interval_ms(static_cast<uint32_t>(std::lround(seconds * 1000)));
  const long count = std::strtol(o.args.Get("count", "0").c_str(), nullptr, 10);
  auto ctx = Ctx(o, true);
  auto reader = stub->WatchStats(ctx.get(), req);
  v1::Stats st;
  long seen = 0;
  while (reader->Read(&st)) {
    if (o.json) {
      std::cout << ToJson(st) << std::flush;
    } else {
      std::cout << "----\n";
      PrintStats(st, all);
      std::cout << std::flush;
    }
    if (count > 0 && ++seen >= count) {
      ctx->TryCancel();
      reader->Finish();
      return kOk;
    }
  }
  grpc::Status s = reader->Finish();
  return s.ok() ? kOk : Fail(o, s);
}

int ConnsCommand(Options& o) {
  auto stub = v1::TelemetryService::NewStub(o.channel);
  const uint32_t limit =
      static_cast<uint32_t>(std::strtoul(o.args.Get("limit", "100").c_str(), nullptr, 10));
  if (o.args.Has("handoffs")) {
    v1::ListHandoffsRequest req;
    req.set_page_size(limit);
    v1::ListHandoffsResponse r;
    grpc::Status s = stub->ListHandoffs(Ctx(o).get(), req, &r);
    if (!s.ok()) return Fail(o, s);
    if (o.json) {
      std::cout << ToJson(r);
      return kOk;
    }
    Table t({"SEQ", "TIME", "OUTCOME", "APP", "PEER", "SNI", "VERSION", "CIPHER", "DATA PATH",
             "WAITED", "FALLBACK REASON"});
    for (const auto& h : r.handoffs()) {
      const v1::ConnectionInfo& c = h.connection();
      t.Add({std::to_string(h.sequence()), Time(h.time()), h.outcome(),
             h.app().empty() ? "-" : h.app(),
             c.peer().address() + ":" + std::to_string(c.peer().port()),
             c.sni().empty() ? "-" : c.sni(), c.tls_version(), c.cipher(),
             c.data_path() == v1::DATA_PATH_KTLS ? "ktls" : "relay", Duration(h.waited()),
             c.fallback_reason().empty() ? "-" : c.fallback_reason()});
    }
    t.Print(std::cout);
    std::cout << "\n"
              << r.handoffs_size() << " shown (the agent keeps the last " << r.capacity() << ")\n";
    return kOk;
  }
  v1::ListHandshakesRequest req;
  req.set_page_size(limit);
  v1::ListHandshakesResponse r;
  grpc::Status s = stub->ListHandshakes(Ctx(o).get(), req, &r);
  if (!s.ok()) return Fail(o, s);
  if (o.json) {
    std::cout << ToJson(r);
    return kOk;
  }
  Table t({"ID", "PEER", "LISTENER", "AGE", "WORKER"});
  for (const auto& h : r.handshakes()) {
    t.Add({std::to_string(h.connection_id()),
           h.peer().address() + ":" + std::to_string(h.peer().port()), h.listener(),
           Duration(h.age()), std::to_string(h.worker())});
  }
  t.Print(std::cout);
  std::cout << "\n" << r.total() << " handshakes in progress\n";
  return kOk;
}

int CapsCommand(Options& o) {
  auto stub = v1::TelemetryService::NewStub(o.channel);
  v1::Capabilities c;
  grpc::Status s = stub->GetCapabilities(Ctx(o).get(), {}, &c);
  if (!s.ok()) return Fail(o, s);
  if (o.json) {
    std::cout << ToJson(c);
    return kOk;
  }
  Table t({"FIELD", "VALUE"});
  t.Add({"agent", c.agent_version()});
  t.Add({"OpenSSL", c.openssl_version() + (c.openssl_ktls() ? " (kTLS built in)" : " (no kTLS)")});
  t.Add({"kernel", c.kernel_release()});
  t.Add({"offload policy", c.offload_policy()});
  t.Add({"kernel TLS",
         c.kernel_tls_available() ? "available" : "unavailable: " + c.kernel_tls_reason()});
  t.Add({"listeners", Join(c.listen_addresses())});
  t.Add({"handoff socket", c.handoff_socket()});
  t.Print(std::cout);
  std::cout << "\n";
  Table p({"VERSION", "CIPHER", "TX", "RX"});
  for (const auto& row : c.probe()) {
    p.Add({row.version(), row.cipher(), row.tx() ? "ok" : "no: " + row.tx_reason(),
           row.rx() ? "ok" : "no: " + row.rx_reason()});
  }
  p.Print(std::cout);
  std::cout << "\n";
  if (c.tls_stat_available()) {
    Table k({"/proc/net/tls_stat", "VALUE"});
    for (const auto& [name, v] :
         std::map<std::string, uint64_t>(c.tls_stat().begin(), c.tls_stat().end())) {
      k.Add({name, std::to_string(v)});
    }
    k.Print(std::cout);
  } else {
    std::cout << "/proc/net/tls_stat: " << c.tls_stat_error() << "\n";
  }
  return kOk;
}

int StatusCommand(Options& o) {
  auto stub = v1::TelemetryService::NewStub(o.channel);
  v1::AgentStatus st;
  grpc::Status s = stub->GetStatus(Ctx(o).get(), {}, &st);
  if (!s.ok()) return Fail(o, s);
  if (o.json) {
    std::cout << ToJson(st);
    return kOk;
  }
  Table t({"FIELD", "VALUE"});
  t.Add({"agent", st.agent_version()});
  t.Add({"started", Time(st.started_at()) + " (up " + Duration(st.uptime()) + ")"});
  t.Add({"apps connected", std::to_string(st.apps_connected())});
  t.Add({"state directory",
         st.state_dir().empty() ? "(none: changes are not persisted)" : st.state_dir()});
  t.Add({"state files loaded", std::to_string(st.state_files_loaded())});
  t.Add({"state files skipped", std::to_string(st.state_issues_size())});
  t.Add({"generations", "certificates " + std::to_string(st.certificate_generation()) + ", trust " +
                            std::to_string(st.trust_generation()) + ", ticket keys " +
                            std::to_string(st.ticket_key_generation())});
  t.Print(std::cout);
  if (st.state_issues_size() > 0) {
    std::cout << "\n";
    Table i({"SKIPPED STATE FILE", "WHY"});
    for (const auto& issue : st.state_issues()) i.Add({issue.path(), issue.error()});
    i.Print(std::cout);
  }
  if (st.watched_directories_size() > 0) {
    std::cout << "\n";
    Table w({"WATCHED DIRECTORY", "CERTIFICATES", "LAST CHANGE", "LAST ERROR"});
    for (const auto& d : st.watched_directories()) {
      w.Add({d.path(), Join(d.certificates()), Time(d.last_change()),
             d.last_error().empty() ? "-" : d.last_error()});
    }
    w.Print(std::cout);
  }
  return kOk;
}

int HealthCommand(Options& o) {
  auto stub = grpc::health::v1::Health::NewStub(o.channel);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(o.args.Get("service"));
  grpc::health::v1::HealthCheckResponse r;
  grpc::Status s = stub->Check(Ctx(o).get(), req, &r);
  if (!s.ok()) {
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      std::cerr << "error: unknown health service '" << req.service() << "'\n";
      return kRefused;
    }
    return Fail(o, s);
  }
  const std::string status = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(r.status());
  if (o.json) {
    std::cout << ToJson(r);
  } else {
    std::cout << status << "\n";
  }
  return r.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kOk : kNotServing;
}

// Flags each command accepts (besides the global ones).
const std::map<std::string, std::set<std::string>>& CommandFlags() {
  static const std::map<std::string, std::set<std::string>> kFlags = {
      {"cert list", {}},
      {"cert get", {}},
      {"cert stage", {"cert", "key", "names", "default"}},
      {"cert apply", {"cert", "key", "names", "default", "expected-generation"}},
      {"cert commit", {"expected-generation"}},
      {"cert abort", {}},
      {"cert delete", {"force", "expected-generation"}},
      {"cert default", {"expected-generation"}},
      {"cert watch", {}},
      {"trust get", {}},
      {"trust stage", {"ca", "crl", "require-client-cert"}},
      {"trust apply", {"ca", "crl", "require-client-cert", "expected-generation"}},
      {"trust commit", {"expected-generation"}},
      {"trust abort", {}},
      {"trust delete", {"expected-generation"}},
      {"tickets get", {}},
      {"tickets rotate", {"key-file", "keep"}},
      {"tickets set", {"key-file"}},
      {"stats", {"watch", "interval", "all", "count"}},
      {"conns", {"handoffs", "limit"}},
      {"caps", {}},
      {"status", {}},
      {"health", {"service"}},
      {"version", {}},
  };
  return kFlags;
}

const std::set<std::string>& GlobalFlags() {
  static const std::set<std::string> kGlobal = {"socket",   "server",  "output", "timeout",
                                                "tls-cert", "tls-key", "tls-ca", "tls-server-name",
                                                "help",     "version"};
  return kGlobal;
}

const std::set<std::string>& BooleanFlags() {
  static const std::set<std::string> kBoolean = {
      "force", "default", "require-client-cert", "watch", "handoffs", "help", "all", "version"};
  return kBoolean;
}

// Every flag some command takes that is not a switch.
std::set<std::string> ValueFlags() {
  std::set<std::string> names = GlobalFlags();
  for (const auto& [command, flags] : CommandFlags()) names.insert(flags.begin(), flags.end());
  for (const std::string& b : BooleanFlags()) names.erase(b);
  return names;
}

// The command ("cert stage", "stats") the positional words name, checked against the flags
// given; empty with *exit_code set when it is a usage error.
std::string CheckCommand(const Options& o, int* exit_code) {
  const auto& p = o.args.positional;
  std::string command = p[0];
  const bool grouped = p[0] == "cert" || p[0] == "trust" || p[0] == "tickets";
  if (grouped && p.size() > 1) command += " " + p[1];
  if (grouped && p.size() == 1) {
    *exit_code = Usage(p[0] + ": which verb? (see 'ktlsctl --help')");
    return "";
  }
  auto it = CommandFlags().find(command);
  if (it == CommandFlags().end()) {
    *exit_code =
        Usage(grouped ? "unknown command '" + command + "'" : "unknown command '" + p[0] + "'");
    return "";
  }
  std::vector<std::string> given;
  for (const auto& [name, value] : o.args.flags) given.push_back(name);
  given.insert(given.end(), o.args.switches.begin(), o.args.switches.end());
  for (const std::string& name : given) {
    if (!GlobalFlags().count(name) && !it->second.count(name)) {
      std::string message = "'";
      message.append(command).append("' has no flag --").append(name);
      *exit_code = Usage(message);
      return "";
    }
  }
  return command;
}

// The gRPC channel: the Unix socket, or --server over mutual TLS. kOk or a usage error.
int Connect(Options& o) {
  const char* env = std::getenv("KTLSCTL_SOCKET");
  o.socket = o.args.Get("socket", env != nullptr && *env != '\0' ? env : kDefaultSocket);
  o.server = o.args.Get("server");
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(64 << 20);
  if (o.server.empty()) {
    o.channel = grpc::CreateCustomChannel("unix:" + o.socket, grpc::InsecureChannelCredentials(),
                                          channel_args);
    o.target = o.socket;
    return kOk;
  }
  grpc::SslCredentialsOptions ssl;
  std::string error;
  if (o.args.Get("tls-ca").empty() || o.args.Get("tls-cert").empty() ||
      o.args.Get("tls-key").empty()) {
    return Usage("--server needs --tls-ca, --tls-cert and --tls-key (the TCP API is mutual TLS)");
  }
  if (!ReadFile(o.args.Get("tls-ca"), &ssl.pem_root_certs, &error) ||
      !ReadFile(o.args.Get("tls-cert"), &ssl.pem_cert_chain, &error) ||
      !ReadFile(o.args.Get("tls-key"), &ssl.pem_private_key, &error)) {
    return Usage(error);
  }
  if (const std::string name = o.args.Get("tls-server-name"); !name.empty()) {
    channel_args.SetSslTargetNameOverride(name);
  }
  o.channel = grpc::CreateCustomChannel(o.server, grpc::SslCredentials(ssl), channel_args);
  Wipe(ssl.pem_private_key);
  o.target = o.server;
  return kOk;
}

int Dispatch(Options& o) {
  const std::string& group = o.args.positional[0];
  if (group == "cert") return CertCommand(o);
  if (group == "trust") return TrustCommand(o);
  if (group == "tickets") return TicketsCommand(o);
  if (group == "stats") return StatsCommand(o);
  if (group == "conns") return ConnsCommand(o);
  if (group == "caps") return CapsCommand(o);
  if (group == "status") return StatusCommand(o);
  if (group == "health") return HealthCommand(o);
  return Usage("unknown command '" + group + "'");
}

int Run(int argc, char** argv) {
  Options o;
  o.args = Parse(argc, argv, BooleanFlags(), ValueFlags());
  if (!o.args.error.empty()) return Usage(o.args.error);
  if (o.args.Has("help")) {
    std::cout << kUsageText;
    return kOk;
  }
  if (o.args.positional.empty()) {
    std::cerr << kUsageText;
    return kUsage;
  }
  int exit_code = kUsage;
  const std::string command = CheckCommand(o, &exit_code);
  if (command.empty()) return exit_code;
  const std::string output = o.args.Get("output", "table");
  if (output != "table" && output != "json") {
    return Usage("--output must be table or json, not '" + output + "'");
  }
  o.json = output == "json";
  if (command == "version") {
    std::cout << "ktlsctl " << kVersion << "\n";
    return kOk;
  }
  {
    const std::string t = o.args.Get("timeout", "10");
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(t.c_str(), &end, 10);
    if (t.empty() || *end != '\0' || errno != 0 || v <= 0 || v > 86400) {
      return Usage("--timeout must be a positive number of seconds");
    }
    o.timeout_s = static_cast<int>(v);
  }
  if (int rc = Connect(o); rc != kOk) return rc;
  return Dispatch(o);
}

}  // namespace
}  // namespace ktlsctl

int main(int argc, char** argv) { return ktlsctl::Run(argc, argv); }
