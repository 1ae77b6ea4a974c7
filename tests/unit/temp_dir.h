// A fresh directory under /tmp for one test (Unix sockets, state files, config files), removed
// with everything in it when the test ends. Header-only: the unit-test target compiles only
// *_test.cc files.
#ifndef KTLS_TESTS_UNIT_TEMP_DIR_H_
#define KTLS_TESTS_UNIT_TEMP_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace ktls::testing {

class ScopedTempDir {
 public:
  // /tmp/<prefix>-XXXXXX; path() is empty when mkdtemp failed.
  explicit ScopedTempDir(const std::string& prefix) {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~ScopedTempDir() {
    std::error_code ignored;  // a test that already failed must not fail again here
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace ktls::testing

#endif  // KTLS_TESTS_UNIT_TEMP_DIR_H_
