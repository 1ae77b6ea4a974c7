// Fuzzes configuration parsing, defaulting and validation: no input may crash the agent.
#include <cstdint>
#include <string>

#include "agent/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto config = ktls::agent::ParseConfigText(text, "fuzz");
  if (config.ok()) {
    ktls::agent::ApplyDefaults(&*config);
    (void)ktls::agent::ValidateConfig(*config);
  }
  return 0;
}
