// A small JSON writer for the reports the tools print and the app library hands out
// (ktls_conn_info's JSON, ktls-demo-app's /conninfo, ktls-loadgen --json).
//
// One writer instead of one per caller: each had its own string escaper and its own comma
// bookkeeping, and they disagreed on which control characters to escape. Strings are escaped per
// RFC 8259 section 7: '"', '\\' and every character below U+0020 (DEL too, for terminals); the
// output is always valid UTF-8: well-formed UTF-8 passes through, any other byte >= 0x80 is
// written as \u00XX (its Latin-1 reading; certificate subjects are operator input). Key order is
// the caller's order: scripts diff these objects. Where a protobuf message is printed whole,
// protobuf's own JSON mapping is the better tool; this is for hand-picked fields.
#ifndef KTLS_BASE_JSON_H_
#define KTLS_BASE_JSON_H_

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace ktls::base {

// Appends `s` as a quoted, escaped JSON string.
void AppendJsonString(std::string* out, absl::string_view s);

// Builds one JSON text. Values go after Key() inside objects and directly inside arrays; the
// writer inserts the commas. Misuse (a value without a key in an object) is the caller's bug and
// produces invalid JSON, not a crash.
class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(absl::string_view key);

  JsonWriter& String(absl::string_view v);
  JsonWriter& Uint(uint64_t v);
  JsonWriter& Int(int64_t v);
  JsonWriter& Bool(bool v);
  JsonWriter& Null();
  // printf "%.6g"; NaN and infinities (which JSON cannot say) are written as null.
  JsonWriter& Double(double v);
  // printf "%.{decimals}f"; NaN and infinities as null.
  JsonWriter& Fixed(double v, int decimals);

  // Key + value in one call, for flat objects.
  JsonWriter& Field(absl::string_view key, absl::string_view v) { return Key(key).String(v); }
  JsonWriter& Field(absl::string_view key, const char* v) { return Key(key).String(v); }
  template <typename T, typename = std::enable_if_t<std::is_integral_v<T>>>
  JsonWriter& Field(absl::string_view key, T v) {
    if constexpr (std::is_same_v<T, bool>) {
      return Key(key).Bool(v);
    } else if constexpr (std::is_signed_v<T>) {
      return Key(key).Int(v);
    } else {
      return Key(key).Uint(v);
    }
  }
  JsonWriter& Field(absl::string_view key, double v) { return Key(key).Double(v); }

  const std::string& str() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void BeforeValue();

  std::string out_;
  std::vector<bool> first_;  // per open object/array: no element written yet
  bool after_key_ = false;
};

}  // namespace ktls::base

#endif  // KTLS_BASE_JSON_H_
