// Output for ktlsctl: aligned tables for people, JSON (the protobuf JSON mapping, field names as
// in the .proto) for scripts.
#ifndef KTLS_CLIENT_KTLSCTL_FORMAT_H_
#define KTLS_CLIENT_KTLSCTL_FORMAT_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "google/protobuf/duration.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"

namespace ktlsctl {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.empty(); }
  void Print(std::ostream& out) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// One JSON document per message, indented.
std::string ToJson(const google::protobuf::Message& message);

// "2026-01-02T03:04:05Z"; "-" when unset.
std::string Time(const google::protobuf::Timestamp& t);
// "in 29d 3h" / "2h 5m ago"; relative to now.
std::string Relative(const google::protobuf::Timestamp& t);
// "1.234s", "12ms", "3m 4s".
std::string Duration(const google::protobuf::Duration& d);
std::string Join(const google::protobuf::RepeatedPtrField<std::string>& items,
                 const std::string& separator = ",");
std::string YesNo(bool b);

}  // namespace ktlsctl

#endif  // KTLS_CLIENT_KTLSCTL_FORMAT_H_
