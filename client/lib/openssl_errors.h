// OpenSSL's error queue as one line of text, for the client-side tools that terminate or
// originate TLS themselves (ktls-demo-app's --tls_listen, ktls-loadgen). Header-only so that the
// load generator, which does not link the app library, can use it too. Drains the queue: the
// next OpenSSL call on this thread starts clean.
#ifndef KTLS_CLIENT_LIB_OPENSSL_ERRORS_H_
#define KTLS_CLIENT_LIB_OPENSSL_ERRORS_H_

#include <openssl/err.h>

#include <string>

namespace ktls::client {

inline std::string DrainOpenSslErrors() {
  std::string s;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!s.empty()) s += "; ";
    s += buf;
  }
  return s;
}

}  // namespace ktls::client

#endif  // KTLS_CLIENT_LIB_OPENSSL_ERRORS_H_
