// What can go wrong with one ktls-loadgen request, by kind. The names are part of the --json
// schema (errors.<name>): add kinds at the end, never rename.
#ifndef KTLS_CLIENT_LOADGEN_ERRORS_H_
#define KTLS_CLIENT_LOADGEN_ERRORS_H_

#include <array>

namespace ktls::loadgen {

enum class ErrorKind {
  kConnect,      // TCP connect failed (refused, unreachable, out of ports ...)
  kHandshake,    // TLS handshake failed
  kTls,          // TLS error after the handshake (bad record, alert, truncation)
  kIo,           // socket error after connect (reset, EPIPE)
  kTimeout,      // no complete response within --timeout
  kClosedEarly,  // the server closed before the response was complete
  kHttpParse,    // malformed response head, chunk framing, or bytes after the response
  kHttpStatus,   // status other than 200
  kLength,       // body length differs from what the scenario expects
  kBody,         // body bytes differ from the expected pattern / echo
  kHash,         // static file body's SHA-256 differs
};
inline constexpr int kErrorKinds = 11;

inline constexpr std::array<const char*, kErrorKinds> kErrorNames = {
    "connect",    "handshake",   "tls",    "io",   "timeout", "closed_early",
    "http_parse", "http_status", "length", "body", "hash"};

inline const char* ErrorName(ErrorKind k) { return kErrorNames[static_cast<int>(k)]; }

}  // namespace ktls::loadgen

#endif  // KTLS_CLIENT_LOADGEN_ERRORS_H_
