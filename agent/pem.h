// PEM input for the data plane: reading certificate and key files, parsing the blocks of a
// certificate chain, a CA bundle, a CRL list or a private key, and OpenSSL's error queue as text.
//
// One place for what the certificate store, the client trust bundle and the TLS context used to
// repeat each: the same size bound for every PEM input, the same "end of input" test (OpenSSL
// reports running out of blocks as an error), a password callback that refuses (a prompt on the
// terminal would hang a daemon), and the rule that OpenSSL's error queue is per call — after a
// failure its first entry becomes the message and the queue is emptied, so a stale entry never
// fails another caller on this thread.
#ifndef KTLS_AGENT_PEM_H_
#define KTLS_AGENT_PEM_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/openssl_ptr.h"

namespace ktls::agent {

using X509CrlPtr = std::unique_ptr<X509_CRL, OpenSslDeleter<X509_CRL_free>>;

// Every PEM file and PEM string the data plane accepts is at most this large.
inline constexpr size_t kMaxPemBytes = size_t{1} << 20;

// The first (oldest) queued OpenSSL error as text ("unknown OpenSSL error" when there is none),
// then an empty queue.
std::string TakeOpenSslError();

// A whole PEM file of at most kMaxPemBytes. `what` names its role in messages ("cannot read key
// file /x: No such file or directory"). `secret`: see base::ReadFileOptions.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view what,
                                        bool secret);

// The parsers take any size (the callers' limits differ: a CRL list may be larger than a chain)
// up to INT_MAX, which every caller's limit is far below.
//
// The certificates in `pem`, in order (none: an empty vector). If block n (1-based) does not
// parse: INVALID_ARGUMENT with OpenSSL's reason as the message, and *failed_block = n, so the
// caller can say which block in its own words.
absl::StatusOr<std::vector<X509Ptr>> ParsePemCertificates(std::string_view pem, int* failed_block);
// The same for X509 CRL blocks.
absl::StatusOr<std::vector<X509CrlPtr>> ParsePemCrls(std::string_view pem, int* failed_block);
// One private key (unencrypted PEM, PKCS#8 or traditional), parsed from the caller's buffer
// without a copy; an encrypted key fails (no password is ever asked for). The message is
// OpenSSL's reason, never anything from the key bytes.
absl::StatusOr<EvpPkeyPtr> ParsePemPrivateKey(std::string_view pem);

}  // namespace ktls::agent

#endif  // KTLS_AGENT_PEM_H_
