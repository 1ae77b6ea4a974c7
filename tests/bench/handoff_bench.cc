// Micro-benchmark of the handoff itself: one connected TCP socket plus its ConnectionInfo, sent
// over the Unix SOCK_SEQPACKET socket the way the agent's broker sends it (wire::Serialize,
// wire::OutgoingMessage, SysCalls::SendMsg with MSG_DONTWAIT | MSG_NOSIGNAL) and received the way
// an app receives it (ktls::client::AgentSubscription::Receive, which parses the message, checks
// the control data and the descriptor). Host only; prints numbers, asserts nothing.
//
//   BM_HandoffCost      send then receive in one thread: the CPU cost of one handoff, both sides.
//   BM_HandoffLatency   a "broker" thread sends when the app's credit arrives; the app thread
//                       sleeps in epoll_wait like ktls-demo-app, wakes, receives. Time from the
//                       broker starting to encode to the app holding the descriptor (wake-up
//                       included); p50/p99/p99.9 as counters. The app returns one credit per
//                       handoff (GrantCredits), so handoffs never queue.
//   BM_HandoffLatencyBusyPoll   the same, but the app polls Receive() without sleeping: the
//                       handoff's own send-to-receive latency, without the scheduler's wake-up.
//   BM_HandoffLatencySameCpu   BM_HandoffLatency with both threads pinned to CPU 0: the wake-up
//                       is a context switch on a running CPU instead of waking an idle one (on a
//                       VM host, an idle vCPU is halted in the hypervisor and costs tens of µs to
//                       wake; this variant shows how much of the latency that is).
//   BM_WakeupBaseline   the machine's floor for the first one: the same two threads and the same
//                       epoll wake-up, but a 1-byte message on a SEQPACKET socketpair (no
//                       descriptor, no protobuf). HandoffLatency minus this is what the handoff
//                       adds; this itself is what any cross-thread wake-up costs on this machine
//                       (on a VM host: an idle vCPU halted in the hypervisor has to be woken).
//
//   build-bench/tests/bench/ktls_handoff_bench [--benchmark_format=json]
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "agent/syscalls.h"
#include "client/lib/app.h"
#include "ktls/v1/handoff.pb.h"
#include "ktls/wire.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const char* what) {
  std::perror(what);
  std::exit(1);
}

// What the agent sends for a typical kTLS connection.
ktls::v1::AgentToApp TypicalHandoff(uint64_t id) {
  ktls::v1::AgentToApp msg;
  ktls::v1::ConnectionInfo* i = msg.mutable_handoff()->mutable_connection();
  i->set_connection_id(id);
  i->mutable_peer()->set_address("10.1.2.3");
  i->mutable_peer()->set_port(51234);
  i->mutable_local()->set_address("10.1.2.4");
  i->mutable_local()->set_port(8443);
  i->set_listener("https");
  i->set_sni("api.example.com");
  i->set_alpn("http/1.1");
  i->set_tls_version("TLSv1.3");
  i->set_tls_version_code(0x0304);
  i->set_cipher("TLS_AES_128_GCM_SHA256");
  i->set_data_path(ktls::v1::DATA_PATH_KTLS);
  i->set_ktls_tx(ktls::v1::OFFLOAD_STATE_ACTIVE);
  i->set_ktls_rx(ktls::v1::OFFLOAD_STATE_ACTIVE);
  i->set_handshake_micros(850);
  i->mutable_peer_identity()->set_presented(false);
  return msg;
}

// A connected loopback TCP socket: the descriptor handed over (the same one every time; the app
// side gets its own copy and closes it, as an app would close a finished connection).
int LoopbackTcpSocket(int* peer) {
  const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(l, 1) != 0 ||
      ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    Die("listen");
  }
  const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) Die("connect");
  *peer = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(l);
  return c;
}

// The agent's end of one subscription: a listening SEQPACKET socket in a temp directory, one
// accepted subscriber answered with Subscribed.
class Subscription {
 public:
  Subscription() {
    char dir[] = "/tmp/ktls-handoff-bench.XXXXXX";
    if (::mkdtemp(dir) == nullptr) Die("mkdtemp");
    dir_ = dir;
    path_ = dir_ + "/handoff.sock";
    const int l = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::snprintf(un.sun_path, sizeof(un.sun_path), "%s", path_.c_str());
    if (::bind(l, reinterpret_cast<sockaddr*>(&un), sizeof(un)) != 0 || ::listen(l, 1) != 0) {
      Die("bind unix");
    }
    std::thread agent([&] {
      agent_fd_ = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
      char buf[4096];
      if (::recv(agent_fd_, buf, sizeof(buf), 0) <= 0) Die("recv Subscribe");
      ktls::v1::AgentToApp reply;
      reply.mutable_subscribed()->set_protocol_version(ktls::wire::kProtocolVersion);
      reply.mutable_subscribed()->set_agent_version("bench");
      reply.mutable_subscribed()->set_subscriber_id(1);
      std::string bytes = *ktls::wire::Serialize(reply);
      if (::send(agent_fd_, bytes.data(), bytes.size(), 0) < 0) Die("send Subscribed");
    });
    auto sub = ktls::client::AgentSubscription::Connect(path_, "handoff-bench", 1);
    agent.join();
    ::close(l);
    if (!sub.ok()) {
      std::fprintf(stderr, "subscribe: %s\n", std::string(sub.status().message()).c_str());
      std::exit(1);
    }
    app_ = std::move(*sub);
    tcp_ = LoopbackTcpSocket(&tcp_peer_);
  }
  ~Subscription() {
    app_.reset();
    ::close(agent_fd_);
    ::close(tcp_);
    ::close(tcp_peer_);
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }

  // The broker's send path for one ready connection.
  bool Send(uint64_t id) {
    const ktls::v1::AgentToApp msg = TypicalHandoff(id);
    absl::StatusOr<std::string> bytes = ktls::wire::Serialize(msg);
    if (!bytes.ok()) return false;
    bytes_ = bytes->size();
    ktls::wire::OutgoingMessage out(*bytes, tcp_);
    return ktls::agent::RealSysCalls()
        .SendMsg(agent_fd_, out.header(), MSG_DONTWAIT | MSG_NOSIGNAL)
        .ok();
  }

  ktls::client::AgentSubscription& app() { return *app_; }
  int agent_fd() const { return agent_fd_; }
  size_t message_bytes() const { return bytes_; }

 private:
  std::string dir_, path_;
  int agent_fd_ = -1;
  int tcp_ = -1, tcp_peer_ = -1;
  size_t bytes_ = 0;
  std::unique_ptr<ktls::client::AgentSubscription> app_;
};

void BM_HandoffCost(benchmark::State& state) {
  Subscription s;
  uint64_t id = 0;
  for (auto _ : state) {
    if (!s.Send(++id)) {
      state.SkipWithError("sendmsg failed");
      break;
    }
    auto got = s.app().Receive();
    if (!got.ok() || !got->has_value()) {
      state.SkipWithError("receive failed");
      break;
    }
    benchmark::DoNotOptimize((*got)->fd.get());
  }  // the received descriptor is closed with `got`, inside the loop, as an app would
  state.counters["msg_bytes"] = static_cast<double>(s.message_bytes());
}
BENCHMARK(BM_HandoffCost);

// Quantiles of one latency run as counters (the Google Benchmark report shows them per run).
void ReportQuantiles(benchmark::State& state, std::vector<double>& us) {
  if (us.empty()) return;
  std::sort(us.begin(), us.end());
  auto q = [&](double p) {
    return us[std::min(us.size() - 1, static_cast<size_t>(p * us.size()))];
  };
  state.counters["p50_us"] = q(0.50);
  state.counters["p99_us"] = q(0.99);
  state.counters["p999_us"] = q(0.999);
  state.counters["max_us"] = us.back();
}

// The broker's side of the latency runs: sends one message per credit (the first credit is
// implicit, as the one that came with Subscribe), stamping the time just before it starts.
template <typename SendFn>
std::thread CreditedSender(int credit_fd, std::atomic<bool>& stop, std::atomic<int64_t>& sent_at,
                           SendFn send) {
  return std::thread([credit_fd, &stop, &sent_at, send] {
    uint64_t id = 0;
    bool have_credit = true;
    char buf[4096];
    while (!stop.load()) {
      if (!have_credit) {
        pollfd p{credit_fd, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        if (::recv(credit_fd, buf, sizeof(buf), 0) <= 0) return;
        have_credit = true;  // a GrantCredits{1}
      }
      sent_at.store(Clock::now().time_since_epoch().count());
      if (!send(++id)) return;
      have_credit = false;
    }
  });
}

// Pins the calling thread to `cpu` for its lifetime; restores the previous mask on destruction.
class PinToCpu {
 public:
  explicit PinToCpu(int cpu) : active_(cpu >= 0) {
    if (!active_) return;
    pthread_getaffinity_np(pthread_self(), sizeof(saved_), &saved_);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
  }
  ~PinToCpu() {
    if (active_) pthread_setaffinity_np(pthread_self(), sizeof(saved_), &saved_);
  }

 private:
  bool active_;
  cpu_set_t saved_{};
};

// busy_poll: the app spins on a non-blocking Receive() instead of sleeping in epoll_wait.
// pin_cpu >= 0: the app and the broker both run on that CPU.
void HandoffLatency(benchmark::State& state, bool busy_poll, int pin_cpu = -1) {
  PinToCpu pin(pin_cpu);  // before the broker thread starts: it inherits the mask
  Subscription s;
  s.app().SetNonBlocking(true);
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, s.app().fd(), &ev);

  std::atomic<bool> stop{false};
  std::atomic<int64_t> sent_at{0};
  std::thread broker =
      CreditedSender(s.agent_fd(), stop, sent_at, [&s](uint64_t id) { return s.Send(id); });

  std::vector<double> us;
  us.reserve(1 << 20);
  for (auto _ : state) {
    absl::StatusOr<std::optional<ktls::client::HandedConnection>> got;
    for (;;) {
      if (!busy_poll) {
        epoll_event out;
        while (::epoll_wait(ep, &out, 1, -1) != 1) {
        }
      }
      got = s.app().Receive();
      if (!got.ok() || got->has_value()) break;
    }
    const int64_t now = Clock::now().time_since_epoch().count();
    if (!got.ok()) {
      state.SkipWithError("receive failed");
      break;
    }
    const double seconds = (now - sent_at.load()) / 1e9;
    state.SetIterationTime(seconds);
    us.push_back(seconds * 1e6);
    got->reset();  // close the descriptor before returning the credit
    if (!s.app().GrantCredits(1).ok()) {
      state.SkipWithError("GrantCredits failed");
      break;
    }
  }
  stop = true;
  broker.join();
  ::close(ep);
  ReportQuantiles(state, us);
}

void BM_HandoffLatency(benchmark::State& state) { HandoffLatency(state, /*busy_poll=*/false); }
BENCHMARK(BM_HandoffLatency)->UseManualTime()->Iterations(20000);

void BM_HandoffLatencySameCpu(benchmark::State& state) {
  HandoffLatency(state, /*busy_poll=*/false, /*pin_cpu=*/0);
}
BENCHMARK(BM_HandoffLatencySameCpu)->UseManualTime()->Iterations(20000);

void BM_HandoffLatencyBusyPoll(benchmark::State& state) {
  HandoffLatency(state, /*busy_poll=*/true);
}
BENCHMARK(BM_HandoffLatencyBusyPoll)->UseManualTime()->Iterations(20000);

// The same shape as BM_HandoffLatency with nothing of the handoff in it: one byte each way on a
// SEQPACKET socketpair, the receiver asleep in epoll_wait.
void BM_WakeupBaseline(benchmark::State& state) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) Die("socketpair");
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, sv[1], &ev);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> sent_at{0};
  const int sender_fd = sv[0];
  std::thread sender = CreditedSender(sender_fd, stop, sent_at, [sender_fd](uint64_t) {
    const char b = 'h';
    return ::send(sender_fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1;
  });
  std::vector<double> us;
  us.reserve(1 << 20);
  for (auto _ : state) {
    epoll_event out;
    while (::epoll_wait(ep, &out, 1, -1) != 1) {
    }
    char b;
    if (::recv(sv[1], &b, 1, MSG_DONTWAIT) != 1) {
      state.SkipWithError("recv failed");
      break;
    }
    const int64_t now = Clock::now().time_since_epoch().count();
    const double seconds = (now - sent_at.load()) / 1e9;
    state.SetIterationTime(seconds);
    us.push_back(seconds * 1e6);
    if (::send(sv[1], "c", 1, MSG_NOSIGNAL) != 1) {
      state.SkipWithError("credit send failed");
      break;
    }
  }
  stop = true;
  sender.join();
  ::close(ep);
  ::close(sv[0]);
  ::close(sv[1]);
  ReportQuantiles(state, us);
}
BENCHMARK(BM_WakeupBaseline)->UseManualTime()->Iterations(20000);

}  // namespace

BENCHMARK_MAIN();
