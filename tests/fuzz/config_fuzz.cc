// Fuzzes configuration parsing, defaulting and validation: no input may crash the agent.
#include <cstdint>
#include <string>

#include "agent/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto config = ktls::ParseConfigText(text, "fuzz");
  if (config.ok()) {
    ktls::ApplyDefaults(&*config);
    (void)ktls::ValidateConfig(*config);
  }
  return 0;
}
