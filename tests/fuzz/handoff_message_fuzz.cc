// Fuzzes the agent's view of app messages: protobuf parsing and the SCM_RIGHTS checks over an
// arbitrary control buffer (the first input byte chooses how much of the input is "control").
#include <sys/socket.h>

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "ktls/v1/handoff.pb.h"
#include "ktls/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t control_len = std::min<size_t>(data[0], size - 1);
  const uint8_t* control = data + 1;
  std::string_view payload(reinterpret_cast<const char*>(data + 1 + control_len),
                           size - 1 - control_len);
  ktls::v1::AppToAgent app;
  (void)ktls::wire::Parse(payload, &app);
  ktls::v1::AgentToApp agent;
  (void)ktls::wire::Parse(payload, &agent);

  // A msghdr whose control part is fuzz bytes, aligned as the kernel would deliver it.
  ktls::wire::ControlBuffer buf;
  const size_t n = std::min(control_len, sizeof(buf.bytes));
  memcpy(buf.bytes, control, n);
  msghdr msg{};
  msg.msg_control = n ? buf.bytes : nullptr;
  msg.msg_controllen = n;
  msg.msg_flags = control_len > 0 ? (data[0] & 1 ? MSG_CTRUNC : 0) : 0;
  std::vector<int> fds;
  (void)ktls::wire::ExtractFds(msg, &fds);
  return 0;
}
