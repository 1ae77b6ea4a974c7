// ktls-demo-app: a small HTTP/1.1 server that serves connections handed over by ktls-agent.
//
// Process model: with --workers=1 the server runs in this process. With N > 1 this process
// supervises N worker processes (fork), each with its own subscription to the agent; it forwards
// SIGTERM/SIGINT to them and exits when they have exited. If a worker dies on its own, the others
// are stopped and the app exits non-zero (a supervisor such as systemd or Kubernetes restarts it).
// "demo-app: subscribed to <path> as <name>" is printed once, when every worker has subscribed.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "local_tls.h"
#include "options.h"
#include "server.h"

namespace {

using ktls::demo::Options;

void PrintReady(const Options& o) {
  if (o.agent_socket.empty()) {
    std::printf("demo-app: serving (no agent)\n");
  } else {
    std::printf("demo-app: subscribed to %s as %s\n", o.agent_socket.c_str(), o.app_name.c_str());
  }
  std::fflush(stdout);
}

// Forks o.workers worker processes; each writes one byte to `ready_fd` once subscribed. False
// (the ones already started are told to stop) when a fork fails.
bool ForkWorkers(const Options& o, int static_dir_fd, int ready_fd, int unused_fd,
                 std::vector<pid_t>* workers) {
  const pid_t parent = ::getpid();
  for (int i = 0; i < o.workers; ++i) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::fprintf(stderr, "demo-app: fork: %s\n", std::strerror(errno));
      for (pid_t w : *workers) ::kill(w, SIGTERM);
      return false;
    }
    if (pid == 0) {
      ::close(unused_fd);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // do not outlive the supervisor
      if (::getppid() != parent) ::_exit(1);
      const int rc = ktls::demo::RunWorker(o, i, static_dir_fd, [ready_fd] {
        const char b = 'r';
        (void)!::write(ready_fd, &b, 1);
      });
      std::fflush(stdout);
      std::fflush(stderr);
      ::_exit(rc);
    }
    workers->push_back(pid);
  }
  return true;
}

// The supervisor's state once the workers run: who is alive, whether we are stopping, the exit
// code so far.
class Supervisor {
 public:
  Supervisor(const Options& o, std::vector<pid_t> workers, int ready_fd)
      : o_(o), workers_(std::move(workers)), ready_fd_(ready_fd), alive_(o.workers) {}

  int Run(int sfd) {
    while (alive_ > 0) {
      pollfd p[2] = {{sfd, POLLIN, 0}, {ready_fd_, POLLIN, 0}};
      if (::poll(p, ready_fd_ >= 0 ? 2 : 1, -1) < 0) {
        if (errno == EINTR) continue;
        std::fprintf(stderr, "demo-app: poll: %s\n", std::strerror(errno));
        break;
      }
      if (ready_fd_ >= 0 && (p[1].revents & (POLLIN | POLLHUP))) OnReady();
      if (p[0].revents & POLLIN) OnSignal(sfd);
    }
    return exit_code_;
  }

 private:
  void StopAll() {
    for (pid_t w : workers_) {
      if (w > 0) ::kill(w, SIGTERM);
    }
  }

  void OnReady() {
    char buf[64];
    const ssize_t n = ::read(ready_fd_, buf, sizeof(buf));
    if (n > 0) {
      ready_count_ += static_cast<int>(n);
      if (ready_count_ == o_.workers) PrintReady(o_);
    } else {
      ::close(ready_fd_);
      ready_fd_ = -1;
    }
  }

  void OnSignal(int sfd) {
    signalfd_siginfo si;
    if (::read(sfd, &si, sizeof(si)) != sizeof(si)) return;
    if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
      if (!stopping_) {
        stopping_ = true;
        StopAll();
      }
      return;
    }
    // SIGCHLD: reap every worker that exited.
    int status;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      for (pid_t& w : workers_) {
        if (w != pid) continue;
        w = -1;
        --alive_;
        OnWorkerExit(pid, status);
      }
    }
  }

  // A worker that exits before we stop (or not cleanly) makes the app exit non-zero; the first
  // one that exits on its own stops the others.
  void OnWorkerExit(pid_t pid, int status) {
    const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!stopping_ || !clean) {
      std::fprintf(stderr, "demo-app: worker %d %s %d%s\n", pid,
                   WIFEXITED(status) ? "exited with status" : "killed by signal",
                   WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                   stopping_ ? "" : "; stopping the others");
    }
    if (!stopping_) {
      stopping_ = true;
      exit_code_ = 1;
      StopAll();
    } else if (!clean) {
      exit_code_ = 1;
    }
  }

  const Options& o_;
  std::vector<pid_t> workers_;
  int ready_fd_;
  int ready_count_ = 0;
  int alive_;
  bool stopping_ = false;
  int exit_code_ = 0;
};

int Supervise(const Options& o, int static_dir_fd) {
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) {
    std::fprintf(stderr, "demo-app: pipe: %s\n", std::strerror(errno));
    return 1;
  }
  std::vector<pid_t> workers;
  if (!ForkWorkers(o, static_dir_fd, ready[1], ready[0], &workers)) return 1;
  ::close(ready[1]);

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGCHLD);
  const int sfd = ::signalfd(-1, &mask, SFD_CLOEXEC);
  if (sfd < 0) {
    std::fprintf(stderr, "demo-app: signalfd: %s\n", std::strerror(errno));
    for (pid_t w : workers) ::kill(w, SIGTERM);
    return 1;
  }
  return Supervisor(o, std::move(workers), ready[0]).Run(sfd);
}

}  // namespace

int main(int argc, char** argv) {
  absl::StatusOr<Options> options = ktls::demo::ParseOptions(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "demo-app: %s\n%s", std::string(options.status().message()).c_str(),
                 ktls::demo::Usage());
    return 2;
  }
  if (options->help) {
    std::fputs(ktls::demo::Usage(), stdout);
    return 0;
  }
  // Writes to a peer that has gone report EPIPE instead of killing the process.
  ::signal(SIGPIPE, SIG_IGN);
  // SIGTERM/SIGINT (and SIGCHLD in the supervisor) are read from signalfds.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);

  int static_dir_fd = -1;
  if (!options->static_dir.empty()) {
    static_dir_fd = ::open(options->static_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (static_dir_fd < 0) {
      std::fprintf(stderr, "demo-app: --static_dir=%s: %s\n", options->static_dir.c_str(),
                   std::strerror(errno));
      return 2;
    }
  }
  // --tls_listen / --plain_listen: listening sockets (and the TLS context) before any fork.
  absl::StatusOr<ktls::demo::LocalListeners> local = ktls::demo::OpenLocalListeners(*options);
  if (!local.ok()) {
    std::fprintf(stderr, "demo-app: %s\n", std::string(local.status().message()).c_str());
    return 2;
  }
  options->tls_listen_fd = local->tls_fd;
  options->plain_listen_fd = local->plain_fd;
  if (local->tls_fd >= 0) std::printf("demo-app: listening tls %s\n", local->tls_address.c_str());
  if (local->plain_fd >= 0)
    std::printf("demo-app: listening plain %s\n", local->plain_address.c_str());
  std::fflush(stdout);
  if (options->workers == 1) {
    const Options& o = *options;
    return ktls::demo::RunWorker(o, 0, static_dir_fd, [&o] { PrintReady(o); });
  }
  return Supervise(*options, static_dir_fd);
}
