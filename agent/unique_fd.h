// The agent's spelling of base::UniqueFd: `UniqueFd(sys, fd)` closes through the injectable
// SysCalls (agent/syscalls.h), which is a base::FdCloser, so that a test's fake sees every close.
#ifndef KTLS_AGENT_UNIQUE_FD_H_
#define KTLS_AGENT_UNIQUE_FD_H_

#include "agent/syscalls.h"
#include "base/unique_fd.h"

namespace ktls::agent {

using UniqueFd = base::UniqueFd;

}  // namespace ktls::agent

#endif  // KTLS_AGENT_UNIQUE_FD_H_
