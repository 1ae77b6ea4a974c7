// Wiping secret bytes the control plane handles (private keys in requests, state files and
// serialized records; session-ticket keys). Never log what these helpers are given.
#ifndef KTLS_SERVER_SECRETS_H_
#define KTLS_SERVER_SECRETS_H_

#include <openssl/crypto.h>

#include <string>

namespace ktls::control {

// Overwrites every byte the string owns, including spare capacity that earlier edits may have
// left secret bytes in, without reallocating; then empties it.
inline void WipeAndClear(std::string& s) {
  s.resize(s.capacity());  // never reallocates
  OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

// Wipes `s` when the scope ends (a string that is secret for its whole life).
class ScopedWipe {
 public:
  explicit ScopedWipe(std::string& s) : s_(s) {}
  ~ScopedWipe() { WipeAndClear(s_); }
  ScopedWipe(const ScopedWipe&) = delete;
  ScopedWipe& operator=(const ScopedWipe&) = delete;

 private:
  std::string& s_;
};

}  // namespace ktls::control

#endif  // KTLS_SERVER_SECRETS_H_
