#include "server/state_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <system_error>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/log.h"
#include "server/secrets.h"

namespace ktls::control {
namespace {

constexpr uint32_t kFormat = 1;
constexpr char kCertificateDir[] = "certificates";
constexpr char kStateSuffix[] = ".state";
constexpr char kTempMarker[] = ".tmp-";

std::string ErrnoText(int err) { return std::generic_category().message(err); }

absl::Status ErrnoStatus(int err, absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", ErrnoText(err)));
}

std::string Sha256(absl::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(md), len);
}

absl::Status FsyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open directory ", dir));
  absl::Cleanup close_fd = [fd] { ::close(fd); };
  if (::fsync(fd) != 0) return ErrnoStatus(errno, absl::StrCat("fsync directory ", dir));
  return absl::OkStatus();
}

absl::Status MakePrivateDirectory(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0) return absl::OkStatus();
  if (errno != EEXIST) return ErrnoStatus(errno, absl::StrCat("create state directory ", dir));
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return ErrnoStatus(errno, absl::StrCat("stat ", dir));
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " exists and is not a directory"));
  }
  if ((st.st_mode & 0077) != 0 && ::chmod(dir.c_str(), 0700) != 0) {
    // A directory provided by the platform (an emptyDir owned by another user) may refuse; the
    // files themselves are 0600 either way.
    KTLS_LOG(kWarning, "state directory ", dir, " is mode ",
             absl::StrFormat("%04o", st.st_mode & 07777),
             " and cannot be made 0700: ", ErrnoText(errno));
  }
  return absl::OkStatus();
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Parses and checks one state file; `payload` gets the record bytes (secret).
absl::Status OpenEnvelope(const std::string& path, absl::string_view want_kind,
                          std::string* payload) {
  std::string bytes;
  ScopedWipe wipe_bytes(bytes);
  if (absl::Status s = ReadSecretFile(path, StateStore::kMaxStateFileBytes, &bytes); !s.ok()) {
    return s;
  }
  v1::state::StateFile envelope;
  absl::Cleanup wipe_envelope = [&envelope] { WipeAndClear(*envelope.mutable_payload()); };
  if (bytes.empty()) return absl::DataLossError("empty file");
  if (!envelope.ParseFromString(bytes)) return absl::DataLossError("not a state file (unparsable)");
  if (envelope.format() != kFormat) {
    return absl::DataLossError(absl::StrCat("unknown state file format ", envelope.format()));
  }
  if (envelope.kind() != want_kind) {
    return absl::DataLossError(
        absl::StrCat("holds a '", envelope.kind(), "' record, expected '", want_kind, "'"));
  }
  if (envelope.sha256() != Sha256(envelope.payload())) {
    return absl::DataLossError("checksum mismatch (truncated or corrupted)");
  }
  payload->swap(*envelope.mutable_payload());
  return absl::OkStatus();
}

template <typename Record>
absl::Status LoadRecord(const std::string& path, absl::string_view kind, Record* record) {
  std::string payload;
  ScopedWipe wipe(payload);
  if (absl::Status s = OpenEnvelope(path, kind, &payload); !s.ok()) return s;
  if (!record->ParseFromString(payload)) return absl::DataLossError("record does not parse");
  return absl::OkStatus();
}

void WipeRecord(v1::state::CertificateRecord& r) { WipeAndClear(*r.mutable_private_key_pem()); }
void WipeRecord(v1::state::SessionTicketKeysRecord& r) {
  for (std::string& k : *r.mutable_keys()) WipeAndClear(k);
}

bool FileExists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

using IssueFn = std::function<void(const std::string& path, const absl::Status& s)>;

// The certificate names in `cert_dir` ("NAME.state"); removes temporary files a crash left
// behind, and reports other files and a directory it cannot list through `issue`.
std::vector<std::string> ListCertificateFiles(const std::string& cert_dir, const IssueFn& issue) {
  std::vector<std::string> names;
  DIR* d = ::opendir(cert_dir.c_str());
  if (d == nullptr) {
    issue(cert_dir, ErrnoStatus(errno, "cannot list"));
    return names;
  }
  while (dirent* e = ::readdir(d)) {
    const std::string file = e->d_name;
    if (file == "." || file == "..") continue;
    const std::string path = absl::StrCat(cert_dir, "/", file);
    if (absl::StrContains(file, kTempMarker)) {
      // A write that never reached its rename (crash): the old file is still in place.
      ::unlink(path.c_str());
      KTLS_LOG(kInfo, "state: removed unfinished temporary file ", path);
      continue;
    }
    if (!absl::EndsWith(file, kStateSuffix)) {
      issue(path, absl::InvalidArgumentError("not a .state file"));
      continue;
    }
    names.push_back(file.substr(0, file.size() - strlen(kStateSuffix)));
  }
  ::closedir(d);
  return names;
}

// Leftover temporary files at the top level of the state directory.
void RemoveTemporaryFiles(const std::string& dir) {
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string file = e->d_name;
      if (absl::StrContains(file, kTempMarker)) ::unlink(absl::StrCat(dir, "/", file).c_str());
    }
    ::closedir(d);
  }
}

}  // namespace

absl::Status ReadSecretFile(const std::string& path, size_t max_bytes, std::string* out) {
  out->clear();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT)
      return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", ErrnoText(err)));
    return absl::FailedPreconditionError(absl::StrCat("cannot read ", path, ": ", ErrnoText(err)));
  }
  absl::Cleanup close_fd = [fd] { ::close(fd); };
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, absl::StrCat("stat ", path));
  if (!S_ISREG(st.st_mode))
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a file"));
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is ", st.st_size, " bytes, more than the limit of ", max_bytes));
  }
  // Sized once, with room for one more byte to see a file that grew: no reallocation, so no
  // copy of the secret is left behind in freed memory.
  out->resize(static_cast<size_t>(st.st_size) + 1);
  size_t used = 0;
  while (used < out->size()) {
    const ssize_t n = ::read(fd, out->data() + used, out->size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      WipeAndClear(*out);
      return ErrnoStatus(err, absl::StrCat("read ", path));
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  if (used > static_cast<size_t>(st.st_size)) {
    WipeAndClear(*out);
    return absl::FailedPreconditionError(absl::StrCat(path, " changed while being read"));
  }
  out->resize(used);  // shrinks in place
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view data, mode_t mode) {
  const std::string dir = Dirname(path);
  const size_t slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string tmp = absl::StrCat(dir, "/.", base, kTempMarker, "XXXXXX");
  const int fd = ::mkostemp(tmp.data(), O_CLOEXEC);  // creates the file 0600
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("create a temporary file in ", dir));
  bool done = false;
  absl::Cleanup cleanup = [&] {
    if (!done) ::unlink(tmp.c_str());
  };
  {
    absl::Cleanup close_fd = [fd] { ::close(fd); };
    if (::fchmod(fd, mode) != 0) return ErrnoStatus(errno, absl::StrCat("chmod ", tmp));
    size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, absl::StrCat("write ", tmp));
      }
      off += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0) return ErrnoStatus(errno, absl::StrCat("fsync ", tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("rename ", tmp, " to ", path));
  }
  done = true;
  return FsyncDirectory(dir);
}

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("state_dir is empty");
  std::string clean = dir;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  if (absl::Status s = MakePrivateDirectory(clean); !s.ok()) return s;
  if (absl::Status s = MakePrivateDirectory(absl::StrCat(clean, "/", kCertificateDir)); !s.ok()) {
    return s;
  }
  return std::unique_ptr<StateStore>(new StateStore(clean));
}

std::string StateStore::CertificatePath(const std::string& name) const {
  return absl::StrCat(dir_, "/", kCertificateDir, "/", name, kStateSuffix);
}

absl::Status StateStore::Put(const std::string& path, absl::string_view kind,
                             const google::protobuf::MessageLite& record) {
  v1::state::StateFile envelope;
  absl::Cleanup wipe_envelope = [&envelope] { WipeAndClear(*envelope.mutable_payload()); };
  envelope.set_format(kFormat);
  envelope.set_kind(std::string(kind));
  if (!record.SerializeToString(envelope.mutable_payload())) {
    return absl::InternalError(absl::StrCat("cannot serialize the ", kind, " record"));
  }
  envelope.set_sha256(Sha256(envelope.payload()));
  std::string bytes;
  ScopedWipe wipe_bytes(bytes);
  if (!envelope.SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat("cannot serialize the ", kind, " state file"));
  }
  return WriteFileAtomically(path, bytes, 0600);
}

absl::Status StateStore::PutCertificate(const v1::state::CertificateRecord& record) {
  return Put(CertificatePath(record.name()), "certificate", record);
}

absl::Status StateStore::RemoveCertificate(const std::string& name) {
  const std::string path = CertificatePath(name);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, absl::StrCat("remove ", path));
  }
  return FsyncDirectory(Dirname(path));
}

absl::Status StateStore::PutTrustBundle(const v1::state::TrustBundleRecord& record) {
  return Put(absl::StrCat(dir_, "/trust_bundle", kStateSuffix), "trust_bundle", record);
}

absl::Status StateStore::RemoveTrustBundle() {
  const std::string path = absl::StrCat(dir_, "/trust_bundle", kStateSuffix);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, absl::StrCat("remove ", path));
  }
  return FsyncDirectory(dir_);
}

absl::Status StateStore::PutTicketKeys(const v1::state::SessionTicketKeysRecord& record) {
  return Put(absl::StrCat(dir_, "/session_ticket_keys", kStateSuffix), "session_ticket_keys",
             record);
}

absl::Status StateStore::PutMeta(const v1::state::StateMeta& meta) {
  return Put(absl::StrCat(dir_, "/meta", kStateSuffix), "meta", meta);
}

StateStore::Loaded::~Loaded() {
  for (auto& c : certificates) WipeRecord(c);
  if (ticket_keys.has_value()) WipeRecord(*ticket_keys);
}

StateStore::Loaded StateStore::Load() const {
  Loaded loaded;
  const auto issue = [&loaded](const std::string& path, const absl::Status& s) {
    loaded.issues.push_back({path, std::string(s.message())});
    KTLS_LOG(kWarning, "state: skipping ", path, ": ", s.message());
  };

  // Certificates: one file each.
  std::vector<std::string> names =
      ListCertificateFiles(absl::StrCat(dir_, "/", kCertificateDir), issue);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string path = CertificatePath(name);
    v1::state::CertificateRecord record;
    absl::Status s = LoadRecord(path, "certificate", &record);
    if (s.ok() && record.name() != name) {
      s = absl::DataLossError(
          absl::StrCat("holds certificate '", record.name(), "', not the one its file name says"));
    }
    if (!s.ok()) {
      WipeRecord(record);
      issue(path, s);
      continue;
    }
    loaded.certificates.push_back(std::move(record));
    ++loaded.files_loaded;
  }

  const std::string trust_path = absl::StrCat(dir_, "/trust_bundle", kStateSuffix);
  if (FileExists(trust_path)) {
    v1::state::TrustBundleRecord record;
    if (absl::Status s = LoadRecord(trust_path, "trust_bundle", &record); s.ok()) {
      loaded.trust = std::move(record);
      ++loaded.files_loaded;
    } else {
      issue(trust_path, s);
    }
  }
  const std::string keys_path = absl::StrCat(dir_, "/session_ticket_keys", kStateSuffix);
  if (FileExists(keys_path)) {
    v1::state::SessionTicketKeysRecord record;
    if (absl::Status s = LoadRecord(keys_path, "session_ticket_keys", &record); s.ok()) {
      loaded.ticket_keys = std::move(record);
      ++loaded.files_loaded;
    } else {
      WipeRecord(record);
      issue(keys_path, s);
    }
  }
  const std::string meta_path = absl::StrCat(dir_, "/meta", kStateSuffix);
  if (FileExists(meta_path)) {
    if (absl::Status s = LoadRecord(meta_path, "meta", &loaded.meta); s.ok()) {
      ++loaded.files_loaded;
    } else {
      loaded.meta.Clear();
      issue(meta_path, s);
    }
  }
  RemoveTemporaryFiles(dir_);
  return loaded;
}

}  // namespace ktls::control
