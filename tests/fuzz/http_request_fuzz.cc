// Fuzzes the demo app's HTTP/1.1 request-head parser.
#include <cstdint>
#include <string_view>

#include "client/demo_app/http.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)ktls::demo::ParseRequestHead(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
