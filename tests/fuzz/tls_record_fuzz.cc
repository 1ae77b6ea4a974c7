// Fuzzes the app library's record classification: record type + payload as a kTLS socket hands
// them over (the payload is whatever the TLS peer sent, decrypted).
#include <cstdint>
#include <span>

#include "client/lib/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  auto verdict =
      ktls::client::ClassifyRecord(data[0], std::span<const uint8_t>(data + 1, size - 1));
  (void)verdict;
  return 0;
}
