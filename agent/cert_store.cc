// Certificate parsing, validation and SNI selection (see cert_store.h for the model).
//
// Debian's Abseil has its own absl::string_view (not std::string_view), so internals use it and
// convert at the header's std::string_view boundary.
//
// Rules kept here:
//  - Private-key PEM is secret: it is parsed straight from the caller's buffer (no copy), and every
//    source's key_pem is wiped on every return path of Create, success or not. Nothing derived
//    from key bytes goes into an error message.
//  - OpenSSL's error queue is per call: cleared before our calls, and after a failure its first
//    entry goes into the message and the queue is cleared (agent/pem.h), so a stale entry never
//    fails another caller on this thread.
#include "agent/cert_store.h"

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "agent/pem.h"

namespace ktls::agent {
namespace {

// Overwrites every byte the string owns, including spare capacity that earlier edits may have
// left key bytes in, without reallocating; keeps the length (all bytes are then zero).
void WipeString(std::string& s) {
  const size_t size = s.size();
  s.resize(s.capacity());  // never reallocates
  OPENSSL_cleanse(s.data(), s.size());
  s.resize(size);
}

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// `name` is lower-case. Exact names are dot-separated labels of [a-z0-9-_]; a wildcard is "*"
// as the whole leftmost label followed by at least two labels ("*.example.com").
absl::Status ValidateServerName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("empty server name");
  if (name.size() > 253) {
    return absl::InvalidArgumentError(absl::StrCat("server name '", name, "' is too long"));
  }
  absl::string_view rest = name;
  const bool wildcard = absl::StartsWith(name, "*.");
  if (wildcard) rest.remove_prefix(2);
  if (absl::StrContains(rest, '*')) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid server name '", name,
        "': a wildcard is allowed only as the whole leftmost label, as in '*.example.com'"));
  }
  std::vector<absl::string_view> labels = absl::StrSplit(rest, '.');
  if (wildcard && labels.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid server name '", name,
                     "': a wildcard needs at least two labels after it, as in '*.example.com'"));
  }
  for (absl::string_view label : labels) {
    if (label.empty() || label.size() > 63) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid server name '", name, "': empty or over-long label"));
    }
    for (char c : label) {
      if (!IsNameChar(c)) {
        return absl::InvalidArgumentError(
            absl::StrCat("invalid server name '", absl::CHexEscape(name),
                         "': only letters, digits, '-' and '_' are allowed in a label"));
      }
    }
  }
  return absl::OkStatus();
}

// Lower-case DNS names from the subjectAltName extension.
std::vector<std::string> DnsSubjectAltNames(X509* cert) {
  std::vector<std::string> names;
  GeneralNamesPtr sans(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  ERR_clear_error();  // absent or malformed extension: no names (validated by the caller)
  if (sans == nullptr) return names;
  for (int i = 0; i < sk_GENERAL_NAME_num(sans.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), i);
    if (gn->type != GEN_DNS) continue;
    const ASN1_IA5STRING* s = gn->d.dNSName;
    names.push_back(absl::AsciiStrToLower(
        absl::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                          static_cast<size_t>(ASN1_STRING_length(s)))));
  }
  return names;
}

absl::StatusOr<std::string> SubjectOf(X509* cert) {
  BioPtr mem(BIO_new(BIO_s_mem()));
  if (mem == nullptr ||
      X509_NAME_print_ex(mem.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
    return absl::InternalError(absl::StrCat("cannot print the subject: ", TakeOpenSslError()));
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(mem.get(), &data);
  return std::string(data, len > 0 ? static_cast<size_t>(len) : 0);
}

absl::StatusOr<int64_t> TimeOf(const ASN1_TIME* t, absl::string_view what) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the ", what, " time: ", TakeOpenSslError()));
  }
  return static_cast<int64_t>(timegm(&tm));
}

absl::StatusOr<int64_t> NotAfterOf(X509* cert) {
  return TimeOf(X509_get0_notAfter(cert), "notAfter");
}

absl::StatusOr<int64_t> NotBeforeOf(X509* cert) {
  return TimeOf(X509_get0_notBefore(cert), "notBefore");
}

// Indexes every entry's names (exact, and wildcards by suffix); a name claimed twice fails.
absl::Status IndexNames(const std::vector<CertificateEntryPtr>& entries,
                        absl::flat_hash_map<std::string, size_t>& exact,
                        absl::flat_hash_map<std::string, size_t>& wildcard) {
  for (size_t i = 0; i < entries.size(); ++i) {
    for (const std::string& name : entries[i]->server_names) {
      const bool is_wildcard = absl::StartsWith(name, "*.");
      auto& index = is_wildcard ? wildcard : exact;
      auto [it, inserted] = index.emplace(is_wildcard ? name.substr(2) : name, i);
      if (!inserted && it->second != i) {
        return absl::InvalidArgumentError(
            absl::StrCat("server name '", name, "' is claimed by both certificate '",
                         entries[it->second]->name, "' and certificate '", entries[i]->name, "'"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CertificateEntry> ParseEntry(const CertificateSource& source, bool is_default) {
  const auto fail = [&source](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("certificate '", source.name, "': ", what));
  };
  if (source.chain_pem.size() > kMaxPemBytes) return fail("certificate chain is larger than 1 MiB");
  if (source.key_pem.size() > kMaxPemBytes) return fail("private key is larger than 1 MiB");

  CertificateEntry entry;
  entry.name = source.name;
  int failed = 0;
  absl::StatusOr<std::vector<X509Ptr>> certs = ParsePemCertificates(source.chain_pem, &failed);
  if (!certs.ok()) {
    return fail(absl::StrCat("cannot parse certificate ", failed,
                             " of the chain: ", certs.status().message()));
  }
  if (certs->empty()) return fail("not a PEM certificate (no BEGIN CERTIFICATE block)");
  entry.leaf = std::move(certs->front());
  entry.chain.reset(sk_X509_new_null());
  if (entry.chain == nullptr) return fail(absl::StrCat("out of memory: ", TakeOpenSslError()));
  for (size_t i = 1; i < certs->size(); ++i) {
    if (sk_X509_push(entry.chain.get(), (*certs)[i].get()) <= 0) {
      return fail(absl::StrCat("out of memory: ", TakeOpenSslError()));
    }
    (void)(*certs)[i].release();  // ownership moved into the stack
  }

  // Parsed straight from the caller's buffer; the caller wipes it.
  absl::StatusOr<EvpPkeyPtr> key = ParsePemPrivateKey(source.key_pem);
  if (!key.ok()) {
    return fail(
        absl::StrCat("cannot parse the private key (PEM, unencrypted, PKCS#8 or traditional): ",
                     key.status().message()));
  }
  entry.key = *std::move(key);
  if (X509_check_private_key(entry.leaf.get(), entry.key.get()) != 1) {
    ERR_clear_error();
    return fail("private key does not match certificate");
  }

  if (source.server_names.empty()) {
    entry.server_names = DnsSubjectAltNames(entry.leaf.get());
    if (entry.server_names.empty() && !is_default) {
      return fail(
          "no server names given and the certificate has no DNS subjectAltName; it could only "
          "ever be served as the default");
    }
  } else {
    for (const std::string& name : source.server_names) {
      entry.server_names.push_back(absl::AsciiStrToLower(name));
    }
  }
  std::vector<std::string> unique;
  for (std::string& name : entry.server_names) {
    if (absl::Status s = ValidateServerName(name); !s.ok()) return fail(s.message());
    bool seen = false;
    for (const std::string& u : unique) seen = seen || u == name;
    if (!seen) unique.push_back(std::move(name));
  }
  entry.server_names = std::move(unique);

  absl::StatusOr<std::string> subject = SubjectOf(entry.leaf.get());
  if (!subject.ok()) return fail(subject.status().message());
  entry.subject = *std::move(subject);
  absl::StatusOr<int64_t> not_after = NotAfterOf(entry.leaf.get());
  if (!not_after.ok()) return fail(not_after.status().message());
  entry.not_after_unix = *not_after;
  absl::StatusOr<int64_t> not_before = NotBeforeOf(entry.leaf.get());
  if (!not_before.ok()) return fail(not_before.status().message());
  entry.not_before_unix = *not_before;
  return entry;
}

}  // namespace

absl::StatusOr<CertificateSource> LoadCertificateFiles(const std::string& chain_path,
                                                       const std::string& key_path,
                                                       std::vector<std::string> server_names,
                                                       bool is_default) {
  CertificateSource source;
  source.name = chain_path;
  source.server_names = std::move(server_names);
  source.is_default = is_default;

  absl::StatusOr<std::string> chain = ReadPemFile(chain_path, "certificate file", false);
  if (!chain.ok()) return chain.status();
  source.chain_pem = *std::move(chain);
  if (!absl::StrContains(source.chain_pem, "-----BEGIN CERTIFICATE-----")) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate file ", chain_path, " is not a PEM certificate"));
  }

  absl::StatusOr<std::string> key = ReadPemFile(key_path, "key file", true);
  if (!key.ok()) return key.status();
  source.key_pem = *std::move(key);  // moves the buffer, no copy
  // Only the armor is looked at here; CertificateSet::Create parses the key.
  const bool looks_like_key = absl::StrContains(source.key_pem, "-----BEGIN ") &&
                              absl::StrContains(source.key_pem, "PRIVATE KEY-----");
  if (!looks_like_key) {
    WipeString(source.key_pem);
    return absl::InvalidArgumentError(
        absl::StrCat("key file ", key_path, " is not a PEM private key"));
  }
  return source;
}

absl::StatusOr<std::shared_ptr<const CertificateSet>> CertificateSet::Create(
    std::vector<CertificateSource> sources) {
  return CreateWipingKeys(sources);
}

absl::StatusOr<std::shared_ptr<const CertificateSet>> CertificateSet::CreateWipingKeys(
    std::vector<CertificateSource>& sources) {
  absl::Cleanup wipe_keys = [&sources] {
    for (CertificateSource& source : sources) WipeString(source.key_pem);
  };
  ERR_clear_error();
  absl::Cleanup clear_errors = [] { ERR_clear_error(); };

  size_t default_index = 0;
  const CertificateSource* first_default = nullptr;
  for (size_t i = 0; i < sources.size(); ++i) {
    if (!sources[i].is_default) continue;
    if (first_default != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("more than one default certificate ('",
                                                     first_default->name, "' and '",
                                                     sources[i].name, "')"));
    }
    first_default = &sources[i];
    default_index = i;
  }

  std::shared_ptr<CertificateSet> set(new CertificateSet());
  set->default_index_ = default_index;
  set->entries_.reserve(sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    absl::StatusOr<CertificateEntry> entry = ParseEntry(sources[i], i == default_index);
    if (!entry.ok()) return entry.status();
    set->entries_.push_back(std::make_shared<const CertificateEntry>(*std::move(entry)));
    if (absl::Status s = IndexNames(set->entries_, set->exact_, set->wildcard_); !s.ok()) return s;
  }
  return std::shared_ptr<const CertificateSet>(std::move(set));
}

absl::StatusOr<CertificateEntryPtr> ParseCertificate(CertificateSource& source) {
  absl::Cleanup wipe_key = [&source] { WipeString(source.key_pem); };
  ERR_clear_error();
  absl::Cleanup clear_errors = [] { ERR_clear_error(); };
  absl::StatusOr<CertificateEntry> entry = ParseEntry(source, /*is_default=*/true);
  if (!entry.ok()) return entry.status();
  return std::make_shared<const CertificateEntry>(*std::move(entry));
}

absl::StatusOr<std::shared_ptr<const CertificateSet>> CertificateSet::FromEntries(
    std::vector<CertificateEntryPtr> entries, size_t default_index) {
  if (entries.empty() || default_index >= entries.size()) {
    return absl::InvalidArgumentError("a certificate set needs at least one certificate");
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    const CertificateEntry* e = entries[i].get();
    if (e == nullptr || e->leaf == nullptr || e->key == nullptr || e->chain == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("certificate '", e != nullptr ? e->name : std::string(), "' is incomplete"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (entries[j]->name == e->name) {
        return absl::InvalidArgumentError(
            absl::StrCat("two certificates are named '", e->name, "'"));
      }
    }
  }
  std::shared_ptr<CertificateSet> set(new CertificateSet());
  set->default_index_ = default_index;
  set->entries_ = std::move(entries);
  if (absl::Status s = IndexNames(set->entries_, set->exact_, set->wildcard_); !s.ok()) return s;
  return std::shared_ptr<const CertificateSet>(std::move(set));
}

absl::StatusOr<std::shared_ptr<const CertificateSet>> CertificateSet::CreateDevelopment() {
  ERR_clear_error();
  absl::Cleanup clear_errors = [] { ERR_clear_error(); };
  const auto fail = [](absl::string_view step) {
    return absl::InternalError(absl::StrCat("cannot create the development certificate (", step,
                                            "): ", TakeOpenSslError()));
  };

  CertificateEntry entry;
  entry.name = "development";
  entry.key.reset(EVP_EC_gen("P-256"));
  if (entry.key == nullptr) return fail("P-256 key");

  entry.leaf.reset(X509_new());
  X509* x = entry.leaf.get();
  if (x == nullptr || X509_set_version(x, X509_VERSION_3) != 1) return fail("X509_new");

  BignumPtr serial_bn(BN_new());
  if (serial_bn == nullptr ||
      BN_rand(serial_bn.get(), 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1) {
    return fail("serial");
  }
  Asn1IntegerPtr serial(BN_to_ASN1_INTEGER(serial_bn.get(), nullptr));
  if (serial == nullptr || X509_set_serialNumber(x, serial.get()) != 1) return fail("serial");

  X509NamePtr name(X509_NAME_new());
  if (name == nullptr ||
      X509_NAME_add_entry_by_txt(
          name.get(), "CN", MBSTRING_ASC,
          reinterpret_cast<const unsigned char*>("ktls-agent development certificate"), -1, -1,
          0) != 1 ||
      X509_set_subject_name(x, name.get()) != 1 || X509_set_issuer_name(x, name.get()) != 1) {
    return fail("name");
  }
  if (X509_gmtime_adj(X509_getm_notBefore(x), -3600) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(x), 30, 0, nullptr) == nullptr) {
    return fail("validity");
  }
  if (X509_set_pubkey(x, entry.key.get()) != 1) return fail("public key");

  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
  const std::pair<int, const char*> extensions[] = {
      {NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1"},
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature"},
      {NID_ext_key_usage, "serverAuth"},
      {NID_subject_key_identifier, "hash"},
  };
  for (const auto& [nid, value] : extensions) {
    X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &v3, nid, value));
    if (ext == nullptr || X509_add_ext(x, ext.get(), -1) != 1) return fail(OBJ_nid2sn(nid));
  }
  if (X509_sign(x, entry.key.get(), EVP_sha256()) <= 0) return fail("signing");

  entry.chain.reset(sk_X509_new_null());
  if (entry.chain == nullptr) return fail("chain");
  entry.server_names = {"localhost"};
  absl::StatusOr<std::string> subject = SubjectOf(x);
  if (!subject.ok()) return subject.status();
  entry.subject = *std::move(subject);
  absl::StatusOr<int64_t> not_after = NotAfterOf(x);
  if (!not_after.ok()) return not_after.status();
  entry.not_after_unix = *not_after;
  absl::StatusOr<int64_t> not_before = NotBeforeOf(x);
  if (!not_before.ok()) return not_before.status();
  entry.not_before_unix = *not_before;

  std::shared_ptr<CertificateSet> set(new CertificateSet());
  set->entries_.push_back(std::make_shared<const CertificateEntry>(std::move(entry)));
  set->exact_.emplace("localhost", 0);
  set->default_index_ = 0;
  set->is_development_ = true;
  return std::shared_ptr<const CertificateSet>(std::move(set));
}

const CertificateEntry* CertificateSet::Select(std::string_view sni, bool* matched) const {
  if (matched != nullptr) *matched = false;
  if (entries_.empty()) return nullptr;
  if (!sni.empty()) {
    const std::string name = absl::AsciiStrToLower(absl::string_view(sni.data(), sni.size()));
    if (auto it = exact_.find(name); it != exact_.end()) {
      if (matched != nullptr) *matched = true;
      return entries_[it->second].get();
    }
    // One label only: "*.example.com" covers "a.example.com", not "a.b.example.com" nor
    // "example.com".
    const size_t dot = name.find('.');
    if (dot != std::string::npos && dot > 0) {
      if (auto it = wildcard_.find(absl::string_view(name).substr(dot + 1));
          it != wildcard_.end()) {
        if (matched != nullptr) *matched = true;
        return entries_[it->second].get();
      }
    }
  }
  return entries_[default_index_].get();
}

const CertificateEntry* CertificateSet::default_entry() const {
  return entries_.empty() ? nullptr : entries_[default_index_].get();
}

CertStore::CertStore(std::shared_ptr<const CertificateSet> initial)
    : current_(std::move(initial)) {}

std::shared_ptr<const CertificateSet> CertStore::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

uint64_t CertStore::Swap(std::shared_ptr<const CertificateSet> next) {
  std::shared_ptr<const CertificateSet> old;
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    old = std::exchange(current_, std::move(next));
    generation = ++generation_;
  }
  // `old` is released here, outside the lock: freeing a set (certificates, keys) under the
  // mutex would stall every accept that calls Current().
  return generation;
}

void CertStore::Restore(std::shared_ptr<const CertificateSet> set, uint64_t generation) {
  std::shared_ptr<const CertificateSet> old;
  {
    absl::MutexLock lock(&mu_);
    old = std::exchange(current_, std::move(set));
    generation_ = generation;
  }
}

uint64_t CertStore::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

}  // namespace ktls::agent
