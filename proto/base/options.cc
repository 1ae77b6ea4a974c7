#include "base/options.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ktls::base {
namespace {

constexpr size_t kHelpColumns = 100;
constexpr size_t kHelpIndent = 6;

std::string Normalize(absl::string_view name) {
  std::string key(name);
  std::replace(key.begin(), key.end(), '-', '_');
  return key;
}

bool ParseBool(absl::string_view v, bool* out) {
  const std::string s = absl::AsciiStrToLower(v);
  if (s == "true" || s == "1" || s == "yes") {
    *out = true;
  } else if (s == "false" || s == "0" || s == "no") {
    *out = false;
  } else {
    return false;
  }
  return true;
}

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// Appends `text` word-wrapped at kHelpColumns, every line indented by kHelpIndent.
void AppendWrapped(std::string* out, absl::string_view text) {
  size_t column = 0;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (column > 0 && column + 1 + word.size() > kHelpColumns) {
      out->push_back('\n');
      column = 0;
    }
    if (column == 0) {
      out->append(kHelpIndent, ' ');
      column = kHelpIndent;
    } else {
      out->push_back(' ');
      ++column;
    }
    absl::StrAppend(out, word);
    column += word.size();
  }
  out->push_back('\n');
}

}  // namespace

OptionParser::Option& OptionParser::Option::Range(int64_t min, int64_t max) {
  has_range_ = true;
  min_ = min;
  max_ = max;
  return *this;
}

OptionParser::Option& OptionParser::Option::ValueName(std::string name) {
  value_name_ = std::move(name);
  return *this;
}

OptionParser::Option& OptionParser::Option::NonEmpty() {
  non_empty_ = true;
  return *this;
}

OptionParser::OptionParser(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

void OptionParser::Group(std::string title) { group_ = std::move(title); }

OptionParser::Option& OptionParser::Declare(absl::string_view name, absl::string_view value_name,
                                            std::string default_text, absl::string_view help) {
  auto o = std::make_unique<Option>();
  o->name_ = std::string(name);
  o->group_ = group_;
  o->help_ = std::string(help);
  o->value_name_ = std::string(value_name);
  o->default_text_ = std::move(default_text);
  Option& ref = *o;
  by_key_[Normalize(name)] = &ref;
  options_.push_back(std::move(o));
  return ref;
}

OptionParser::Option& OptionParser::Add(absl::string_view name, std::string* dest,
                                        absl::string_view help) {
  return AddCustom(name, "STRING", absl::StrCat("\"", *dest, "\""), help,
                   [dest](absl::string_view v) {
                     *dest = std::string(v);
                     return absl::OkStatus();
                   });
}

OptionParser::Option& OptionParser::Add(absl::string_view name, bool* dest,
                                        absl::string_view help) {
  Option& o = Declare(name, "", *dest ? "true" : "false", help);
  o.is_bool_ = true;
  o.bool_dest_ = dest;
  return o;
}

OptionParser::Option& OptionParser::AddSwitch(absl::string_view name, absl::string_view help) {
  Option& o = Declare(name, "", "", help);
  o.is_bool_ = true;
  return o;
}

// Integers parse as int64 (uint64 for uint64_t, below) and are checked twice: against the
// declared Range() (in Assign) and against the destination type.
template <typename T>
OptionParser::Option& OptionParser::AddInteger(absl::string_view name, T* dest,
                                               absl::string_view help) {
  Option& o = Declare(name, "N", absl::StrCat(*dest), help);
  o.set_int_ = [dest](int64_t v) {
    if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
        v > static_cast<int64_t>(std::numeric_limits<T>::max())) {
      return absl::InvalidArgumentError(absl::StrCat("expected ", std::numeric_limits<T>::min(),
                                                     "..", std::numeric_limits<T>::max()));
    }
    *dest = static_cast<T>(v);
    return absl::OkStatus();
  };
  return o;
}

OptionParser::Option& OptionParser::Add(absl::string_view name, int* dest, absl::string_view help) {
  return AddInteger(name, dest, help);
}

OptionParser::Option& OptionParser::Add(absl::string_view name, uint32_t* dest,
                                        absl::string_view help) {
  return AddInteger(name, dest, help);
}

OptionParser::Option& OptionParser::Add(absl::string_view name, int64_t* dest,
                                        absl::string_view help) {
  return AddInteger(name, dest, help);
}

OptionParser::Option& OptionParser::Add(absl::string_view name, uint64_t* dest,
                                        absl::string_view help) {
  return AddCustom(name, "N", absl::StrCat(*dest), help, [dest](absl::string_view v) {
    uint64_t n = 0;
    if (!absl::SimpleAtoi(v, &n)) return absl::InvalidArgumentError("expected a number");
    *dest = n;
    return absl::OkStatus();
  });
}

OptionParser::Option& OptionParser::AddCustom(absl::string_view name, absl::string_view value_name,
                                              absl::string_view default_text,
                                              absl::string_view help, Setter set) {
  Option& o = Declare(name, value_name, std::string(default_text), help);
  o.set_ = std::move(set);
  return o;
}

void OptionParser::AddShortAlias(char c, absl::string_view name) {
  short_aliases_[c] = std::string(name);
}

void OptionParser::SetEpilog(std::string text) { epilog_ = std::move(text); }

void OptionParser::SetVersion(std::string version_line) { version_line_ = std::move(version_line); }

OptionParser::Option* OptionParser::Find(absl::string_view name) {
  auto it = by_key_.find(Normalize(name));
  return it == by_key_.end() ? nullptr : it->second;
}

std::string OptionParser::Suggest(absl::string_view name) const {
  const std::string key = Normalize(name);
  const Option* best = nullptr;
  size_t best_distance = std::max<size_t>(2, key.size() / 3) + 1;
  for (const auto& [candidate, o] : by_key_) {
    const size_t d = EditDistance(key, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = o;
    }
  }
  return best == nullptr ? "" : absl::StrCat(" (did you mean --", best->name_, "?)");
}

absl::Status OptionParser::Assign(Option& o, absl::string_view spelled, absl::string_view value) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("--", spelled, "=", value, ": ", what));
  };
  given_.insert(o.name_);
  if (o.non_empty_ && value.empty()) return bad("expected a value");
  if (o.is_bool_) {
    bool b = false;
    if (!ParseBool(value, &b)) return bad("expected true or false");
    if (o.bool_dest_ != nullptr) {
      *o.bool_dest_ = b;
    } else if (!b) {
      given_.erase(o.name_);  // a switch turned off (`--force=false`) is not given
    }
    return absl::OkStatus();
  }
  if (o.set_int_) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(value, &n)) return bad("expected a number");
    if (o.has_range_ && (n < o.min_ || n > o.max_)) {
      return bad(absl::StrCat("expected ", o.min_, "..", o.max_));
    }
    if (absl::Status s = o.set_int_(n); !s.ok()) return bad(s.message());
    return absl::OkStatus();
  }
  if (absl::Status s = o.set_(value); !s.ok()) return bad(s.message());
  return absl::OkStatus();
}

absl::Status OptionParser::ParseLong(absl::string_view arg, int* i, int argc,
                                     const char* const* argv) {
  absl::string_view name = arg.substr(2);
  absl::string_view value;
  const size_t eq = name.find('=');
  const bool has_value = eq != absl::string_view::npos;
  if (has_value) {
    value = name.substr(eq + 1);
    name = name.substr(0, eq);
  }
  const std::string key = Normalize(name);
  if (key == "help" || key == "helpfull") {
    help_ = true;
    return absl::OkStatus();
  }
  if (key == "version" && !version_line_.empty()) {
    version_ = true;
    return absl::OkStatus();
  }
  Option* o = Find(name);
  if (o == nullptr && absl::StartsWith(key, "no") && !has_value) {
    if (Option* negated = Find(key.substr(2)); negated != nullptr && negated->is_bool_) {
      return Assign(*negated, name, "false");
    }
  }
  if (o == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown option --", name, Suggest(name)));
  }
  if (has_value) return Assign(*o, name, value);
  if (o->is_bool_) return Assign(*o, name, "true");
  if (*i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
  return Assign(*o, name, argv[++*i]);
}

absl::Status OptionParser::ParseShort(absl::string_view arg, int* i, int argc,
                                      const char* const* argv) {
  if (arg == "-h") {
    help_ = true;
    return absl::OkStatus();
  }
  auto it = short_aliases_.find(arg[1]);
  Option* o = it == short_aliases_.end() ? nullptr : Find(it->second);
  if (o == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown option ", arg));
  const std::string spelled(arg.substr(1, 1));
  if (arg.size() > 2) {  // -ojson
    if (o->is_bool_) return absl::InvalidArgumentError(absl::StrCat("unknown option ", arg));
    return Assign(*o, spelled, arg.substr(2));
  }
  if (o->is_bool_) return Assign(*o, spelled, "true");
  if (*i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
  return Assign(*o, spelled, argv[++*i]);
}

absl::Status OptionParser::Parse(int argc, const char* const* argv) {
  bool only_positional = false;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-') {
      if (!allow_positional_) {
        return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\""));
      }
      positional_.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    absl::Status s =
        arg[1] == '-' ? ParseLong(arg, &i, argc, argv) : ParseShort(arg, &i, argc, argv);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

bool OptionParser::WasGiven(absl::string_view name) const {
  auto it = by_key_.find(Normalize(name));
  return it != by_key_.end() && given_.count(it->second->name_) != 0;
}

std::vector<std::string> OptionParser::GivenOptions() const {
  return std::vector<std::string>(given_.begin(), given_.end());
}

std::string OptionParser::Help() const {
  std::string out = summary_.empty() ? absl::StrCat("Usage: ", program_, " [options]") : summary_;
  if (out.back() != '\n') out.push_back('\n');
  std::string group = "\x01";  // no group has this title: the first option opens its group
  for (const auto& o : options_) {
    if (o->group_ != group) {
      group = o->group_;
      absl::StrAppend(&out, "\n", group.empty() ? "Options" : group, ":\n");
    }
    absl::StrAppend(&out, "  --", o->name_);
    if (!o->is_bool_) absl::StrAppend(&out, "=", o->value_name_.empty() ? "VALUE" : o->value_name_);
    if (!o->default_text_.empty()) absl::StrAppend(&out, "  (default: ", o->default_text_, ")");
    out.push_back('\n');
    if (!o->help_.empty()) AppendWrapped(&out, o->help_);
  }
  absl::StrAppend(&out, "\nGeneral:\n  --help\n");
  if (!version_line_.empty()) absl::StrAppend(&out, "  --version\n");
  if (!epilog_.empty()) absl::StrAppend(&out, "\n", epilog_);
  if (!out.empty() && out.back() != '\n') out.push_back('\n');
  return out;
}

}  // namespace ktls::base
