// systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram with "READY=1",
// "STATUS=...", "STOPPING=1" lines to the AF_UNIX socket named by $NOTIFY_SOCKET. The agent sends
// READY=1 once its listeners, handoff socket and control plane are up, so a Type=notify unit is
// "started" exactly then and units ordered After= it find the handoff socket.
//
// Not under systemd ($NOTIFY_SOCKET unset) it does nothing. A failure to notify is reported, never
// fatal: the agent serves either way and systemd's start timeout is the backstop.
#ifndef KTLS_AGENT_SD_NOTIFY_H_
#define KTLS_AGENT_SD_NOTIFY_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "agent/syscalls.h"

namespace ktls::agent {

// Sends `state` (newline-separated assignments) to `notify_socket`: a filesystem path, or an
// abstract socket name starting with '@'. Empty `notify_socket`: nothing to do, OkStatus.
// InvalidArgument for a name that is neither or too long; the errno of socket/sendmsg otherwise.
absl::Status SdNotify(SysCalls& sys, absl::string_view notify_socket, absl::string_view state);

// SdNotify to getenv("NOTIFY_SOCKET").
absl::Status SdNotifyFromEnv(SysCalls& sys, absl::string_view state);

}  // namespace ktls::agent

#endif  // KTLS_AGENT_SD_NOTIFY_H_
