// The one way the integration tests start and stop child processes (the agent, the demo and
// probe apps, ktlsctl, the openssl CLI): fork, stdio redirected to files (and stdin to a pipe the
// test writes, when it asks), exec; stopped with SIGTERM and, after a grace period, SIGKILL, and
// always reaped. Harnesses build their process types on ChildProcess so that a test that fails
// half-way never leaves a child behind and no two harnesses disagree on how a child is stopped.
#ifndef KTLS_TESTS_INTEGRATION_SUPPORT_PROCESS_H_
#define KTLS_TESTS_INTEGRATION_SUPPORT_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace ktls::testing {

// Where a child's standard streams go.
struct ChildStdio {
  int stdin_fd = -1;        // becomes the child's stdin when >= 0; else stdin is inherited
  std::string stdout_path;  // created or truncated
  std::string stderr_path;  // may equal stdout_path: one log with both streams
};

// Forks and execs argv[0] (searched in PATH when it has no '/'). Returns the child's pid, or -1
// when fork failed; a child whose exec fails exits with status 127.
pid_t SpawnChild(std::vector<std::string> argv, const ChildStdio& stdio);

// Owns one child (a pid from SpawnChild, -1 for none). Destroying it stops and reaps the child.
class ChildProcess {
 public:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  ChildProcess(std::vector<std::string> argv, const ChildStdio& stdio)
      : ChildProcess(SpawnChild(std::move(argv), stdio)) {}
  ~ChildProcess() { Terminate(3000); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Reaps the child without blocking once it has exited.
  bool Running();
  // Waits up to `timeout_ms` for the child to exit on its own: its wait status, or -1.
  int Wait(int timeout_ms);
  // Waits as long as it takes: the wait status, or -1 when there is no child.
  int WaitForExit();
  // SIGTERM, then SIGKILL when it has not exited after `timeout_ms`: the wait status (or -1).
  int Terminate(int timeout_ms);

 private:
  pid_t pid_;
  int status_ = -1;
  bool reaped_ = false;
};

// The environment variable `name` when set and not empty, else `fallback` (build outputs: the
// compiled-in path unless the environment names another, as the VM suite does).
std::string EnvOr(const char* name, const std::string& fallback);
// The whole file ("" when it cannot be read): a child's log, a ready file.
std::string ReadWholeFile(const std::string& path);
void SleepMs(int ms);
// Polls `pred` every 20 ms; false when it is still false after `timeout_ms`.
bool WaitUntil(const std::function<bool()>& pred, int timeout_ms);

}  // namespace ktls::testing

#endif  // KTLS_TESTS_INTEGRATION_SUPPORT_PROCESS_H_
