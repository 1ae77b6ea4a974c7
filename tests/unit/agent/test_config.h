// The configuration of an in-process agent for component tests: one worker, one listener on a
// loopback port the kernel picks, the handoff socket inside the test's directory.
#ifndef KTLS_TESTS_UNIT_AGENT_TEST_CONFIG_H_
#define KTLS_TESTS_UNIT_AGENT_TEST_CONFIG_H_

#include <string>

#include "agent/config.h"
#include "ktls/v1/config.pb.h"

namespace ktls::agent::testing {

inline v1::AgentConfig LoopbackTestConfig(const std::string& dir, const std::string& log_level) {
  v1::AgentConfig c = DefaultConfig();
  c.clear_listeners();
  auto* l = c.add_listeners();
  l->set_name("test");
  l->set_address("127.0.0.1");
  l->set_port(0);
  c.set_workers(1);
  c.set_handoff_socket(dir + "/handoff.sock");
  c.set_log_level(log_level);
  return c;
}

}  // namespace ktls::agent::testing

#endif  // KTLS_TESTS_UNIT_AGENT_TEST_CONFIG_H_
