// ktlsctl against the real agent: commands, tables and -o json, messages and exit codes, the
// health check as a Kubernetes exec probe uses it; the control socket refusing a peer without
// permission (a process running as nobody); the TCP listener's mutual TLS and allow-list.
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "ktls/ktls_client.h"
#include "tests/integration/support/control.h"

namespace ktls::testing {
namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Runs `body` in a child process as nobody:nogroup; returns its exit status.
template <typename Body>
int AsNobody(Body body) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(kNogroup) != 0 || setuid(kNobody) != 0) _exit(99);
    _exit(body());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// ktlsctl exited 0 and its stdout holds every one of `wanted`.
::testing::AssertionResult SucceedsSaying(const CommandResult& r,
                                          const std::vector<std::string>& wanted) {
  if (r.exit_code != 0) {
    return ::testing::AssertionFailure() << "exit " << r.exit_code << ": " << r.err;
  }
  for (const std::string& w : wanted) {
    if (!Contains(r.out, w))
      return ::testing::AssertionFailure() << "no '" << w << "' in " << r.out;
  }
  return ::testing::AssertionSuccess();
}

int ConnectErrno(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path.c_str());
  const int rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  const int err = rc == 0 ? 0 : errno;
  close(fd);
  return err;
}

TEST(KtlsctlTest, CommandsTablesJsonMessagesAndExitCodes) {
  Stack stack;
  ASSERT_GT(stack.port(), 0);
  const std::string socket = ReadyInfo(stack)["control_socket"];
  TempDir files;
  const testcerts::TestCert ca = testcerts::MakeCa("ktlsctl CA");
  const testcerts::TestCert shop = MakeLeaf(ca, "shop", {"shop.ctl.test"});
  const testcerts::TestCert other = MakeLeaf(ca, "other", {"other.ctl.test"});
  const std::string crt = files.Write("shop.crt", shop.cert_pem);
  const std::string key = files.Write("shop.key", shop.key_pem);
  const std::string other_key = files.Write("other.key", other.key_pem);

  CommandResult r = Ktlsctl(socket, {"health"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  EXPECT_EQ("SERVING\n", r.out);
  // The data-plane health turns SERVING within 100 ms of the app subscribing.
  for (int i = 0; i < 50; ++i) {
    r = Ktlsctl(socket, {"health", "--service=ktls.v1.DataPlane"});
    if (r.exit_code == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(0, r.exit_code) << r.out << r.err;

  r = Ktlsctl(socket, {"cert", "stage", "shop", "--cert=" + crt, "--key", key});
  EXPECT_EQ(0, r.exit_code) << r.err;
  EXPECT_TRUE(Contains(r.out, "certificate \"shop\" staged")) << r.out;
  EXPECT_TRUE(SucceedsSaying(Ktlsctl(socket, {"cert", "list"}),
                             {"NAME", "staged (not served until committed)"}));
  r = Ktlsctl(socket, {"cert", "commit", "shop"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  EXPECT_TRUE(Contains(r.out, "certificate \"shop\" committed (generation 2)")) << r.out;
  EXPECT_EQ(FingerprintOfPem(shop.cert_pem), ServedFingerprint(stack.port(), "shop.ctl.test"));

  r = Ktlsctl(socket, {"cert", "list", "-o", "json"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  EXPECT_TRUE(Contains(r.out, "\"name\": \"shop\"")) << r.out;
  EXPECT_TRUE(Contains(r.out, "\"sha256_fingerprint\": \"" + FingerprintOfPem(shop.cert_pem)))
      << r.out;
  EXPECT_FALSE(Contains(r.out, "PRIVATE KEY"));
  r = Ktlsctl(socket, {"cert", "get", "shop"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  EXPECT_TRUE(Contains(r.out, FingerprintOfPem(shop.cert_pem))) << r.out;

  // Refused by the agent: exit 1, the agent's message and code on stderr.
  r = Ktlsctl(socket, {"cert", "apply", "bad", "--cert=" + crt, "--key=" + other_key});
  EXPECT_EQ(1, r.exit_code);
  EXPECT_EQ("error: certificate 'bad': private key does not match certificate (INVALID_ARGUMENT)\n",
            r.err);
  r = Ktlsctl(socket, {"cert", "delete", "shop"});
  EXPECT_EQ(1, r.exit_code);
  EXPECT_TRUE(Contains(r.err, "'shop' is the only certificate")) << r.err;
  r = Ktlsctl(socket, {"cert", "commit", "shop", "--expected-generation=1"});
  EXPECT_EQ(1, r.exit_code);
  EXPECT_TRUE(Contains(r.err, "(ABORTED)")) << r.err;

  // Usage errors: exit 2.
  EXPECT_EQ(2, Ktlsctl(socket, {"cert", "frobnicate"}).exit_code);
  EXPECT_EQ(2, Ktlsctl(socket, {"cert", "list", "--bogus=1"}).exit_code);
  EXPECT_EQ(2, Ktlsctl(socket, {}).exit_code);
  r = Ktlsctl(socket, {"cert", "stage", "x", "--cert=/nonexistent", "--key=" + key});
  EXPECT_EQ(2, r.exit_code);
  EXPECT_TRUE(Contains(r.err, "cannot read /nonexistent")) << r.err;
  EXPECT_EQ(2, Ktlsctl(socket, {"stats", "-o", "yaml"}).exit_code);
  EXPECT_EQ(0, Ktlsctl(socket, {"--help"}).exit_code);

  // Unreachable: exit 3 with what is wrong.
  r = Ktlsctl(stack.dir() + "/nothing.sock", {"health"});
  EXPECT_EQ(3, r.exit_code);
  EXPECT_TRUE(Contains(r.err, "no control socket at " + stack.dir() + "/nothing.sock")) << r.err;

  // Telemetry commands.
  ASSERT_TRUE(Get(stack.port(), "/healthz").ok);
  EXPECT_TRUE(
      SucceedsSaying(Ktlsctl(socket, {"stats"}), {"handshakes_completed", "handshake duration"}));
  r = Ktlsctl(socket, {"stats", "-o", "json"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  EXPECT_TRUE(Contains(r.out, "\"counters\"")) << r.out;
  r = Ktlsctl(socket, {"conns", "--handoffs"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  EXPECT_TRUE(Contains(r.out, "sent")) << r.out;
  r = Ktlsctl(socket, {"conns"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  EXPECT_TRUE(Contains(r.out, "handshakes in progress")) << r.out;
  r = Ktlsctl(socket, {"caps"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  EXPECT_TRUE(Contains(r.out, "offload policy")) << r.out;
  EXPECT_TRUE(Contains(r.out, "AES-128-GCM")) << r.out;
  r = Ktlsctl(socket, {"status"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  r = Ktlsctl(socket, {"tickets", "rotate"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  EXPECT_TRUE(Contains(r.out, "decrypt only")) << r.out;
  r = Ktlsctl(socket, {"trust", "get"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  r = Ktlsctl(socket, {"stats", "--watch", "--interval=100ms", "--count=2"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  EXPECT_EQ(2u, [&] {
    size_t n = 0;
    for (size_t p = 0; (p = r.out.find("----\n", p)) != std::string::npos; ++p) ++n;
    return n;
  }());
}

TEST(KtlsctlTest, DataPlaneHealthIsNotServingWithoutAnApp) {
  AgentOptions options;
  options.start_app = false;
  Stack stack(options);
  const std::string socket = ReadyInfo(stack)["control_socket"];
  EXPECT_EQ(0, Ktlsctl(socket, {"health"}).exit_code);
  CommandResult r = Ktlsctl(socket, {"health", "--service=ktls.v1.DataPlane"});
  EXPECT_EQ(4, r.exit_code);
  EXPECT_EQ("NOT_SERVING\n", r.out);
  r = Ktlsctl(socket, {"health", "--service=no.such.Service"});
  EXPECT_EQ(1, r.exit_code);
}

TEST(KtlsctlTest, ControlSocketRefusesAPeerWithoutPermission) {
  ASSERT_EQ(0u, geteuid()) << "this test switches to nobody, which needs root";
  Stack stack;
  const std::string socket = ReadyInfo(stack)["control_socket"];
  // Let others traverse the test directory, so that only the socket's own mode decides.
  ASSERT_EQ(0, chmod(stack.dir().c_str(), 0711));
  struct stat st {};
  ASSERT_EQ(0, stat(socket.c_str(), &st));
  EXPECT_EQ(0600, st.st_mode & 07777);
  EXPECT_EQ(EACCES, AsNobody([&] { return ConnectErrno(socket); }));
  const int status = AsNobody([&] {
    execl(KtlsctlBin().c_str(), "ktlsctl", ("--socket=" + socket).c_str(), "health",
          static_cast<char*>(nullptr));
    return 127;
  });
  EXPECT_EQ(3, status) << "ktlsctl as nobody should be refused (exit 3)";
  CommandResult r = Ktlsctl(socket, {"health"});  // root (the owner) still gets in
  EXPECT_EQ(0, r.exit_code) << r.err;

  // Group access by flag: nogroup's members may connect, others still may not.
  AgentOptions options;
  options.extra_flags = {"--control_socket_mode=0660", "--control_socket_group=nogroup"};
  Stack grouped(options);
  ASSERT_EQ(0, chmod(grouped.dir().c_str(), 0711));
  const std::string gsocket = ReadyInfo(grouped)["control_socket"];
  ASSERT_EQ(0, stat(gsocket.c_str(), &st));
  EXPECT_EQ(0660, st.st_mode & 07777);
  EXPECT_EQ(kNogroup, st.st_gid);
  EXPECT_EQ(0, AsNobody([&] { return ConnectErrno(gsocket); }));
}

// Subscribes to `socket` with the C API as nobody, with supplementary groups `groups`; 0 =
// subscribed, 10 = the file mode refused the connect, 11 = the agent refused the subscriber
// (SO_PEERCRED) with its reason, 12 = anything else.
int SubscribeAsNobody(const std::string& socket, std::vector<gid_t> groups) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(groups.size(), groups.data()) != 0 ||
        setresgid(kNogroup, kNogroup, kNogroup) != 0 || setresuid(kNobody, kNobody, kNobody) != 0) {
      _exit(99);
    }
    ktls_agent* agent = nullptr;
    const int rc = ktls_agent_connect(socket.c_str(), "nobody-app", 1, 5000, &agent);
    if (rc == KTLS_OK) _exit(0);
    const std::string error = ktls_last_error();
    if (rc == KTLS_E_PERMISSION && error.find("may not subscribe") != std::string::npos &&
        error.find("uid 65534") != std::string::npos) {
      _exit(11);
    }
    if (rc == KTLS_E_PERMISSION && error.find("not allowed to connect") != std::string::npos) {
      _exit(10);
    }
    fprintf(stderr, "subscribe as nobody: %s: %s\n", ktls_status_name(rc), error.c_str());
    _exit(12);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(KtlsctlTest, HandoffSocketAdmitsOnlyAllowedProcesses) {
  ASSERT_EQ(0u, geteuid()) << "this test switches to nobody, which needs root";
  // Defaults: 0660, the agent's (root's) group, only the agent's uid may subscribe. A process
  // outside the group cannot connect; one inside it (gid 0 as a supplementary group) can connect
  // but is refused by the agent's SO_PEERCRED check, which says why and counts it.
  AgentOptions options;
  options.start_app = false;
  Stack stack(options);
  ASSERT_EQ(0, chmod(stack.dir().c_str(), 0711));
  struct stat st {};
  ASSERT_EQ(0, stat(stack.handoff_socket().c_str(), &st));
  EXPECT_EQ(0660, st.st_mode & 07777);
  EXPECT_EQ(10, SubscribeAsNobody(stack.handoff_socket(), {}));
  EXPECT_EQ(11, SubscribeAsNobody(stack.handoff_socket(), {0}));
  EXPECT_TRUE(Contains(stack.AgentLog(), "refused an app: uid 65534 gid 65534"))
      << stack.AgentLog();
  Metrics m;
  std::string error;
  ASSERT_TRUE(FetchMetrics(ReadyInfo(stack)["metrics"], &m, &error)) << error;
  EXPECT_EQ(1, m.Get("ktls_app_subscribers_refused_total"));

  // The socket's group by flag: its members may connect and subscribe; the uid by flag too.
  options.extra_flags = {"--handoff_socket_mode=0660", "--handoff_socket_group=nogroup"};
  Stack grouped(options);
  ASSERT_EQ(0, chmod(grouped.dir().c_str(), 0711));
  ASSERT_EQ(0, stat(grouped.handoff_socket().c_str(), &st));
  EXPECT_EQ(0660, st.st_mode & 07777);
  EXPECT_EQ(kNogroup, st.st_gid);
  EXPECT_EQ(0, SubscribeAsNobody(grouped.handoff_socket(), {}));
  options.extra_flags = {"--handoff_allowed_uids=65534"};
  Stack by_uid(options);
  ASSERT_EQ(0, chmod(by_uid.dir().c_str(), 0711));
  EXPECT_EQ(0, SubscribeAsNobody(by_uid.handoff_socket(), {0}));

  // 'other' access is refused at start.
  AgentOptions open_mode;
  open_mode.start_app = false;
  open_mode.expect_ready = false;
  open_mode.extra_flags = {"--handoff_socket_mode=0666"};
  Stack refused(open_mode);
  for (int i = 0; i < 100 && refused.agent().Running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(refused.agent().Running());
  EXPECT_TRUE(Contains(refused.AgentLog(), "gives 'other' access")) << refused.AgentLog();
}

TEST(KtlsctlTest, TcpListenerNeedsMutualTlsAndAnAllowListedClient) {
  const testcerts::TestCert ca = testcerts::MakeCa("control CA");
  const testcerts::TestCert server = MakeLeaf(ca, "agent control", {"localhost"});
  testcerts::CertSpec client_spec;
  client_spec.common_name = "ops";
  client_spec.client_auth = true;
  const testcerts::TestCert ops = testcerts::MakeCert(client_spec, &ca);
  client_spec.common_name = "intruder";
  const testcerts::TestCert intruder = testcerts::MakeCert(client_spec, &ca);
  // Cross-type confusion: identities equal to allowed values, but of another kind. A CN that
  // spells the allowed SPIFFE ID, a DNS SAN equal to the allowed CN, a URI SAN "ops".
  client_spec.common_name = "spiffe://example/ops";
  const testcerts::TestCert cn_as_spiffe = testcerts::MakeCert(client_spec, &ca);
  client_spec.common_name = "someone";
  client_spec.dns_names = {"ops"};
  client_spec.uri_names = {"ops"};
  const testcerts::TestCert san_as_cn = testcerts::MakeCert(client_spec, &ca);
  // The real SPIFFE identity: a URI SAN, whatever the CN.
  client_spec.common_name = "workload";
  client_spec.dns_names = {};
  client_spec.uri_names = {"spiffe://example/ops"};
  const testcerts::TestCert spiffe = testcerts::MakeCert(client_spec, &ca);
  TempDir files;
  const std::string ca_file = files.Write("ca.crt", ca.cert_pem);
  const std::string server_crt = files.Write("server.crt", server.cert_pem);
  const std::string server_key = files.Write("server.key", server.key_pem);
  const std::string ops_crt = files.Write("ops.crt", ops.cert_pem);
  const std::string ops_key = files.Write("ops.key", ops.key_pem);
  const std::string intruder_crt = files.Write("intruder.crt", intruder.cert_pem);
  const std::string intruder_key = files.Write("intruder.key", intruder.key_pem);
  const std::string cn_as_spiffe_crt = files.Write("cnspiffe.crt", cn_as_spiffe.cert_pem);
  const std::string cn_as_spiffe_key = files.Write("cnspiffe.key", cn_as_spiffe.key_pem);
  const std::string san_as_cn_crt = files.Write("sancn.crt", san_as_cn.cert_pem);
  const std::string san_as_cn_key = files.Write("sancn.key", san_as_cn.key_pem);
  const std::string spiffe_crt = files.Write("spiffe.crt", spiffe.cert_pem);
  const std::string spiffe_key = files.Write("spiffe.key", spiffe.key_pem);

  // Without its TLS settings the agent refuses to start.
  AgentOptions refused;
  refused.start_app = false;
  refused.expect_ready = false;
  refused.extra_flags = {"--control_tcp_address=127.0.0.1:0"};
  {
    Stack s(refused);
    for (int i = 0; i < 100 && s.agent().Running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_FALSE(s.agent().Running());
    EXPECT_TRUE(Contains(s.AgentLog(), "the TCP control API is mutual-TLS only")) << s.AgentLog();
  }
  // An allow-list entry that does not say what it matches is refused at start.
  refused.extra_flags = {"--control_tcp_address=127.0.0.1:0", "--control_tls_cert=" + server_crt,
                         "--control_tls_key=" + server_key, "--control_client_ca=" + ca_file,
                         "--control_allowed_clients=ops"};
  {
    Stack s(refused);
    for (int i = 0; i < 100 && s.agent().Running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_FALSE(s.agent().Running());
    EXPECT_TRUE(Contains(s.AgentLog(), "'ops' does not say what it matches")) << s.AgentLog();
  }

  AgentOptions options;
  options.start_app = false;
  options.extra_flags = {"--control_tcp_address=127.0.0.1:0", "--control_tls_cert=" + server_crt,
                         "--control_tls_key=" + server_key, "--control_client_ca=" + ca_file,
                         "--control_allowed_clients=spiffe://example/ops,cn:ops"};
  Stack stack(options);
  const std::string tcp = ReadyInfo(stack)["control_tcp"];
  ASSERT_FALSE(tcp.empty());
  const std::vector<std::string> tls = {"--server=" + tcp, "--tls-ca=" + ca_file,
                                        "--tls-server-name=localhost"};
  auto with = [&](const std::string& crt, const std::string& key, std::vector<std::string> cmd) {
    std::vector<std::string> args = tls;
    args.push_back("--tls-cert=" + crt);
    args.push_back("--tls-key=" + key);
    args.insert(args.end(), cmd.begin(), cmd.end());
    return Ktlsctl("", args);
  };
  CommandResult r = with(ops_crt, ops_key, {"health"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  r = with(ops_crt, ops_key, {"cert", "list"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  r = with(intruder_crt, intruder_key, {"cert", "list"});
  EXPECT_EQ(1, r.exit_code);
  EXPECT_TRUE(Contains(r.err, "not in control_allowed_clients (PERMISSION_DENIED)")) << r.err;
  r = with(spiffe_crt, spiffe_key, {"cert", "list"});
  EXPECT_EQ(0, r.exit_code) << r.err;
  r = with(cn_as_spiffe_crt, cn_as_spiffe_key, {"cert", "list"});
  EXPECT_EQ(1, r.exit_code) << "a CN spelling the allowed SPIFFE ID must not pass";
  EXPECT_TRUE(Contains(r.err, "cn:spiffe://example/ops] is not in control_allowed_clients"))
      << r.err;
  r = with(san_as_cn_crt, san_as_cn_key, {"cert", "list"});
  EXPECT_EQ(1, r.exit_code) << "DNS/URI SANs equal to the allowed CN must not pass";
  // No client certificate at all: the TLS handshake fails.
  grpc::SslCredentialsOptions no_cert;
  no_cert.pem_root_certs = ca.cert_pem;
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto channel = grpc::CreateCustomChannel(tcp, grpc::SslCredentials(no_cert), args);
  auto stub = v1::CertificateService::NewStub(channel);
  v1::ListCertificatesResponse list;
  grpc::Status s = stub->ListCertificates(Ctx().get(), {}, &list);
  EXPECT_EQ(grpc::StatusCode::UNAVAILABLE, s.error_code()) << s.error_message();
}

}  // namespace
}  // namespace ktls::testing
