// The one command-line option parser of every binary (ktls-agent, ktls-demo-app, ktls-loadgen,
// ktlsctl, the test apps).
//
// Why our own and not absl flags: absl flags are process globals (two binaries' flags collide in
// one test binary, and the daemon had to ask absl::flags_internal which flags were given), and
// the client tools each grew their own hand-written loop with slightly different rules. Here an
// option is declared next to the struct field it fills, with its help text; the parser knows the
// default (the field's value at declaration), prints every option with it for --help, and records
// which options the command line gave (the daemon lets the config file win otherwise).
//
// Accepted: `--name=value`, `--name value`, booleans `--flag`, `--flag=true|false|1|0|yes|no`,
// `--noflag` (absl's spelling, kept for the daemon's users); `-` and `_` are the same inside a
// name (`--expected-generation` == `--expected_generation`); declared short aliases (`-o json`,
// `-ojson`); `--` ends the options; anything else is positional (returned, for subcommand CLIs,
// or refused). An unknown option is an error that names it, with the nearest declared name.
#ifndef KTLS_BASE_OPTIONS_H_
#define KTLS_BASE_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ktls::base {

class OptionParser {
 public:
  // Parses one value into the destination; an error's message says what was expected ("expected
  // 1..256"); the parser prefixes it with `--name=value: `.
  using Setter = std::function<absl::Status(absl::string_view value)>;

  // One declared option; the setters below return it so that a declaration can add a bound or a
  // value name: `parser.Add("workers", &o.workers, "...").Range(1, 256);`.
  class Option {
   public:
    // int, uint32_t and int64_t options: values outside [min, max] are refused with
    // "expected MIN..MAX".
    Option& Range(int64_t min, int64_t max);
    // Shown in --help as `--name=VALUE` (default: derived from the type: N, STRING, ...).
    Option& ValueName(std::string name);
    // Refuses an empty value ("--name=").
    Option& NonEmpty();

   private:
    friend class OptionParser;
    std::string name_;
    std::string group_;
    std::string help_;
    std::string value_name_;
    std::string default_text_;
    bool is_bool_ = false;
    bool non_empty_ = false;
    bool has_range_ = false;
    int64_t min_ = 0;
    int64_t max_ = 0;
    bool* bool_dest_ = nullptr;
    Setter set_;
    std::function<absl::Status(int64_t)> set_int_;  // integers: after the range check
  };

  // `program` names the binary in messages; `summary` is printed first by Help().
  OptionParser(std::string program, std::string summary);
  OptionParser(const OptionParser&) = delete;
  OptionParser& operator=(const OptionParser&) = delete;

  // Options declared after this call are listed under `title` in Help().
  void Group(std::string title);

  // Typed destinations: the current value of *dest is the default shown by Help().
  Option& Add(absl::string_view name, std::string* dest, absl::string_view help);
  Option& Add(absl::string_view name, bool* dest, absl::string_view help);
  Option& Add(absl::string_view name, int* dest, absl::string_view help);
  Option& Add(absl::string_view name, uint32_t* dest, absl::string_view help);
  Option& Add(absl::string_view name, int64_t* dest, absl::string_view help);
  Option& Add(absl::string_view name, uint64_t* dest, absl::string_view help);
  // Anything else (sizes with suffixes, enums, lists): the setter parses; `default_text` is what
  // Help() shows as the default ("" shows none).
  Option& AddCustom(absl::string_view name, absl::string_view value_name,
                    absl::string_view default_text, absl::string_view help, Setter set);
  // A boolean without a destination (e.g. ktlsctl's per-command switches): see WasGiven().
  Option& AddSwitch(absl::string_view name, absl::string_view help);

  // `-c` means `--name` (`-c VALUE`, `-cVALUE` for options with a value).
  void AddShortAlias(char c, absl::string_view name);
  // Text printed after the options by Help() (exit codes, examples).
  void SetEpilog(std::string text);
  // Enables --version; Parse() then sets version_requested().
  void SetVersion(std::string version_line);
  // Positional arguments are refused unless this is called.
  void AllowPositional() { allow_positional_ = true; }

  // Parses argv[1..argc). --help, --helpfull (absl's spelling, used by tests/deploy/) and -h set
  // help_requested(); the caller prints Help() and decides the exit code. Errors are
  // INVALID_ARGUMENT with a message naming the option.
  absl::Status Parse(int argc, const char* const* argv);

  // Whether the command line gave this option (by any spelling), as opposed to its default.
  bool WasGiven(absl::string_view name) const;
  // The names (as declared) of every option the command line gave, sorted.
  std::vector<std::string> GivenOptions() const;
  const std::vector<std::string>& positional() const { return positional_; }
  bool help_requested() const { return help_; }
  bool version_requested() const { return version_; }
  const std::string& version_line() const { return version_line_; }

  // Every option, grouped, with its value name, default and help; lines start with "  --name".
  std::string Help() const;

 private:
  template <typename T>
  Option& AddInteger(absl::string_view name, T* dest, absl::string_view help);
  Option& Declare(absl::string_view name, absl::string_view value_name, std::string default_text,
                  absl::string_view help);
  Option* Find(absl::string_view name);
  std::string Suggest(absl::string_view name) const;
  absl::Status Assign(Option& o, absl::string_view spelled, absl::string_view value);
  absl::Status ParseLong(absl::string_view arg, int* i, int argc, const char* const* argv);
  absl::Status ParseShort(absl::string_view arg, int* i, int argc, const char* const* argv);

  std::string program_;
  std::string summary_;
  std::string epilog_;
  std::string version_line_;
  std::string group_;
  std::vector<std::unique_ptr<Option>> options_;  // declaration order (for Help())
  std::map<std::string, Option*> by_key_;         // normalized name ('-' -> '_')
  std::map<char, std::string> short_aliases_;
  std::set<std::string> given_;  // declared names
  std::vector<std::string> positional_;
  bool allow_positional_ = false;
  bool help_ = false;
  bool version_ = false;
};

}  // namespace ktls::base

#endif  // KTLS_BASE_OPTIONS_H_
