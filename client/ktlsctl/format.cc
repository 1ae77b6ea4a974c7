#include "client/ktlsctl/format.h"

#include <ctime>
#include <iomanip>
#include <sstream>

#include "google/protobuf/util/json_util.h"

namespace ktlsctl {

void Table::Print(std::ostream& out) const {
  std::vector<size_t> width(header_.size(), 0);
  for (size_t i = 0; i < header_.size(); ++i) width[i] = header_[i].size();
  for (const auto& row : rows_) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (size_t i = 0; i < cells.size() && i < width.size(); ++i) {
      s += cells[i];
      if (i + 1 < cells.size()) s += std::string(width[i] - cells[i].size() + 3, ' ');
    }
    out << s << "\n";
  };
  line(header_);
  for (const auto& row : rows_) line(row);
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string Time(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  const time_t s = static_cast<time_t>(t.seconds());
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {
std::string Span(int64_t seconds) {
  const int64_t d = seconds / 86400, h = (seconds % 86400) / 3600, m = (seconds % 3600) / 60;
  std::ostringstream o;
  if (d > 0) {
    o << d << "d " << h << "h";
  } else if (h > 0) {
    o << h << "h " << m << "m";
  } else if (m > 0) {
    o << m << "m " << seconds % 60 << "s";
  } else {
    o << seconds << "s";
  }
  return o.str();
}
}  // namespace

std::string Relative(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0) return "-";
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  const int64_t delta = t.seconds() - now;
  return delta >= 0 ? "in " + Span(delta) : Span(-delta) + " ago";
}

std::string Duration(const google::protobuf::Duration& d) {
  const double s = static_cast<double>(d.seconds()) + d.nanos() / 1e9;
  std::ostringstream o;
  if (s < 0.001) {
    o << std::fixed << std::setprecision(0) << s * 1e6 << "us";
  } else if (s < 1) {
    o << std::fixed << std::setprecision(1) << s * 1e3 << "ms";
  } else if (s < 120) {
    o << std::fixed << std::setprecision(2) << s << "s";
  } else {
    o << Span(static_cast<int64_t>(s));
  }
  return o.str();
}

std::string Join(const google::protobuf::RepeatedPtrField<std::string>& items,
                 const std::string& separator) {
  std::string out;
  for (const std::string& i : items) {
    if (!out.empty()) out += separator;
    out += i;
  }
  return out.empty() ? "-" : out;
}

std::string YesNo(bool b) { return b ? "yes" : "no"; }

}  // namespace ktlsctl
